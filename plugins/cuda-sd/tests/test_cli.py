"""Black-box tests of `horde-node sd ...` (the cuda-sd plugin's commands).

The binary is $HN_BUILD/horde-node (default ./build); the reference data is
$HN_SHARED (default ../shared). Every golden pipeline of
golden/samplers/index.json is regenerated with `sd txt2img --conventions
kdiffusion` on its tiny model and compared with the golden PNG within one
level per channel (golden/README.md §5). PNGs are read with a small reader
built on zlib + struct, so no imaging package is needed.
"""
import json
import os
import re
import struct
import subprocess
import zlib

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.path.abspath(os.environ.get("HN_BUILD") or os.path.join(ROOT, "build"))
SHARED = os.path.abspath(os.environ.get("HN_SHARED") or os.path.join(ROOT, "..", "shared"))
GOLDEN = os.path.join(SHARED, "golden")
VOCAB = os.path.join(SHARED, "models", "clip", "bpe_simple_vocab_16e6.txt.gz")
BINARY = os.path.join(BUILD, "horde-node")

pytestmark = pytest.mark.skipif(
    not os.access(BINARY, os.X_OK), reason="horde-node is not built (" + BINARY + ")"
)


def load_index():
    with open(os.path.join(GOLDEN, "samplers", "index.json")) as f:
        return json.load(f)


def model_file(kind):
    return os.path.join(GOLDEN, "models", "tiny_%s.f16.safetensors" % kind)


# The default backend is "auto" (CUDA when a usable GPU answers the probe).
# The golden comparisons hold the CPU backend to one level per channel, so by
# default the probe is pointed at a library that does not exist: the
# generation stays on the CPU even on a machine with a GPU.
NO_GPU = {"HN_SD_CUDA_LIB": "/nonexistent/libhn-sd-cuda.so"}
EMU_LIB = os.path.join(BUILD, "lib", "libhn-sd-cuda-emu.so")


