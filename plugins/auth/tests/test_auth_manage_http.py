"""auth alone (storage-sqlite + auth, no broker), black-box: GET /users,
PUT /users/{id} (hook user_update with auth as its only handler),
DELETE /users/{id}, and what survives a restart. The broker's part (worker
ids, shared keys, owner roles on workers) is tested in
plugins/broker/tests/test_accounts_users.py."""
import re

import pytest
import requests

AUTH = {"load": ["storage-sqlite", "auth"], "providers": {"storage": "sqlite"}}


@pytest.fixture
def node(make_node):
    return make_node(**AUTH)


def create_user(node, name, *flags):
    r = node.command("user", "create", name, *flags)
    assert r.returncode == 0, r.stderr
    key = r.stdout.rstrip("\n").split("\n")[-1]
    uid = int(re.search(name + r"#(\d+)", r.stdout).group(1))
    return key, uid


def call(node, method, path, body=None, key=None, params=None):
    headers = {} if key is None else {"apikey": key}
    return requests.request(method, node.url + "/api/v2" + path, json=body, headers=headers,
                            params=params, timeout=10)


def rc(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["rc"] == code, r.json()


def test_roles_and_answers(node):
    admin, _ = create_user(node, "root", "--admin")
    mod, _ = create_user(node, "mody", "--moderator")
    bob, bob_id = create_user(node, "bobby")
    other, _ = create_user(node, "ollie")
    path = "/users/%d" % bob_id
    # anonymous, owner, moderator, admin
    rc(call(node, "PUT", path, {"trusted": True}, key="0000000000"), 403, "NotModerator")
    rc(call(node, "PUT", path, {"trusted": True}, key=bob), 403, "NotModerator")
    rc(call(node, "PUT", path, {"moderator": True}, key=mod), 403, "NotAdmin")
    rc(call(node, "PUT", path, {"contact": "mail@example.org"}, key=other), 403, "NotModerator")
    r = call(node, "PUT", path, {"contact": "mail@example.org"}, key=bob)
    assert r.status_code == 200 and r.json() == {"contact": "mail@example.org"}
    r = call(node, "PUT", path, {"trusted": True, "concurrency": 50}, key=mod)
    assert r.status_code == 200 and r.json() == {"trusted": True, "concurrency": 50}
    r = call(node, "PUT", path, {"moderator": True, "monthly_kudos": 10}, key=admin)
    assert r.json() == {"moderator": True, "monthly_kudos": 10}
    # without the kudos plugin nobody owns `kudos`
    rc(call(node, "PUT", path, {"kudos": 10}, key=admin), 400, "NoUserModSelected")
    node.restart()
    d = call(node, "GET", path, key=bob).json()
    assert d["trusted"] and d["moderator"] and d["concurrency"] == 50
    assert d["contact"] == "mail@example.org"


def test_list_and_delete(node):
    mod, _ = create_user(node, "mody", "--moderator")
    bob, bob_id = create_user(node, "bobby")
    users = call(node, "GET", "/users", params={"sort": "age"}).json()
    assert [u["id"] for u in users] == sorted(u["id"] for u in users)
    assert bob_id in [u["id"] for u in users]
    rc(call(node, "DELETE", "/users/%d" % bob_id, key="0000000000"), 403, "AnonForbiddenUser")
    assert call(node, "DELETE", "/users/%d" % bob_id, key=bob).json() == {"message": "OK"}
    assert call(node, "GET", "/users/%d" % bob_id).json()["deleted"] is True
    rc(call(node, "DELETE", "/users/%d" % bob_id, key=mod), 403, "CannotWipeActiveUser")
    node.restart()
    assert call(node, "GET", "/users/%d" % bob_id).json()["deleted"] is True
