"""Pop matching (§4.2, §4.3): what a worker may take, the `skipped` counts
when it gets nothing, queue priority, and that no job is ever handed out
twice, even to workers popping at the same time."""
import threading

import pytest

from hordetest import OWN_AGENT, SHARED, WEBP_1PX, b64, horde, make_horde, png  # noqa: F401

SRC = b64(WEBP_1PX)

# (name, request body, worker pop body (no name/models), skip reason)
SKIP_CASES = [
    ("nsfw", {"nsfw": True}, {"nsfw": False}, "nsfw"),
    ("max_pixels", {"params": {"width": 1024, "height": 1024}}, {"max_pixels": 262144},
     "max_pixels"),
    ("trusted_workers", {"trusted_workers": True}, {}, "untrusted"),
    ("blacklist", {"prompt": "a Forbidden castle"}, {"blacklist": ["forbidden"]}, "blacklist"),
    ("img2img", {"source_image": SRC}, {"allow_img2img": False}, "img2img"),
    ("painting_inpainting", {"source_image": b64(png(8, 8, True)), "source_processing": "inpainting"},
     {"allow_painting": False}, "painting"),
    ("post_processing", {"params": {"post_processing": ["GFPGAN"]}},
     {"allow_post_processing": False}, "post-processing"),
    ("lora", {"params": {"loras": [{"name": "123"}]}}, {}, "lora"),
    ("controlnet", {"source_image": SRC, "params": {"control_type": "canny"}}, {}, "controlnet"),
    ("unknown_bridge_r2", {}, {"bridge_agent": "Someone's Bridge:1:x"}, "bridge_version"),
    ("old_bridge_sampler", {"params": {"sampler_name": "lcm"}},
     {"bridge_agent": "AI Horde Worker:24:x"}, "bridge_version"),
    ("old_bridge_flux_cap", {"params": {"tiling": True}},
     {"bridge_agent": "SD-WebUI Stable Horde Worker Bridge:1:x"}, "bridge_version"),
    ("step_count", {"params": {"steps": 50}}, {"limit_max_steps": True}, "step_count"),
    ("extra_slow", {}, {"extra_slow_worker": True}, "performance"),
]


@pytest.mark.parametrize("name,req,worker,reason", SKIP_CASES, ids=[c[0] for c in SKIP_CASES])
def test_skipped_reason_then_a_capable_worker(horde, name, req, worker, reason):
    model = "m-skip-" + name
    body = dict(req)
    prompt = body.pop("prompt", "a cat")
    params = dict({"steps": 10}, **body.pop("params", {}))
    rid = horde.generate(prompt=prompt, models=[model], params=params, **body)["id"]
    got = horde.pop(name="picky-" + name, models=[model], **worker)
    assert got["id"] is None, got
    assert got["skipped"][reason] == 1, got["skipped"]
    assert got["ids"] == [] and got["payload"] and got["source_processing"] == "img2img"
    for key in ("bridge_version", "untrusted", "performance", "controlnet", "post-processing",
                "lora", "nsfw", "unsafe_ip", "painting", "img2img", "worker_id", "models"):
        assert key in got["skipped"]
    # a worker that can do it (trusted owner, our own bridge, everything allowed)
    ok = horde.pop(owner="wendy", name="able-" + name, models=[model], bridge_agent=OWN_AGENT,
                   allow_lora=True, allow_controlnet=True)
    assert ok["id"], ok
    horde.submit(ok["id"], owner="wendy")
    assert horde.check(rid)["done"]


def test_models_skip_and_any_model(horde):
    rid = horde.generate(models=["m-wanted"])["id"]
    got = horde.pop(name="wrong-models", models=["m-other"])
    assert got["id"] is None and got["skipped"]["models"] >= 1
    any_model = horde.generate(models=[], prompt="anything goes")["id"]
    job = horde.pop(name="wrong-models", models=["m-other"])
    assert job["payload"]["prompt"] == "anything goes" and job["model"] == "m-other"
    horde.submit(job["id"])
    job = horde.pop(name="right-models", models=["m-wanted", "m-other"])
    assert job["model"] == "m-wanted"
    horde.submit(job["id"])
    assert horde.check(rid)["done"] and horde.check(any_model)["done"]


