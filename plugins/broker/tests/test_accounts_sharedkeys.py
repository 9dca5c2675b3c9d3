"""Shared keys (spec §2, §5): PUT /sharedkeys, GET|PATCH|DELETE
/sharedkeys/{id}, and a shared key used as the apikey of a generation,
billed to its owner within its kudos, expiry, pixel and step limits."""
import pytest

from hordetest import Horde, _finish, assert_error

NO_KEY = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def acc(tmp_path):
    h = Horde(str(tmp_path / "h"))
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


def call(h, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30)


def make_key(h, owner="alice", **body):
    r = call(h, "PUT", "/sharedkeys", body, key=h.keys[owner])
    assert r.status_code == 200, r.text
    return r.json()


def gen_with(h, skey, steps=10, width=512, height=512):
    body = {"prompt": "a blue square", "models": ["Deliberate"],
            "params": {"steps": steps, "width": width, "height": height,
                       "sampler_name": "k_euler"}}
    return call(h, "POST", "/generate/async", body, key=skey)


def test_create_and_read(acc):
    h = acc
    r = call(h, "PUT", "/sharedkeys", {"name": "for friends"})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "PUT", "/sharedkeys", {}, key="0000000000"), 403, "AnonForbidden")
    r = call(h, "PUT", "/sharedkeys", {"kudos": "lots"}, key=h.keys["alice"])
    assert r.status_code == 400 and "kudos" in r.json()["errors"]
    r = call(h, "PUT", "/sharedkeys", {"name": "x"}, key=h.keys["alice"])
    assert r.status_code == 400 and "name" in r.json()["errors"]
    k = make_key(h, name="for friends")
    assert k["username"] == "alice#%d" % h.ids["alice"] and k["name"] == "for friends"
    assert k["kudos"] == 5000 and k["expiry"] is None and k["utilized"] == 0
    assert (k["max_image_pixels"], k["max_image_steps"], k["max_text_tokens"]) == (-1, -1, -1)
    # limits beyond the ranges are clamped
    k2 = make_key(h, kudos=10**9, max_image_steps=10**6, expiry=2)
    assert k2["kudos"] == 50000000 and k2["max_image_steps"] == 500
    assert k2["expiry"].endswith("-0000")
    r = call(h, "GET", "/sharedkeys/" + k["id"])
    assert r.status_code == 200 and r.json() == k
    assert_error(call(h, "GET", "/sharedkeys/" + NO_KEY), 401, "InvalidAPIKey")
    # the owner's details list them
    d = h.get("/find_user", key=h.keys["alice"]).json()
    assert sorted(d["sharedkey_ids"]) == sorted([k["id"], k2["id"]])
    assert "sharedkey_ids" not in h.get("/users/%d" % h.ids["alice"]).json()
    h.node.restart()
    assert call(h, "GET", "/sharedkeys/" + k["id"]).json() == k


def test_find_user_with_a_shared_key(acc):
    h = acc
    k = make_key(h, name="for friends")
    r = h.get("/find_user", key=k["id"])
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["username"] == "alice#%d (Shared Key: for friends)" % h.ids["alice"]
    assert d["id"] == h.ids["alice"]
    # privilege 0: nothing private
    assert "sharedkey_ids" not in d and "contact" not in d
    assert_error(h.get("/find_user", key=NO_KEY), 404, "UserNotFound")


def test_how_many_keys(acc):
    h = acc
    for _ in range(3):
        make_key(h, owner="bob")
    assert_error(call(h, "PUT", "/sharedkeys", {}, key=h.keys["bob"]), 403, "Forbidden")
    for _ in range(10):
        make_key(h, owner="alice")  # trusted: 10
    assert_error(call(h, "PUT", "/sharedkeys", {}, key=h.keys["alice"]), 403, "Forbidden")


def test_patch_and_delete(acc):
    h = acc
    k = make_key(h, name="first name")
    path = "/sharedkeys/" + k["id"]
    r = call(h, "PATCH", path, {"kudos": 5})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "PATCH", path, {"kudos": 5}, key=h.keys["bob"]), 403, "NotOwner")
    assert_error(call(h, "PATCH", path, {}, key=h.keys["alice"]), 400, "NoSharedKeyModSelected")
    assert_error(call(h, "PATCH", "/sharedkeys/" + NO_KEY, {"kudos": 5}, key=h.keys["alice"]), 401,
                 "InvalidAPIKey")
    r = call(h, "PATCH", path, {"kudos": 77, "name": "second name", "max_image_steps": 20},
             key=h.keys["alice"])
    assert r.status_code == 200, r.text
    assert (r.json()["kudos"], r.json()["name"], r.json()["max_image_steps"]) == (
        77, "second name", 20)
    assert_error(call(h, "DELETE", path, key=h.keys["bob"]), 403, "NotOwner")
    r = call(h, "DELETE", path, key=h.keys["alice"])
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(call(h, "GET", path), 401, "InvalidAPIKey")
    h.node.restart()
    assert_error(call(h, "GET", path), 401, "InvalidAPIKey")
    assert_error(gen_with(h, k["id"]), 401, "InvalidAPIKey")


def test_generate_with_a_shared_key(acc):
    h = acc
    k = make_key(h, kudos=1000)
    r = gen_with(h, k["id"])
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    # billed to (and counted as) the owner
    own = h.get("/find_user", key=h.keys["alice"]).json()
    assert rid in own["active_generations"]["image"]
    used = call(h, "GET", "/sharedkeys/" + k["id"]).json()["utilized"]
    assert used > 0
    h.node.restart()
    assert call(h, "GET", "/sharedkeys/" + k["id"]).json()["utilized"] == used
    # a shared key is not a user's key elsewhere
    r = h.http.put(h.url + "/users/%d" % h.ids["alice"], json={"contact": "me@example.org"},
                   headers={"apikey": k["id"]}, timeout=30)
    assert_error(r, 401, "InvalidAPIKey")


def test_shared_key_limits(acc):
    h = acc
    empty = make_key(h, kudos=0)
    assert_error(gen_with(h, empty["id"]), 403, "SharedKeyEmpty")
    small = make_key(h, kudos=1)
    assert_error(gen_with(h, small["id"]), 403, "SharedKeyInsufficientKudos")
    limited = make_key(h, kudos=-1, max_image_pixels=262144, max_image_steps=20)
    assert_error(gen_with(h, limited["id"], width=1024, height=1024), 400, "BadRequest")
    assert_error(gen_with(h, limited["id"], steps=30), 400, "BadRequest")
    assert gen_with(h, limited["id"], steps=20).status_code == 202
    # expiry 0 days: expired at once
    r = call(h, "PATCH", "/sharedkeys/" + limited["id"], {"expiry": 0}, key=h.keys["alice"])
    assert r.status_code == 200
    assert_error(gen_with(h, limited["id"]), 403, "SharedKeyExpired")
    r = call(h, "PATCH", "/sharedkeys/" + limited["id"], {"expiry": -1}, key=h.keys["alice"])
    assert r.json()["expiry"] is None
    assert gen_with(h, limited["id"], steps=20).status_code == 202
