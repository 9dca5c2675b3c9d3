"""Teams (spec §2): GET|POST /teams, GET|PATCH|DELETE /teams/{id}, with
contributions and worker lists (TeamDetailsStable)."""
import pytest

from hordetest import Horde, _finish, assert_error

NO_TEAM = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def acc(tmp_path):
    h = Horde(str(tmp_path / "h"))
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


def call(h, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30)


def test_create_team_rules(acc):
    h = acc
    r = call(h, "POST", "/teams", {"name": "Team A", "info": "about A"})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "POST", "/teams", {"name": "Team A"}, key="0000000000"), 403,
                 "AnonForbidden")
    assert_error(call(h, "POST", "/teams", {"name": "Team A"}, key=h.keys["bob"]), 403,
                 "UntrustedTeamCreation")
    for body, field in (({"info": "no name"}, "name"), ({"name": "AB"}, "name"),
                        ({"name": "Team A", "info": "x"}, "info")):
        r = call(h, "POST", "/teams", body, key=h.keys["alice"])
        assert r.status_code == 400 and field in r.json()["errors"], body
    r = call(h, "POST", "/teams", {"name": "Team A", "info": "about A"}, key=h.keys["alice"])
    assert r.status_code == 200, r.text
    team = r.json()
    assert set(team) == {"id", "name", "info"} and team["name"] == "Team A"
    assert_error(call(h, "POST", "/teams", {"name": "Team A"}, key=h.keys["wendy"]), 400,
                 "TeamNameAlreadyExists")
    teams = call(h, "GET", "/teams").json()
    assert [t["id"] for t in teams] == [team["id"]]
    assert teams[0]["creator"] == "alice#%d" % h.ids["alice"]


def test_team_details_and_workers(acc):
    h = acc
    tid = call(h, "POST", "/teams", {"name": "Team A", "info": "about A"},
               key=h.keys["alice"]).json()["id"]
    for owner, name in (("wally", "w-one"), ("wendy", "w-two")):
        h.pop(owner=owner, name=name)
        wid = h.get("/workers/name/" + name).json()["id"]
        r = call(h, "PUT", "/workers/" + wid, {"team": tid}, key=h.keys[owner])
        assert r.status_code == 200, r.text
    rid = h.generate()["id"]
    job = h.pop(name="w-one")
    h.submit(job["id"])
    assert h.status(rid)["done"]
    r = call(h, "GET", "/teams/" + tid)
    assert r.status_code == 200
    t = r.json()
    assert t["worker_count"] == 2 and t["requests_fulfilled"] == 1
    assert t["contributions"] > 0 and t["info"] == "about A"
    assert sorted(w["name"] for w in t["workers"]) == ["w-one", "w-two"]
    assert all(w["online"] and w["type"] == "image" for w in t["workers"])
    assert {"name": "Deliberate", "count": 2} in t["models"]
    for key in ("kudos", "performance", "speed", "uptime", "creator", "id", "name"):
        assert key in t
    # GET: no key, or a moderator's
    assert call(h, "GET", "/teams/" + tid, key=h.keys["mod"]).status_code == 200
    assert_error(call(h, "GET", "/teams/" + tid, key=h.keys["bob"]), 403, "NotModerator")
    assert_error(call(h, "GET", "/teams/" + NO_TEAM), 404, "TeamNotFound")
    assert_error(call(h, "GET", "/teams/not-a-uuid"), 404, "TeamNotFound")


def test_patch_and_delete_team(acc):
    h = acc
    tid = call(h, "POST", "/teams", {"name": "Team A", "info": "about A"},
               key=h.keys["alice"]).json()["id"]
    call(h, "POST", "/teams", {"name": "Team B"}, key=h.keys["wendy"])
    path = "/teams/" + tid
    r = call(h, "PATCH", path, {"info": "new"})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    assert_error(call(h, "PATCH", path, {"info": "new info"}, key=h.keys["bob"]), 403, "NotOwner")
    assert_error(call(h, "PATCH", path, {}, key=h.keys["alice"]), 400, "NoTeamModSelected")
    assert_error(call(h, "PATCH", path, {"name": "Team B"}, key=h.keys["alice"]), 400,
                 "TeamNameAlreadyExists")
    assert_error(call(h, "PATCH", "/teams/" + NO_TEAM, {"info": "whatever"}, key=h.keys["mod"]),
                 404, "TeamNotFound")
    r = call(h, "PATCH", path, {"name": "Team Alpha", "info": "renamed"}, key=h.keys["alice"])
    assert r.status_code == 200 and r.json() == {"id": tid, "name": "Team Alpha",
                                                 "info": "renamed"}
    r = call(h, "PATCH", path, {"info": "a mod wrote this"}, key=h.keys["mod"])
    assert r.status_code == 200
    h.node.restart()
    t = call(h, "GET", path).json()
    assert t["name"] == "Team Alpha" and t["info"] == "a mod wrote this"
    # a worker in the team loses it when the team goes
    h.pop(name="member")
    wid = h.get("/workers/name/member").json()["id"]
    assert call(h, "PUT", "/workers/" + wid, {"team": tid}, key=h.keys["wally"]).ok
    assert_error(call(h, "DELETE", path, key=h.keys["bob"]), 403, "NotOwner")
    r = call(h, "DELETE", path, key=h.keys["alice"])
    assert r.status_code == 200 and r.json() == {"deleted_id": tid, "deleted_name": "Team Alpha"}
    assert_error(call(h, "GET", path), 404, "TeamNotFound")
    assert h.get("/workers/" + wid).json()["team"] == {}
    h.node.restart()
    assert [t["name"] for t in call(h, "GET", "/teams").json()] == ["Team B"]
    assert h.get("/workers/" + wid).json()["team"] == {}