def test_unknown_bridge_takes_plain_jobs_only(horde):
    plain = horde.generate(models=["m-plain"], r2=False,
                           params={"karras": False, "sampler_name": "k_euler", "steps": 10})["id"]
    job = horde.pop(name="homebrew", models=["m-plain"], bridge_agent="Homebrew:1:x")
    assert job["id"] and job["r2_upload"] is None
    horde.submit(job["id"])
    assert horde.check(plain)["done"]


def test_worker_whitelist_and_blacklist(horde):
    a = horde.pop(name="target-a", models=["m-target"])
    b = horde.pop(name="target-b", models=["m-target"])
    assert a["id"] is None and b["id"] is None
    ida = horde.get("/workers/name/target-a").json()["id"]
    only_a = horde.generate(models=["m-target"], workers=[ida])["id"]
    got = horde.pop(name="target-b", models=["m-target"])
    assert got["id"] is None and got["skipped"]["worker_id"] == 1
    got = horde.pop(name="target-a", models=["m-target"])
    assert got["id"]
    horde.submit(got["id"])
    not_a = horde.generate(models=["m-target"], workers=[ida.upper()], worker_blacklist=True)["id"]
    got = horde.pop(name="target-a", models=["m-target"])
    assert got["id"] is None and got["skipped"]["worker_id"] == 1
    got = horde.pop(name="target-b", models=["m-target"])
    assert got["id"]
    horde.submit(got["id"])
    assert horde.check(only_a)["done"] and horde.check(not_a)["done"]


def test_inpainting_needs_an_inpainting_model(horde):
    rid = horde.generate(models=[], source_image=b64(png(8, 8, True)),
                         source_processing="inpainting")["id"]
    got = horde.pop(name="no-inpaint", models=["m-plain-only"])
    assert got["id"] is None and got["skipped"]["models"] >= 1
    job = horde.pop(name="inpaint", models=["m-plain-only", "stable_diffusion_inpainting"])
    assert job["model"] == "stable_diffusion_inpainting"
    assert job["source_processing"] == "inpainting" and job["source_image"]
    horde.submit(job["id"])
    assert horde.check(rid)["done"]


def test_owner_and_priority_users_first(horde):
    bobs = horde.generate(user="bob", models=["m-prio"])["id"]
    alices = horde.generate(user="alice", models=["m-prio"])["id"]
    walls = horde.generate(user="wally", models=["m-prio"])["id"]
    # the worker's owner's request first, though it came last
    job = horde.pop(name="prio-worker", models=["m-prio"])
    assert horde.check(walls)["processing"] == 1
    horde.submit(job["id"])
    # then a priority user's, before the older one of someone else
    job = horde.pop(name="prio-worker", models=["m-prio"],
                    priority_usernames=["alice#%d" % horde.ids["alice"]])
    assert horde.check(alices)["processing"] == 1
    horde.submit(job["id"])
    job = horde.pop(name="prio-worker", models=["m-prio"])
    assert horde.check(bobs)["processing"] == 1
    horde.submit(job["id"])


def test_two_workers_never_get_the_same_job(make_horde):
    h = make_horde(auth={"concurrency": 500})
    total = 60
    ids = set(h.generate(models=["m-race"], params={"steps": 10})["id"] for _ in range(total))
    popped = []
    lock = threading.Lock()
    errors = []

    def worker(i):
        import requests
        s = requests.Session()
        try:
            owner = "wally" if i % 2 else "wendy"
            while True:
                r = s.post(h.url + "/generate/pop", timeout=30,
                           headers={"apikey": h.keys[owner]},
                           json={"name": "racer-%d" % i, "models": ["m-race"], "amount": 2,
                                 "max_pixels": 1048576, "bridge_agent": OWN_AGENT})
                if r.status_code != 200:
                    errors.append(r.text)
                    return
                job = r.json()
                if not job["id"]:
                    return
                with lock:
                    popped.extend(job["ids"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(popped) == total and len(set(popped)) == total
    for rid in ids:
        c = h.check(rid)
        assert c["processing"] == 1 and c["waiting"] == 0
