"""The accounts side on PostgreSQL (storage-pg): auth's migration 2 and the
broker_accounts tables, written and read back after a restart."""
import os
import sys

import pytest
import requests

from harness import ROOT, Node, node_config

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_dsn, pg_server  # noqa: E402,F401  (fixtures)

API = "/api/v2"


@pytest.fixture
def pg_node(tmp_path, pg_dsn):
    text = node_config(load=["storage-pg", "auth", "images-fs", "broker"],
                       providers={"storage": "postgres", "images": "fs"},
                       plugins={"storage-pg": {"dsn": pg_dsn}, "auth": {}, "broker": {}})
    node = Node(str(tmp_path), text)
    keys = {}
    for name, flags in (("root", ["--admin"]), ("mody", ["--moderator"]),
                        ("alice", ["--trusted"]), ("wally", [])):
        r = node.command("user", "create", name, *flags, check=True)
        keys[name] = r.stdout.strip().splitlines()[-1]
    node.start()
    yield node, keys
    rc = node.stop()
    assert rc == 0, node.read_log()[-3000:]


def call(node, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return requests.request(method, node.url + API + path, json=body, headers=headers,
                            timeout=30)


def test_accounts_on_postgresql(pg_node):
    node, keys = pg_node
    wally = call(node, "GET", "/find_user", key=keys["wally"]).json()["id"]
    r = call(node, "PUT", "/users/%d" % wally,
             {"trusted": True, "worker_invited": 3, "admin_comment": "pg note"}, key=keys["mody"])
    assert r.status_code == 200, r.text
    r = call(node, "PUT", "/users/%d" % wally, {"usage_multiplier": 2.0}, key=keys["root"])
    assert r.status_code == 200, r.text
    pop = call(node, "POST", "/generate/pop", {"name": "pg-worker", "models": ["Deliberate"]},
               key=keys["wally"])
    assert pop.status_code == 200, pop.text
    wid = call(node, "GET", "/workers/name/pg-worker").json()["id"]
    team = call(node, "POST", "/teams", {"name": "PG Team", "info": "on postgres"},
                key=keys["alice"]).json()
    assert call(node, "PUT", "/workers/" + wid, {"team": team["id"]}, key=keys["wally"]).ok
    skey = call(node, "PUT", "/sharedkeys", {"name": "pg key", "kudos": 100},
                key=keys["alice"]).json()
    msg = call(node, "POST", "/workers/messages", {"worker_id": wid, "message": "hello pg"},
               key=keys["mody"]).json()
    assert call(node, "PUT", "/status/modes", {"invite_only_mode": True}, key=keys["mody"]).ok
    node.restart()
    d = call(node, "GET", "/users/%d" % wally, key=keys["mody"]).json()
    assert d["trusted"] and d["worker_invited"] == 3 and d["admin_comment"] == "pg note"
    assert call(node, "GET", "/workers/" + wid).json()["team"]["name"] == "PG Team"
    assert call(node, "GET", "/sharedkeys/" + skey["id"]).json()["name"] == "pg key"
    got = call(node, "GET", "/workers/messages/" + msg["id"], key=keys["wally"])
    assert got.status_code == 200 and got.json()["message"] == "hello pg"
    assert call(node, "GET", "/status/modes").json()["invite_only_mode"] is True
    r = call(node, "DELETE", "/workers/" + wid, key=keys["wally"])
    assert r.status_code == 200, r.text
    node.restart()
    assert call(node, "GET", "/workers/" + wid).status_code == 404
    assert call(node, "GET", "/teams/" + team["id"]).json()["worker_count"] == 0


def test_suspicion_and_deletion_on_postgresql(pg_node):
    """auth's migration 3 (suspicion_reasons) and its bit arithmetic on PostgreSQL."""
    node, keys = pg_node
    wally = call(node, "GET", "/find_user", key=keys["wally"]).json()["id"]
    for name in ("w" * 40, "v" * 40):  # USERNAME_LONG counts once
        r = call(node, "PUT", "/users/%d" % wally, {"username": name}, key=keys["wally"])
        assert r.status_code == 200, r.text
    assert call(node, "GET", "/users/%d" % wally, key=keys["mody"]).json()["suspicious"] == 1
    r = call(node, "PUT", "/users/%d" % wally, {"reset_suspicion": True}, key=keys["mody"])
    assert r.status_code == 200, r.text
    r = call(node, "PUT", "/users/%d" % wally, {"username": "x" * 40}, key=keys["wally"])
    assert call(node, "GET", "/users/%d" % wally, key=keys["mody"]).json()["suspicious"] == 1
    assert call(node, "DELETE", "/users/%d" % wally, key=keys["wally"]).status_code == 200
    r = call(node, "POST", "/generate/pop", {"name": "pg-deleted", "models": ["Deliberate"]},
             key=keys["wally"])
    assert r.status_code == 403 and r.json()["rc"] == "DeletedUser"
