"""The whole image flow against a real node: async, check, pop, upload or
inline submit, status with r2 true and false, cancel, batching, seeds, dry
runs and warnings."""
import base64
import uuid

import requests

from hordetest import (OWN_AGENT, REGEN, WEBP_1PX, assert_error, b64, horde,  # noqa: F401
                       make_horde)

STATUS_KEYS = {"finished", "processing", "restarted", "waiting", "done", "faulted",
               "wait_time", "queue_position", "kudos", "is_possible"}


def test_cycle_with_r2_upload(horde):
    req = horde.generate(prompt="a red square###blurry", nsfw=False, r2=True,
                         params={"steps": 10, "sampler_name": "k_euler", "width": 576,
                                 "height": 512})
    rid = req["id"]
    assert uuid.UUID(rid)
    assert isinstance(req["kudos"], (int, float))
    check = horde.check(rid)
    assert set(check) == STATUS_KEYS
    assert check["waiting"] == 1 and check["processing"] == 0 and not check["done"]
    assert check["queue_position"] >= 1

    job = horde.pop(name="r2-worker")
    assert job["id"] and job["ids"] == [job["id"]]
    assert job["model"] == "Deliberate"
    assert job["skipped"] == {}
    p = job["payload"]
    assert p["prompt"] == "a red square###blurry"          # the worker splits the negative
    assert p["ddim_steps"] == 10 and "steps" not in p and "n" not in p
    assert p["n_iter"] == 1
    assert p["width"] == 576 and p["height"] == 512
    assert p["cfg_scale"] == 5.0 and p["karras"] is True  # server defaults (§7.1)
    assert p["use_nsfw_censor"] is True                    # nsfw false + censor_nsfw default
    assert isinstance(p["seed"], str) and int(p["seed"]) < 2**32
    for k in ("tiling", "hires_fix", "transparent", "image_is_control", "return_control_map"):
        assert p[k] is False
    assert job["ttl"] == 150
    assert job["source_image"] is None and job["source_processing"] == "img2img"
    assert job["r2_uploads"] == [job["r2_upload"]]
    assert horde.check(rid)["processing"] == 1

    put = requests.put(job["r2_upload"], data=WEBP_1PX, timeout=10)
    assert put.status_code in (200, 201, 204), put.text
    reward = horde.submit(job["id"], generation="R2", seed=1234)
    assert reward["reward"] > 0

    st = horde.status(rid)
    assert STATUS_KEYS <= set(st)
    assert st["done"] and st["finished"] == 1 and st["waiting"] == 0
    assert st["queue_position"] == 0 and st["shared"] is False
    assert len(st["generations"]) == 1
    g = st["generations"][0]
    assert g["id"] == job["id"] and g["seed"] == "1234" and g["model"] == "Deliberate"
    assert g["state"] == "ok" and g["censored"] is False and g["gen_metadata"] == []
    assert g["worker_name"] == "r2-worker" and uuid.UUID(g["worker_id"])
    img = requests.get(g["img"], timeout=10)
    assert img.status_code == 200 and img.content == WEBP_1PX
    assert horde.check(rid)["done"] is True


def test_cycle_inline_without_r2(horde):
    rid = horde.generate(r2=False, prompt="inline please", models=["m-inline"])["id"]
    job = horde.pop(name="inline-worker", models=["m-inline"])
    assert job["payload"]["prompt"] == "inline please"
    assert job["r2_upload"] is None and job["r2_uploads"] is None
    horde.submit(job["id"], gen_metadata=[{"type": "censorship", "value": "nsfw"}])
    st = horde.status(rid)
    g = st["generations"][0]
    assert base64.b64decode(g["img"]) == WEBP_1PX
    assert g["censored"] is True
    assert g["gen_metadata"] == [{"type": "censorship", "value": "nsfw"}]


