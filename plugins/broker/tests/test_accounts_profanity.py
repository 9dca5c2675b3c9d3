"""Profanity checks (spec §2, §5) over HTTP: usernames and contacts (400
Profanity), worker names and bridge agents on pop (ProfaneWorkerName,
ProfaneBridgeAgent), worker info and names on PUT /workers (ProfaneWorkerInfo,
ProfaneWorkerName), team names and info (Profanity). Innocent words that
contain a profane one pass (whole words only)."""
import pytest

from hordetest import REGEN, Horde, _finish, assert_error


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    node = Horde(str(tmp_path_factory.mktemp("prof")))
    yield node
    problems = _finish([node])
    if problems:
        pytest.fail("\n\n".join(problems))


def put_user(h, name, body, key):
    return h.http.put(h.url + "/users/%d" % h.ids[name], json=body, headers={"apikey": key},
                      timeout=30)


def put_worker(h, wid, body, key):
    return h.http.put(h.url + "/workers/" + wid, json=body, headers={"apikey": key}, timeout=30)


@pytest.mark.parametrize("field,value", [
    ("username", "fuckface"), ("username", "Sh1tLord"), ("contact", "mail me, you b1tch"),
])
def test_profane_user_fields(h, field, value):
    assert_error(put_user(h, "bob", {field: value}, h.keys["bob"]), 400, "Profanity")
    # a moderator is refused the same way, and nothing changed
    assert_error(put_user(h, "bob", {field: value}, h.keys["mod"]), 400, "Profanity")
    me = h.get("/users/%d" % h.ids["bob"], key=h.keys["bob"]).json()
    assert me["username"].startswith("bob#")


def test_innocent_user_fields_pass(h):
    r = put_user(h, "bob", {"contact": "Scunthorpe classic assistant"}, h.keys["bob"])
    assert r.status_code == 200, r.text


def test_profane_worker_name_and_bridge_agent_on_pop(h):
    r = h.post("/generate/pop", {"name": "shit worker", "models": ["Deliberate"],
                                 "bridge_agent": REGEN}, key=h.keys["wally"])
    assert_error(r, 400, "ProfaneWorkerName")
    r = h.post("/generate/pop", {"name": "clean worker", "models": ["Deliberate"],
                                 "bridge_agent": "fuck bridge:1:http://x"},
               key=h.keys["wally"])
    assert_error(r, 400, "ProfaneBridgeAgent")
    assert h.get("/workers/name/shit worker").status_code == 404
    assert h.get("/workers/name/clean worker").status_code == 404
    h.pop(owner="wally", name="Classic Assistant")  # whole words only


def test_profane_worker_info_and_name_on_put(h):
    h.pop(owner="wally", name="prof-w")
    wid = h.get("/workers/name/prof-w").json()["id"]
    assert_error(put_worker(h, wid, {"info": "a cunt of a worker"}, h.keys["wally"]), 400,
                 "ProfaneWorkerInfo")
    assert_error(put_worker(h, wid, {"name": "fucking-fast"}, h.keys["wally"]), 400,
                 "ProfaneWorkerName")
    w = h.get("/workers/" + wid).json()
    assert w["info"] == "" and w["name"] == "prof-w"
    r = put_worker(h, wid, {"info": "a classic worker"}, h.keys["wally"])
    assert r.status_code == 200 and r.json() == {"info": "a classic worker"}


def test_profane_team_name_and_info(h):
    r = h.post("/teams", {"name": "Team Bastards", "info": "we render"}, key=h.keys["alice"])
    assert_error(r, 400, "Profanity")
    r = h.post("/teams", {"name": "Team Fine", "info": "full of shit"}, key=h.keys["alice"])
    assert_error(r, 400, "Profanity")
    r = h.post("/teams", {"name": "Team Fine", "info": "we render"}, key=h.keys["alice"])
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    r = h.http.patch(h.url + "/teams/" + tid, json={"name": "Twat Team"},
                     headers={"apikey": h.keys["alice"]}, timeout=30)
    assert_error(r, 400, "Profanity")
    assert h.get("/teams/" + tid).json()["name"] == "Team Fine"
