"""The moderation tables on PostgreSQL (storage-pg): filters (identity ids),
IP timeouts, image stats, styles and collections, written and read back
after a restart."""
import os
import sys

import pytest
import requests

from harness import ROOT, Node, node_config
from hordetest import REGEN, WEBP_1PX, b64

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_dsn, pg_server  # noqa: E402,F401  (fixtures)

API = "/api/v2"


@pytest.fixture
def pg_node(tmp_path, pg_dsn):
    text = node_config(load=["storage-pg", "auth", "images-fs", "broker"],
                       providers={"storage": "postgres", "images": "fs"},
                       plugins={"storage-pg": {"dsn": pg_dsn}, "auth": {},
                                "broker": {"rate_limits": False}})
    node = Node(str(tmp_path), text)
    keys = {}
    for name, flags in (("mody", ["--moderator"]), ("alice", ["--trusted"]), ("wally", [])):
        r = node.command("user", "create", name, *flags, check=True)
        keys[name] = r.stdout.strip().splitlines()[-1]
    node.start()
    yield node, keys
    rc = node.stop()
    assert rc == 0, node.read_log()[-3000:]


def call(node, method, path, body=None, key=None, headers=None):
    headers = dict(headers or {})
    if key:
        headers["apikey"] = key
    return requests.request(method, node.url + API + path, json=body, headers=headers,
                            timeout=30)


def test_moderation_on_postgresql(pg_node):
    node, keys = pg_node
    f1 = call(node, "PUT", "/filters", {"regex": "child", "filter_type": 10,
                                        "replacement": "adult"}, key=keys["mody"])
    f2 = call(node, "PUT", "/filters", {"regex": "nude", "filter_type": 20}, key=keys["mody"])
    assert f1.status_code == 200 and f2.status_code == 200, (f1.text, f2.text)
    assert f2.json()["id"] > f1.json()["id"]
    assert call(node, "PATCH", "/filters/%d" % f2.json()["id"], {"description": "pg"},
                key=keys["mody"]).ok
    assert call(node, "POST", "/operations/ipaddr", {"ipaddr": "198.51.100.0/24", "hours": 3},
                key=keys["mody"]).ok
    style = call(node, "POST", "/styles/image",
                 {"name": "pg style", "prompt": "{p}, oil###{np}", "models": ["stable_diffusion"],
                  "params": {"steps": 10, "sampler_name": "k_euler"}}, key=keys["alice"])
    assert style.status_code == 200, style.text
    sid = style.json()["id"]
    coll = call(node, "POST", "/collections", {"name": "pg coll", "styles": [sid]},
                key=keys["alice"])
    assert coll.status_code == 200, coll.text
    # one image through the whole flow, styled and filtered
    r = call(node, "POST", "/generate/async", {"prompt": "a nude child", "style": sid},
             key=keys["alice"])
    assert r.status_code == 202, r.text
    job = call(node, "POST", "/generate/pop", {"name": "pg-w", "models": ["stable_diffusion"],
                                               "bridge_agent": REGEN}, key=keys["wally"]).json()
    assert job["payload"]["prompt"].startswith("a nude adult, oil###child, infant")
    assert call(node, "POST", "/generate/submit", {"id": job["id"], "generation": b64(WEBP_1PX),
                                                   "seed": 1}, key=keys["wally"]).ok
    node.restart()
    filters = call(node, "GET", "/filters", key=keys["mody"]).json()
    assert [f["regex"] for f in filters] == ["child", "nude"]
    assert filters[1]["description"] == "pg"
    assert [x["ipaddr"] for x in call(node, "GET", "/operations/ipaddr",
                                      key=keys["mody"]).json()] == ["198.51.100.0/24"]
    r = call(node, "POST", "/generate/async", {"prompt": "a cat"}, key=keys["alice"],
             headers={"X-Forwarded-For": "198.51.100.5"})
    assert r.status_code == 403 and r.json()["rc"] == "TimeoutIP", r.text
    totals = call(node, "GET", "/stats/img/totals").json()
    assert totals["total"]["images"] == 1 and totals["day"]["images"] == 1
    assert call(node, "GET", "/stats/img/models").json()["total"] == {"stable_diffusion": 1}
    assert call(node, "GET", "/styles/image/" + sid).json()["name"] == "pg style"
    assert call(node, "GET", "/collections/" + coll.json()["id"]).json()["styles"] == \
        [{"name": "pg style", "id": sid}]


def test_moderation_state_reaches_other_brokers(tmp_path, pg_dsn):
    """Cluster mode: a filter, an IP timeout, a style and the image stats
    made through one broker are seen by the other (reloaded every 2 s)."""
    import time
    text = node_config(load=["storage-pg", "auth", "images-db", "broker"],
                       providers={"storage": "postgres", "images": "db"},
                       plugins={"storage-pg": {"dsn": pg_dsn}, "auth": {},
                                "broker": {"cluster": True, "rate_limits": False}})
    nodes = []
    for i in range(2):
        d = tmp_path / ("n%d" % i)
        d.mkdir()
        nodes.append(Node(str(d), text))
    keys = {}
    for name, flags in (("mody", ["--moderator"]), ("alice", ["--trusted"])):
        r = nodes[0].command("user", "create", name, *flags, check=True)
        keys[name] = r.stdout.strip().splitlines()[-1]
    for n in nodes:
        n.start()
    try:
        a, b = nodes
        assert call(a, "PUT", "/filters", {"regex": "forbidden", "filter_type": 20},
                    key=keys["mody"]).ok
        assert call(a, "POST", "/operations/ipaddr", {"ipaddr": "203.0.113.0/24", "hours": 1},
                    key=keys["mody"]).ok
        sid = call(a, "POST", "/styles/image", {"name": "shared", "prompt": "{p}!{np}",
                                                "models": ["stable_diffusion"]},
                   key=keys["alice"]).json()["id"]

        def seen():
            f = call(b, "GET", "/filters", key=keys["mody"]).json()
            t = call(b, "GET", "/operations/ipaddr", key=keys["mody"]).json()
            s = call(b, "GET", "/styles/image/" + sid)
            return len(f) == 1 and len(t) == 1 and s.status_code == 200

        deadline = time.time() + 60  # a safety net against a hang, not a speed check
        while not seen():
            assert time.time() < deadline, "the other broker never saw the changes"
            time.sleep(0.1)
        r = call(b, "POST", "/generate/async", {"prompt": "a cat"}, key=keys["alice"],
                 headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403 and r.json()["rc"] == "TimeoutIP", r.text
    finally:
        for n in nodes:
            assert n.stop() == 0, n.read_log()[-3000:]
