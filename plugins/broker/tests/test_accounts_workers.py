"""Workers managed over HTTP (spec §2, §4.4, §5): PUT /workers/{id}
(maintenance + message, paused, info, name, team), DELETE /workers/{id},
worker messages attached to pops, and maintenance for dropping jobs."""
import time

import pytest

from hordetest import Horde, _finish, assert_error

FAST = {"job_ttl_s": 1, "lifecycle_interval_ms": 100}


class AccHorde(Horde):
    USERS = dict(Horde.USERS, root=["--admin"])


@pytest.fixture
def make_acc(tmp_path):
    made = []

    def factory(broker=None):
        h = AccHorde(str(tmp_path / ("h%d" % len(made))), broker=broker)
        made.append(h)
        return h

    yield factory
    problems = _finish(made)
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def acc(make_acc):
    return make_acc()


def wait_for(fn, timeout=15.0):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.05)


def call(h, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30)


def worker_id(h, name):
    r = h.get("/workers/name/" + name)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def new_worker(h, owner="wally", name="worker-1"):
    assert h.pop(owner=owner, name=name)["id"] is None
    return worker_id(h, name)


# ---- PUT /workers/{id} ------------------------------------------------------------------------


def test_put_worker_roles_and_rcs(acc):
    h = acc
    wid = new_worker(h)
    path = "/workers/" + wid
    r = call(h, "PUT", path, {"info": "hello"})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "PUT", path, {"info": "x"}, key="bad-key"), 401, "InvalidAPIKey")
    assert_error(call(h, "PUT", "/workers/00000000-0000-4000-8000-000000000000", {"info": "xyz"},
                      key=h.keys["mod"]), 404, "WorkerNotFound")
    assert_error(call(h, "PUT", path, {"info": "mine now"}, key=h.keys["bob"]), 403, "NotOwner")
    assert_error(call(h, "PUT", path, {"paused": True}, key=h.keys["wally"]), 403, "NotModerator")
    assert_error(call(h, "PUT", path, {}, key=h.keys["wally"]), 400, "NoWorkerModSelected")
    r = call(h, "PUT", path, {"info": "my gpu"}, key=h.keys["wally"])
    assert r.status_code == 200 and r.json() == {"info": "my gpu"}
    r = call(h, "PUT", path, {"paused": True}, key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"paused": True}
    assert h.get(path, key=h.keys["mod"]).json()["paused"] is True
    # names: unique
    new_worker(h, owner="wendy", name="other-worker")
    assert_error(call(h, "PUT", path, {"name": "other-worker"}, key=h.keys["wally"]), 400,
                 "WorkerNameAlreadyExists")
    r = call(h, "PUT", path, {"name": "renamed-worker"}, key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"name": "renamed-worker"}
    assert h.get("/workers/name/renamed-worker").json()["id"] == wid


def test_maintenance_with_message_refuses_pops(acc):
    h = acc
    wid = new_worker(h)
    r = call(h, "PUT", "/workers/" + wid,
             {"maintenance": True, "maintenance_msg": "upgrading drivers"}, key=h.keys["wally"])
    assert r.status_code == 200 and r.json() == {"maintenance": True}
    assert h.get("/workers/" + wid).json()["maintenance_mode"] is True
    h.generate(user="alice")
    r = h.post("/generate/pop", {"name": "worker-1", "models": ["Deliberate"],
                                 "bridge_agent": "AI Horde Worker reGen:9.0.1:x"},
               key=h.keys["wally"])
    body = assert_error(r, 403, "WorkerMaintenance")
    assert body["message"] == "upgrading drivers"
    r = call(h, "PUT", "/workers/" + wid, {"maintenance": False}, key=h.keys["mod"])
    assert r.json() == {"maintenance": False}
    assert h.pop(name="worker-1")["id"]


def test_worker_team(acc):
    h = acc
    wid = new_worker(h)
    r = call(h, "POST", "/teams", {"name": "Team Red", "info": "red things"},
             key=h.keys["alice"])
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    assert_error(call(h, "PUT", "/workers/" + wid, {"team": tid}, key=h.keys["bob"]), 403,
                 "NotOwner")
    assert_error(call(h, "PUT", "/workers/" + wid,
                      {"team": "00000000-0000-4000-8000-000000000000"}, key=h.keys["wally"]),
                 404, "TeamNotFound")
    r = call(h, "PUT", "/workers/" + wid, {"team": tid}, key=h.keys["wally"])
    assert r.status_code == 200 and r.json() == {"team": "Team Red"}
    assert h.get("/workers/" + wid).json()["team"] == {"id": tid, "name": "Team Red"}
    team = h.get("/teams/" + tid).json()
    assert team["worker_count"] == 1 and team["workers"][0]["id"] == wid
    h.node.restart()
    assert h.get("/workers/" + wid).json()["team"] == {"id": tid, "name": "Team Red"}
    r = call(h, "PUT", "/workers/" + wid, {"team": ""}, key=h.keys["wally"])
    assert r.json() == {"team": "None"}
    assert h.get("/workers/" + wid).json()["team"] == {}


# ---- DELETE /workers/{id} ---------------------------------------------------------------------


