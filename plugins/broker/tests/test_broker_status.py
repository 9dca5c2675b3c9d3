"""GET /workers, /workers/{id}, /workers/name/{name}, /status/heartbeat,
/status/models, /status/models/{name}, /status/performance, and the broker's
fields in /users/{id} (hook user_details)."""
import uuid

from hordetest import REGEN, assert_error, make_horde  # noqa: F401

WORKER_KEYS = {"name", "id", "type", "requests_fulfilled", "uncompleted_jobs", "kudos_rewards",
               "kudos_details", "performance", "threads", "uptime", "maintenance_mode", "info",
               "trusted", "flagged", "online", "team", "bridge_agent", "nsfw", "models",
               "max_pixels", "megapixelsteps_generated", "img2img", "painting",
               "post-processing", "controlnet", "sdxl_controlnet", "lora"}


def test_workers_endpoints(make_horde):
    h = make_horde(broker={"worker_online_s": 2})
    assert h.get("/workers").json() == []
    h.generate(models=["Deliberate"], nsfw=False)
    job = h.pop(name="Visible Worker", threads=3, nsfw=False, allow_lora=True)
    h.submit(job["id"])
    workers = h.get("/workers").json()
    assert len(workers) == 1
    w = workers[0]
    assert WORKER_KEYS <= set(w)
    assert "ipaddr" not in w and "owner" not in w  # public view
    assert w["name"] == "Visible Worker" and w["type"] == "image" and w["online"] is True
    assert w["threads"] == 3 and w["nsfw"] is False and w["models"] == ["Deliberate"]
    assert w["requests_fulfilled"] == 1 and w["bridge_agent"] == REGEN
    assert w["lora"] is True and w["max_pixels"] == 4194304
    assert w["performance"].endswith("megapixelsteps per second")
    assert h.get("/workers/" + w["id"]).json()["name"] == "Visible Worker"
    assert h.get("/workers/name/Visible Worker").json()["id"] == w["id"]
    assert h.get("/workers", params={"name": "visible worker"}).json()[0]["id"] == w["id"]
    assert h.get("/workers", params={"type": "text"}).json() == []
    # a moderator sees more
    mod_view = h.get("/workers/" + w["id"], key=h.keys["mod"]).json()
    assert "ipaddr" in mod_view and "owner" in mod_view and "paused" in mod_view
    assert_error(h.get("/workers/" + str(uuid.uuid4())), 404, "WorkerNotFound")
    assert_error(h.get("/workers/not-a-uuid"), 404, "WorkerNotFound")
    assert_error(h.get("/workers/name/nobody"), 404, "WorkerNotFound")
    # the list shows only workers seen recently; the single view shows any
    import time
    time.sleep(2.2)
    assert h.get("/workers").json() == []
    assert h.get("/workers/" + w["id"]).json()["online"] is False


def test_status_endpoints(make_horde):
    h = make_horde()
    hb = h.get("/status/heartbeat").json()
    assert hb["message"] == "OK" and "version" in hb
    h.generate(models=["Deliberate"], params={"n": 2, "width": 512, "height": 512, "steps": 10})
    h.generate(models=["NobodyServesThis"])
    h.generate(models=["AlbedoBase XL (SDXL)"])   # known, nobody serves it
    job = h.pop(name="stats-worker", models=["Deliberate", "MyCustomModel"], threads=2)
    models = {m["name"]: m for m in h.get("/status/models").json()}
    assert set(models) == {"Deliberate", "MyCustomModel", "AlbedoBase XL (SDXL)"}
    d = models["Deliberate"]
    assert d["count"] == 2 and d["type"] == "image"
    assert d["queued"] == 512 * 512 * 10 and d["jobs"] == 2  # one waiting, one processing
    assert models["AlbedoBase XL (SDXL)"]["count"] == 0 and models["AlbedoBase XL (SDXL)"]["eta"] == 10000
    known = {m["name"] for m in h.get("/status/models", params={"model_state": "known"}).json()}
    custom = {m["name"] for m in h.get("/status/models", params={"model_state": "custom"}).json()}
    assert known == {"Deliberate", "AlbedoBase XL (SDXL)"} and custom == {"MyCustomModel"}
    assert {m["name"] for m in h.get("/status/models", params={"min_count": 1}).json()} == \
        {"Deliberate", "MyCustomModel"}
    assert h.get("/status/models", params={"type": "text"}).json() == []
    assert_error(h.get("/status/models", params={"model_state": "weird"}), 400)
    one = h.get("/status/models/Deliberate").json()
    assert len(one) == 1 and one[0]["name"] == "Deliberate"
    assert h.get("/status/models/NoSuchModelAnywhere").json() == []
    perf = h.get("/status/performance").json()
    # queued: the waiting images (1 + 1 + 1) plus the one in flight
    assert perf["queued_requests"] == 4
    assert perf["worker_count"] == 1 and perf["thread_count"] == 2
    assert perf["past_minute_megapixelsteps"] == 0
    h.submit(job["id"])
    perf = h.get("/status/performance").json()
    assert perf["past_minute_megapixelsteps"] > 0 and perf["queued_requests"] == 3


