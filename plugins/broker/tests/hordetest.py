"""Helpers for the broker's black-box tests: a node with storage-sqlite, auth,
images-fs and broker on a random loopback port, a few users made with
`horde-node user create`, and thin wrappers over the horde API.

Imported by the test_*.py files next to it (pytest puts this folder on
sys.path). Node and node_config come from tests/harness.py.
"""
import base64
import os
import struct
import sys
import zlib

import pytest
import requests

from harness import ROOT, SHARED, Node, node_config

API = "/api/v2"
REFERENCE = os.path.join(SHARED, "data", "model-reference", "stable_diffusion.json")
REGEN = "AI Horde Worker reGen:9.0.1:https://github.com/Haidra-Org/horde-worker-reGen"
OWN_AGENT = "horde-node:0.1.0:https://example.invalid"

# a 1x1 lossless WebP
WEBP_1PX = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def png(width, height, alpha):
    """A valid PNG of the given size (grey, or grey+alpha), built by hand."""
    color = 4 if alpha else 0
    channels = 2 if alpha else 1
    raw = b"".join(b"\x00" + b"\x80" * (width * channels) for _ in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def png_header(width, height):
    """Only a PNG signature and IHDR: enough to claim a size, nothing to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body
            + struct.pack(">I", zlib.crc32(body)))


def b64(data):
    return base64.b64encode(data).decode()


def storage_setup(dsn=None):
    """(storage plugins to load, providers, plugin configs) for the run's
    storage: `pytest --storage=postgres` (or HN_TEST_STORAGE=postgres) gives
    storage-pg + images-db on a fresh database of the run's PostgreSQL
    (tests/pg.py), or on dsn when given; the default is storage-sqlite +
    images-fs."""
    if dsn is None and os.environ.get("HN_TEST_STORAGE", "sqlite") != "postgres":
        return ["storage-sqlite"], {"storage": "sqlite", "images": "fs"}, {}
    if dsn is None:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import pg
        dsn = pg.shared_server().create_database()
    return ["storage-pg"], {"storage": "postgres", "images": "db"}, {"storage-pg": {"dsn": dsn}}


def images_plugin(dsn=None):
    if dsn is None and os.environ.get("HN_TEST_STORAGE", "sqlite") != "postgres":
        return "images-fs"
    return "images-db"


class Horde:
    """A running broker node plus users and request helpers."""

    USERS = {
        "alice": ["--trusted"],      # requester, trusted
        "bob": [],                   # requester, untrusted
        "wally": [],                 # worker owner
        "wendy": ["--trusted"],      # worker owner, trusted
        "mod": ["--moderator"],
    }

    def __init__(self, workdir, broker=None, reference=True, node=None, auth=None, extra_load=()):
        # tests make many workers per user; the horde's limit of 3 has its own test
        conf = {"max_untrusted_workers": 1000}
        if reference:
            conf["model_reference"] = REFERENCE
        conf.update(broker or {})
        load, providers, plugins = storage_setup()
        if providers["storage"] == "postgres" and os.environ.get("HN_TEST_STORAGE_CLUSTER"):
            conf.setdefault("cluster", True)  # `pytest --storage=postgres-cluster`
        plugins.update({"broker": conf, "auth": auth or {}})
        text = node_config(load=load + ["auth", images_plugin(), "broker"] + list(extra_load),
                           providers=providers, plugins=plugins, node=node)
        os.makedirs(workdir, exist_ok=True)
        self.node = Node(workdir, text)
        self.keys = {}
        self.ids = {}
        for name, flags in self.USERS.items():
            r = self.node.command("user", "create", name, *flags, check=True)
            self.keys[name] = r.stdout.strip().splitlines()[-1]
            for word in r.stdout.split():
                if word.startswith(name + "#"):
                    self.ids[name] = int(word.split("#")[1].rstrip(",.():"))
        self.node.start()
        self.http = requests.Session()

    @property
    def url(self):
        return self.node.url + API

    def stop(self):
        self.http.close()
        return self.node.stop()

    # ---- raw calls ----
    def get(self, path, key=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["apikey"] = key
        return self.http.get(self.url + path, headers=headers, timeout=30, **kw)

    def post(self, path, body=None, key=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["apikey"] = key
        return self.http.post(self.url + path, json=body, headers=headers, timeout=30, **kw)

    def delete(self, path, **kw):
        return self.http.delete(self.url + path, timeout=30, **kw)

    # ---- the horde flow ----
    def generate(self, user="alice", prompt="a red square", expect=202, **body):
        body = dict(body)
        body.setdefault("params", {"steps": 10, "sampler_name": "k_euler"})
        body.setdefault("models", ["Deliberate"])
        body["prompt"] = prompt
        r = self.post("/generate/async", body, key=self.keys[user])
        assert r.status_code == expect, r.text
        return r.json()

    def pop(self, owner="wally", name="worker-1", models=("Deliberate",), expect=200, **body):
        body = dict(body)
        body.setdefault("bridge_agent", REGEN)
        body.setdefault("max_pixels", 4194304)
        body["name"] = name
        body["models"] = list(models)
        r = self.post("/generate/pop", body, key=self.keys[owner])
        assert r.status_code == expect, r.text
        return r.json()

    def submit(self, job_id, owner="wally", generation=None, expect=200, seed=42, **body):
        body = dict(body)
        body["id"] = job_id
        body["generation"] = b64(WEBP_1PX) if generation is None else generation
        body["seed"] = seed
        r = self.post("/generate/submit", body, key=self.keys[owner])
        assert r.status_code == expect, r.text
        return r.json()

    def check(self, rid):
        r = self.get("/generate/check/" + rid)
        assert r.status_code == 200, r.text
        return r.json()

    def status(self, rid):
        r = self.get("/generate/status/" + rid)
        assert r.status_code == 200, r.text
        return r.json()


def assert_error(r, status, rc=None):
    """A horde error: the status, a JSON envelope with message and rc."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "rc" in body, body
    if rc is not None:
        assert body["rc"] == rc, body
    return body


def _finish(hordes):
    problems = []
    for h in hordes:
        try:
            rc = h.stop()
            if rc not in (None, 0, -9):
                problems.append("node exited with %s:\n%s" % (rc, h.node.read_log()[-4000:]))
        except AssertionError as e:
            problems.append(str(e))
        alerts = h.node.alerts()
        if alerts:
            problems.append("sanitizer lines in the node log:\n" + "\n".join(alerts[:20]))
    return problems


@pytest.fixture(scope="module")
def horde(tmp_path_factory):
    """One broker node shared by the tests of a module (default config)."""
    h = Horde(str(tmp_path_factory.mktemp("horde")))
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def make_horde(tmp_path):
    """Factory for a fresh node with its own broker settings."""
    made = []

    def factory(broker=None, **kw):
        h = Horde(str(tmp_path / ("h%d" % len(made))), broker=broker, **kw)
        made.append(h)
        return h

    yield factory
    problems = _finish(made)
    if problems:
        pytest.fail("\n\n".join(problems))
