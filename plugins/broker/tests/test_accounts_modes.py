"""Horde modes (spec §2, §5): GET|PUT /status/modes and their effects:
maintenance refuses new requests and stops handing out queued ones,
invite-only limits new workers to worker_invited, raid mode."""
import pytest

from hordetest import Horde, _finish, assert_error


class AccHorde(Horde):
    USERS = dict(Horde.USERS, root=["--admin"])


@pytest.fixture
def acc(tmp_path):
    h = AccHorde(str(tmp_path / "h"))
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


def modes(h, body, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.put(h.url + "/status/modes", json=body, headers=headers, timeout=30)


def test_get_modes(acc):
    h = acc
    r = h.get("/status/modes")
    assert r.status_code == 200
    assert r.json() == {"maintenance_mode": False, "invite_only_mode": False}
    assert_error(h.get("/status/modes", key="bad-key"), 401, "InvalidAPIKey")
    assert_error(h.get("/status/modes", key=h.keys["alice"]), 403, "NotModerator")
    r = h.get("/status/modes", key=h.keys["mod"])
    assert r.json() == {"maintenance_mode": False, "invite_only_mode": False,
                        "raid_mode": False}


def test_put_modes_roles(acc):
    h = acc
    r = modes(h, {"raid_mode": True})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(modes(h, {"raid_mode": True}, key="bad-key"), 401, "InvalidAPIKey")
    assert_error(modes(h, {"maintenance_mode": True}, key=h.keys["mod"]), 403, "NotAdmin")
    for field in ("invite_only_mode", "raid_mode"):
        assert_error(modes(h, {field: True}, key=h.keys["alice"]), 403, "NotModerator")
    assert_error(modes(h, {}, key=h.keys["mod"]), 400, "NoHordeModSelected")
    r = modes(h, {"raid_mode": "on"}, key=h.keys["mod"])
    assert r.status_code == 400 and "raid_mode" in r.json()["errors"]
    r = modes(h, {"raid_mode": True, "invite_only_mode": True}, key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"raid_mode": True, "invite_only_mode": True}
    r = modes(h, {"maintenance_mode": True}, key=h.keys["root"])
    assert r.status_code == 200 and r.json() == {"maintenance_mode": True}
    h.node.restart()
    assert h.get("/status/modes", key=h.keys["mod"]).json() == {
        "maintenance_mode": True, "invite_only_mode": True, "raid_mode": True}


def test_maintenance_mode(acc):
    h = acc
    rid = h.generate(params={"steps": 10, "sampler_name": "k_euler", "n": 2})["id"]
    assert h.check(rid)["waiting"] == 2
    assert modes(h, {"maintenance_mode": True}, key=h.keys["root"]).status_code == 200
    r = h.post("/generate/async", {"prompt": "a cat", "models": ["Deliberate"]},
               key=h.keys["alice"])
    assert_error(r, 400, "MaintenanceMode")
    # what waited is no longer handed out
    assert h.check(rid)["waiting"] == 0
    assert h.pop(name="worker-1")["id"] is None
    assert modes(h, {"maintenance_mode": False}, key=h.keys["root"]).status_code == 200
    h.generate()


def test_invite_only_mode(acc):
    h = acc
    assert h.pop(owner="bob", name="before-invites")["id"] is None
    assert modes(h, {"invite_only_mode": True}, key=h.keys["mod"]).status_code == 200
    # a known worker goes on; a new one needs an invitation
    assert h.pop(owner="bob", name="before-invites")["id"] is None
    r = h.post("/generate/pop", {"name": "new-worker", "models": ["Deliberate"]},
               key=h.keys["wally"])
    assert_error(r, 403, "WorkerInviteOnly")
    r = h.http.put(h.url + "/users/%d" % h.ids["wally"], json={"worker_invited": 1},
                   headers={"apikey": h.keys["mod"]}, timeout=30)
    assert r.status_code == 200 and r.json() == {"worker_invited": 1}
    assert h.pop(owner="wally", name="new-worker")["id"] is None
    r = h.post("/generate/pop", {"name": "second-worker", "models": ["Deliberate"]},
               key=h.keys["wally"])
    assert_error(r, 403, "WorkerInviteOnly")
    # the invitation survives a restart
    h.node.restart()
    assert h.pop(owner="wally", name="new-worker")["id"] is None
    assert modes(h, {"invite_only_mode": False}, key=h.keys["mod"]).status_code == 200
    assert h.pop(owner="wally", name="second-worker")["id"] is None


def test_raid_mode_suspects_workers_that_drop_jobs(tmp_path):
    import time
    h = AccHorde(str(tmp_path / "raid"),
                 broker={"job_ttl_s": 1, "lifecycle_interval_ms": 100,
                         "abort_limit_per_hour": 1000, "max_faults": 1000})
    try:
        assert modes(h, {"raid_mode": True}, key=h.keys["mod"]).status_code == 200
        h.generate()
        # raid mode's limit is 10 dropped jobs an hour
        for dropped in range(11):
            assert h.pop(name="dropper")["id"], dropped
            deadline = time.time() + 15
            while (h.get("/workers/name/dropper").json()["uncompleted_jobs"] < dropped + 1
                   and time.time() < deadline):
                time.sleep(0.05)
        w = h.get("/workers/name/dropper", key=h.keys["mod"]).json()
        assert w["uncompleted_jobs"] == 11
        # the horde: a TOO_MANY_JOBS_ABORTED suspicion, no maintenance (the
        # worker must not notice); paused only at 5 suspicions
        assert w["suspicious"] == 1
        assert w["paused"] is False and w["maintenance_mode"] is False
    finally:
        problems = _finish([h])
        if problems:
            pytest.fail("\n\n".join(problems))
