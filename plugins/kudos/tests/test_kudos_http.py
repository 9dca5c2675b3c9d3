"""Black-box tests of the kudos plugin: real horde-node processes (storage-sqlite,
auth, images-fs, broker, kudos) on random loopback ports, driven over HTTP and
the command line. Run with scripts/pytest.

The price model and the model reference are read from the shared data folder
(HN_SHARED or ../shared); tests that need them are skipped without it.
"""
import base64
import os
import re
import time

import sys

import pytest
import requests

from harness import BUILD, ROOT, SHARED

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_dsn, pg_server  # noqa: E402,F401  (fixtures)

API = "/api/v2"
MODEL = os.path.join(SHARED, "data", "kudos-model", "kudos-v21-206.json")
REFERENCE = os.path.join(SHARED, "data", "model-reference", "stable_diffusion.json")
REGEN13 = "AI Horde Worker reGen:13.0.0:https://github.com/Haidra-Org/horde-worker-reGen"
OTHER_BRIDGE = "Some Bridge:1.0:https://example.invalid"
WEBP_1PX = base64.b64encode(
    base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")).decode()

HAVE_SHARED = os.path.exists(MODEL) and os.path.exists(REFERENCE)
HAVE_BROKER = os.path.exists(os.path.join(BUILD, "plugins", "broker.so"))

USERS = [  # created in this order: admin is user 1, the only one who may award
    ("admin", ["--admin"]),
    ("alice", ["--kudos", "1000"]),
    ("bob", []),
    ("carol", ["--kudos", "100"]),
    ("wally", []),               # an untrusted worker owner
    ("wendy", ["--trusted"]),    # a trusted worker owner
]


class Horde:
    def __init__(self, make_node, kudos=None, broker=True, pg_dsn=None, broker_conf=None):
        conf = {}
        if HAVE_SHARED:
            conf = {"price_model": MODEL, "model_reference": REFERENCE}
        conf.update(kudos or {})
        storage = "storage-pg" if pg_dsn else "storage-sqlite"
        load = [storage, "auth", "images-fs"] + (["broker"] if broker else []) + ["kudos"]
        plugins = {"kudos": conf}
        if pg_dsn:
            plugins["storage-pg"] = {"dsn": pg_dsn}
        if broker:
            plugins["broker"] = {"max_untrusted_workers": 1000}
            if HAVE_SHARED:
                plugins["broker"]["model_reference"] = REFERENCE
            plugins["broker"].update(broker_conf or {})
        self.node = make_node(load=load,
                              providers={"storage": "postgres" if pg_dsn else "sqlite", "images": "fs"},
                              plugins=plugins, start=False)
        self.keys, self.ids = {}, {}
        for name, flags in USERS:
            r = self.node.command("user", "create", name, *flags)
            assert r.returncode == 0, r.stderr
            self.keys[name] = r.stdout.strip().splitlines()[-1]
            m = re.search(r"%s#(\d+)" % name, r.stdout)
            assert m, r.stdout
            self.ids[name] = int(m.group(1))
        assert self.ids["admin"] == 1
        self.node.start()
        self.http = requests.Session()

    def url(self, path):
        return self.node.url + API + path

    def post(self, path, body=None, key=None, headers=None):
        h = dict(headers or {})
        if key is not None:
            h["apikey"] = key
        return self.http.post(self.url(path), json=body, headers=h, timeout=30)

    def put(self, path, body=None, key=None):
        h = {"apikey": key} if key is not None else {}
        return self.http.put(self.url(path), json=body, headers=h, timeout=30)

    def details(self, name, key=None):
        r = self.http.get(self.url("/users/%d" % self.ids[name]),
                          headers={"apikey": key} if key else {}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def kudos(self, name):
        return self.details(name)["kudos"]

    def wait_kudos(self, name, want, timeout=5.0):
        """Settlements are written just after the broker answered: poll briefly."""
        deadline = time.time() + timeout
        while True:
            got = self.kudos(name)
            if abs(got - want) < 1e-6 or time.time() > deadline:
                return got
            time.sleep(0.02)

    def transfer(self, src, target, amount=None, key=None, headers=None):
        body = {"username": target}
        if amount is not None:
            body["amount"] = amount
        return self.post("/kudos/transfer", body, key=self.keys[src] if key is None else key,
                         headers=headers)

    # ---- the image flow ----
    def generate(self, user, expect=202, **body):
        body.setdefault("prompt", "a red square")
        body.setdefault("params", {})
        body.setdefault("models", ["Deliberate"])
        r = self.post("/generate/async", body, key=self.keys[user])
        assert r.status_code == expect, r.text
        return r.json()

    def pop(self, owner, name, bridge=REGEN13, **extra):
        body = {"name": name, "models": ["Deliberate"], "bridge_agent": bridge, "nsfw": True,
                "max_pixels": 4194304}
        body.update(extra)
        r = self.post("/generate/pop", body, key=self.keys[owner])
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, owner, job_id, **extra):
        body = {"id": job_id, "generation": WEBP_1PX, "state": "ok", "seed": 1}
        body.update(extra)
        r = self.post("/generate/submit", body, key=self.keys[owner])
        assert r.status_code == 200, r.text
        return r.json()


def rc_of(r):
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.text
    return r.json().get("rc")


@pytest.fixture
def horde(make_node):
    h = Horde(make_node, broker=HAVE_BROKER)
    yield h
    h.http.close()


@pytest.fixture
def kudos_only(make_node):
    """A node without the broker: transfers, awards, details."""
    h = Horde(make_node, broker=False)
    yield h
    h.http.close()


# ---- transfers ----------------------------------------------------------------------------------

def test_transfer_refusals_each_with_its_rc(kudos_only):
    h = kudos_only
    bob = "bob#%d" % h.ids["bob"]
    r = h.post("/kudos/transfer", {"username": bob, "amount": 1})
    assert r.status_code == 400 and "apikey" in r.json()["errors"]
    r = h.transfer("alice", bob, 1, key="not-a-key-of-anyone-xyz1")
    assert r.status_code == 401 and rc_of(r) == "InvalidAPIKey"
    cases = [
        ("alice", bob, 1, "0000000000", "KudosTransferFromAnon"),
        ("alice", "nobody#999999", 1, None, "InvalidTargetUsername"),
        ("alice", "no-hash-at-all", 1, None, "InvalidTargetUsername"),
        ("alice", "Anonymous#0", 1, None, "KudosTransferToAnon"),
        ("alice", "alice#%d" % h.ids["alice"], 1, None, "KudosTransferToSelf"),
        ("alice", bob, -5, None, "NegativeKudosTransfer"),
        ("alice", bob, 0, None, "InvalidKudosTransferAmount"),
        # 1000 kudos, floor 25: 975 can go
        ("alice", bob, 976, None, "KudosTransferNotEnough"),
        ("bob", "alice#%d" % h.ids["alice"], 1, None, "KudosTransferNotEnough"),
    ]
    for src, target, amount, key, rc in cases:
        r = h.transfer(src, target, amount, key=key)
        assert r.status_code == 400, (rc, r.text)
        assert rc_of(r) == rc, r.text
        assert r.json()["message"]
    r = h.transfer("alice", bob, "lots")
    assert r.status_code == 400 and "amount" in r.json()["errors"]
    # nothing moved
    assert h.kudos("alice") == 1000
    assert h.kudos("bob") == 0


def test_transfer_moves_kudos_and_the_reverse_is_too_fast(kudos_only):
    h = kudos_only
    r = h.transfer("alice", "bob#%d" % h.ids["bob"], 300)
    assert r.status_code == 200, r.text
    assert r.json() == {"transferred": 300}
    alice, bob = h.details("alice"), h.details("bob")
    assert alice["kudos"] == 700 and bob["kudos"] == 300
    assert alice["kudos_details"]["gifted"] == -300
    assert bob["kudos_details"]["received"] == 300
    # the opening balance from `user create --kudos` counts as an admin grant
    assert alice["kudos_details"]["admin"] == 1000
    # the default amount is 100
    r = h.transfer("alice", "carol#%d" % h.ids["carol"])
    assert r.json() == {"transferred": 100}
    assert h.kudos("carol") == 200
    # bob cannot send straight back within a minute
    r = h.transfer("bob", "alice#%d" % h.ids["alice"], 10)
    assert rc_of(r) == "TooFastKudosTransfers"
    # but to someone else
    assert h.transfer("bob", "carol#%d" % h.ids["carol"], 10).status_code == 200
    assert h.kudos("bob") == 290


def test_transfer_idempotency_key(kudos_only):
    h = kudos_only
    carol = "carol#%d" % h.ids["carol"]
    key = {"Idempotency-Key": "order-42"}
    for _ in range(3):
        r = h.transfer("alice", carol, 50, headers=key)
        assert r.status_code == 200 and r.json() == {"transferred": 50}
    assert h.kudos("alice") == 950
    assert h.kudos("carol") == 150
    r = h.transfer("alice", carol, 51, headers=key)
    assert rc_of(r) == "IdempotencyKeyConflict"
    r = h.transfer("alice", "bob#%d" % h.ids["bob"], 50, headers=key)
    assert rc_of(r) == "IdempotencyKeyConflict"
    assert h.kudos("alice") == 950


# ---- awards and the admin kudos field -----------------------------------------------------------

def test_award_only_by_user_1(kudos_only):
    h = kudos_only
    bob = "bob#%d" % h.ids["bob"]
    r = h.post("/kudos/award", {"username": bob, "amount": 250}, key=h.keys["alice"])
    assert r.status_code == 403 and rc_of(r) == "NotAllowedAwards"
    r = h.post("/kudos/award", {"username": bob, "amount": 250}, key=h.keys["admin"])
    assert r.status_code == 200 and r.json() == {"awarded": 250}
    d = h.details("bob")
    assert d["kudos"] == 250 and d["kudos_details"]["awarded"] == 250
    r = h.post("/kudos/award", {"username": "Anonymous#0"}, key=h.keys["admin"])
    assert r.status_code == 400 and rc_of(r) == "KudosAwardToAnon"
    r = h.post("/kudos/award", {"username": "ghost#4242"}, key=h.keys["admin"])
    assert r.status_code == 400 and rc_of(r) == "InvalidAwardUsername"


def test_admin_kudos_on_put_users(kudos_only):
    h = kudos_only
    path = "/users/%d" % h.ids["carol"]
    r = h.put(path, {"kudos": 40}, key=h.keys["alice"])
    assert r.status_code == 403 and rc_of(r) == "NotAdmin"
    r = h.put(path, {"kudos": 40}, key=h.keys["admin"])
    assert r.status_code == 200 and r.json() == {"new_kudos": 140}
    r = h.put(path, {"kudos": -500}, key=h.keys["admin"])
    # a debit stops at the floor (25 for a registered user)
    assert r.status_code == 200 and r.json() == {"new_kudos": 25}
    assert h.details("carol")["kudos_details"]["admin"] == 100 + 40 - 500
    r = h.put(path, {}, key=h.keys["admin"])
    assert r.status_code == 400 and rc_of(r) == "NoUserModSelected"
    r = h.put("/users/abc", {"kudos": 1}, key=h.keys["admin"])
    assert r.status_code == 404 and rc_of(r) == "UserNotFound"
    r = h.put("/users/999999", {"kudos": 1}, key=h.keys["admin"])
    assert r.status_code == 404 and rc_of(r) == "UserNotFound"


def test_balances_survive_a_restart(kudos_only):
    h = kudos_only
    assert h.transfer("alice", "bob#%d" % h.ids["bob"], 123).status_code == 200
    h.node.restart()
    assert h.kudos("alice") == 877
    assert h.kudos("bob") == 123


def test_the_ledger_on_postgresql(make_node, pg_dsn):
    """The same SQL on storage-pg: opening balances, transfers (with a key),
    awards, the floor on an admin debit, kudos_details sums."""
    h = Horde(make_node, broker=False, pg_dsn=pg_dsn)
    try:
        bob, carol = "bob#%d" % h.ids["bob"], "carol#%d" % h.ids["carol"]
        assert h.kudos("alice") == 1000
        for _ in range(2):
            r = h.transfer("alice", bob, 300, headers={"Idempotency-Key": "pg-1"})
            assert r.status_code == 200, r.text
        assert rc_of(h.transfer("alice", bob, 676)) == "KudosTransferNotEnough"
        assert rc_of(h.transfer("bob", "alice#%d" % h.ids["alice"], 1)) == "TooFastKudosTransfers"
        r = h.post("/kudos/award", {"username": carol, "amount": 7}, key=h.keys["admin"])
        assert r.status_code == 200, r.text
        r = h.put("/users/%d" % h.ids["carol"], {"kudos": -1000}, key=h.keys["admin"])
        assert r.json() == {"new_kudos": 25}
        a, b, c = h.details("alice"), h.details("bob"), h.details("carol")
        assert (a["kudos"], b["kudos"], c["kudos"]) == (700, 300, 25)
        assert a["kudos_details"]["gifted"] == -300
        assert b["kudos_details"]["received"] == 300
        assert c["kudos_details"]["awarded"] == 7 and c["kudos_details"]["admin"] == -900
    finally:
        h.http.close()


# ---- with the broker: prices, the image cycle, escrow, upfront, priority -------------------------

needs_broker = pytest.mark.skipif(not (HAVE_BROKER and HAVE_SHARED),
                                  reason="needs build/plugins/broker.so and the shared data")


@needs_broker
def test_price_and_dry_run_are_the_horde_s(horde):
    h = horde
    # 512x512, 30 steps, k_euler_a, cfg 5, karras: 7.61 kudos per image (golden)
    assert h.generate("alice", params={})["kudos"] == 8
    # 1024x1024 50 steps k_euler cfg 7.5: 29.03
    assert h.generate("alice", params={"width": 1024, "height": 1024, "steps": 50,
                                       "sampler_name": "k_euler", "cfg_scale": 7.5})["kudos"] == 29
    # the estimate: burn(7.61) * n * 1 (an SD1 model) + 1 = (7.61 + 1) * 2 + 1
    r = h.post("/generate/async", {"prompt": "x", "params": {"n": 2}, "models": ["Deliberate"],
                                   "dry_run": True}, key=h.keys["bob"])
    assert r.status_code == 200 and r.json() == {"kudos": 18}
    # an SDXL model doubles the estimate: (7.61 + 1) * 2 + 1
    r = h.post("/generate/async", {"prompt": "x", "params": {},
                                   "models": ["AlbedoBase XL (SDXL)"], "dry_run": True},
               key=h.keys["bob"])
    assert r.json() == {"kudos": 18}


@needs_broker
def test_full_cycle_charges_the_requester_and_pays_the_owner(horde):
    h = horde
    assert h.kudos("alice") == 1000
    req = h.generate("alice", params={})
    # the activation tax is charged at once
    assert h.wait_kudos("alice", 999) == 999
    job = h.pop("wendy", "wendy-1")
    assert job["id"], job
    r = h.submit("wendy", job["id"])
    assert r["reward"] == 7.61  # G = 7.61 x 1 (an SD1 model)
    # the requester burns G + 1 (the per-image tax), the owner earns G
    assert h.wait_kudos("alice", 999 - 8.61) == pytest.approx(990.39)
    assert h.wait_kudos("wendy", 7.61) == pytest.approx(7.61)
    a, w = h.details("alice"), h.details("wendy")
    assert a["kudos_details"]["accumulated"] == pytest.approx(-9.61)
    assert w["kudos_details"]["accumulated"] == pytest.approx(7.61)
    st = h.http.get(h.url("/generate/check/" + req["id"]), timeout=30).json()
    assert st["done"] and st["finished"] == 1


@needs_broker
def test_full_cycle_on_postgresql(make_node, pg_dsn):
    """The writer's batched events (savepoints) and the settlement SQL on storage-pg."""
    h = Horde(make_node, pg_dsn=pg_dsn)
    try:
        for _ in range(3):
            h.generate("alice", params={})
        for _ in range(3):
            job = h.pop("wendy", "wendy-pg")
            assert job["id"], job
            assert h.submit("wendy", job["id"])["reward"] == 7.61
        assert h.wait_kudos("alice", 1000 - 3 * (1 + 8.61)) == pytest.approx(971.17)
        assert h.wait_kudos("wendy", 3 * 7.61) == pytest.approx(22.83)
    finally:
        h.http.close()


@needs_broker
def test_untrusted_owner_earns_half_into_escrow(horde):
    h = horde
    # a bridge the horde does not know has no capabilities: no r2, no karras
    h.generate("alice", params={"sampler_name": "k_euler", "karras": False}, r2=False)
    job = h.pop("wally", "wally-1", bridge=OTHER_BRIDGE)
    assert job["id"], job
    g = h.submit("wally", job["id"])["reward"]
    assert g > 0
    # an unknown bridge earns 75% of G; half of that (rounded) is held back
    earned = g * 0.75
    held = round(earned / 2, 2)
    assert h.wait_kudos("wally", earned - held) == pytest.approx(earned - held, abs=0.006)
    d = h.details("wally", key=h.keys["admin"])  # privilege 2 shows the escrow
    assert d["evaluating_kudos"] == pytest.approx(held)
    assert "evaluating_kudos" not in h.details("wally")
    assert d["kudos_details"]["accumulated"] == pytest.approx(earned - held, abs=0.006)


@needs_broker
def test_escrow_past_the_threshold_promotes_to_trusted(make_node):
    h = Horde(make_node, kudos={"trust_threshold": 2.0, "trust_min_age_s": 0})
    try:
        assert h.details("wally")["trusted"] is False
        h.generate("alice", params={"sampler_name": "k_euler", "karras": False}, r2=False)
        job = h.pop("wally", "wally-t", bridge=OTHER_BRIDGE)
        g = h.submit("wally", job["id"])["reward"]
        # half of 0.75 G went to escrow, which is over 2: all of it is released
        earned = g * 0.75
        assert round(earned / 2, 2) > 2
        assert h.wait_kudos("wally", earned) == pytest.approx(earned, abs=0.006)
        d = h.details("wally", key=h.keys["admin"])
        assert d["trusted"] is True
        assert d["evaluating_kudos"] == 0
    finally:
        h.http.close()


@needs_broker
def test_censored_image_costs_only_the_tax(horde):
    h = horde
    h.generate("alice", params={})
    job = h.pop("wendy", "wendy-c")
    h.submit("wendy", job["id"],
             gen_metadata=[{"type": "censorship", "value": "csam"}])
    assert h.wait_kudos("alice", 999 - 1) == 998
    assert h.wait_kudos("wendy", 7.61) == pytest.approx(7.61)


@needs_broker
def test_upfront_kudos_refusal_and_reservation(horde):
    h = horde
    big = {"width": 1088, "height": 1024}  # over 1024x1024 on an idle horde
    r = h.post("/generate/async", {"prompt": "x", "params": big, "models": ["Deliberate"]},
               key=h.keys["bob"])
    assert r.status_code == 403 and rc_of(r) == "KudosUpfront", r.text
    msg = r.json()["message"]
    assert "over 1024x1024" in msg
    required = float(re.search(r"requires ([0-9.e+-]+) kudos", msg).group(1))
    # alice can pay: her request is queued and the amount reserved
    h.generate("alice", params=big)
    assert h.wait_kudos("alice", 999) == 999
    # what is reserved cannot be given away: 999 - 25 (floor) - required
    free = 999 - 25 - required
    r = h.transfer("alice", "carol#%d" % h.ids["carol"], int(free) + 1)
    assert rc_of(r) == "KudosTransferNotEnough", r.text
    r = h.transfer("alice", "carol#%d" % h.ids["carol"], int(free))
    assert r.status_code == 200, r.text


def broker_forwards_upfront_flags(h):
    """True once the broker hands `dry_run`/`allow_downgrade` to generation_validate
    (see "Needs from the broker" in the README): a dry run of a request bob cannot
    pay up front then answers its estimate instead of 403."""
    r = h.post("/generate/async", {"prompt": "x", "params": {"width": 1088, "height": 1024},
                                   "models": ["Deliberate"], "dry_run": True}, key=h.keys["bob"])
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


@needs_broker
def test_dry_run_and_downgrade_when_upfront_kudos_are_missing(horde):
    h = horde
    if not broker_forwards_upfront_flags(h):
        pytest.skip("the broker does not pass dry_run/allow_downgrade to generation_validate yet")
    # the downgraded request is queued: 1536x1536 fits 1024x1024 and 50 steps become 30
    req = h.generate("bob", params={"width": 1536, "height": 1536, "steps": 50},
                     allow_downgrade=True)
    job = h.pop("wendy", "wendy-d")
    assert job["id"], job
    p = job["payload"]
    assert (p["width"], p["height"], p["ddim_steps"]) == (1024, 1024, 30)
    # without allow_downgrade the same request is refused
    r = h.post("/generate/async", {"prompt": "x", "params": {"width": 1536, "height": 1536},
                                   "models": ["Deliberate"]}, key=h.keys["bob"])
    assert r.status_code == 403 and rc_of(r) == "KudosUpfront"
    assert req["id"]


@needs_broker
def test_queue_order_follows_kudos(horde):
    h = horde
    poor = h.generate("bob", params={})
    rich = h.generate("alice", params={})
    # the queue snapshot behind queue_position is rebuilt every second
    deadline = time.time() + 5
    while time.time() < deadline:
        qr = h.http.get(h.url("/generate/check/" + rich["id"]), timeout=30).json()
        qp = h.http.get(h.url("/generate/check/" + poor["id"]), timeout=30).json()
        if qr["queue_position"] == 1 and qp["queue_position"] == 2:
            break
        time.sleep(0.1)
    assert (qr["queue_position"], qp["queue_position"]) == (1, 2)
    job = h.pop("wendy", "wendy-q")
    first = h.http.get(h.url("/generate/check/" + rich["id"]), timeout=30).json()
    assert first["processing"] == 1, (job, first)


@needs_broker
def test_uptime_reward_after_an_interval(make_node):
    h = Horde(make_node, kudos={"uptime_interval_s": 1, "worker_stale_s": 60})
    try:
        h.pop("wendy", "wendy-up")
        time.sleep(1.2)
        h.pop("wendy", "wendy-up")
        time.sleep(1.2)
        h.pop("wendy", "wendy-up")
        # 50 + 2 per model (one model), no LoRAs: 52 per interval
        got = h.wait_kudos("wendy", 52)
        assert got in (52, 104), got
    finally:
        h.http.close()