def test_batching_amount_and_seed_variation(horde):
    rid = horde.generate(params={"n": 4, "steps": 10, "seed": "100", "seed_variation": 3,
                                 "width": 512, "height": 512}, models=["m-batch"])["id"]
    # max_pixels/3.5*amount/(w*h) = 4194304/3.5*3/262144 = 13.7 -> capped by amount 3
    job = horde.pop(name="batch-worker", amount=3, models=["m-batch"])
    assert len(job["ids"]) == 3 and job["payload"]["n_iter"] == 3
    # seed + variation * n before the pop
    assert job["payload"]["seed"] == str(100 + 3 * 4)
    c = horde.check(rid)
    assert c["processing"] == 3 and c["waiting"] == 1
    job2 = horde.pop(name="batch-worker", amount=3, models=["m-batch"])
    assert len(job2["ids"]) == 1 and job2["payload"]["seed"] == str(100 + 3 * 1)
    for jid in job["ids"] + job2["ids"]:
        horde.submit(jid)
    st = horde.status(rid)
    assert st["done"] and st["finished"] == 4 and len(st["generations"]) == 4


def test_text_seed_and_defaults(horde):
    horde.generate(params={"seed": "abc"}, models=["m-seed"])
    job = horde.pop(name="seed-worker", models=["m-seed"])
    assert job["payload"]["seed"] == str(int.from_bytes(b"abc", "little"))
    assert job["payload"]["sampler_name"] == "k_euler_a"
    assert job["payload"]["ddim_steps"] == 30
    assert job["payload"]["width"] == 512 and job["payload"]["height"] == 512
    horde.submit(job["id"])


def test_cancel_returns_status_before_cancelling(horde):
    rid = horde.generate(params={"n": 3, "steps": 10}, models=["m-cancel"])["id"]
    job = horde.pop(name="cancel-worker", models=["m-cancel"])
    r = horde.delete("/generate/status/" + rid)
    assert r.status_code == 200, r.text
    before = r.json()
    assert before["waiting"] == 2 and before["processing"] == 1 and not before["done"]
    assert before["generations"] == []
    after = horde.check(rid)
    assert after["waiting"] == 0 and after["processing"] == 1 and not after["done"]
    # nobody gets the cancelled images
    assert horde.pop(name="cancel-worker", models=["m-cancel"])["id"] is None
    # the job in flight may still be submitted and settles normally
    assert horde.submit(job["id"])["reward"] > 0
    st = horde.status(rid)
    assert st["done"] and st["finished"] == 1


def test_dry_run_answers_200_with_kudos(horde):
    r = horde.post("/generate/async", {"prompt": "x", "dry_run": True,
                                       "params": {"n": 2}}, key=horde.keys["alice"])
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"kudos"} and r.json()["kudos"] > 0


def test_no_worker_message_then_possible(make_horde):
    h = make_horde()
    first = h.generate(models=["Deliberate"])
    assert first["warnings"][0]["code"] == "NoAvailableWorker"
    assert "No available workers" in first["message"]
    assert h.check(first["id"])["is_possible"] is False
    job = h.pop(name="late-worker")
    assert job["id"] and h.check(first["id"])["processing"] == 1
    second = h.generate(models=["Deliberate"])
    assert "message" not in second and "warnings" not in second


def test_model_reference_warnings(horde):
    r = horde.generate(models=["Flux.1-Schnell fp8 (Compact)"],
                       params={"steps": 30, "cfg_scale": 7, "sampler_name": "k_euler_a"})
    codes = {w["code"] for w in r["warnings"]}
    assert {"StepsTooMany", "CfgScaleTooLarge", "SamplerMismatch"} <= codes


def test_queue_position_counts_requests_ahead(make_horde):
    h = make_horde()
    ids = [h.generate(models=["ModelNobodyServes"])["id"] for _ in range(3)]
    positions = [h.check(i)["queue_position"] for i in ids]
    assert positions == sorted(positions) and positions[0] >= 1 and positions[-1] == positions[0] + 2


def test_own_bridge_gets_source_images_as_urls(horde):
    src = b64(WEBP_1PX)
    rid = horde.generate(source_image=src, models=["m-src"])["id"]
    job = horde.pop(name="own-bridge", bridge_agent=OWN_AGENT, models=["m-src"])
    assert job["source_image"].startswith("http")
    assert requests.get(job["source_image"], timeout=10).content == WEBP_1PX
    horde.submit(job["id"])
    rid2 = horde.generate(source_image=src, models=["m-src"], r2=False)["id"]
    # a bridge without r2_source gets the image inline
    job = horde.pop(name="old-bridge", bridge_agent="AI Horde Worker:13:x", models=["m-src"])
    assert job["id"] is not None and base64.b64decode(job["source_image"]) == WEBP_1PX
    horde.submit(job["id"])
    assert horde.status(rid)["done"] and horde.status(rid2)["done"]
