"""IP timeouts: GET|POST|DELETE /operations/ipaddr, GET /operations/ipaddr/{ip},
PUT|DELETE /operations/block_worker_ipaddr/{worker_id}; CIDR blocks; 403
TimeoutIP on generate and pop."""
import uuid

from hordetest import assert_error, make_horde  # noqa: F401

BODY = {"prompt": "a cat", "params": {"steps": 10, "sampler_name": "k_euler"},
        "models": ["Deliberate"]}


def remote(ip):
    return {"X-Forwarded-For": ip}


def call(h, method, path, body=None, key=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["apikey"] = key
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30, **kw)


def test_ipaddr_roles(make_horde):
    h = make_horde()
    for method, path, body in (("GET", "/operations/ipaddr", None),
                               ("POST", "/operations/ipaddr", {"ipaddr": "10.0.0.1", "hours": 1}),
                               ("DELETE", "/operations/ipaddr", {"ipaddr": "10.0.0.1"}),
                               ("GET", "/operations/ipaddr/10.0.0.1", None),
                               ("PUT", "/operations/block_worker_ipaddr/%s" % uuid.uuid4(),
                                {"days": 1}),
                               ("DELETE", "/operations/block_worker_ipaddr/%s" % uuid.uuid4(),
                                None)):
        assert call(h, method, path, body).status_code == 400          # no apikey
        assert_error(call(h, method, path, body, key="0000000000"), 403, "NotModerator")
        assert_error(call(h, method, path, body, key=h.keys["alice"]), 403, "NotModerator")
        assert_error(call(h, method, path, body, key="wrong-key-123"), 401, "InvalidAPIKey")


def test_cidr_block(make_horde):
    h = make_horde(broker={"rate_limits": False})
    mod = h.keys["mod"]
    assert call(h, "GET", "/operations/ipaddr", key=mod).json() == []
    # bad input
    for body in ({"ipaddr": "999.1.1.1", "hours": 1}, {"ipaddr": "10.0.0.0/33", "hours": 1},
                 {"ipaddr": "not an ip at all", "hours": 1}, {"ipaddr": "1.2.3", "hours": 1},
                 {"ipaddr": "10.0.0.1", "hours": 0}, {"ipaddr": "10.0.0.1", "hours": 721},
                 {"ipaddr": "10.0.0.1"}, {"hours": 2}):
        assert_error(call(h, "POST", "/operations/ipaddr", body, key=mod), 400)
    r = call(h, "POST", "/operations/ipaddr", {"ipaddr": "198.51.100.77/24", "hours": 2}, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}, r.text
    listed = call(h, "GET", "/operations/ipaddr", key=mod).json()
    assert len(listed) == 1 and listed[0]["ipaddr"] == "198.51.100.0/24"
    assert 7000 < listed[0]["seconds"] <= 7200
    # a single address is its /32
    r = call(h, "POST", "/operations/ipaddr", {"ipaddr": "192.0.2.1", "hours": 1}, key=mod)
    assert r.status_code == 200
    assert {x["ipaddr"] for x in call(h, "GET", "/operations/ipaddr", key=mod).json()} == \
        {"198.51.100.0/24", "192.0.2.1/32"}
    # refused inside the block, accepted outside
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("198.51.100.9"))
    assert_error(r, 403, "TimeoutIP")
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("198.51.101.9"))
    assert r.status_code == 202, r.text
    r = h.post("/generate/pop", {"name": "w1", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("198.51.100.200"))
    assert_error(r, 403, "TimeoutIP")
    # check answers a timed-out IP only when it says who it is (Client-Agent)
    rid = h.post("/generate/async", BODY, key=h.keys["alice"],
                 headers=remote("198.51.101.9")).json()["id"]
    assert_error(h.get("/generate/check/" + rid, headers=remote("198.51.100.9")), 403,
                 "TimeoutIP")
    r = h.get("/generate/check/" + rid,
              headers=dict(remote("198.51.100.9"), **{"Client-Agent": "tests:1:none"}))
    assert r.status_code == 200, r.text
    single = call(h, "GET", "/operations/ipaddr/198.51.100.9", key=mod).json()
    assert [x["ipaddr"] for x in single] == ["198.51.100.0/24"]
    assert call(h, "GET", "/operations/ipaddr/198.51.101.9", key=mod).json() == []
    assert_error(call(h, "GET", "/operations/ipaddr/nonsense", key=mod), 400)
    # survives a restart
    h.node.restart()
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("198.51.100.9"))
    assert_error(r, 403, "TimeoutIP")
    # lifted
    r = call(h, "DELETE", "/operations/ipaddr", {"ipaddr": "198.51.100.0/24"}, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("198.51.100.9"))
    assert r.status_code == 202, r.text
    assert [x["ipaddr"] for x in call(h, "GET", "/operations/ipaddr", key=mod).json()] == \
        ["192.0.2.1/32"]
    # IPv6 blocks
    r = call(h, "POST", "/operations/ipaddr", {"ipaddr": "2001:db8:1::/48", "hours": 1}, key=mod)
    assert r.status_code == 200
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("2001:db8:1:2::5"))
    assert_error(r, 403, "TimeoutIP")
    r = h.post("/generate/async", BODY, key=h.keys["alice"], headers=remote("2001:db8:2::5"))
    assert r.status_code == 202, r.text


