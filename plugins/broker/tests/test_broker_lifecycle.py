"""The job lifecycle (§4.4): stale jobs aborted and re-queued, requests that
fault after repeated faults, expiry, workers put in maintenance for dropping
jobs, and what survives kill -9."""
import time

import requests

from hordetest import assert_error, make_horde  # noqa: F401

FAST = {"job_ttl_s": 1, "lifecycle_interval_ms": 100}


def wait_for(fn, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.05)


def test_stale_job_is_aborted_and_requeued(make_horde):
    h = make_horde(broker=FAST)
    rid = h.generate()["id"]
    slow = h.pop(name="slow-worker")
    assert slow["id"] and slow["ttl"] == 1
    assert wait_for(lambda: h.check(rid)["restarted"] == 1)
    c = h.check(rid)
    assert c["processing"] == 0 and c["waiting"] == 1 and not c["done"]
    # in cluster mode the re-queued image is claimable once the fault is
    # committed (an instant after `restarted` shows): a worker pops again
    fresh = wait_for(lambda: (lambda j: j if j["id"] else None)(
        h.pop(name="fast-worker", owner="wendy")))
    assert fresh and fresh["id"] != slow["id"]
    # the slow worker is too late
    r = h.post("/generate/submit", {"id": slow["id"], "generation": "R2", "seed": 1},
               key=h.keys["wally"])
    assert_error(r, 400, "AbortedGen")
    # ... unless it reports the fault itself
    assert h.submit(slow["id"], state="faulted")["reward"] == 0
    h.submit(fresh["id"], owner="wendy")
    st = h.status(rid)
    assert st["done"] and st["finished"] == 1 and st["restarted"] == 1
    assert len(st["generations"]) == 1 and st["generations"][0]["id"] == fresh["id"]
    w = h.get("/workers/name/slow-worker").json()
    assert w["uncompleted_jobs"] == 1


def test_worker_fault_requeues_then_request_faults(make_horde):
    h = make_horde()
    rid = h.generate()["id"]
    for attempt in range(3):
        job = h.pop(name="faulty")
        assert job["id"], attempt
        assert h.submit(job["id"], state="faulted")["reward"] == 0
        c = h.check(rid)
        assert c["restarted"] == attempt + 1
        if attempt < 2:
            assert c["waiting"] == 1 and not c["faulted"]
    # more than 2 faulted jobs: the request faults and is done
    c = h.check(rid)
    assert c["faulted"] and c["done"] and c["waiting"] == 0
    assert h.pop(name="faulty")["id"] is None


def test_expired_request_is_gone(make_horde):
    h = make_horde(broker={"request_expiry_s": 1, "lifecycle_interval_ms": 100})
    rid = h.generate()["id"]
    other = h.generate(models=["m-expire"])["id"]
    job = h.pop(name="expiry-worker", models=["m-expire"])
    assert job["id"]
    time.sleep(0.4)
    assert h.get("/generate/check/" + rid).status_code == 200

    def gone(i):
        return h.get("/generate/check/" + i).status_code == 404

    assert wait_for(lambda: gone(rid) and gone(other))
    assert_error(h.get("/generate/status/" + rid), 404, "RequestNotFound")
    # a job of an expired request cannot be submitted any more
    r = h.post("/generate/submit", {"id": job["id"], "generation": "R2", "seed": 1},
               key=h.keys["wally"])
    assert_error(r, 404, "InvalidJobID")


def test_worker_dropping_jobs_goes_into_maintenance(make_horde):
    h = make_horde(broker=dict(FAST, abort_limit_per_hour=1))
    for _ in range(2):
        rid = h.generate(models=["m-drop"])["id"]
        job = h.pop(name="dropper", models=["m-drop"])
        assert job["id"]
        assert wait_for(lambda: h.check(rid)["restarted"] >= 1)
        h.pop(name="rescuer", owner="wendy", models=["m-drop"])
    w = h.get("/workers/name/dropper").json()
    assert w["maintenance_mode"] is True
    h.generate(models=["m-drop"])
    r = h.post("/generate/pop", {"name": "dropper", "models": ["m-drop"]}, key=h.keys["wally"])
    body = assert_error(r, 403, "WorkerMaintenance")
    assert "dropping too many jobs" in body["message"]
    # its owner's own requests are still served
    h.generate(user="wally", models=["m-drop"])
    assert h.pop(name="dropper", models=["m-drop"])["id"]


def test_accepted_requests_and_jobs_survive_kill_9(make_horde):
    h = make_horde()
    first = h.generate(models=["m-durable"], params={"n": 2, "steps": 10})["id"]
    second = h.generate(models=["m-durable"])["id"]
    h.node.kill()
    h.node.start()
    assert h.check(first)["waiting"] == 2 and h.check(second)["waiting"] == 1
    job = h.pop(name="durable-worker", models=["m-durable"])
    assert job["id"]
    worker_id = h.get("/workers/name/durable-worker").json()["id"]
    h.node.kill()
    h.node.start()
    # the job handed out before the crash is still known and can be submitted
    assert h.check(first)["processing"] == 1
    assert h.submit(job["id"])["reward"] > 0
    assert h.get("/workers/name/durable-worker").json()["id"] == worker_id
    # the queue order survived too: the rest of `first`, then `second`
    job2 = h.pop(name="durable-worker", models=["m-durable"])
    h.submit(job2["id"])
    assert h.check(first)["done"]
    h.node.stop()
    h.node.start()
    st = h.status(first)
    assert st["finished"] == 2 and len(st["generations"]) == 2
    img = st["generations"][0]["img"]
    assert requests.get(img, timeout=10).status_code == 200
