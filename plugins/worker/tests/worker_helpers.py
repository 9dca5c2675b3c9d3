"""Helpers for the worker's black-box tests: node configs, the golden tiny
model, horde requests, WebP sizes, and a small HTTP file server with Range
support that can cut a transfer short (for download tests)."""
import hashlib
import http.server
import json
import os
import shutil
import socketserver
import threading
import time

import requests

BROKER_PLUGINS = ["storage-sqlite", "auth", "images-fs", "broker"]
BROKER_PROVIDERS = {"storage": "sqlite", "images": "fs"}


def wait_for(fn, timeout=30.0, interval=0.05, what="condition"):
    """Polls fn() until it returns something truthy; returns that value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def install_golden_model(data_dir, shared, name="tiny_sd1", golden_name="tiny_sd1"):
    """Puts a tiny golden checkpoint (with its config sidecar) in
    <data>/models/ as NAME.safetensors and the CLIP vocabulary in
    <data>/models/clip/. Returns the checkpoint path."""
    models = os.path.join(data_dir, "models")
    os.makedirs(os.path.join(models, "clip"), exist_ok=True)
    golden = os.path.join(shared, "golden", "models")
    dst = os.path.join(models, name + ".safetensors")
    shutil.copyfile(os.path.join(golden, golden_name + ".f16.safetensors"), dst)
    # the tiny model's shapes are not SD1.5's: the engine reads them from the
    # sidecar config beside the checkpoint
    shutil.copyfile(os.path.join(golden, golden_name + ".yaml"),
                    os.path.join(models, name + ".yaml"))
    shutil.copyfile(os.path.join(shared, "models", "clip", "bpe_simple_vocab_16e6.txt.gz"),
                    os.path.join(models, "clip", "bpe_simple_vocab_16e6.txt.gz"))
    return dst


def worker_keys(**overrides):
    """The worker's section for tests: quick pops, no network for the vocab."""
    keys = {"pop_interval_ms": 100, "stats_output_frequency": 0, "clip_vocab_url": "",
            "max_backoff_s": 2, "stop_timeout_s": 15}
    keys.update(overrides)
    return keys


def command(node, *args):
    """`horde-node ... args`; fails on sanitizer reports in its output."""
    from harness import ALERTS
    r = node.command(*args)
    bad = [l for l in (r.stdout + r.stderr).splitlines() if any(a in l for a in ALERTS)]
    assert not bad, "\n".join(bad[:20])
    return r


def create_user(node, name, *flags):
    """`horde-node user create NAME`: returns the API key (last stdout line)."""
    r = command(node, "user", "create", name, *flags)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout.strip().splitlines()[-1]


def generate(node, body, apikey="0000000000"):
    r = requests.post(node.url + "/api/v2/generate/async", json=body,
                      headers={"apikey": apikey}, timeout=10)
    assert r.status_code == 202, (r.status_code, r.text)
    return r.json()["id"]


def check(node, rid):
    r = requests.get(node.url + "/api/v2/generate/check/" + rid, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_done(node, rid, timeout=60):
    def done():
        c = check(node, rid)
        return c if c["done"] else None
    wait_for(done, timeout, 0.1, "request %s to finish" % rid)
    r = requests.get(node.url + "/api/v2/generate/status/" + rid, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def worker_status(node):
    r = requests.get(node.url + "/api/v2/node/worker", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def webp_size(data):
    """(width, height) of a WebP file (lossy VP8, lossless VP8L or VP8X)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", data[:16]
    chunk = data[12:16]
    if chunk == b"VP8 ":
        assert data[23:26] == b"\x9d\x01\x2a"
        w = int.from_bytes(data[26:28], "little") & 0x3FFF
        h = int.from_bytes(data[28:30], "little") & 0x3FFF
        return w, h
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    raise AssertionError("unknown WebP chunk %r" % chunk)


def gray_png(width, height, pixel):
    """A grayscale PNG; pixel(x, y) -> 0..255."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\0" + bytes(pixel(x, y) for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """A threaded HTTP server for test downloads. files: {"/path": bytes}.
    Honours `Range: bytes=N-`. cut[path] = n makes the first GET of that path
    send its full Content-Length but close the connection after n bytes.
    `log` records (path, Range header or None, status) of every GET."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.cut = {}
        self.log = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                data = server.files.get(path)
                rng = self.headers.get("Range")
                if data is None:
                    server.log.append((path, rng, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                if start >= len(data) and rng:
                    server.log.append((path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % len(data))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                status = 206 if rng else 200
                server.log.append((path, rng, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range",
                                     "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.end_headers()
                n = server.cut.pop(path, None)
                if n is not None:
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reference_json(models):
    """A stable_diffusion.json in the public format. models: {name: {
    "files": [(file_name, sha256 or None, url or None)], "baseline": ...}}."""
    out = {}
    for name, m in models.items():
        files, downloads = [], []
        for fname, sha, url in m["files"]:
            f = {"path": fname}
            if sha:
                f["sha256sum"] = sha
            files.append(f)
            if url:
                downloads.append({"file_name": fname, "file_path": "", "file_url": url})
        out[name] = {"name": name, "baseline": m.get("baseline", "stable diffusion 1"),
                     "type": "ckpt", "inpainting": False, "nsfw": False,
                     "config": {"files": files, "download": downloads}}
    return json.dumps(out, indent=1)
