"""Prompt filters: GET|PUT|POST /filters, GET /filters/regex, GET|PATCH|DELETE
/filters/{id}, their role checks, and the filter on generate (suspicion,
replacement, 400 CorruptPrompt and the IP timeout it brings)."""
import time

from hordetest import assert_error, make_horde  # noqa: F401

MINORS = "child, infant, underage, immature, teenager, tween"


def remote(ip):
    """Headers that make a request look like it came from `ip` (the node
    believes X-Forwarded-For from a loopback peer, as behind a local proxy)."""
    return {"X-Forwarded-For": ip}


def put_filter(h, regex, filter_type, **extra):
    body = dict(regex=regex, filter_type=filter_type, **extra)
    r = h.http.put(h.url + "/filters", json=body, headers={"apikey": h.keys["mod"]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_filter_roles(make_horde):
    h = make_horde()
    r = h.get("/filters")                                    # no apikey at all
    assert r.status_code == 400 and "apikey" in r.json()["errors"], r.text
    assert_error(h.get("/filters", key="0000000000"), 403, "NotModerator")
    assert_error(h.get("/filters", key=h.keys["bob"]), 403, "NotModerator")
    assert_error(h.get("/filters", key="not-a-key-at-all"), 401, "InvalidAPIKey")
    assert_error(h.get("/filters/regex", key=h.keys["alice"]), 403, "NotModerator")
    assert_error(h.get("/filters/1", key=h.keys["alice"]), 403, "NotModerator")
    assert_error(h.post("/filters", {"prompt": "x"}, key=h.keys["bob"]), 403, "NotModerator")
    r = h.http.put(h.url + "/filters", json={"regex": "a", "filter_type": 10},
                   headers={"apikey": h.keys["bob"]}, timeout=30)
    assert_error(r, 403, "NotModerator")
    assert h.get("/filters", key=h.keys["mod"]).json() == []
    # an admin is a moderator too
    key = h.node.command("user", "create", "boss", "--admin", check=True).stdout.split()[-1]
    assert h.get("/filters", key=key).status_code == 200


def test_filter_crud(make_horde):
    h = make_horde()
    mod = h.keys["mod"]
    f = put_filter(h, r"bad\s*word", 10, description="a test", replacement="nice")
    assert f["regex"] == r"bad\s*word" and f["filter_type"] == 10
    assert f["description"] == "a test" and f["replacement"] == "nice"
    assert f["user"].startswith("mod#") and isinstance(f["id"], int)
    g = put_filter(h, "ugly", 20)
    assert g["replacement"] == "" and g["id"] != f["id"]
    # bad input
    for body, rc in (({"regex": "(", "filter_type": 10}, "BadRequest"),
                     ({"regex": "x", "filter_type": 9}, "BadRequest"),
                     ({"regex": "x", "filter_type": 30}, "BadRequest"),
                     ({"regex": "x", "filter_type": "10"}, "BadRequest"),
                     ({"filter_type": 10}, "BadRequest"),
                     ({"regex": "x"}, "BadRequest")):
        r = h.http.put(h.url + "/filters", json=body, headers={"apikey": mod}, timeout=30)
        assert_error(r, 400, rc)
    # list and filter the list
    assert [x["id"] for x in h.get("/filters", key=mod).json()] == [f["id"], g["id"]]
    assert [x["id"] for x in h.get("/filters", key=mod, params={"filter_type": 20}).json()] \
        == [g["id"]]
    assert [x["id"] for x in h.get("/filters", key=mod, params={"contains": "word"}).json()] \
        == [f["id"]]
    assert_error(h.get("/filters", key=mod, params={"filter_type": 99}), 400)
    # joined per type
    put_filter(h, "worse", 10)
    regex = h.get("/filters/regex", key=mod).json()
    assert {"filter_type": 10, "regex": r"bad\s*word|worse"} in regex
    assert {"filter_type": 20, "regex": "ugly"} in regex
    assert h.get("/filters/regex", key=mod, params={"filter_type": 20}).json() == \
        [{"filter_type": 20, "regex": "ugly"}]
    # single
    assert h.get("/filters/%d" % f["id"], key=mod).json() == f
    assert_error(h.get("/filters/99999", key=mod), 404, "FilterNotFound")
    assert_error(h.get("/filters/abc", key=mod), 404, "FilterNotFound")
    r = h.http.patch(h.url + "/filters/%d" % f["id"], json={}, headers={"apikey": mod},
                     timeout=30)
    assert_error(r, 400, "NoFilterModSelected")
    r = h.http.patch(h.url + "/filters/%d" % f["id"], json={"regex": "[", "filter_type": 11},
                     headers={"apikey": mod}, timeout=30)
    assert_error(r, 400, "BadRequest")
    r = h.http.patch(h.url + "/filters/%d" % f["id"],
                     json={"regex": "badword", "filter_type": 11, "description": "changed"},
                     headers={"apikey": mod}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["regex"] == "badword" and r.json()["filter_type"] == 11
    assert r.json()["description"] == "changed" and r.json()["replacement"] == "nice"
    r = h.http.patch(h.url + "/filters/99999", json={"regex": "x"}, headers={"apikey": mod},
                     timeout=30)
    assert_error(r, 404, "FilterNotFound")
    r = h.http.delete(h.url + "/filters/%d" % g["id"], headers={"apikey": mod}, timeout=30)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(h.get("/filters/%d" % g["id"], key=mod), 404, "FilterNotFound")
    r = h.http.delete(h.url + "/filters/%d" % g["id"], headers={"apikey": mod}, timeout=30)
    assert_error(r, 404, "FilterNotFound")
    # they survive a restart
    h.node.restart()
    after = h.get("/filters", key=mod).json()
    assert [x["regex"] for x in after] == ["badword", "worse"]
    assert after[0]["description"] == "changed" and after[0]["filter_type"] == 11


def test_filter_check_endpoint(make_horde):
    h = make_horde()
    mod = h.keys["mod"]
    put_filter(h, "child", 10, replacement="adult")
    put_filter(h, "nude", 20)
    def check(prompt, **kw):
        r = h.post("/filters", dict(prompt=prompt, **kw), key=mod)
        assert r.status_code == 200, r.text
        return r.json()
    assert check("a landscape") == {"suspicion": 0, "matches": []}
    assert check("a CHILD playing")["suspicion"] == 1
    both = check("a nude child")
    assert both["suspicion"] == 2 and sorted(both["matches"]) == ["child", "nude"]
    # the normalisation: weights, punctuation and spaced-out letters
    assert check("(c h i l d:1.3), n.u.d.e")["suspicion"] == 1 + (check("nude")["suspicion"])
    assert check("c h i l d")["suspicion"] == 1
    assert check("a nude child", filter_type=20) == {"suspicion": 1, "matches": ["nude"]}
    r = h.post("/filters", {"filter_type": 10}, key=mod)
    assert r.status_code == 400


def test_filter_on_generate(make_horde):
    h = make_horde(broker={"rate_limits": False})  # many requests from one remote IP
    put_filter(h, "child", 10, replacement="adult")
    put_filter(h, "nude", 20)
    # stable_diffusion is not an nsfw model: only the suspicion rule applies
    body = {"prompt": "a nude child", "params": {"steps": 10, "sampler_name": "k_euler"},
            "models": ["stable_diffusion"]}
    ip = "203.0.113.7"
    # one group only: accepted as is
    r = h.post("/generate/async", dict(body, prompt="a child with a kite"),
               key=h.keys["alice"], headers=remote(ip))
    assert r.status_code == 202, r.text
    job = h.pop(models=("stable_diffusion",))
    assert job["payload"]["prompt"] == "a child with a kite"
    h.submit(job["id"])
    # both groups: rewritten (replacement_filter defaults to true)
    r = h.post("/generate/async", dict(body, prompt="a nude child###blurry"),
               key=h.keys["alice"], headers=remote(ip))
    assert r.status_code == 202, r.text
    job = h.pop(models=("stable_diffusion",))
    assert job["payload"]["prompt"] == "a nude adult###" + MINORS + ", blurry"
    h.submit(job["id"])
    # refused without the replacement filter: CorruptPrompt, and the IP in timeout
    r = h.post("/generate/async", dict(body, replacement_filter=False), key=h.keys["bob"],
               headers=remote(ip))
    assert_error(r, 400, "CorruptPrompt")
    # bob's suspicion +1 (hook user_suspicion, auth), recorded off the request's thread
    deadline = time.time() + 20
    while h.get("/users/%d" % h.ids["bob"], key=h.keys["mod"]).json().get("suspicious") != 1:
        assert time.time() < deadline, "CORRUPT_PROMPT suspicion never recorded"
        time.sleep(0.05)
    r = h.post("/generate/async", dict(body, prompt="a cat"), key=h.keys["bob"],
               headers=remote(ip))
    body_err = assert_error(r, 403, "TimeoutIP")
    assert "seconds" in body_err["message"]
    # other IPs are fine; the timeout is (2*1+1)*3 minutes
    r = h.post("/generate/async", dict(body, prompt="a cat"), key=h.keys["bob"],
               headers=remote("203.0.113.8"))
    assert r.status_code == 202, r.text
    t = h.get("/operations/ipaddr/" + ip, key=h.keys["mod"]).json()
    assert len(t) == 1 and t[0]["ipaddr"] == ip and 500 <= t[0]["seconds"] <= 540
    # a moderator's corrupt prompt does not time its IP out
    r = h.post("/generate/async", dict(body, replacement_filter=False), key=h.keys["mod"],
               headers=remote("203.0.113.9"))
    assert_error(r, 400, "CorruptPrompt")
    assert h.get("/operations/ipaddr/203.0.113.9", key=h.keys["mod"]).json() == []


def test_nsfw_models_and_flagged_users_are_always_rewritten(make_horde):
    h = make_horde(broker={"rate_limits": False})
    put_filter(h, "child", 10, replacement="person")
    body = {"params": {"steps": 10, "sampler_name": "k_euler"}}
    # Deliberate is an nsfw model in the reference: youth words and type-10
    # matches are rewritten even at suspicion 0
    r = h.post("/generate/async", dict(body, prompt="a young girl and a small boy, child###ugly",
                                       models=["Deliberate"]), key=h.keys["alice"])
    assert r.status_code == 202, r.text
    job = h.pop()
    assert job["payload"]["prompt"] == \
        "a adult adult woman and a adult adult man, person###ugly"
    # the same prompt for a model that is not nsfw stays as it is
    r = h.post("/generate/async", dict(body, prompt="a young girl", models=["stable_diffusion"]),
               key=h.keys["alice"])
    assert r.status_code == 202, r.text
    assert h.pop(models=("stable_diffusion",))["payload"]["prompt"] == "a young girl"
    # nothing left after the rewrite: CorruptPrompt
    put_filter(h, "^.*$", 10, replacement="")
    r = h.post("/generate/async", dict(body, prompt="anything at all", models=["Deliberate"]),
               key=h.keys["bob"], headers=remote("198.51.100.44"))
    assert_error(r, 400, "CorruptPrompt")
    assert h.get("/operations/ipaddr/198.51.100.44", key=h.keys["mod"]).json() != []
