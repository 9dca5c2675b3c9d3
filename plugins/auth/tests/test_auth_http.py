"""auth, black-box: a real horde-node (storage-sqlite + auth) on a loopback port.

Nodes come from tests/harness.py (make_node). Run:
    scripts/pytest plugins/auth/tests/test_auth_http.py
"""
import html
import re

import pytest
import requests

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
AUTH = {"load": ["storage-sqlite", "auth"], "providers": {"storage": "sqlite"}}


@pytest.fixture
def node(make_node):
    """A node with open registration and no per-IP limit."""
    return make_node(plugins={"auth": {"registration": True, "register_per_hour": 0}}, **AUTH)


@pytest.fixture
def closed_node(make_node):
    return make_node(**AUTH)


def create_user(node, name, *flags):
    r = node.command("user", "create", name, *flags)
    assert r.returncode == 0, r.stderr
    key = r.stdout.rstrip("\n").split("\n")[-1]
    assert KEY_RE.match(key), r.stdout
    return key


def get(node, path, key=None):
    headers = {} if key is None else {"apikey": key}
    return requests.get(node.url + path, headers=headers, timeout=10)


def envelope(r, status, rc):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["rc"] == rc, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# ---- keys from the command line ------------------------------------------------


def test_user_create_prints_a_working_key(node):
    key = create_user(node, "alice", "--trusted", "--kudos", "500")
    r = get(node, "/api/v2/find_user", key)
    assert r.status_code == 200, r.text
    d = r.json()
    assert re.fullmatch(r"alice#\d+", d["username"])
    assert d["id"] == int(d["username"].split("#")[1])
    assert d["trusted"] is True and d["moderator"] is False
    assert d["kudos"] == 500
    assert d["concurrency"] == 30
    assert d["pseudonymous"] is False
    assert "sharedkey_ids" in d  # privilege 1: your own details


def test_two_users_get_different_keys_and_ids(node):
    k1 = create_user(node, "carol")
    k2 = create_user(node, "dave")
    assert k1 != k2
    d1 = get(node, "/api/v2/find_user", k1).json()
    d2 = get(node, "/api/v2/find_user", k2).json()
    assert d1["id"] != d2["id"]
    assert d1["username"].startswith("carol#") and d2["username"].startswith("dave#")


def test_duplicate_and_bad_names_are_refused(node):
    create_user(node, "erin")
    r = node.command("user", "create", "erin")
    assert r.returncode == 1 and "already taken" in r.stderr
    r = node.command("user", "create", "x#y")
    assert r.returncode == 1
    r = node.command("user", "create")
    assert r.returncode == 2
    r = node.command("user", "create", "frank", "--kudos", "lots")
    assert r.returncode == 2


def test_user_list_shows_users(node):
    create_user(node, "gina", "--moderator")
    r = node.command("user", "list")
    assert r.returncode == 0
    assert re.search(r"^0\s+Anonymous#0\b", r.stdout, re.M)
    assert re.search(r"\bgina#\d+\s+moderator\b", r.stdout)


def test_key_reset(node):
    old = create_user(node, "hank")
    assert get(node, "/api/v2/find_user", old).status_code == 200
    r = node.command("user", "key-reset", "hank")
    assert r.returncode == 0, r.stderr
    new = r.stdout.rstrip("\n").split("\n")[-1]
    assert KEY_RE.match(new) and new != old
    assert get(node, "/api/v2/find_user", new).json()["username"].startswith("hank#")
    envelope(get(node, "/api/v2/users/1", old), 401, "InvalidAPIKey")
    assert node.command("user", "key-reset", "nobody-here").returncode == 1


# ---- authentication ----------------------------------------------------------------


def test_wrong_key_is_401_invalid_api_key(node):
    for bad in ["wrongkeywrongkeywrong1", "abc", "0000000001", "x" * 500]:
        body = envelope(get(node, "/api/v2/users/0", bad), 401, "InvalidAPIKey")
        assert body["message"].startswith("No user matching sent API Key.")


def test_a_forged_key_with_a_real_key_id_is_refused(node):
    key = create_user(node, "ivan")
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    envelope(get(node, "/api/v2/users/0", forged), 401, "InvalidAPIKey")


def test_anonymous_key_works(node):
    r = get(node, "/api/v2/find_user", "0000000000")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["username"] == "Anonymous#0" and d["id"] == 0
    assert d["concurrency"] == 500


def test_find_user_without_or_with_unknown_key(node):
    envelope(get(node, "/api/v2/find_user"), 401, "InvalidAPIKey")
    body = envelope(get(node, "/api/v2/find_user", "wrongkeywrongkeywrong1"), 404, "UserNotFound")
    assert "wrongkey" not in body["message"]  # the key is not echoed


