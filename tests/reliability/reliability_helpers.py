"""Helpers for the crash-safety and abuse tests (issue 11).

A `Horde` is one real all-in-one broker node (storage-sqlite, auth,
images-fs, kudos, broker) on a random loopback port with a few users made by
`horde-node user create`. Tests talk to it over real HTTP and read its SQLite
file directly to check what was made durable.

Counts: each test reads its repetitions from `count(name, default)`, which
`make reliability` raises through HN_RELIABILITY_SCALE (a multiplier). Each
test reports what it tried with `record(...)`: one JSON line per fault into
HN_RELIABILITY_REPORT when set (scripts turn them into docs/RELIABILITY.md).
"""
import base64
import glob
import json
import os
import re
import sqlite3
import struct
import zlib

import requests

from harness import SHARED

API = "/api/v2"
REFERENCE = os.path.join(SHARED, "data", "model-reference", "stable_diffusion.json")
REGEN = "AI Horde Worker reGen:13.0.0:https://github.com/Haidra-Org/horde-worker-reGen"
WEBP_1PX = base64.b64encode(
    base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")).decode()
START_KUDOS = 100000


def count(default):
    """A repetition count: `default` times HN_RELIABILITY_SCALE (at least 1)."""
    scale = float(os.environ.get("HN_RELIABILITY_SCALE", "1"))
    return max(1, int(round(default * scale)))


def record(fault, tries, result, ok=True):
    """One row of docs/RELIABILITY.md: what was tried, how often, what happened."""
    path = os.environ.get("HN_RELIABILITY_REPORT")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"fault": fault, "tries": tries, "result": result, "ok": ok}) + "\n")


def png(width, height):
    """A valid grey PNG built by hand."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def png_header(width, height):
    """A PNG signature and IHDR only: claims a size, holds no pixels."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body
            + struct.pack(">I", zlib.crc32(body)))


class Horde:
    """A broker + kudos node and its users; restartable over the same data dir."""

    USERS = [("admin", ["--admin"]), ("alice", ["--kudos", str(START_KUDOS), "--trusted"]),
             ("wendy", ["--trusted"]), ("wally", [])]

    def __init__(self, make_node, broker=None, kudos=None, node=None, images=None, env=None,
                 requesters=0):
        bconf = {"max_untrusted_workers": 1000}
        kconf = {}
        if os.path.exists(REFERENCE):
            bconf["model_reference"] = REFERENCE
            kconf["model_reference"] = REFERENCE
        bconf.update(broker or {})
        kconf.update(kudos or {})
        # the most parallel requests auth allows a user: load tests queue many
        plugins = {"broker": bconf, "kudos": kconf, "auth": {"concurrency": 500}}
        if images:
            plugins["images-fs"] = images
        self.node = make_node(load=["storage-sqlite", "auth", "images-fs", "kudos", "broker"],
                              providers={"storage": "sqlite", "images": "fs"},
                              plugins=plugins, node=node, start=False, env=env)
        self.keys, self.ids = {}, {}
        self.requesters = ["req%d" % i for i in range(requesters)]
        users = self.USERS + [(n, ["--kudos", str(START_KUDOS), "--trusted"])
                              for n in self.requesters]
        for name, flags in users:
            r = self.node.command("user", "create", name, *flags)
            assert r.returncode == 0, r.stdout + r.stderr
            self.keys[name] = r.stdout.strip().splitlines()[-1]
            m = re.search(r"%s#(\d+)" % name, r.stdout)
            assert m, r.stdout
            self.ids[name] = int(m.group(1))
        self.node.start()
        self.http = requests.Session()

    def url(self, path):
        return self.node.url + API + path

    def restart_after_kill(self):
        self.node.kill()
        self.http.close()
        self.http = requests.Session()
        self.node.start()

    # ---- HTTP ----
    def post(self, path, body=None, key=None, timeout=30, session=None, **kw):
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["apikey"] = key
        s = session or self.http
        return s.post(self.url(path), json=body, headers=headers, timeout=timeout, **kw)

    def get(self, path, key=None, timeout=30, **kw):
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["apikey"] = key
        return self.http.get(self.url(path), headers=headers, timeout=timeout, **kw)

    def generate_body(self, **body):
        body.setdefault("prompt", "a red square")
        body.setdefault("params", {"steps": 10})
        body.setdefault("models", ["Deliberate"])
        return body

    def pop(self, owner, name, session=None, **extra):
        body = {"name": name, "models": ["Deliberate"], "bridge_agent": REGEN, "nsfw": True,
                "max_pixels": 4194304}
        body.update(extra)
        r = self.post("/generate/pop", body, key=self.keys[owner], session=session)
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, owner, job_id, **extra):
        body = {"id": job_id, "generation": WEBP_1PX, "state": "ok", "seed": 1}
        body.update(extra)
        return self.post("/generate/submit", body, key=self.keys[owner])

    # ---- the data on disk ----
    def db_path(self):
        found = [p for p in glob.glob(os.path.join(self.node.data_dir, "**", "*"), recursive=True)
                 if os.path.isfile(p) and _is_sqlite(p)]
        assert len(found) == 1, found
        return found[0]

    def db(self):
        """A read-only connection (WAL readers do not disturb the node)."""
        return sqlite3.connect("file:%s?mode=ro" % self.db_path(), uri=True, timeout=30)

    def data_files(self):
        """Every file under the data dir with its bytes (for secret scans)."""
        out = {}
        for p in glob.glob(os.path.join(self.node.data_dir, "**", "*"), recursive=True):
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    out[p] = f.read()
        return out


def _is_sqlite(path):
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def assert_envelope(r, status, rc=None):
    """A horde error: the status and a JSON {"message", "rc"} envelope."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "rc" in body, body
    if rc is not None:
        assert body["rc"] == rc, body
    return body
