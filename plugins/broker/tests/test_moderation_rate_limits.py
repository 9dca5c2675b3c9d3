"""Rate limits (hook http_request): the horde's per-route limits, the default
for other routes, the exemptions (heartbeat, loopback) and the off switch.
Every limit used here has a window of a minute or more and the test needs a
few milliseconds, so no assertion depends on timing."""
from hordetest import assert_error, make_horde  # noqa: F401


def remote(ip):
    return {"X-Forwarded-For": ip}


def test_status_limit_per_ip_and_path(make_horde):
    h = make_horde()
    rid = h.generate()["id"]
    other = h.generate(user="bob")["id"]
    for _ in range(10):  # 10 per minute per IP+path
        r = h.get("/generate/status/" + rid, headers=remote("198.51.100.1"))
        assert r.status_code == 200, r.text
    r = h.get("/generate/status/" + rid, headers=remote("198.51.100.1"))
    body = assert_error(r, 429, "TooManyRequests")
    assert "10 per 1 minute" in body["message"] and r.headers.get("Retry-After") == "60"
    # another path, another IP, the loopback client: their own counters / exempt
    assert h.get("/generate/status/" + other, headers=remote("198.51.100.1")).status_code == 200
    assert h.get("/generate/status/" + rid, headers=remote("198.51.100.2")).status_code == 200
    for _ in range(15):
        assert h.get("/generate/status/" + rid).status_code == 200


def test_default_limit_and_heartbeat(make_horde):
    h = make_horde(broker={"rate_limit_default": 5})
    for _ in range(5):
        assert h.get("/status/performance", headers=remote("203.0.113.5")).status_code == 200
    assert_error(h.get("/status/performance", headers=remote("203.0.113.5")), 429,
                 "TooManyRequests")
    # per route: another route still answers
    assert h.get("/stats/img/totals", headers=remote("203.0.113.5")).status_code == 200
    # the heartbeat is never limited
    for _ in range(20):
        assert h.get("/status/heartbeat", headers=remote("203.0.113.5")).status_code == 200
    # 404s are not routed, so not counted either
    assert h.get("/nothing/here", headers=remote("203.0.113.5")).status_code == 404


def test_per_key_limit_on_generate(make_horde):
    # generate allows 2 a second per key: twenty dry runs with one key from
    # twenty IPs pass every per-IP counter, and only the key's can refuse.
    # (A fixed window: escaping it would need the twenty to take 9 seconds.)
    h = make_horde()
    body = {"prompt": "a cat", "params": {"steps": 10, "sampler_name": "k_euler"},
            "models": ["Deliberate"], "dry_run": True}
    codes = [h.post("/generate/async", body, key=h.keys["alice"],
                    headers=remote("192.0.2.%d" % i)).status_code for i in range(1, 21)]
    assert codes[0] == 200 and 429 in codes, codes
    assert set(codes) == {200, 429}, codes


def test_off_switch_and_loopback_switch(make_horde):
    off = make_horde(broker={"rate_limits": False, "rate_limit_default": 2})
    for _ in range(10):
        assert off.get("/status/performance", headers=remote("203.0.113.5")).status_code == 200
    strict = make_horde(broker={"rate_limit_loopback": True, "rate_limit_default": 2})
    assert strict.get("/status/performance").status_code == 200
    assert strict.get("/status/performance").status_code == 200
    assert_error(strict.get("/status/performance"), 429, "TooManyRequests")
    # other plugins' routes are covered too (auth's /users/{id}: 60 a minute)
    for _ in range(60):
        r = strict.get("/users/%d" % strict.ids["alice"])
        assert r.status_code == 200, r.text
    assert_error(strict.get("/users/%d" % strict.ids["alice"]), 429, "TooManyRequests")
    assert strict.get("/users/%d" % strict.ids["bob"]).status_code == 200  # IP+path
