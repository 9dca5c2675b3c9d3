"""What a user's account fields do over HTTP: a deleted user is refused on
pop and generate (403 DeletedUser, spec §1.1/§1.4) until undeleted;
`public_workers` shows a worker's owner and messages publicly (§2
WorkerDetails); `usage_multiplier` scales the usage record (the horde's
record_usage)."""
import pytest

from hordetest import Horde, _finish, assert_error


class EffHorde(Horde):
    USERS = dict(Horde.USERS, root=["--admin"])


@pytest.fixture
def h(tmp_path):
    node = EffHorde(str(tmp_path / "h"))
    yield node
    problems = _finish([node])
    if problems:
        pytest.fail("\n\n".join(problems))


def put_user(h, name, body, key):
    return h.http.put(h.url + "/users/%d" % h.ids[name], json=body, headers={"apikey": key},
                      timeout=30)


def delete_user(h, name, key):
    return h.http.delete(h.url + "/users/%d" % h.ids[name], headers={"apikey": key}, timeout=30)


def test_deleted_user_refused_on_pop_and_generate_until_undeleted(h):
    h.generate(user="bob")
    h.pop(owner="wally", name="w-del")
    assert delete_user(h, "bob", h.keys["bob"]).status_code == 200
    assert delete_user(h, "wally", h.keys["mod"]).status_code == 200
    r = h.post("/generate/async", {"prompt": "a cat", "models": ["Deliberate"]},
               key=h.keys["bob"])
    assert_error(r, 403, "DeletedUser")
    r = h.post("/generate/pop", {"name": "w-del", "models": ["Deliberate"]},
               key=h.keys["wally"])
    assert_error(r, 403, "DeletedUser")
    # the key still works where the horde lets it: own details, undelete
    r = h.get("/find_user", key=h.keys["bob"])
    assert r.status_code == 200 and r.json()["deleted"] is True
    # other users are not affected
    h.generate(user="alice")
    h.pop(owner="wendy", name="w-other")
    r = put_user(h, "bob", {"undelete": True}, h.keys["bob"])
    assert r.status_code == 200 and r.json() == {"undeleted": True}
    r = put_user(h, "wally", {"undelete": True}, h.keys["mod"])
    assert r.status_code == 200
    h.generate(user="bob")
    h.pop(owner="wally", name="w-del")


def test_public_workers_show_owner_and_messages(h):
    h.pop(owner="wally", name="w-pub")
    wid = h.get("/workers/name/w-pub").json()["id"]
    r = h.post("/workers/messages", {"worker_id": wid, "message": "hello worker",
                                     "expiry": 5}, key=h.keys["mod"])
    assert r.status_code in (200, 201), r.text
    public = h.get("/workers/" + wid).json()
    assert "owner" not in public and "messages" not in public
    r = put_user(h, "wally", {"public_workers": True}, h.keys["wally"])
    assert r.status_code == 200
    for path in ("/workers/" + wid, "/workers/name/w-pub"):
        public = h.get(path).json()
        assert public["owner"] == "wally#%d" % h.ids["wally"], path
        assert [m["message"] for m in public["messages"]] == ["hello worker"]
        assert "ipaddr" not in public  # still privilege 1
    listed = [w for w in h.get("/workers").json() if w["id"] == wid][0]
    assert listed["owner"].startswith("wally#")
    # survives a restart (kept with the worker's row), and is taken back
    h.node.restart()
    assert "owner" in h.get("/workers/" + wid).json()
    assert put_user(h, "wally", {"public_workers": False}, h.keys["wally"]).status_code == 200
    assert "owner" not in h.get("/workers/" + wid).json()


def usage_mps(h, name):
    r = h.get("/users/%d" % h.ids[name])
    assert r.status_code == 200, r.text
    return r.json()["records"]["usage"]["megapixelsteps"]


def run_one(h, user):
    h.generate(user=user)
    job = h.pop(owner="wendy", name="w-usage")
    assert job["id"]
    h.submit(job["id"], owner="wendy")


def test_usage_multiplier_scales_usage_records(h):
    r = put_user(h, "bob", {"usage_multiplier": 2.5}, h.keys["root"])
    assert r.status_code == 200 and r.json() == {"usage_multiplier": 2.5}
    run_one(h, "alice")
    run_one(h, "bob")
    plain = usage_mps(h, "alice")
    assert plain > 0
    assert usage_mps(h, "bob") == pytest.approx(plain * 2.5, abs=0.02)
    # the worker's contribution is not scaled
    r = h.get("/users/%d" % h.ids["wendy"]).json()
    assert r["records"]["contribution"]["megapixelsteps"] == pytest.approx(plain * 2, abs=0.02)


def test_filtered_user_always_gets_the_replacement_filter(h):
    mod = {"apikey": h.keys["mod"]}
    for body in ({"regex": "child", "filter_type": 10, "replacement": "adult"},
                 {"regex": "nude", "filter_type": 20}):
        r = h.http.put(h.url + "/filters", json=body, headers=mod, timeout=30)
        assert r.status_code == 200, r.text
    body = {"prompt": "a nude child", "replacement_filter": False,
            "params": {"steps": 10, "sampler_name": "k_euler"}, "models": ["stable_diffusion"]}
    # each refusal times the client IP out: each call its own (believed) address
    r = h.post("/generate/async", body, key=h.keys["bob"],
               headers={"X-Forwarded-For": "203.0.113.20"})
    assert_error(r, 400, "CorruptPrompt")
    assert put_user(h, "bob", {"filtered": True}, h.keys["mod"]).status_code == 200
    r = h.post("/generate/async", body, key=h.keys["bob"],
               headers={"X-Forwarded-For": "203.0.113.21"})
    assert r.status_code == 202, r.text
    job = h.pop(owner="wendy", name="w-filter", models=("stable_diffusion",))
    assert job["payload"]["prompt"].startswith("a nude adult###child")
