"""The worker end to end over real HTTP, on the tiny golden SD1 model: an
all-in-one node (broker + worker + cuda-sd, local horde), a worker process
serving a separate broker (remote horde), a worker killed mid-job, a graceful
stop, and jobs that fail."""
import base64
import os
import stat

import pytest
import requests

from worker_helpers import (command, gray_png, BROKER_PLUGINS, BROKER_PROVIDERS, check, create_user, generate,
                            install_golden_model, wait_done, wait_for, webp_size, worker_keys,
                            worker_status)

MODEL = "tiny_sd1"
BUILD = os.path.abspath(os.environ.get("HN_BUILD") or
                        os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))
EMU_LIB = os.path.join(BUILD, "lib", "libhn-sd-cuda-emu.so")


def all_in_one(make_node, shared, worker=None, broker=None, extra_files=None, env=None):
    node = make_node(load=BROKER_PLUGINS + ["cuda-sd", "worker"],
                     providers=dict(BROKER_PROVIDERS, horde="local"),
                     plugins={"broker": broker or {}, "cuda-sd": {"models_dir": "models"},
                              "worker": worker_keys(**(worker or {}))},
                     start=False, env=env)
    install_golden_model(node.data_dir, shared, MODEL)
    for name, data in (extra_files or {}).items():
        with open(os.path.join(node.data_dir, "models", name), "wb") as f:
            f.write(data)
    return node.start()


def broker_node(make_node, broker=None):
    node = make_node(load=BROKER_PLUGINS, providers=BROKER_PROVIDERS,
                     plugins={"broker": broker or {}}, start=False)
    key = create_user(node, "dreamer", "--trusted")
    node.start()
    return node, key


def remote_worker(make_node, shared, broker, key, name, **keys):
    node = make_node(load=["cuda-sd", "worker"], providers={"horde": "remote"},
                     plugins={"cuda-sd": {"models_dir": "models"},
                              "worker": worker_keys(api_key=key, horde_url=broker.url + "/api/",
                                                    dreamer_name=name, **keys)},
                     start=False)
    install_golden_model(node.data_dir, shared, MODEL)
    return node.start()


def cli_image(node, out_name, prompt, negative, seed, steps, cfg, sampler, width, height, n=1):
    """What `horde-node sd txt2img` makes for the same settings: WebP bytes,
    one per image of the batch."""
    out = os.path.join(node.workdir, out_name + ".webp")
    args = ["sd", "txt2img", "--model", os.path.join(node.data_dir, "models", MODEL + ".safetensors"),
            "--prompt", prompt, "--negative", negative, "--seed", str(seed), "--steps", str(steps),
            "--cfg", str(cfg), "--sampler", sampler, "--karras", "--width", str(width),
            "--height", str(height), "--n", str(n), "-o", out]
    r = command(node, *args)
    assert r.returncode == 0, r.stderr
    if n == 1:
        paths = [out]
    else:
        paths = [os.path.join(node.workdir, "%s-%d.webp" % (out_name, i + 1)) for i in range(n)]
    result = []
    for p in paths:
        with open(p, "rb") as f:
            result.append(f.read())
    return result


def request_body(prompt, negative, seed, steps, cfg, sampler, width, height, n=1, r2=False):
    return {"prompt": prompt + "###" + negative, "models": [MODEL], "r2": r2,
            "params": {"width": width, "height": height, "steps": steps, "cfg_scale": cfg,
                       "sampler_name": sampler, "karras": True, "seed": str(seed), "n": n}}


def image_bytes(gen):
    img = gen["img"]
    if img.startswith("http://") or img.startswith("https://"):
        r = requests.get(img, timeout=10)
        assert r.status_code == 200
        return r.content
    return base64.b64decode(img)


def batch_index(gen):
    for m in gen.get("gen_metadata") or []:
        if m.get("type") == "batch_index":
            return int(m["ref"])
    return 0