def test_delete_worker(acc):
    h = acc
    wid = new_worker(h)
    path = "/workers/" + wid
    r = call(h, "DELETE", path)
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "DELETE", path, key="0000000000"), 403, "AnonForbidden")
    assert_error(call(h, "DELETE", path, key=h.keys["bob"]), 403, "NotOwner")
    assert_error(call(h, "DELETE", "/workers/00000000-0000-4000-8000-000000000000",
                      key=h.keys["mod"]), 404, "WorkerNotFound")
    # a job in progress locks it
    rid = h.generate()["id"]
    job = h.pop(name="worker-1")
    assert job["id"]
    assert_error(call(h, "DELETE", path, key=h.keys["wally"]), 423, "Locked")
    h.submit(job["id"])
    r = call(h, "DELETE", path, key=h.keys["wally"])
    assert r.status_code == 200 and r.json() == {"deleted_id": wid, "deleted_name": "worker-1"}
    assert_error(h.get(path), 404, "WorkerNotFound")
    # the finished request still shows its generation
    st = h.status(rid)
    assert st["done"] and len(st["generations"]) == 1
    # a moderator may delete anyone's; deletions survive a restart
    wid2 = new_worker(h, owner="wendy", name="worker-2")
    assert call(h, "DELETE", "/workers/" + wid2, key=h.keys["mod"]).status_code == 200
    h.node.restart()
    assert_error(h.get(path), 404, "WorkerNotFound")
    assert_error(h.get("/workers/" + wid2), 404, "WorkerNotFound")
    # the name is free again
    assert h.pop(owner="bob", name="worker-1")["id"] is None


# ---- dropping jobs --------------------------------------------------------------------------


def test_too_many_dropped_jobs_put_the_worker_in_maintenance(make_acc):
    h = make_acc(broker=dict(FAST, abort_limit_per_hour=2))
    h.generate()
    for dropped in range(3):
        job = h.pop(name="dropper")
        assert job["id"], dropped
        assert wait_for(lambda: h.get("/workers/name/dropper").json()["uncompleted_jobs"]
                        == dropped + 1)
    w = h.get("/workers/name/dropper").json()
    assert w["maintenance_mode"] is True
    r = h.post("/generate/pop", {"name": "dropper", "models": ["Deliberate"]},
               key=h.keys["wally"])
    body = assert_error(r, 403, "WorkerMaintenance")
    assert "dropping too many jobs" in body["message"]


# ---- messages ---------------------------------------------------------------------------------


def test_worker_messages(acc):
    h = acc
    wid = new_worker(h)
    other = new_worker(h, owner="wendy", name="worker-2")
    r = call(h, "POST", "/workers/messages", {"worker_id": wid, "message": "hi"})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "POST", "/workers/messages", {"worker_id": wid, "message": "hi"},
                      key=h.keys["bob"]), 403, "MessagesOnlyOwnWorkers")
    assert_error(call(h, "POST", "/workers/messages", {"message": "to all"},
                      key=h.keys["wally"]), 403, "MessagesOnlyOwnWorkers")
    assert_error(call(h, "POST", "/workers/messages",
                      {"worker_id": "00000000-0000-4000-8000-000000000000", "message": "x"},
                      key=h.keys["mod"]), 404, "WorkerNotFound")
    r = call(h, "POST", "/workers/messages", {"worker_id": wid, "message": ""},
             key=h.keys["wally"])
    assert r.status_code == 400 and "message" in r.json()["errors"]
    r = call(h, "POST", "/workers/messages",
             {"worker_id": wid, "message": "please update", "origin": "mods", "expiry": 5000},
             key=h.keys["mod"])
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["worker_id"] == wid and m["message"] == "please update" and m["origin"] == "mods"
    assert m["user_id"] == h.ids["mod"] and m["expiry"].endswith("-0000")
    r = call(h, "POST", "/workers/messages", {"message": "horde news"}, key=h.keys["mod"])
    assert r.status_code == 200
    glob = r.json()
    assert glob["worker_id"] is None
    # pops carry the worker's own and the global messages
    got = {x["message"] for x in h.pop(name="worker-1")["messages"]}
    assert got == {"please update", "horde news"}
    got = {x["message"] for x in h.pop(owner="wendy", name="worker-2")["messages"]}
    assert got == {"horde news"}
    # ... and a job's pop too
    h.generate()
    job = h.pop(name="worker-1")
    assert job["id"] and {x["message"] for x in job["messages"]} == got | {"please update"}
    # listing: owners see their workers' messages, mods all
    mine = call(h, "GET", "/workers/messages", key=h.keys["wally"]).json()
    assert [x["id"] for x in mine] == [m["id"]]
    assert len(call(h, "GET", "/workers/messages", key=h.keys["mod"]).json()) == 2
    assert_error(call(h, "GET", "/workers/messages?worker_id=" + other, key=h.keys["wally"]),
                 403, "MessagesOnlyOwnWorkers")
    one = call(h, "GET", "/workers/messages/" + m["id"], key=h.keys["wally"])
    assert one.status_code == 200 and one.json()["id"] == m["id"]
    assert_error(call(h, "GET", "/workers/messages/" + m["id"], key=h.keys["wendy"]), 403,
                 "MessagesOnlyOwnWorkers")
    assert_error(call(h, "GET", "/workers/messages/00000000-0000-4000-8000-000000000000",
                      key=h.keys["mod"]), 404, "WorkermessageNotFound")
    # they survive a restart; deleting one
    h.node.restart()
    assert call(h, "GET", "/workers/messages/" + m["id"], key=h.keys["mod"]).status_code == 200
    assert_error(call(h, "DELETE", "/workers/messages/" + glob["id"], key=h.keys["wally"]), 403,
                 "MessagesOnlyOwnWorkers")
    r = call(h, "DELETE", "/workers/messages/" + glob["id"], key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(call(h, "GET", "/workers/messages/" + glob["id"], key=h.keys["mod"]), 404,
                 "WorkermessageNotFound")
    assert {x["message"] for x in h.pop(owner="wendy", name="worker-2")["messages"]} == set()
