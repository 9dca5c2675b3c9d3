"""Suspicion (spec §5) over HTTP: the user_suspicion hook (auth) through a
probe plugin, the user's count at privilege 2 and its reset, USERNAME_LONG,
and worker suspicion (name cut to 100, extreme max_pixels, unreasonably fast
images, dropped jobs: tested in test_accounts_modes.py) pausing a worker at 5."""
import os
import subprocess

import pytest

from harness import ROOT
from hordetest import Horde, _finish, assert_error

HERE = os.path.dirname(os.path.abspath(__file__))
CORRUPT_PROMPT, UNREASONABLY_FAST, TOO_MANY_JOBS_ABORTED = 8, 5, 9


class SusHorde(Horde):
    USERS = dict(Horde.USERS, root=["--admin"])


@pytest.fixture(scope="module")
def probe_so(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("probe") / "suspicion-probe.so")
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson"], check=True,
                            capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-shared",
                    "-fPIC", "-fvisibility=hidden", "-Wl,-z,defs",
                    "-I" + os.path.join(ROOT, "core", "include"),
                    os.path.join(HERE, "suspicion_probe.c"), "-o", out, "-lpthread"] + cflags,
                   check=True)
    return out


@pytest.fixture
def make(tmp_path):
    made = []

    def factory(**kw):
        h = SusHorde(str(tmp_path / ("h%d" % len(made))), **kw)
        made.append(h)
        return h

    yield factory
    problems = _finish(made)
    if problems:
        pytest.fail("\n\n".join(problems))


def suspect(h, uid, reason):
    return h.http.post(h.node.url + "/probe/suspect/%d/%d" % (uid, reason), timeout=10)


