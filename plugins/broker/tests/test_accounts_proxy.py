"""Service-account proxies (spec §0): `Proxy-Authorization: <proxy_passkey>`
with `Proxied-For: <ip>` makes the node treat the request as coming from that
ip (seen here through an IP timeout, 403 TimeoutIP); a wrong passkey, a
flagged owner or a malformed address leave the real address."""
import pytest

from hordetest import Horde, _finish, assert_error

BLOCKED = "198.51.100.7"


@pytest.fixture
def h(tmp_path):
    node = Horde(str(tmp_path / "h"), broker={"rate_limits": False})  # many quick requests
    yield node
    problems = _finish([node])
    if problems:
        pytest.fail("\n\n".join(problems))


def put_user(h, name, body, key):
    return h.http.put(h.url + "/users/%d" % h.ids[name], json=body, headers={"apikey": key},
                      timeout=30)


def generate(h, headers):
    body = {"prompt": "a cat", "models": ["Deliberate"],
            "params": {"steps": 10, "sampler_name": "k_euler"}}
    return h.post("/generate/async", body, key=h.keys["alice"], headers=headers)


def test_proxy_passkey_sets_the_client_address(h):
    r = h.post("/operations/ipaddr", {"ipaddr": BLOCKED, "hours": 1}, key=h.keys["mod"])
    assert r.status_code == 200, r.text
    # only service accounts may have a passkey
    assert_error(put_user(h, "bob", {"generate_proxy_passkey": True}, h.keys["bob"]), 403,
                 "NonServiceForbidden")
    assert put_user(h, "bob", {"service": True}, h.keys["mod"]).status_code == 200
    r = put_user(h, "bob", {"generate_proxy_passkey": True}, h.keys["bob"])
    assert r.status_code == 200, r.text
    passkey = r.json()["proxy_passkey"]
    proxied = {"Proxy-Authorization": passkey, "Proxied-For": BLOCKED}
    assert_error(generate(h, proxied), 403, "TimeoutIP")
    # without the passkey, a wrong one, or a bad address: the real (loopback) address
    assert generate(h, {"Proxied-For": BLOCKED}).status_code == 202
    assert generate(h, {"Proxy-Authorization": passkey + "x",
                        "Proxied-For": BLOCKED}).status_code == 202
    assert generate(h, {"Proxy-Authorization": passkey,
                        "Proxied-For": "not-an-ip"}).status_code == 202
    # another address through the same proxy is fine
    assert generate(h, {"Proxy-Authorization": passkey,
                        "Proxied-For": "198.51.100.8"}).status_code == 202
    # a flagged proxy is not believed
    assert put_user(h, "bob", {"flagged": True}, h.keys["mod"]).status_code == 200
    assert generate(h, proxied).status_code == 202
    assert put_user(h, "bob", {"flagged": False}, h.keys["mod"]).status_code == 200
    assert_error(generate(h, proxied), 403, "TimeoutIP")
    # a new passkey replaces the old one
    r = put_user(h, "bob", {"generate_proxy_passkey": True}, h.keys["bob"])
    new = r.json()["proxy_passkey"]
    assert new != passkey
    assert generate(h, proxied).status_code == 202
    assert_error(generate(h, {"Proxy-Authorization": new, "Proxied-For": BLOCKED}), 403,
                 "TimeoutIP")
