"""Black-box tests of the kudos plugin with the broker, over real HTTP: the
ledger after a crash (SIGKILL) between the broker's commit and the ledger's,
reservations released when a request ends (generation_ended), worker details
(worker_details) and promotion reaching auth's roles (user_set_roles).

Run with scripts/pytest; the Horde helper is test_kudos_http's.
"""
import os
import sqlite3
import time

import pytest

from test_kudos_http import (API, HAVE_BROKER, HAVE_SHARED, OTHER_BRIDGE, Horde,  # noqa: F401
                             rc_of)

needs_broker = pytest.mark.skipif(not (HAVE_BROKER and HAVE_SHARED),
                                  reason="needs build/plugins/broker.so and the shared data")

PLAIN = {"sampler_name": "k_euler", "karras": False}  # what an unknown bridge can run


def until(fn, timeout=15.0):
    """Polls fn() until it returns something true; returns the last value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.05)


def ledger_db(h):
    return sqlite3.connect(os.path.join(h.node.data_dir, "horde.db"))


def set_conf(node, old, new):
    with open(node.config) as f:
        text = f.read()
    assert old in text, text
    with open(node.config, "w") as f:
        f.write(text.replace(old, new))


# ---- exactly once across a crash ----------------------------------------------------------------

@needs_broker
def test_sigkill_between_broker_commit_and_ledger_loses_and_doubles_nothing(make_node):
    # the ledger writer holds every batch back: each submit is durable in the
    # broker (its 200 came after the commit) while the ledger has not moved
    h = Horde(make_node, kudos={"writer_delay_ms": 600000})
    try:
        reqs, jobs = [], []
        for i in range(3):
            reqs.append(h.generate("alice", params={})["id"])
            job = h.pop("wendy", "wendy-crash")
            assert job["id"], job
            jobs.append(job["id"])
            assert h.submit("wendy", job["id"])["reward"] == 7.61
        # the window is open: nothing of the 3 activations and 3 settlements is written
        assert h.kudos("alice") == 1000 and h.kudos("wendy") == 0
        assert h.node.kill() == -9
        # back without the hold: the broker re-announces its record, the ledger catches up
        set_conf(h.node, "writer_delay_ms = 600000;", "writer_delay_ms = 0;")
        h.node.start()
        want_alice, want_wendy = 1000 - 3 * (1 + 8.61), 3 * 7.61
        assert h.wait_kudos("alice", want_alice, 15) == pytest.approx(want_alice)
        assert h.wait_kudos("wendy", want_wendy, 15) == pytest.approx(want_wendy)
        # killed again right after a start, and restarted twice: the same record
        # is announced each time and moves nothing more
        h.node.kill()
        h.node.start()
        h.node.restart()
        assert h.kudos("alice") == pytest.approx(want_alice)
        assert h.kudos("wendy") == pytest.approx(want_wendy)
        h.node.stop()
        db = ledger_db(h)
        try:
            for rid in reqs:
                n = db.execute("SELECT COUNT(*) FROM kudos_ledger WHERE event = ? AND"
                               " reason = 'activation'", ("activate:" + rid,)).fetchone()[0]
                assert n == 1, rid
            for jid in jobs:
                rows = db.execute("SELECT user_id, reason, amount FROM kudos_ledger"
                                  " WHERE event = ? ORDER BY reason", ("job:" + jid,)).fetchall()
                assert rows == [(h.ids["wendy"], "generation", 761),
                                (h.ids["alice"], "usage", -861)], (jid, rows)
            # every balance and escrow is the sum of its rows
            bad = db.execute(
                "SELECT COUNT(*) FROM kudos_accounts a WHERE"
                " a.balance <> (SELECT COALESCE(SUM(amount), 0) FROM kudos_ledger g"
                "               WHERE g.user_id = a.user_id AND g.bucket = 0) OR"
                " a.escrow <> (SELECT COALESCE(SUM(amount), 0) FROM kudos_ledger g"
                "              WHERE g.user_id = a.user_id AND g.bucket = 1)").fetchone()[0]
            assert bad == 0
            total = db.execute("SELECT balance FROM kudos_accounts WHERE user_id = ?",
                               (h.ids["alice"],)).fetchone()[0]
            assert total == 100000 - 3 * 961
        finally:
            db.close()
    finally:
        h.http.close()


@needs_broker
def test_sigkill_right_after_submits_without_a_hold(make_node):
    """The usual timing (the ledger a few ms behind): whatever the kill caught,
    after the restart every job is paid exactly once."""
    h = Horde(make_node)
    try:
        jobs = []
        for _ in range(4):
            h.generate("alice", params={})
            job = h.pop("wendy", "wendy-kill")
            jobs.append(job["id"])
            h.submit("wendy", job["id"])
        h.node.kill()
        h.node.start()
        want = 1000 - 4 * 9.61
        assert h.wait_kudos("alice", want, 15) == pytest.approx(want)
        assert h.wait_kudos("wendy", 4 * 7.61, 15) == pytest.approx(4 * 7.61)
        h.node.stop()
        db = ledger_db(h)
        try:
            for jid in jobs:
                n = db.execute("SELECT COUNT(*) FROM kudos_ledger WHERE event = ?",
                               ("job:" + jid,)).fetchone()[0]
                assert n == 2, jid
        finally:
            db.close()
    finally:
        h.http.close()


# ---- generation_ended: reservations released at once --------------------------------------------

def reserved_amount(h):
    """Alice's upfront request: queued with its estimate reserved. Returns
    (request id, kudos available to transfer while it is reserved)."""
    big = {"width": 1088, "height": 1024}
    r = h.post("/generate/async", {"prompt": "x", "params": big, "models": ["Deliberate"]},
               key=h.keys["bob"])
    assert r.status_code == 403 and rc_of(r) == "KudosUpfront", r.text
    import re
    required = float(re.search(r"requires ([0-9.e+-]+) kudos", r.json()["message"]).group(1))
    rid = h.generate("alice", params=big)["id"]
    assert h.wait_kudos("alice", 999) == 999
    return rid, int(999 - 25 - required)


def transfer_ok(h, amount):
    r = h.transfer("alice", "carol#%d" % h.ids["carol"], amount)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert rc_of(r) == "KudosTransferNotEnough", r.text
    return r.status_code == 200


@needs_broker
def test_a_cancel_releases_the_reservation_at_once(make_node):
    # request_ttl_s is an hour: only the hook can release it within the test
    h = Horde(make_node, kudos={"request_ttl_s": 3600})
    try:
        rid, free = reserved_amount(h)
        assert not transfer_ok(h, free + 1)
        r = h.http.delete(h.url("/generate/status/" + rid), timeout=30)
        assert r.status_code == 200, r.text
        # everything above the floor can go again (the transfer is retried while
        # the release is on its way to the ledger)
        assert until(lambda: transfer_ok(h, 999 - 25))
        assert h.kudos("alice") == 25
    finally:
        h.http.close()


@needs_broker
def test_an_expired_request_releases_the_reservation(make_node):
    h = Horde(make_node, kudos={"request_ttl_s": 3600},
              broker_conf={"request_expiry_s": 2, "lifecycle_interval_ms": 100})
    try:
        rid, free = reserved_amount(h)
        assert not transfer_ok(h, free + 1)
        # nobody pops it: the broker drops it after 2 s and says so
        assert until(lambda: transfer_ok(h, 999 - 25))
        r = h.http.get(h.url("/generate/check/" + rid), timeout=30)
        assert r.status_code == 404
    finally:
        h.http.close()


@needs_broker
def test_a_finished_request_ends_once_and_its_reservation_is_gone(make_node):
    h = Horde(make_node, kudos={"request_ttl_s": 3600})
    try:
        rid, free = reserved_amount(h)
        job = h.pop("wendy", "wendy-big", max_pixels=4194304)
        assert job["id"], job
        h.submit("wendy", job["id"])
        # done: what the image cost is paid, the rest of the reservation is free
        paid = h.wait_kudos("alice", 999 - 1)  # anything but 999 once settled
        assert paid < 999
        assert until(lambda: transfer_ok(h, int(paid - 25)))
    finally:
        h.http.close()


# ---- worker_details ------------------------------------------------------------------------------

@needs_broker
def test_worker_details_show_generated_and_uptime_kudos(make_node):
    h = Horde(make_node, kudos={"uptime_interval_s": 1, "worker_stale_s": 60})
    try:
        h.generate("alice", params={})
        job = h.pop("wendy", "wendy-w")
        h.submit("wendy", job["id"])
        assert h.wait_kudos("wendy", 7.61) == pytest.approx(7.61)
        workers = h.http.get(h.url("/workers"), timeout=30).json()
        mine = [w for w in workers if w["name"] == "wendy-w"]
        assert len(mine) == 1
        w = mine[0]
        assert w["kudos_rewards"] == pytest.approx(7.61)
        assert w["kudos_details"] == {"generated": pytest.approx(7.61), "uptime": 0}
        # an uptime reward: 50 + 2 x 1 model
        time.sleep(1.2)
        h.pop("wendy", "wendy-w")
        time.sleep(1.2)
        h.pop("wendy", "wendy-w")
        assert h.wait_kudos("wendy", 7.61 + 52) >= 7.61 + 52 - 1e-6

        def details():
            d = h.http.get(h.url("/workers/" + w["id"]), timeout=30).json()
            return d if d["kudos_details"]["uptime"] >= 52 else None
        d = until(details)
        assert d, "no uptime in the worker's kudos_details"
        assert d["kudos_details"]["generated"] == pytest.approx(7.61)
        assert d["kudos_rewards"] == pytest.approx(7.61 + d["kudos_details"]["uptime"])
        by_name = h.http.get(h.url("/workers/name/wendy-w"), timeout=30).json()
        assert by_name["kudos_details"] == d["kudos_details"]
    finally:
        h.http.close()


# ---- promotion reaches auth's roles ----------------------------------------------------------------

@needs_broker
def test_promotion_makes_the_owner_trusted_and_unpauses_his_worker(make_node):
    h = Horde(make_node, kudos={"trust_threshold": 2.0, "trust_min_age_s": 0})
    try:
        h.generate("alice", params=PLAIN, r2=False)
        wanted = h.generate("alice", params=PLAIN, r2=False, trusted_workers=True)["id"]
        job = h.pop("wally", "wally-p", bridge=OTHER_BRIDGE)
        assert job["id"], job
        # wally is untrusted: the trusted-workers request is not his
        again = h.pop("wally", "wally-p", bridge=OTHER_BRIDGE)
        assert again["id"] is None and again["skipped"].get("untrusted") == 1, again
        # and a moderator pauses his worker (a paused worker serves only its owner)
        wid = h.http.get(h.url("/workers/name/wally-p"), timeout=30).json()["id"]
        r = h.put("/workers/" + wid, {"paused": True}, key=h.keys["admin"])
        assert r.status_code == 200, r.text
        h.submit("wally", job["id"])  # escrow over 2: promoted, and unpaused (§3.5)

        def popped():
            j = h.pop("wally", "wally-p", bridge=OTHER_BRIDGE)
            return j if j["id"] else None
        j = until(popped)
        assert j, "the promoted owner's worker never got the trusted-workers request"
        st = h.http.get(h.url("/generate/check/" + wanted), timeout=30).json()
        assert st["processing"] == 1
        # the role is auth's now: the worker's details (owner roles) say trusted
        w = h.http.get(h.url("/workers/name/wally-p"), headers={"apikey": h.keys["admin"]},
                       timeout=30).json()
        assert w["trusted"] is True and w["paused"] is False
    finally:
        h.http.close()


# ---- monthly kudos ----------------------------------------------------------------------------------

def test_monthly_kudos_are_paid_as_recurring(make_node):
    h = Horde(make_node, broker=False, kudos={"monthly_check_s": 1})
    try:
        r = h.put("/users/%d" % h.ids["carol"], {"monthly_kudos": 40}, key=h.keys["admin"])
        if r.status_code in (404, 405) or "monthly_kudos" not in r.json():
            pytest.skip("auth does not serve the monthly_kudos field of PUT /users/{id}")
        assert r.status_code == 200, r.text
        # carol had 100; never received: paid at the next check, then not again this month
        assert h.wait_kudos("carol", 140, 10) == 140
        d = h.details("carol", key=h.keys["admin"])
        assert d["kudos_details"]["recurring"] == 40
        assert d["monthly_kudos"]["amount"] == 40
        assert d["monthly_kudos"]["last_received"]
        time.sleep(2.5)  # two more checks: nothing is due before a month
        assert h.kudos("carol") == 140
    finally:
        h.http.close()


# ---- §3.3 f: upfront kudos for requests naming workers ---------------------------------------------

@needs_broker
def test_naming_workers_needs_the_kudos_up_front_when_configured(make_node):
    h = Horde(make_node, kudos={"upfront_on_workerlist": True})
    try:
        h.pop("wendy", "wendy-l")
        wid = h.http.get(h.url("/workers/name/wendy-l"), timeout=30).json()["id"]
        body = {"prompt": "x", "params": {}, "models": ["Deliberate"], "workers": [wid]}
        # bob has nothing: refused, and a downgrade does not help
        for extra in ({}, {"allow_downgrade": True}):
            r = h.post("/generate/async", dict(body, **extra), key=h.keys["bob"])
            assert r.status_code == 403 and rc_of(r) == "KudosUpfront", r.text
        # alice can pay; without `workers` bob's small request needs nothing up front
        assert h.post("/generate/async", body, key=h.keys["alice"]).status_code == 202
        plain = dict(body)
        del plain["workers"]
        assert h.post("/generate/async", plain, key=h.keys["bob"]).status_code == 202
    finally:
        h.http.close()


# ---- transfers to a shared key ---------------------------------------------------------------------

@needs_broker
def test_a_transfer_to_a_shared_key_reaches_its_owner(make_node):
    h = Horde(make_node)
    try:
        r = h.put("/sharedkeys", {"kudos": 100, "name": "alice's key"}, key=h.keys["alice"])
        assert r.status_code == 200, r.text
        skey = r.json()["id"]
        r = h.transfer("carol", skey, 10)
        assert r.status_code == 200 and r.json() == {"transferred": 10}, r.text
        assert h.kudos("alice") == 1010 and h.kudos("carol") == 90
        assert h.details("alice")["kudos_details"]["received"] == 10
        # §3.6: the key's own budget grows by the amount too
        r = h.http.get(h.url("/sharedkeys/" + skey), headers={"apikey": h.keys["alice"]},
                       timeout=30)
        assert r.status_code == 200 and r.json()["kudos"] == 110, r.text
        # an unlimited key stays unlimited
        r = h.put("/sharedkeys", {"kudos": -1, "name": "open"}, key=h.keys["alice"])
        assert r.status_code == 200, r.text
        open_key = r.json()["id"]
        assert h.transfer("carol", open_key, 5).status_code == 200
        r = h.http.get(h.url("/sharedkeys/" + open_key), headers={"apikey": h.keys["alice"]},
                       timeout=30)
        assert r.json()["kudos"] == -1, r.text
        # one's own key is oneself
        assert rc_of(h.transfer("alice", skey, 1)) == "KudosTransferToSelf"
        r = h.transfer("carol", "00000000-0000-4000-8000-000000000000", 1)
        assert rc_of(r) == "InvalidTargetUsername"
    finally:
        h.http.close()
