"""POST /api/v2/dev/test-user: off by default (404), on with dev_test_user,
loopback callers only (403 otherwise), 201 new / 200 existing."""
from hordetest import assert_error, make_horde  # noqa: F401


def test_off_by_default(make_horde):
    h = make_horde()
    r = h.post("/dev/test-user", {"username": "tester"})
    assert_error(r, 404, "NotFound")


def test_bootstrap(make_horde):
    h = make_horde(broker={"dev_test_user": True})
    r = h.post("/dev/test-user", {"username": "tester", "oauth_id": "t1", "moderator": True,
                                  "trusted": True, "kudos": 0})
    assert r.status_code == 201, r.text
    u = r.json()
    assert set(u) == {"api_key", "user_id", "username", "alias", "kudos", "trusted",
                      "moderator", "created"}
    assert u["alias"] == "tester" and u["username"] == "tester#%d" % u["user_id"]
    assert u["created"] is True and u["moderator"] is True and u["trusted"] is True
    key = u["api_key"]
    me = h.get("/find_user", key=key).json()
    assert me["username"] == u["username"]
    # the roles are real: a moderator may read the filters
    assert h.get("/filters", key=key).status_code == 200
    # again: the same user, a fresh key (keys are stored hashed)
    r = h.post("/dev/test-user", {"username": "tester", "moderator": True, "trusted": True})
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["user_id"] == u["user_id"] and again["created"] is False
    assert h.get("/find_user", key=again["api_key"]).json()["username"] == u["username"]
    assert_error(h.get("/find_user", key=key), 404)
    # a plain user
    r = h.post("/dev/test-user", {"username": "plain"})
    assert r.status_code == 201 and r.json()["moderator"] is False
    assert_error(h.get("/filters", key=r.json()["api_key"]), 403, "NotModerator")
    # bad bodies
    assert h.post("/dev/test-user", {}).status_code == 400
    assert h.post("/dev/test-user", {"username": "x1", "kudos": -5}).status_code == 400
    # only from the node's own machine
    r = h.post("/dev/test-user", {"username": "remote"},
               headers={"X-Forwarded-For": "198.51.100.3"})
    assert_error(r, 403, "Forbidden")


def test_bootstrap_roles_and_kudos_of_existing_users(make_horde):
    h = make_horde(broker={"dev_test_user": True}, extra_load=["kudos"])
    r = h.post("/dev/test-user", {"username": "later", "kudos": 500})
    assert r.status_code == 201, r.text
    u = r.json()
    assert u["kudos"] == 500
    assert h.get("/users/%d" % u["user_id"]).json()["kudos"] == 500
    assert_error(h.get("/filters", key=u["api_key"]), 403, "NotModerator")
    # asked again as a moderator: the existing user gets the role (hook user_update)
    r = h.post("/dev/test-user", {"username": "later", "moderator": True, "trusted": True})
    assert r.status_code == 200, r.text
    assert h.get("/filters", key=r.json()["api_key"]).status_code == 200