def test_all_in_one_turns_requests_into_the_cli_images(make_node, shared_dir):
    node = all_in_one(make_node, shared_dir, worker={"max_batch": 2})
    cases = [
        # prompt, negative, seed, steps, cfg, sampler, w, h, n, r2
        ("a lighthouse at dusk", "blurry", 1234, 5, 7.5, "k_euler_a", 64, 128, 1, False),
        ("a red fox", "", 99, 4, 5.0, "k_dpmpp_2m", 128, 64, 1, True),
        ("two cats", "dogs", 77, 4, 6.0, "k_euler", 64, 64, 2, True),
    ]
    rids = [generate(node, request_body(*c)) for c in cases]
    for c, rid in zip(cases, rids):
        prompt, negative, seed, steps, cfg, sampler, w, h, n, r2 = c
        st = wait_done(node, rid)
        assert st["finished"] == n and not st["faulted"] and st["restarted"] == 0, st
        gens = sorted(st["generations"], key=batch_index)
        assert len(gens) == n
        want = cli_image(node, "cli_%d" % seed, prompt, negative, seed, steps, cfg, sampler, w, h, n)
        for i, g in enumerate(gens):
            assert g["state"] == "ok" and g["model"] == MODEL and g["seed"] == str(seed), g
            data = image_bytes(g)
            assert webp_size(data) == (w, h)
            # same seed and settings as the command line: the same image, and
            # the same encoder settings make it the same bytes
            assert data == want[i], "image %d of request %s differs from the CLI's" % (i, rid)
        if n > 1:
            assert [batch_index(g) for g in gens] == list(range(n))

    s = worker_status(node)
    assert s["horde"] == "local" and s["state"] == "running", s
    assert s["images_done"] == 4 and s["jobs"]["faulted"] == 0, s
    assert s["models_offered"] == [MODEL]
    assert s["kudos"] > 0 and s["megapixelsteps"] > 0
    assert s["bridge_agent"].startswith("horde-node:")
    workers = requests.get(node.url + "/api/v2/workers", timeout=10).json()
    assert [w["name"] for w in workers] == [s["name"]]
    assert workers[0]["bridge_agent"] == s["bridge_agent"]
    assert MODEL in workers[0]["models"]

    # the node-owner user was made on first start; its key is kept privately
    # and used again after a restart
    key_file = os.path.join(node.data_dir, "worker", "owner.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with open(key_file) as f:
        key = f.read().strip()
    assert requests.get(node.url + "/api/v2/find_user", headers={"apikey": key},
                        timeout=10).status_code == 200
    node.restart()
    rid = generate(node, request_body("again", "", 5, 3, 7.0, "k_euler", 64, 64))
    assert wait_done(node, rid)["finished"] == 1
    with open(key_file) as f:
        assert f.read().strip() == key
    assert len(requests.get(node.url + "/api/v2/workers", timeout=10).json()) == 1

    # an operator resets the owner's key: the worker is refused once, makes
    # itself a new key and goes on
    r = command(node, "user", "key-reset", "node-owner")
    assert r.returncode == 0, r.stderr
    def renewed():
        with open(key_file) as f:
            return f.read().strip() != key
    wait_for(renewed, 30, 0.1, "a new owner key")
    rid = generate(node, request_body("after reset", "", 6, 3, 7.0, "k_euler", 64, 64))
    assert wait_done(node, rid)["finished"] == 1


@pytest.mark.skipif(not os.path.exists(EMU_LIB), reason="the emulated CUDA library is not built")
def test_worker_generates_on_the_cuda_backend(make_node, shared_dir):
    """With a GPU answering the probe (here the emulated CUDA library, a real
    one with HN_SD_CUDA_LIB unset on a GPU machine) the worker's generator
    runs on the CUDA backend with the plugin's default switches (graphs, fp16
    activations, offload of the encoders) and gives the image the command
    line makes there."""
    gpu = {"HN_SD_CUDA_LIB": EMU_LIB}
    node = all_in_one(make_node, shared_dir, env=gpu)
    case = ("a lighthouse", "fog", 321, 2, 7.0, "k_euler", 64, 64)
    st = wait_done(node, generate(node, request_body(*case)), timeout=600)
    assert st["finished"] == 1 and not st["faulted"], st
    data = image_bytes(st["generations"][0])
    assert webp_size(data) == (64, 64)
    assert "backend cuda (auto: CPU emulation of a CUDA device" in node.read_log(), \
        node.read_log()[-3000:]
    want = cli_image(node, "cli_cuda", *case)
    assert data == want[0], "the worker's CUDA image differs from the CLI's"


def test_source_images_reach_the_generator(make_node, shared_dir):
    """img2img and inpainting: the source and mask go through the broker (as
    URLs the worker fetches from the node) and give the CLI's image."""
    node = make_node(load=BROKER_PLUGINS + ["cuda-sd", "worker"],
                     providers=dict(BROKER_PROVIDERS, horde="local"),
                     plugins={"cuda-sd": {"models_dir": "models"}, "worker": worker_keys()},
                     start=False)
    install_golden_model(node.data_dir, shared_dir, MODEL)
    # the broker gives in/outpainting to inpainting models only (by name
    # without a model reference)
    paint_model = "tiny_sd1_inpainting"
    install_golden_model(node.data_dir, shared_dir, paint_model, "tiny_sd1_inpaint")
    node.start()
    src = cli_image(node, "src", "a house", "", 8, 3, 7.0, "k_euler", 64, 64)[0]
    src_path = os.path.join(node.workdir, "src.webp")
    mask = gray_png(64, 64, lambda x, y: 255 if 16 <= x < 48 and 16 <= y < 48 else 0)
    mask_path = os.path.join(node.workdir, "mask.png")
    with open(mask_path, "wb") as f:
        f.write(mask)
    base = request_body("a house in snow", "", 31, 4, 7.0, "k_euler", 64, 64)
    img2img = dict(base, source_image=base64.b64encode(src).decode(), source_processing="img2img")
    img2img["params"] = dict(base["params"], denoising_strength=0.6)
    paint = dict(base, source_image=base64.b64encode(src).decode(), models=[paint_model],
                 source_mask=base64.b64encode(mask).decode(), source_processing="inpainting")
    paint["params"] = dict(base["params"], denoising_strength=1.0)
    common = ["--prompt", "a house in snow", "--seed", "31", "--steps", "4", "--cfg", "7.0",
              "--sampler", "k_euler", "--karras", "--width", "64", "--height", "64",
              "--init", src_path]
    for body, model, extra, name in (
            (img2img, MODEL, ["img2img", "--denoise", "0.6"], "i2i"),
            (paint, paint_model, ["inpaint", "--mask", mask_path, "--denoise", "1.0"], "paint")):
        st = wait_done(node, generate(node, body))
        assert st["finished"] == 1, st
        g = st["generations"][0]
        assert g["model"] == model and not g.get("gen_metadata"), g  # the sources were read
        out = os.path.join(node.workdir, name + ".webp")
        r = command(node, "sd", extra[0], "--model",
                    os.path.join(node.data_dir, "models", model + ".safetensors"), *common,
                    *extra[1:], "-o", out)
        assert r.returncode == 0, r.stderr
        with open(out, "rb") as f:
            assert image_bytes(g) == f.read(), name


def test_remote_worker_serves_a_separate_broker(make_node, shared_dir):
    broker, key = broker_node(make_node)
    worker = remote_worker(make_node, shared_dir, broker, key, "remote-dreamer")
    rid = generate(broker, request_body("a castle", "fog", 4321, 4, 7.5, "k_euler", 64, 64, r2=True))
    st = wait_done(broker, rid)
    assert st["finished"] == 1 and st["generations"][0]["worker_name"] == "remote-dreamer"
    data = image_bytes(st["generations"][0])
    assert webp_size(data) == (64, 64)
    assert data == cli_image(worker, "cli", "a castle", "fog", 4321, 4, 7.5, "k_euler", 64, 64)[0]
    workers = requests.get(broker.url + "/api/v2/workers", timeout=10).json()
    assert len(workers) == 1 and workers[0]["name"] == "remote-dreamer"
    assert workers[0]["bridge_agent"].startswith("horde-node:")
    assert workers[0]["max_pixels"] == 8 * 8 * 64 * 64  # max_power 8
    s = worker_status(worker)
    assert s["horde"] == "remote" and s["horde_url"] == broker.url + "/api/"
    assert s["jobs"]["done"] == 1 and s["images_done"] == 1


def test_worker_waits_for_a_horde_that_is_down(make_node, shared_dir):
    from harness import free_port
    broker = make_node(load=BROKER_PLUGINS, providers=BROKER_PROVIDERS, plugins={"broker": {}},
                       start=False)
    key = create_user(broker, "dreamer", "--trusted")
    broker.port = free_port()  # known before it listens
    w = remote_worker(make_node, shared_dir, broker, key, "patient", stats_output_frequency=1)
    s = wait_for(lambda: (lambda s: s if s["state"] == "horde_unreachable" else None)(worker_status(w)),
                 30, 0.05, "the worker to notice the horde is down")
    assert "cannot reach the horde" in s["last_error"], s
    broker.start()
    # it keeps trying (back-off capped at max_backoff_s = 2 s) and gets the job
    st = wait_done(broker, generate(broker, request_body("late", "", 3, 3, 7.0, "k_euler", 64, 64)))
    assert st["finished"] == 1 and st["generations"][0]["worker_name"] == "patient"
    s = worker_status(w)
    assert s["state"] == "running" and "last_error" not in s, s
    # the status line in the log
    wait_for(lambda: "patient: running | 1 jobs done" in w.read_log(), 10, 0.1, "a status line")


def running_step(node):
    """The first running job of a worker once it has made a sampler step and
    has at least three more to make (so it is surely mid-job)."""
    jobs = worker_status(node)["current_jobs"]
    return jobs[0] if jobs and 1 <= jobs[0]["step"] <= jobs[0]["total_steps"] - 3 else None


def test_killed_worker_job_is_requeued_and_finished_by_another(make_node, shared_dir):
    # every job may take 12 s (the stale ones are re-queued after that; C
    # must make the slow one within it even on a loaded machine), more than
    # one abort an hour puts a worker in maintenance
    broker, key = broker_node(make_node, {"job_ttl_s": 12, "lifecycle_interval_ms": 200,
                                          "abort_limit_per_hour": 1})
    a = remote_worker(make_node, shared_dir, broker, key, "dreamer-a", queue_size=1)
    slow = generate(broker, request_body("slow one", "", 11, 20, 7.5, "k_euler", 192, 128))
    quick = generate(broker, request_body("quick one", "", 12, 3, 7.5, "k_euler", 64, 64))
    # A is generating the slow job and holds the quick one in its queue
    wait_for(lambda: running_step(a) and worker_status(a)["jobs"]["queued"] == 1, 60, 0.05,
             "worker A mid-job")
    a.kill()
    # both jobs go stale after their TTL and are handed out again
    wait_for(lambda: check(broker, slow)["restarted"] >= 1 and check(broker, quick)["restarted"] >= 1,
             30, 0.1, "the stale jobs to be re-queued")
    # two aborted jobs put A's worker in maintenance: under that name (same
    # owner) a worker is refused and says so
    b = remote_worker(make_node, shared_dir, broker, key, "dreamer-a")
    s = wait_for(lambda: (lambda s: s if s["state"] == "maintenance" else None)(worker_status(b)),
                 30, 0.1, "worker B to see maintenance mode")
    assert "maintenance" in s.get("horde_message", "").lower(), s
    assert s["jobs"]["popped"] == 0
    b.stop()
    c = remote_worker(make_node, shared_dir, broker, key, "dreamer-c")
    for rid in (slow, quick):
        st = wait_done(broker, rid, 120)
        assert st["finished"] == 1 and st["restarted"] >= 1 and not st["faulted"], st
        assert st["generations"][0]["worker_name"] == "dreamer-c"
    assert worker_status(c)["images_done"] == 2


def test_graceful_stop_finishes_the_running_job(make_node, shared_dir):
    broker, key = broker_node(make_node)
    w = remote_worker(make_node, shared_dir, broker, key, "dreamer-stop")
    rid = generate(broker, request_body("finish me", "", 21, 16, 7.5, "k_euler", 192, 192))
    wait_for(lambda: running_step(w), 60, 0.05, "the worker mid-job")
    assert w.stop() == 0  # SIGTERM: finish what runs, pop nothing new
    st = check(broker, rid)
    assert st["done"] and st["finished"] == 1 and st["restarted"] == 0, st
    assert "finishing 1 job" in w.read_log()


def broken_safetensors():
    """A well-formed safetensors file that is no Stable Diffusion checkpoint."""
    header = b'{"weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    return len(header).to_bytes(8, "little") + header + b"\0" * 8


def test_failed_jobs_are_faulted_at_once_and_bad_models_skipped(make_node, shared_dir):
    node = all_in_one(make_node, shared_dir, extra_files={
        "broken.safetensors": broken_safetensors(),
        "garbage.ckpt": b"this is not a checkpoint at all",
    })
    s = wait_for(lambda: (lambda s: s if s["state"] == "running" else None)(worker_status(node)),
                 30, 0.05, "the worker to run")
    models = {m["name"]: m for m in s["models"]}
    # the garbage file is refused when the folder is read, never offered
    assert models["garbage"]["state"] == "failed" and "garbage.ckpt" in models["garbage"]["error"]
    assert sorted(s["models_offered"]) == ["broken", MODEL]

    # the horde accepts a model once a worker offered it
    def accepted():
        r = requests.post(node.url + "/api/v2/generate/async", headers={"apikey": "0000000000"},
                          json=request_body("x", "", 1, 3, 7.0, "k_euler", 64, 64) | {"models": ["broken"]},
                          timeout=10)
        return r.json()["id"] if r.status_code == 202 else None
    rid = wait_for(accepted, 10, 0.1, "the broker to know model broken")
    # the job fails to load and is reported faulted now, not after its TTL
    # (150 s at least): the broker re-queues the image at once
    wait_for(lambda: check(node, rid)["restarted"] >= 1, 15, 0.1, "the faulted job to be re-queued")
    s = worker_status(node)
    models = {m["name"]: m for m in s["models"]}
    assert models["broken"]["state"] == "failed" and models["broken"]["error"], models
    assert s["models_offered"] == [MODEL] and s["jobs"]["faulted"] >= 1
    # the worker goes on with the good model
    ok = generate(node, request_body("fine", "", 2, 3, 7.0, "k_euler", 64, 64))
    assert wait_done(node, ok)["finished"] == 1
    assert check(node, rid)["finished"] == 0