def whoami(h, name):
    r = h.http.get(h.node.url + "/probe/whoami", headers={"apikey": h.keys[name]}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def user(h, name, key=None):
    r = h.get("/users/%d" % h.ids[name], key=key)
    assert r.status_code == 200, r.text
    return r.json()


def put_user(h, name, body, key):
    return h.http.put(h.url + "/users/%d" % h.ids[name], json=body, headers={"apikey": key},
                      timeout=30)


def worker(h, name):
    r = h.get("/workers/name/" + name, key=h.keys["mod"])
    assert r.status_code == 200, r.text
    return r.json()


def test_user_suspicion_hook_counts_once_per_reason_and_resets(make, probe_so):
    h = make(extra_load=[probe_so])
    bob = h.ids["bob"]
    assert suspect(h, bob, CORRUPT_PROMPT).json() == {"count": 1}
    assert suspect(h, bob, CORRUPT_PROMPT).json() == {"count": 1}  # once only
    assert suspect(h, bob, UNREASONABLY_FAST).json() == {"count": 2}
    assert suspect(h, bob, UNREASONABLY_FAST).json() == {"count": 3}  # every time
    assert suspect(h, bob, TOO_MANY_JOBS_ABORTED).json() == {"count": 4}
    assert whoami(h, "bob")["suspicious"] is False
    assert suspect(h, bob, TOO_MANY_JOBS_ABORTED).json() == {"count": 5}
    me = whoami(h, "bob")
    assert me["suspicion"] == 5 and me["suspicious"] is True
    # the anonymous user is never suspected; unknown users and reasons refused
    assert suspect(h, 0, CORRUPT_PROMPT).json() == {"count": 0}
    assert_error(suspect(h, 999999, CORRUPT_PROMPT), 404, "UserNotFound")
    assert_error(suspect(h, bob, 42), 400, "BadRequest")
    # a trusted user is never suspicious, whatever the count
    for _ in range(5):
        suspect(h, h.ids["alice"], UNREASONABLY_FAST)
    me = whoami(h, "alice")
    assert me["suspicion"] == 5 and me["suspicious"] is False
    # UserDetails: `suspicious` only at privilege 2
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 5
    assert "suspicious" not in user(h, "bob", key=h.keys["bob"])
    assert "suspicious" not in user(h, "bob")
    # the count survives a restart
    h.node.restart()
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 5
    # reset_suspicion clears the count and the once-only reasons
    r = put_user(h, "bob", {"reset_suspicion": True}, h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"new_suspicion": 0}
    assert whoami(h, "bob")["suspicion"] == 0
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 0
    assert suspect(h, bob, CORRUPT_PROMPT).json() == {"count": 1}


def test_long_username_is_cut_and_suspected_once(make):
    h = make()
    long_name = "b" * 40
    r = put_user(h, "bob", {"username": long_name}, h.keys["bob"])
    assert r.status_code == 200 and r.json() == {"username": "b" * 30}
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 1
    r = put_user(h, "bob", {"username": "c" * 35}, h.keys["bob"])
    assert r.status_code == 200
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 1  # USERNAME_LONG counts once
    r = put_user(h, "bob", {"username": "bobby"}, h.keys["bob"])
    assert r.status_code == 200
    assert user(h, "bob", key=h.keys["mod"])["suspicious"] == 1


def test_hn_user_carries_the_account_fields(make, probe_so):
    h = make(extra_load=[probe_so])
    me = whoami(h, "bob")
    assert me == {"id": h.ids["bob"], "deleted": False, "filtered": False,
                  "public_workers": False, "suspicion": 0, "suspicious": False,
                  "usage_multiplier": 1.0}
    assert put_user(h, "bob", {"usage_multiplier": 2.5}, h.keys["root"]).status_code == 200
    assert put_user(h, "bob", {"filtered": True}, h.keys["mod"]).status_code == 200
    assert put_user(h, "bob", {"public_workers": True}, h.keys["bob"]).status_code == 200
    me = whoami(h, "bob")
    assert me["usage_multiplier"] == 2.5 and me["filtered"] is True
    assert me["public_workers"] is True


def test_worker_name_cut_to_100_is_suspicious(make):
    h = make()
    h.pop(owner="wally", name="w" * 150)
    w = worker(h, "w" * 100)
    assert w["name"] == "w" * 100 and w["suspicious"] == 1
    h.pop(owner="wally", name="x" * 250)  # WORKER_NAME_LONG and WORKER_NAME_EXTREME
    assert worker(h, "x" * 100)["suspicious"] == 2
    # a public or owner view has no `suspicious`
    r = h.get("/workers/name/" + "w" * 100)
    assert "suspicious" not in r.json() and "paused" not in r.json()


def test_extreme_max_pixels_from_untrusted_owner(make):
    h = make()
    extreme = 3072 * 3072 + 64
    h.pop(owner="wally", name="greedy", max_pixels=extreme)
    h.pop(owner="wally", name="greedy", max_pixels=extreme)
    assert worker(h, "greedy")["suspicious"] == 1  # counted once
    h.pop(owner="wendy", name="trusted-greedy", max_pixels=extreme)
    assert worker(h, "trusted-greedy")["suspicious"] == 0
    h.pop(owner="wally", name="modest", max_pixels=3072 * 3072)
    assert worker(h, "modest")["suspicious"] == 0


def test_unreasonably_fast_worker_is_paused_at_five(make):
    # a test submits at once: every image is far above 20 MPS/s
    h = make(broker={"unreasonably_fast_mps": 20})
    for i in range(5):
        h.generate(user="alice")
        job = h.pop(owner="wally", name="speedy")
        assert job["id"], i
        h.submit(job["id"], owner="wally")
        w = worker(h, "speedy")
        assert w["suspicious"] == i + 1
        assert w["paused"] is (i + 1 >= 5)
    # paused: someone else's request is no longer handed to it
    h.generate(user="alice")
    assert h.pop(owner="wally", name="speedy")["id"] is None
    # kept with the worker's row
    h.node.restart()
    w = worker(h, "speedy")
    assert w["suspicious"] == 5 and w["paused"] is True


def test_fast_check_off_by_config(make):
    h = make(broker={"unreasonably_fast_mps": 0})
    h.generate(user="alice")
    job = h.pop(owner="wally", name="speedy")
    h.submit(job["id"], owner="wally")
    assert worker(h, "speedy")["suspicious"] == 0


def transfer(h, source, target, amount=10):
    return h.post("/kudos/transfer", {"username": "%s#%d" % (target, h.ids[target]),
                                      "amount": amount}, key=h.keys[source])


def test_kudos_transfers_refuse_suspicious_and_deleted_users(make, probe_so):
    """§3.6: a suspicious source or target and a deleted one are refused with
    their own rc, in the horde's order (the kudos plugin reads hn_user)."""
    h = make(extra_load=[probe_so, "kudos"])
    assert transfer(h, "bob", "wally").status_code == 400  # nothing to give: balance check last
    assert_error(transfer(h, "bob", "wally"), 400, "KudosTransferNotEnough")
    for _ in range(5):
        suspect(h, h.ids["bob"], UNREASONABLY_FAST)
    assert_error(transfer(h, "bob", "wally"), 400, "FaultWhenKudosSending")
    assert_error(transfer(h, "wally", "bob"), 400, "FaultWhenKudosReceiving")
    # a moderator's reset lifts both
    assert put_user(h, "bob", {"reset_suspicion": True}, h.keys["mod"]).status_code == 200
    assert_error(transfer(h, "wally", "bob"), 400, "KudosTransferNotEnough")
    # a deleted target is refused (its key still answers /find_user, as the horde)
    r = h.http.delete(h.url + "/users/%d" % h.ids["bob"], headers={"apikey": h.keys["mod"]},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert_error(transfer(h, "wally", "bob"), 400, "DeletedUser")