def run_sd(tmp_path, *args, timeout=300, env=None, config=None):
    """horde-node --data-dir TMP sd ARGS (default config unless config= a file)."""
    cmd = [BINARY] + (["-c", str(config)] if config else []) + \
        ["--data-dir", str(tmp_path / "data"), "sd"] + [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.update(NO_GPU if env is None else env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


# ---- a minimal PNG reader (8-bit RGB/RGBA/gray, non-interlaced) ----------------------


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path + ": not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
        pos += 12 + length
    width, height, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0, "only 8-bit non-interlaced PNGs"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    p = 0
    for y in range(height):
        ftype = raw[p]
        line = bytearray(raw[p + 1 : p + 1 + stride])
        p += 1 + stride
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


# ---- txt2img against the golden pipelines --------------------------------------------


def pipeline_cases():
    return [pytest.param(c, id=c["file"].rsplit(".", 1)[0]) for c in load_index()["pipelines"]]


def sampler_flags(case):
    sampler = "DDIM" if case["sampler"] == "ddim" else case["sampler"]
    flags = ["--sampler", sampler]
    if case["schedule"] == "karras":
        flags.append("--karras")
    else:  # "discrete" (k-diffusion's default list); DDIM has its own timesteps
        flags.append("--no-karras")
    return flags


@pytest.mark.parametrize("case", pipeline_cases())
def test_txt2img_reproduces_golden_png(case, tmp_path):
    out = tmp_path / "out.png"
    h, w = case["image_hw"]
    r = run_sd(
        tmp_path,
        "txt2img",
        "--model", model_file(case["model"]),
        "--vocab", VOCAB,
        "--conventions", "kdiffusion",
        "--prompt", case["prompt"],
        "--negative", case["negative_prompt"],
        "--seed", case["seed"],
        "--steps", case["steps"],
        "--cfg", case["cfg_scale"],
        "--width", w,
        "--height", h,
        *sampler_flags(case),
        "-o", out,
    )
    assert r.returncode == 0, r.stderr
    gw, gh, gc, want = read_png(os.path.join(GOLDEN, "samplers", case["png"]))
    ow, oh, oc, got = read_png(str(out))
    assert (ow, oh, oc) == (gw, gh, gc) == (w, h, 3)
    diffs = [abs(a - b) for a, b in zip(got, want)]
    worst = max(diffs)
    assert worst <= 1, "%s: %d values differ by more than one level (max %d)" % (
        case["png"], sum(d > 1 for d in diffs), worst)


def test_txt2img_every_tiny_model_and_n_images(tmp_path):
    """The three tiny models (the inpainting one included) make images; --n 2
    writes OUT-1 and OUT-2, which differ; the default conventions run."""
    for kind in ("sd1", "sd2", "sd1_inpaint"):
        out = tmp_path / ("%s.png" % kind)
        r = run_sd(tmp_path, "txt2img", "--model", model_file(kind), "--vocab", VOCAB,
                   "--prompt", "a red fox", "--seed", "7", "--steps", "3",
                   "--width", "64", "--height", "72", "--n", "2", "-o", out)
        assert r.returncode == 0, r.stderr
        images = []
        for i in (1, 2):
            path = tmp_path / ("%s-%d.png" % (kind, i))
            w, h, c, px = read_png(str(path))
            assert (w, h, c) == (64, 72, 3)
            images.append(px)
        assert images[0] != images[1], "the two images of one batch must differ"
        assert not out.exists()


def test_txt2img_webp_and_seed_text(tmp_path):
    out = tmp_path / "x.webp"
    r = run_sd(tmp_path, "txt2img", "--model", model_file("sd1"), "--vocab", VOCAB,
               "--prompt", "fox", "--seed", "not a number", "--steps", "2",
               "--width", "64", "--height", "64", "--sampler", "k_dpmpp_2m", "-o", out)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def test_img2img_and_inpaint(tmp_path):
    init = os.path.join(GOLDEN, "samplers", load_index()["pipelines"][0]["png"])
    out = tmp_path / "i2i.png"
    r = run_sd(tmp_path, "img2img", "--model", model_file("sd1"), "--vocab", VOCAB,
               "--prompt", "fox", "--init", init, "--denoise", "0.5", "--steps", "4",
               "--width", "96", "--height", "96", "--seed", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    assert read_png(str(out))[:3] == (96, 96, 3)
    out2 = tmp_path / "paint.png"
    r = run_sd(tmp_path, "inpaint", "--model", model_file("sd1_inpaint"), "--vocab", VOCAB,
               "--prompt", "fox", "--init", init, "--mask", init, "--steps", "3",
               "--width", "96", "--height", "96", "--seed", "3", "-o", out2)
    assert r.returncode == 0, r.stderr
    assert read_png(str(out2))[:3] == (96, 96, 3)


def test_usage_and_errors(tmp_path):
    r = run_sd(tmp_path, "txt2img", "--prompt", "x", "-o", tmp_path / "a.png")
    assert r.returncode == 2 and "--model" in r.stderr
    r = run_sd(tmp_path, "txt2img", "--model", model_file("sd1"), "--prompt", "x",
               "--sampler", "k_nonsense", "-o", tmp_path / "a.png")
    assert r.returncode == 2 and "k_nonsense" in r.stderr
    missing = tmp_path / "missing.safetensors"
    r = run_sd(tmp_path, "txt2img", "--model", missing, "--vocab", VOCAB, "--prompt", "x",
               "-o", tmp_path / "a.png")
    assert r.returncode == 1 and str(missing) in r.stderr
    r = run_sd(tmp_path, "frobnicate")
    assert r.returncode == 2


# ---- info and tokenize ---------------------------------------------------------------


def test_info_reports_family_and_prediction(tmp_path):
    expect = {"sd1": ("SD1", "eps"), "sd2": ("SD2", "v"), "sd1_inpaint": ("SD1", "eps")}
    for kind, (family, prediction) in expect.items():
        r = run_sd(tmp_path, "info", "--model", model_file(kind))
        assert r.returncode == 0, r.stderr
        assert family in r.stdout and prediction in r.stdout, r.stdout
        assert "F16" in r.stdout
    r = run_sd(tmp_path, "info", "--model", model_file("sd1_inpaint"))
    assert "inpaint" in r.stdout.lower()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    r = run_sd(tmp_path, "info", "--model", bad)
    assert r.returncode == 1 and str(bad) in r.stderr


# ---- the backend: auto = cuda when a usable GPU is found --------------------------------


def test_backend_auto_falls_back_to_cpu_without_a_gpu(tmp_path):
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"))
    assert r.returncode == 0, r.stderr
    assert "backend: cpu (auto: no usable GPU" in r.stdout, r.stdout
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"), "--backend", "cuda")
    assert "backend: cuda (explicit)" in r.stdout, r.stdout
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"), "--backend", "tpu")
    assert r.returncode == 2 and "tpu" in r.stderr
    r = run_sd(tmp_path, "txt2img", "--model", model_file("sd1"), "--prompt", "x",
               "--backend", "tpu", "-o", tmp_path / "a.png")
    assert r.returncode == 2 and "tpu" in r.stderr


@pytest.mark.skipif(not os.path.exists(EMU_LIB), reason="the emulated CUDA library is not built")
def test_backend_auto_picks_cuda_when_a_gpu_answers(tmp_path):
    # the emulated CUDA library stands in for a GPU: the probe finds "a device"
    gpu = {"HN_SD_CUDA_LIB": EMU_LIB}
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"), env=gpu)
    assert r.returncode == 0, r.stderr
    assert "backend: cuda (auto: CPU emulation of a CUDA device, compute 9.0" in r.stdout, \
        r.stdout
    # an explicit --backend wins over the probe
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"), "--backend", "cpu", env=gpu)
    assert "backend: cpu (explicit)" in r.stdout, r.stdout
    # so does the config key
    conf = tmp_path / "node.conf"
    conf.write_text('load = [ "cuda-sd" ];\nplugins: { cuda-sd: { backend = "cpu"; }; };\n')
    r = run_sd(tmp_path, "info", "--model", model_file("sd1"), env=gpu, config=conf)
    assert r.returncode == 0, r.stderr
    assert "backend: cpu (explicit)" in r.stdout, r.stdout
    # a generation really runs there, and says so
    out = tmp_path / "gpu.png"
    r = run_sd(tmp_path, "txt2img", "--model", model_file("sd1"), "--vocab", VOCAB,
               "--prompt", "a cat", "--seed", "5", "--steps", "2", "--width", "64",
               "--height", "64", "-o", out, env=gpu, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "backend: cuda (auto:" in r.stderr, r.stderr
    cpu_out = tmp_path / "cpu.png"
    r = run_sd(tmp_path, "txt2img", "--model", model_file("sd1"), "--vocab", VOCAB,
               "--prompt", "a cat", "--seed", "5", "--steps", "2", "--width", "64",
               "--height", "64", "-o", cpu_out)
    assert r.returncode == 0 and "backend: cpu (auto: no usable GPU" in r.stderr, r.stderr
    w1, h1, c1, px1 = read_png(str(out))
    w2, h2, c2, px2 = read_png(str(cpu_out))
    assert (w1, h1) == (w2, h2) == (64, 64)
    # fp16 GEMMs: close to the CPU image, not identical
    assert max(abs(a - b) for a, b in zip(px1, px2)) <= 24


def test_config_keys_of_the_model_cache(tmp_path):
    conf = tmp_path / "node.conf"
    conf.write_text('load = [ "cuda-sd" ];\n'
                    'plugins: { cuda-sd: { vram_budget_mb = 4096; models_in_ram = 3; }; };\n')
    r = subprocess.run([BINARY, "-t", "-c", str(conf), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'backend = "auto"' in r.stdout and "vram_budget_mb = 4096" in r.stdout, r.stdout
    assert "models_in_ram = 3" in r.stdout, r.stdout
    # the GPU defaults measured on an H100 (docs/BENCHMARKS.md run 6)
    assert "cuda_graphs = true" in r.stdout and "cuda_f16_activations = true" in r.stdout
    assert "cuda_offload = 1" in r.stdout
    assert "vae_tile_px = 512" in r.stdout and "vae_tile_above_pixels = 1048576" in r.stdout
    for bad, why in (("vae_tile_px = 100", "not a multiple of 8"),
                     ("vae_tile_px = 32", "vae_tile_px"),
                     ("vae_tile_above_pixels = 0", "-1 for never")):
        conf.write_text('load = [ "cuda-sd" ];\nplugins: { cuda-sd: { %s; }; };\n' % bad)
        r = subprocess.run([BINARY, "-t", "-c", str(conf), "--data-dir", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and why in r.stderr, (bad, r.stderr)
    conf.write_text('load = [ "cuda-sd" ];\nplugins: { cuda-sd: { models_in_ram = 99; }; };\n')
    r = subprocess.run([BINARY, "-t", "-c", str(conf), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "models_in_ram" in r.stderr, r.stderr
    conf.write_text('load = [ "cuda-sd" ];\nplugins: { cuda-sd: { backend = "tpu"; }; };\n')
    r = subprocess.run([BINARY, "-t", "-c", str(conf), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "auto, cpu or cuda" in r.stderr, r.stderr


def test_config_vae_tiles_reach_the_cli(tmp_path):
    """`horde-node sd` decodes as the node's config says: vae_tile_px and
    vae_tile_above_pixels tile a small image."""
    whole, tiled = tmp_path / "whole.png", tmp_path / "tiled.png"
    args = ("txt2img", "--model", model_file("sd1"), "--vocab", VOCAB, "--prompt", "a red fox",
            "--seed", "7", "--steps", "2", "--width", "128", "--height", "128")
    r = run_sd(tmp_path, *args, "-o", whole)
    assert r.returncode == 0 and "vae: decoded in" not in r.stderr, r.stderr
    conf = tmp_path / "node.conf"
    conf.write_text('load = [ "cuda-sd" ];\n'
                    'plugins: { cuda-sd: { vae_tile_px = 64; vae_tile_above_pixels = 1; }; };\n')
    r = run_sd(tmp_path, *args, "-o", tiled, config=conf)
    assert r.returncode == 0, r.stderr
    assert re.search(r"vae: decoded in [2-9]\d* tiles \(size\)", r.stderr), r.stderr
    wa, ha, _, a = read_png(str(whole))
    wb, hb, _, b = read_png(str(tiled))
    assert (wa, ha) == (wb, hb) == (128, 128)
    # each tile is decoded alone (its own GroupNorm statistics): not the
    # whole decode's pixels; how close they are is test_cuda_engine's
    # test_vae_tiled_close_to_whole
    assert a != b


def test_tokenize_matches_golden(tmp_path):
    with open(os.path.join(GOLDEN, "tokenizer", "clip_tokenizer.json")) as f:
        cases = json.load(f)["cases"]
    # every case would start one process each; a spread of them suffices
    for case in cases[:: max(1, len(cases) // 12)]:
        for family, key in (("sd1", "sd1_input_ids_77"), ("sd2", "sd2_input_ids_77")):
            r = run_sd(tmp_path, "tokenize", "--family", family, "--vocab", VOCAB, "--",
                       case["text"])
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout) == case[key], (family, case["text"])