# ---- /users/{id} ------------------------------------------------------------------------


def test_user_details_by_privilege(node):
    key = create_user(node, "judy")
    mod_key = create_user(node, "mallory", "--moderator")
    uid = get(node, "/api/v2/find_user", key).json()["id"]

    public = get(node, f"/api/v2/users/{uid}").json()
    assert public["username"] == f"judy#{uid}"
    for k in ("kudos", "kudos_details", "records", "concurrency", "worker_count",
              "account_age", "trusted", "moderator", "flagged", "pseudonymous"):
        assert k in public, k
    assert public["records"]["fulfillment"] == {"image": 0, "text": 0, "interrogation": 0}
    for hidden in ("sharedkey_ids", "vpn", "suspicious", "monthly_kudos", "worker_ids"):
        assert hidden not in public, hidden
    assert not any(v is None for v in public.values())  # skip_none

    own = get(node, f"/api/v2/users/{uid}", key).json()
    assert "sharedkey_ids" in own and "worker_ids" in own
    assert "suspicious" not in own

    as_mod = get(node, f"/api/v2/users/{uid}", mod_key).json()
    assert "suspicious" in as_mod and "monthly_kudos" in as_mod

    # someone else's key: public view
    other = get(node, f"/api/v2/users/{uid}", "0000000000").json()
    assert "sharedkey_ids" not in other


def test_user_details_errors(node):
    body = envelope(get(node, "/api/v2/users/judy#1"), 404, "UserNotFound")
    assert "numerical part" in body["message"]
    envelope(get(node, "/api/v2/users/abc"), 404, "UserNotFound")
    envelope(get(node, "/api/v2/users/-1"), 404, "UserNotFound")
    envelope(get(node, "/api/v2/users/999999999"), 404, "UserNotFound")
    envelope(get(node, "/api/v2/users/99999999999999999999999"), 404, "UserNotFound")
    envelope(get(node, "/api/v2/users/0", "not-a-key"), 401, "InvalidAPIKey")
    assert get(node, "/api/v2/users/0").status_code == 200


# ---- registration --------------------------------------------------------------------------


def register(node, username):
    return requests.post(node.url + "/register", data={"username": username}, timeout=10)


def test_registration_page_and_sign_up(node):
    page = requests.get(node.url + "/register", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<form" in page.text and 'name="username"' in page.text

    r = register(node, "kate")
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers.get("Cache-Control", "")
    m = re.search(r'id="apikey">([^<]+)<', r.text)
    assert m, r.text
    key = html.unescape(m.group(1))
    assert KEY_RE.match(key)
    d = get(node, "/api/v2/find_user", key).json()
    assert d["username"].startswith("kate#")
    assert d["pseudonymous"] is True


def test_registration_refusals_and_escaping(node):
    register(node, "leo")
    r = register(node, "leo")
    assert r.status_code == 400 and "already taken" in r.text
    assert register(node, "ab").status_code == 400
    r = requests.post(node.url + "/register", data="nothing=here", timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = requests.post(node.url + "/register", data="username=a%00bcd", timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = register(node, "<i>x</i>")
    assert r.status_code == 200
    assert "<i>x</i>" not in r.text and "&lt;i&gt;x&lt;/i&gt;" in r.text


def test_registration_off_is_404(closed_node):
    assert requests.get(closed_node.url + "/register", timeout=10).status_code == 404
    assert register(closed_node, "mike").status_code == 404
    # and the key message does not point at a page that is not there
    body = envelope(get(closed_node, "/api/v2/users/0", "nope"), 401, "InvalidAPIKey")
    assert "/register" not in body["message"]


def test_registration_limit_per_ip(make_node):
    n = make_node(plugins={"auth": {"registration": True, "register_per_hour": 2}}, **AUTH)
    assert register(n, "nina").status_code == 200
    assert register(n, "nina").status_code == 400  # a failed try is given back
    assert register(n, "oscar").status_code == 200
    assert register(n, "peggy").status_code == 429


def test_node_survives_odd_requests(node):
    assert get(node, "/api/v2/users/%00").status_code in (400, 404)
    assert get(node, "/api/v2/find_user", "\u00e9" * 10).status_code in (401, 404)
    requests.post(node.url + "/register", data=b"\xff" * 5000, timeout=10)
    assert get(node, "/api/v2/users/0").status_code == 200


def test_registration_refuses_profane_names(node):
    r = register(node, "shit-head")
    assert r.status_code == 400 and "profanity" in r.text
    assert register(node, "Scunthorpe").status_code == 200  # whole words only
