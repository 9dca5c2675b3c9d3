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


def run_sd(tmp_path, *args, timeout=300):
    """horde-node --data-dir TMP sd ARGS (default config, no -c)."""
    cmd = [BINARY, "--data-dir", str(tmp_path / "data"), "sd"] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


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
