"""Users over HTTP (spec §2): GET /users, PUT /users/{id} (ModifyUser, hook
user_update), DELETE /users/{id}, UserDetails at the three privilege levels.
auth serves the routes; the broker adds worker ids and shared key ids."""
import os
import sqlite3

import pytest

from hordetest import Horde, _finish, assert_error

WIPE_AGE_S = 31 * 86400


class AccHorde(Horde):
    USERS = dict(Horde.USERS, root=["--admin"], sam=[])


@pytest.fixture
def acc(tmp_path):
    h = AccHorde(str(tmp_path / "h"))
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


def put(h, uid, body, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.put(h.url + "/users/%d" % uid, json=body, headers=headers, timeout=30)


def delete(h, uid, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.delete(h.url + "/users/%d" % uid, headers=headers, timeout=30)


def details(h, name, key=None):
    r = h.get("/users/%d" % h.ids[name], key=key)
    assert r.status_code == 200, r.text
    return r.json()


def test_put_needs_a_key_and_a_known_user(acc):
    h = acc
    bob = h.ids["bob"]
    r = put(h, bob, {"trusted": True})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(put(h, bob, {"trusted": True}, key="not-a-key"), 401, "InvalidAPIKey")
    assert_error(put(h, 999999, {"trusted": True}, key=h.keys["mod"]), 404, "UserNotFound")
    r = h.http.put(h.url + "/users/db0%231", json={"trusted": True},
                   headers={"apikey": h.keys["mod"]}, timeout=30)
    assert_error(r, 404, "UserNotFound")
    assert_error(put(h, bob, {}, key=h.keys["mod"]), 400, "NoUserModSelected")
    assert_error(put(h, bob, {"no_such_field": 1}, key=h.keys["mod"]), 400, "NoUserModSelected")


@pytest.mark.parametrize("field,value,answer_key", [
    ("concurrency", 100, "concurrency"),
    ("worker_invited", 4, "worker_invited"),
    ("trusted", True, "trusted"),
    ("flagged", True, "flagged"),
    ("customizer", True, "customizer"),
    ("vpn", True, "vpn"),
    ("service", True, "service"),
    ("special", True, "special"),
    ("filtered", True, "filtered"),
    ("education", True, "education"),
    ("admin_comment", "a note for mods", "admin_comment"),
    ("reset_suspicion", True, "new_suspicion"),
])
def test_moderator_fields(acc, field, value, answer_key):
    h = acc
    bob = h.ids["bob"]
    # the owner and other users may not; anonymous neither
    for who in ("bob", "alice"):
        assert_error(put(h, bob, {field: value}, key=h.keys[who]), 403, "NotModerator")
    assert_error(put(h, bob, {field: value}, key="0000000000"), 403, "NotModerator")
    r = put(h, bob, {field: value}, key=h.keys["mod"])
    assert r.status_code == 200, r.text
    expected = 0 if field == "reset_suspicion" else value
    assert r.json() == {answer_key: expected}
    # an admin may too
    assert put(h, bob, {field: value}, key=h.keys["root"]).status_code == 200
    d = details(h, "bob", key=h.keys["mod"])
    if field in ("concurrency", "worker_invited", "trusted", "flagged", "customizer", "vpn",
                 "service", "special", "education", "admin_comment"):
        assert d[field] == value
    if field == "education":
        assert d["concurrency"] == 200
        assert put(h, bob, {"education": False}, key=h.keys["mod"]).status_code == 200
        assert details(h, "bob")["concurrency"] == 30
    if field == "reset_suspicion":
        assert d["suspicious"] == 0


@pytest.mark.parametrize("field,value,answer_key", [
    ("monthly_kudos", 1000, "monthly_kudos"),
    ("usage_multiplier", 2.5, "usage_multiplier"),
    ("moderator", True, "moderator"),
])
def test_admin_fields(acc, field, value, answer_key):
    h = acc
    bob = h.ids["bob"]
    for who in ("bob", "mod"):
        assert_error(put(h, bob, {field: value}, key=h.keys[who]), 403, "NotAdmin")
    r = put(h, bob, {field: value}, key=h.keys["root"])
    assert r.status_code == 200, r.text
    assert r.json() == {answer_key: value}
    d = details(h, "bob", key=h.keys["root"])
    if field == "moderator":
        assert d["moderator"] is True
        # a new moderator sees privilege-2 details of others
        assert "suspicious" in details(h, "alice", key=h.keys["bob"])
    if field == "monthly_kudos":
        assert d["monthly_kudos"]["amount"] == 1000


@pytest.mark.parametrize("body,field", [
    ({"usage_multiplier": 0.01}, "usage_multiplier"),
    ({"usage_multiplier": 11}, "usage_multiplier"),
    ({"concurrency": 501}, "concurrency"),
    ({"concurrency": "many"}, "concurrency"),
    ({"trusted": "yes"}, "trusted"),
    ({"contact": "abc"}, "contact"),
    ({"admin_comment": "x" * 501}, "admin_comment"),
    ({"username": "ab"}, "username"),
    ({"kudos": 1.5}, "kudos"),
])
def test_bad_values_are_schema_errors(acc, body, field):
    r = put(acc, acc.ids["bob"], body, key=acc.keys["root"])
    assert r.status_code == 400, r.text
    assert field in r.json()["errors"]


def test_owner_fields(acc):
    h = acc
    bob = h.ids["bob"]
    # someone else may not
    for body in ({"public_workers": True}, {"username": "robert"},
                 {"contact": "bob@example.org"}, {"undelete": True}):
        assert_error(put(h, bob, body, key=h.keys["alice"]), 403, "NotModerator")
    r = put(h, bob, {"public_workers": True, "contact": "bob@example.org", "username": "robert"},
            key=h.keys["bob"])
    assert r.status_code == 200, r.text
    assert r.json() == {"public_workers": True, "contact": "bob@example.org",
                        "username": "robert"}
    d = details(h, "bob", key=h.keys["bob"])
    assert d["username"] == "robert#%d" % bob and d["contact"] == "bob@example.org"
    # a moderator may as well; usernames are cut to 30 characters
    long_name = "n" * 40
    r = put(h, bob, {"username": long_name}, key=h.keys["mod"])
    assert r.json() == {"username": "n" * 30}
    # a name someone has
    assert_error(put(h, bob, {"username": "alice"}, key=h.keys["bob"]), 400, "NameAlreadyExists")
    assert_error(put(h, bob, {"username": "Anonymous"}, key=h.keys["bob"]), 400, "BadUsername")
    # undelete of a user that is not deleted
    assert_error(put(h, bob, {"undelete": True}, key=h.keys["bob"]), 400, "UserNotDeleted")


def test_proxy_passkey_only_for_service_accounts(acc):
    h = acc
    bob = h.ids["bob"]
    assert_error(put(h, bob, {"generate_proxy_passkey": True}, key=h.keys["bob"]), 403,
                 "NonServiceForbidden")
    assert put(h, bob, {"service": True}, key=h.keys["mod"]).status_code == 200
    r = put(h, bob, {"generate_proxy_passkey": True}, key=h.keys["bob"])
    assert r.status_code == 200, r.text
    passkey = r.json()["proxy_passkey"]
    assert len(passkey) >= 16
    assert details(h, "bob", key=h.keys["mod"])["proxy_passkey"] == passkey
    assert "proxy_passkey" not in details(h, "bob", key=h.keys["bob"])


def test_a_refused_field_changes_nothing(acc):
    h = acc
    bob = h.ids["bob"]
    # trusted is allowed for the moderator, moderator is not: nothing applies
    assert_error(put(h, bob, {"trusted": True, "moderator": True}, key=h.keys["mod"]), 403,
                 "NotAdmin")
    assert details(h, "bob")["trusted"] is False


def test_privilege_levels(acc):
    h = acc
    bob = h.ids["bob"]
    assert put(h, bob, {"admin_comment": "watch this one"}, key=h.keys["mod"]).status_code == 200
    assert put(h, bob, {"contact": "bob@example.org"}, key=h.keys["bob"]).status_code == 200
    public = details(h, "bob")
    own = details(h, "bob", key=h.keys["bob"])
    modv = details(h, "bob", key=h.keys["mod"])
    for d in (public, own, modv):
        assert d["id"] == bob and d["deleted"] is False
    assert "contact" not in public and "sharedkey_ids" not in public
    assert "worker_ids" not in public  # public_workers is off
    assert own["contact"] == "bob@example.org" and own["sharedkey_ids"] == []
    assert "admin_comment" not in own and "suspicious" not in own
    assert modv["admin_comment"] == "watch this one" and modv["suspicious"] == 0
    assert modv["monthly_kudos"] == {"amount": 0}
    # worker ids: public once public_workers is on
    job = h.pop(owner="bob", name="bobs-worker")
    assert job["id"] is None
    wid = h.get("/workers/name/bobs-worker").json()["id"]
    assert details(h, "bob", key=h.keys["bob"])["worker_ids"] == [wid]
    assert put(h, bob, {"public_workers": True}, key=h.keys["bob"]).status_code == 200
    assert details(h, "bob")["worker_ids"] == [wid]


def test_user_list_paging_and_sort(acc):
    h = acc
    r = h.get("/users")
    assert r.status_code == 200
    users = r.json()
    ids = sorted(h.ids.values()) + [0]
    assert sorted(u["id"] for u in users) == sorted(ids)
    assert all("contact" not in u and "worker_ids" not in u or u["id"] == 0 for u in users)
    by_age = h.get("/users", params={"sort": "age"}).json()
    assert [u["id"] for u in by_age] == sorted(u["id"] for u in by_age)
    assert h.get("/users", params={"page": 2}).json() == []
    assert h.get("/users", params={"page": 10001}).json() == []
    assert h.get("/users", params={"sort": "name"}).status_code == 400
    assert h.get("/users", params={"page": "x"}).status_code == 400


def test_user_list_has_25_a_page(acc):
    h = acc
    for i in range(20):
        h.node.command("user", "create", "extra%02d" % i, check=True)
    page1 = h.get("/users", params={"sort": "age"}).json()
    page2 = h.get("/users", params={"sort": "age", "page": 2}).json()
    assert len(page1) == 25 and len(page2) == len(h.ids) + 1 + 20 - 25
    assert page1[0]["id"] == 0 and page1[-1]["id"] < page2[0]["id"]


def test_delete_rules(acc):
    h = acc
    bob, alice, mod = h.ids["bob"], h.ids["alice"], h.ids["mod"]
    r = delete(h, bob)
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(delete(h, bob, key="0000000000"), 403, "AnonForbiddenUser")
    assert_error(delete(h, 0, key=h.keys["mod"]), 403, "AnonForbiddenUser")
    assert_error(delete(h, alice, key=h.keys["bob"]), 403, "NotUserOrMod")
    assert_error(delete(h, mod, key=h.keys["bob"]), 403, "CannotDeleteMod")
    assert_error(delete(h, 999999, key=h.keys["mod"]), 404, "UserNotFound")
    # the user themself: marked deleted
    r = delete(h, bob, key=h.keys["bob"])
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert details(h, "bob")["deleted"] is True
    # active lately: cannot be wiped
    assert_error(delete(h, bob, key=h.keys["mod"]), 403, "CannotWipeActiveUser")
    # undelete
    r = put(h, bob, {"undelete": True}, key=h.keys["bob"])
    assert r.status_code == 200 and r.json() == {"undeleted": True}
    assert details(h, "bob")["deleted"] is False
    # a moderator deletes alice, who has been inactive for a month: wiped
    assert delete(h, alice, key=h.keys["mod"]).status_code == 200
    db = sqlite3.connect(os.path.join(h.node.data_dir, "horde.db"))
    with db:
        db.execute("UPDATE users SET created = created - ?, last_active = 0 WHERE id = ?",
                   (WIPE_AGE_S, alice))
    db.close()
    assert delete(h, alice, key=h.keys["mod"]).status_code == 200
    assert_error(h.get("/users/%d" % alice), 404, "UserNotFound")


def test_changes_survive_a_restart(acc):
    h = acc
    bob = h.ids["bob"]
    assert put(h, bob, {"trusted": True, "worker_invited": 2, "admin_comment": "kept note"},
               key=h.keys["mod"]).status_code == 200
    assert put(h, bob, {"usage_multiplier": 3.0}, key=h.keys["root"]).status_code == 200
    h.node.restart()
    d = details(h, "bob", key=h.keys["mod"])
    assert d["trusted"] is True and d["worker_invited"] == 2
    assert d["admin_comment"] == "kept note"


def test_worker_owner_roles_follow_the_user(acc):
    h = acc
    h.pop(owner="bob", name="bobs-worker")
    assert h.get("/workers/name/bobs-worker").json()["trusted"] is False
    assert put(h, h.ids["bob"], {"trusted": True}, key=h.keys["mod"]).status_code == 200
    assert h.get("/workers/name/bobs-worker").json()["trusted"] is True


def test_role_changes_take_effect(acc):
    h = acc
    bob, wally = h.ids["bob"], h.ids["wally"]
    # concurrency: what bob may have waiting
    assert put(h, bob, {"concurrency": 1}, key=h.keys["mod"]).status_code == 200
    h.generate(user="bob")
    r = h.post("/generate/async", {"prompt": "another", "models": ["Deliberate"]},
               key=h.keys["bob"])
    assert_error(r, 429, "TooManyPrompts")
    # flagged: the owner's workers are refused
    assert put(h, wally, {"flagged": True}, key=h.keys["mod"]).status_code == 200
    r = h.post("/generate/pop", {"name": "flagged-worker", "models": ["Deliberate"]},
               key=h.keys["wally"])
    assert_error(r, 403, "WorkerFlaggedMaintenance")
    assert put(h, wally, {"flagged": False}, key=h.keys["mod"]).status_code == 200
    assert h.pop(name="flagged-worker")["id"]