def test_user_details_get_broker_fields(make_horde):
    h = make_horde()
    h.generate(user="wally", models=["m-user"], params={"n": 2})
    job = h.pop(name="users-worker", models=["m-user"])
    h.submit(job["id"])
    wid = h.get("/workers/name/users-worker").json()["id"]
    uid = h.ids["wally"]
    public = h.get("/users/%d" % uid).json()
    assert public["worker_count"] == 1
    assert public["records"]["fulfillment"]["image"] == 1
    assert public["records"]["request"]["image"] == 2
    assert public["records"]["contribution"]["megapixelsteps"] > 0
    own = h.get("/find_user", key=h.keys["wally"]).json()
    assert own["worker_ids"] == [wid]
    assert len(own["active_generations"]["image"]) == 1


def test_worker_put(make_horde):
    h = make_horde()
    h.pop(name="put-worker", models=["m-put"])
    h.pop(owner="wendy", name="other-worker", models=["m-put"])
    wid = h.get("/workers/name/put-worker").json()["id"]

    def put(body, user="wally"):
        return h.http.put(h.url + "/workers/" + wid, json=body, timeout=10,
                          headers={"apikey": h.keys[user]})

    assert_error(put({}), 400, "NoWorkerModSelected")
    assert_error(put({"info": "mine now"}, user="wendy"), 403, "NotOwner")
    assert_error(put({"paused": True}), 403, "NotModerator")
    assert_error(put({"name": "other-worker"}), 400, "WorkerNameAlreadyExists")
    assert_error(put({"name": "abc"}), 400)  # 5..100 characters
    assert_error(h.http.put(h.url + "/workers/" + str(uuid.uuid4()), json={"info": "x"},
                            headers={"apikey": h.keys["wally"]}, timeout=10),
                 404, "WorkerNotFound")
    r = put({"info": "a fine worker", "name": "renamed-worker", "maintenance": True,
             "maintenance_msg": "back soon"})
    assert r.status_code == 200, r.text
    assert r.json() == {"info": "a fine worker", "name": "renamed-worker", "maintenance": True}
    w = h.get("/workers/" + wid).json()
    assert w["name"] == "renamed-worker" and w["info"] == "a fine worker"
    assert w["maintenance_mode"] is True
    assert_error(h.get("/workers/name/put-worker"), 404, "WorkerNotFound")
    h.generate(models=["m-put"])
    r = h.post("/generate/pop", {"name": "renamed-worker", "models": ["m-put"]},
               key=h.keys["wally"])
    assert assert_error(r, 403, "WorkerMaintenance")["message"] == "back soon"
    assert put({"maintenance": False}).json() == {"maintenance": False}
    job = h.pop(name="renamed-worker", models=["m-put"])
    assert job["id"]
    h.submit(job["id"])
    # a moderator pauses it: it gets only its owner's requests now
    r = put({"paused": True}, user="mod")
    assert r.status_code == 200 and r.json() == {"paused": True}
    h.generate(models=["m-put"])
    assert h.pop(name="renamed-worker", models=["m-put"])["id"] is None
    h.generate(user="wally", models=["m-put"])
    job = h.pop(name="renamed-worker", models=["m-put"])
    assert job["id"] and job["payload"]["prompt"]
    h.submit(job["id"])
    h.node.stop()
    h.node.start()
    w = h.get("/workers/" + wid, key=h.keys["mod"]).json()
    assert w["paused"] is True and w["name"] == "renamed-worker"
