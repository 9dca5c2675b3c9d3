"""Helpers for the ratings plugin's black-box tests: a node with storage-sqlite,
auth, images-fs, broker, kudos and ratings on a random loopback port, users
made with `horde-node user create`, datasets imported with `horde-node ratings
import`, and thin wrappers over the ratings API.

Imported by the test_*.py files next to it (pytest puts this folder on
sys.path). Node and node_config come from tests/harness.py.
"""
import base64
import json
import os
import re
import struct
import time
import zlib

import requests

V1 = "/api/v1"
V2 = "/api/v2"
REGEN = "AI Horde Worker reGen:9.0.1:https://github.com/Haidra-Org/horde-worker-reGen"
WEBP_1PX = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")

USERS = [  # in this order: admin is user 1
    ("admin", ["--admin"]),
    ("alice", ["--kudos", "1000"]),
    ("bob", ["--kudos", "1000"]),
    ("carol", []),
    ("mod", ["--moderator"]),
    ("wally", ["--trusted"]),   # a worker owner
]


def png(width, height, shade):
    """A valid grey PNG (a vertical gradient); `shade` makes each image's bytes differ."""
    raw = b"".join(b"\x00" + bytes([(shade + y) % 256]) * width for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def make_dataset(folder, entries, jsonl=True):
    """Writes images + metadata. entries: dicts with at least "file"; the
    image bytes are made from the entry's index. Returns {file: bytes}."""
    os.makedirs(folder, exist_ok=True)
    files = {}
    for i, e in enumerate(entries):
        data = png(e.get("width", 8), e.get("height", 8), 20 + 10 * i)
        with open(os.path.join(folder, e["file"]), "wb") as f:
            f.write(data)
        files[e["file"]] = data
    if jsonl:
        with open(os.path.join(folder, "metadata.jsonl"), "w") as f:
            for e in entries:
                f.write(json.dumps(e) + "\n")
    else:
        with open(os.path.join(folder, "metadata.json"), "w") as f:
            json.dump(entries, f)
    return files


class Ratings:
    """A node with the ratings plugin, its users and request helpers."""

    def __init__(self, make_node, tmp_path, ratings=None, datasets=(), broker=True, pg_dsn=None):
        conf = {"captcha_every": 0, "min_rating_s": 0}
        conf.update(ratings or {})
        storage = "storage-pg" if pg_dsn else "storage-sqlite"
        load = [storage, "auth", "images-fs"] + (["broker"] if broker else []) + [
            "kudos", "ratings"]
        plugins = {"ratings": conf, "kudos": {}}
        if pg_dsn:
            plugins["storage-pg"] = {"dsn": pg_dsn}
        if broker:
            plugins["broker"] = {"max_untrusted_workers": 1000}
        self.node = make_node(load=load, providers={"storage": "postgres" if pg_dsn else "sqlite",
                                                    "images": "fs"},
                              plugins=plugins, start=False)
        self.tmp = tmp_path
        self.keys, self.ids = {}, {}
        for name, flags in USERS:
            r = self.node.command("user", "create", name, *flags)
            assert r.returncode == 0, r.stderr
            self.keys[name] = r.stdout.strip().splitlines()[-1]
            m = re.search(r"%s#(\d+)" % name, r.stdout)
            self.ids[name] = int(m.group(1))
        self.files = {}
        for ds in datasets:
            self.import_dataset(**ds)
        self.node.start()
        self.http = requests.Session()

    def import_dataset(self, name, entries, captcha=False, jsonl=True, expect_rc=0):
        folder = str(self.tmp / ("ds-" + name))
        self.files.update(make_dataset(folder, entries, jsonl))
        args = ["ratings", "import", folder, "--dataset", name]
        if captcha:
            args.append("--captcha")
        r = self.node.command(*args)
        assert r.returncode == expect_rc, (r.stdout, r.stderr)
        return r

    # ---- raw calls ----
    def headers(self, user, extra=None):
        h = {"Client-Agent": "ratings-tests:1.0:test"}
        if user is not None:
            h["apikey"] = self.keys[user] if user in self.keys else user
        h.update(extra or {})
        return h

    def get(self, path, user=None, **kw):
        return self.http.get(self.node.url + path, headers=self.headers(user), timeout=30, **kw)

    def post(self, path, body=None, user=None, **kw):
        return self.http.post(self.node.url + path, json=body, headers=self.headers(user),
                              timeout=30, **kw)

    # ---- ratings API ----
    def pop(self, user, path="", expect=200):
        r = self.get(V1 + "/rating/new" + path, user)
        assert r.status_code == expect, r.text
        return r.json()

    def rate(self, user, image_id, rating, artifacts=None, expect=201):
        body = {"rating": rating}
        if artifacts is not None:
            body["artifacts"] = artifacts
        r = self.post(V1 + "/rating/" + image_id, body, user)
        assert r.status_code == expect, r.text
        return r.json()

    def datasets(self):
        r = self.get(V1 + "/datasets")
        assert r.status_code == 200, r.text
        return {d["name"]: d for d in r.json()}

    # ---- kudos ----
    def details(self, name):
        r = self.http.get(self.node.url + V2 + "/users/%d" % self.ids[name], timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def kudos(self, name):
        return self.details(name)["kudos"]

    def awarded(self, name):
        return self.details(name).get("kudos_details", {}).get("awarded", 0)

    # ---- the image flow (broker) ----
    def generate(self, user, expect=202, **body):
        body.setdefault("prompt", "a watercolor fox")
        body.setdefault("params", {"steps": 10, "sampler_name": "k_euler", "n": 1})
        body.setdefault("models", ["Deliberate"])
        r = self.post(V2 + "/generate/async", body, user)
        assert r.status_code == expect, r.text
        return r.json()

    def work(self, owner="wally", name="worker-1", seed=42):
        """Pops one job and submits an image for it; returns the job id or None."""
        r = self.post(V2 + "/generate/pop", {"name": name, "models": ["Deliberate"],
                                             "bridge_agent": REGEN, "max_pixels": 4194304,
                                             "nsfw": True}, owner)
        assert r.status_code == 200, r.text
        job = r.json().get("id")
        if not job:
            return None
        r = self.post(V2 + "/generate/submit", {"id": job, "generation": base64.b64encode(
            png(8, 8, seed)).decode(), "seed": seed, "state": "ok"}, owner)
        assert r.status_code == 200, r.text
        return job

    def status(self, rid):
        r = self.get(V2 + "/generate/status/" + rid)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_pool(self, dataset, count, timeout=10.0):
        """Shared images enter the pool just after the submit: poll briefly."""
        deadline = time.time() + timeout
        while True:
            got = self.datasets().get(dataset, {}).get("image_count", 0)
            if got >= count or time.time() > deadline:
                return got
            time.sleep(0.05)


def assert_error(r, status, rc=None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "rc" in body, body
    if rc is not None:
        assert body["rc"] == rc, body
    return body


def entries(n, prefix="img", **extra):
    out = []
    for i in range(n):
        e = {"file": "%s%d.png" % (prefix, i), "prompt": "%s prompt %d" % (prefix, i),
             "model": "model-a" if i % 2 == 0 else "model-b", "seed": 1000 + i,
             "sampler": "k_euler", "width": 8, "height": 8, "steps": 20, "cfg_scale": 7.0}
        e.update(extra)
        out.append(e)
    return out