def test_block_worker_ip(make_horde):
    h = make_horde(broker={"rate_limits": False})
    mod = h.keys["mod"]
    r = h.post("/generate/pop", {"name": "w4", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("192.0.2.50"))
    assert r.status_code == 200, r.text
    wid = h.get("/workers/name/w4").json()["id"]
    path = "/operations/block_worker_ipaddr/" + wid
    assert_error(call(h, "PUT", path, {"days": 0}, key=mod), 400)
    assert_error(call(h, "PUT", path, {"days": 31}, key=mod), 400)
    assert_error(call(h, "PUT", path, {}, key=mod), 400)
    assert_error(call(h, "PUT", "/operations/block_worker_ipaddr/%s" % uuid.uuid4(),
                      {"days": 1}, key=mod), 404, "WorkerNotFound")
    assert_error(call(h, "PUT", "/operations/block_worker_ipaddr/nope", {"days": 1}, key=mod),
                 404, "WorkerNotFound")
    r = call(h, "PUT", path, {"days": 2}, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}, r.text
    r = h.post("/generate/pop", {"name": "w4", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("192.0.2.50"))
    assert_error(r, 403, "TimeoutIP")
    t = call(h, "GET", "/operations/ipaddr/192.0.2.50", key=mod).json()
    assert len(t) == 1 and t[0]["ipaddr"] == "192.0.2.50" and t[0]["seconds"] > 2 * 86400 - 60
    r = call(h, "DELETE", path, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    r = h.post("/generate/pop", {"name": "w4", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("192.0.2.50"))
    assert r.status_code == 200, r.text
    # an IPv6 worker: its /64
    r = h.post("/generate/pop", {"name": "w6", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("2001:db8:aa:bb:1:2:3:4"))
    assert r.status_code == 200, r.text
    wid6 = h.get("/workers/name/w6").json()["id"]
    r = call(h, "PUT", "/operations/block_worker_ipaddr/" + wid6, {"days": 1}, key=mod)
    assert r.status_code == 200
    assert "2001:db8:aa:bb::/64" in [x["ipaddr"] for x in
                                     call(h, "GET", "/operations/ipaddr", key=mod).json()]
    r = h.post("/generate/pop", {"name": "w6b", "models": ["Deliberate"]}, key=h.keys["wally"],
               headers=remote("2001:db8:aa:bb::99"))
    assert_error(r, 403, "TimeoutIP")
