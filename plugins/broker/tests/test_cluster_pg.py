"""Cluster mode (plugins/broker/cluster.c): two broker processes on one
PostgreSQL database (tests/pg.py), with requests and fake workers going
through both. Every image is handed out exactly once, every accepted request
completes, and a PostgreSQL restart in the middle of a run loses no accepted
request."""
import itertools
import os
import sys
import threading
import time

import pytest
import requests

from harness import ROOT, Node, node_config
from hordetest import REFERENCE, REGEN, WEBP_1PX, b64

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_server  # noqa: E402,F401  (fixture)

API = "/api/v2"
# a safety net against a hang, never an assertion about speed
DEADLINE_S = 240


class Cluster:
    """Two nodes (storage-pg, auth, images-db, broker with cluster = true) on
    one fresh database."""

    def __init__(self, tmp_path, server, n_nodes=2, broker=None):
        self.server = server
        self.dbname = "hn_cluster_%d_%d" % (os.getpid(), int(time.time() * 1000) % 10**9)
        self.dsn = server.create_database(self.dbname)
        broker = dict({"cluster": True, "cluster_sync_ms": 100, "model_reference": REFERENCE,
                       "max_untrusted_workers": 1000, "rate_limits": False}, **(broker or {}))
        text = node_config(load=["storage-pg", "auth", "images-db", "broker"],
                           providers={"storage": "postgres", "images": "db"},
                           plugins={"storage-pg": {"dsn": self.dsn, "start_timeout_s": 60},
                                    "auth": {}, "broker": broker})
        self.nodes = []
        for i in range(n_nodes):
            d = tmp_path / ("n%d" % i)
            d.mkdir()
            self.nodes.append(Node(str(d), text))
        self.keys = {}
        for name, flags in (("alice", ["--trusted"]), ("bob", ["--trusted"]),
                            ("carol", ["--trusted"]), ("dave", ["--trusted"]),
                            ("wally", ["--trusted"]),
                            ("ursula", [])):  # untrusted (test_cluster_limits_pg.py)
            r = self.nodes[0].command("user", "create", name, *flags, check=True)
            self.keys[name] = r.stdout.strip().splitlines()[-1]
        for n in self.nodes:
            n.start()

    def call(self, i, method, path, body=None, key=None):
        headers = {"apikey": key} if key else {}
        return requests.request(method, self.nodes[i % len(self.nodes)].url + API + path,
                                json=body, headers=headers, timeout=60)

    def generate(self, i, user, n):
        return self.call(i, "POST", "/generate/async",
                         {"prompt": "a cluster test %d" % i, "models": ["Deliberate"],
                          "params": {"steps": 10, "sampler_name": "k_euler", "n": n}},
                         key=self.keys[user])

    def pop(self, i, name):
        return self.call(i, "POST", "/generate/pop",
                         {"name": name, "models": ["Deliberate"], "bridge_agent": REGEN,
                          "max_pixels": 4194304}, key=self.keys["wally"])

    def submit(self, i, job_id):
        return self.call(i, "POST", "/generate/submit",
                         {"id": job_id, "generation": b64(WEBP_1PX), "seed": 7},
                         key=self.keys["wally"])

    def stop(self):
        problems = []
        for n in self.nodes:
            rc = n.stop()
            if rc not in (None, 0):
                problems.append("node exited with %s:\n%s" % (rc, n.read_log()[-3000:]))
            if n.alerts():
                problems.append("\n".join(n.alerts()[:20]))
        return problems


@pytest.fixture
def cluster(tmp_path, pg_server):
    c = Cluster(tmp_path, pg_server)
    yield c
    problems = c.stop()
    if problems:
        pytest.fail("\n\n".join(problems))


def register_workers(c, names):
    """Each worker's first pop on node 0, then wait until node 1 knows it (so
    both nodes agree on its id before it pops there)."""
    for name in names:
        r = c.pop(0, name)
        assert r.status_code == 200, r.text
    deadline = time.time() + DEADLINE_S
    for name in names:
        while c.call(1, "GET", "/workers/name/" + name).status_code != 200:
            assert time.time() < deadline, "node 1 never saw worker " + name
            time.sleep(0.05)


def accept_requests(c, count, images_each, first=0):
    """count requests, alternating nodes and users, from 4 threads; returns
    {request id: images}. Each must be accepted (202)."""
    accepted = {}
    lock = threading.Lock()
    errors = []
    numbers = iter(range(first, first + count))
    numbers_lock = threading.Lock()

    def client():
        while True:
            with numbers_lock:
                i = next(numbers, None)
            if i is None:
                return
            # four users: each stays under the horde's 30 requests in flight
            r = c.generate(i, ("alice", "bob", "carol", "dave")[i % 4], images_each)
            with lock:
                if r.status_code == 202:
                    accepted[r.json()["id"]] = images_each
                else:
                    errors.append(r.text)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(accepted) == count
    return accepted


class Workers:
    """Fake workers (threads) popping through alternating nodes and
    submitting each job through the *other* node. Every job id handed out is
    recorded; handing one out twice is a failure."""

    def __init__(self, c, names):
        self.c = c
        self.names = names
        self.jobs = []            # (job id, request id) in pop order
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.turn = itertools.count()
        self.errors = []
        self.threads = []

    def start(self):
        self.stop_flag.clear()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in self.names]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()

    def run(self, name):
        while not self.stop_flag.is_set():
            i = next(self.turn)
            try:
                r = self.c.pop(i, name)
            except requests.RequestException as e:
                self.errors.append("pop: %s" % e)
                continue
            if r.status_code != 200:
                self.errors.append("pop %d: %s" % (r.status_code, r.text[:200]))
                time.sleep(0.05)
                continue
            body = r.json()
            ids = body.get("ids") or ([body["id"]] if body.get("id") else [])
            if not ids:
                time.sleep(0.02)
                continue
            with self.lock:
                for jid in ids:
                    self.jobs.append(jid)
            # a job popped is always finished, even after stop(): an
            # unfinished one would come back only when it goes stale
            for jid in ids:
                for _ in range(200):  # a bound, so a broken node cannot hang the test
                    s = self.c.submit(i + 1, jid)
                    if s.status_code == 200:
                        break
                    self.errors.append("submit %d: %s" % (s.status_code, s.text[:200]))
                    time.sleep(0.05)


def wait_done(c, accepted):
    """Every request reports done with all its images, on both nodes."""
    deadline = time.time() + DEADLINE_S
    pending = dict(accepted)
    while pending:
        for rid, n in list(pending.items()):
            ok = True
            for i in range(len(c.nodes)):
                r = c.call(i, "GET", "/generate/check/" + rid)
                assert r.status_code == 200, r.text
                body = r.json()
                ok = ok and body["done"] and body["finished"] == n
            if ok:
                del pending[rid]
        if pending:
            assert time.time() < deadline, "requests never completed: %s" % list(pending)[:5]
            time.sleep(0.1)


def assert_exactly_once(c, workers, accepted):
    assert len(workers.jobs) == len(set(workers.jobs)), "a job was handed out twice"
    assert len(workers.jobs) == sum(accepted.values())
    rows = c.server.psql("SELECT count(*), count(DISTINCT id) FROM broker_jobs", dbname=c.dbname)
    assert rows == [[str(len(workers.jobs)), str(len(workers.jobs))]]
    rows = c.server.psql("SELECT count(*) FROM broker_requests WHERE n <> 0", dbname=c.dbname)
    assert rows == [["0"]]


def test_two_nodes_hand_out_every_job_exactly_once(cluster):
    c = cluster
    names = ["cw-%d" % i for i in range(6)]
    register_workers(c, names)
    workers = Workers(c, names)
    workers.start()
    try:
        accepted = accept_requests(c, 60, 2)
        wait_done(c, accepted)
    finally:
        workers.stop()
    assert_exactly_once(c, workers, accepted)
    # each node sees the other's requests finished, with the images it serves
    rid = next(iter(accepted))
    for i in range(2):
        st = c.call(i, "GET", "/generate/status/" + rid).json()
        assert st["done"] and len(st["generations"]) == 2, st
        img = requests.get(st["generations"][0]["img"], timeout=30)
        assert img.status_code == 200 and img.content == WEBP_1PX
    # both nodes claimed: the jobs were popped through both (alternating turns)
    logs = c.nodes[0].read_log() + c.nodes[1].read_log()
    assert logs.count("cluster: this node runs the periodic jobs") == 1


def test_cancel_and_check_across_nodes(cluster):
    c = cluster
    r = c.generate(0, "alice", 3)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    # made on node 0, answered at once by node 1
    chk = c.call(1, "GET", "/generate/check/" + rid)
    assert chk.status_code == 200 and chk.json()["waiting"] == 3, chk.text
    # cancelled on node 1: node 0 hands nothing of it out
    d = c.call(1, "DELETE", "/generate/status/" + rid)
    assert d.status_code == 200, d.text
    deadline = time.time() + DEADLINE_S
    while True:
        st = c.call(0, "GET", "/generate/check/" + rid).json()
        if st["done"] or st["waiting"] == 0:
            break
        assert time.time() < deadline
        time.sleep(0.05)
    p = c.pop(0, "cancel-w")
    assert p.status_code == 200 and not p.json().get("id") and not p.json().get("ids"), p.text


def test_postgresql_restart_mid_run_loses_no_accepted_request(cluster):
    c = cluster
    names = ["rw-%d" % i for i in range(4)]
    register_workers(c, names)
    accepted = accept_requests(c, 30, 1)
    workers = Workers(c, names)
    workers.start()
    try:
        deadline = time.time() + DEADLINE_S
        while len(workers.jobs) < 10:
            assert time.time() < deadline
            time.sleep(0.02)
        # the workers keep popping and submitting through the restart: their
        # calls fail (500/503) while the database is away and are retried
        c.server.restart()
        # the nodes come back by themselves: new requests are accepted again
        more = {}
        i = 1000
        while len(more) < 10:
            r = c.generate(i, "alice", 1)
            i += 1
            if r.status_code == 202:
                more[r.json()["id"]] = 1
            else:
                assert r.status_code in (500, 503), r.text
                assert time.time() < deadline, "the nodes never recovered: " + r.text
                time.sleep(0.1)
        accepted.update(more)
        wait_done(c, accepted)
    finally:
        workers.stop()
    assert_exactly_once(c, workers, accepted)


def test_stale_job_requeued_once_by_the_leader(tmp_path, pg_server):
    """A job that goes stale is faulted by one node (the leader) and its image
    handed out again exactly once, through whichever node."""
    c = Cluster(tmp_path, pg_server,
                broker={"job_ttl_s": 1, "lifecycle_interval_ms": 100})
    try:
        register_workers(c, ["lazy", "busy"])
        r = c.generate(0, "alice", 1)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        # "lazy" takes the image on node 1 and never answers
        deadline = time.time() + DEADLINE_S
        while True:
            p = c.pop(1, "lazy")
            assert p.status_code == 200, p.text
            if p.json().get("id"):
                break
            assert time.time() < deadline
            time.sleep(0.05)
        lazy_job = p.json()["id"]
        # once stale, "busy" gets it again, popping through both nodes in turn
        got = []
        turn = 0
        while not got:
            assert time.time() < deadline, "the stale image never came back"
            p = c.pop(turn, "busy")
            turn += 1
            assert p.status_code == 200, p.text
            if p.json().get("id"):
                got.append(p.json()["id"])
            else:
                time.sleep(0.05)
        assert got[0] != lazy_job
        assert c.submit(turn, got[0]).status_code == 200
        wait_done(c, {rid: 1})
        # faulted once, handed out twice in all, nothing left waiting
        rows = c.server.psql("SELECT state, aborted FROM broker_jobs ORDER BY started",
                             dbname=c.dbname)
        assert rows == [["2", "1"], ["1", "0"]], rows
        rows = c.server.psql("SELECT n FROM broker_requests", dbname=c.dbname)
        assert rows == [["0"]]
        for i in range(2):  # no third job however much anyone pops
            p = c.pop(i, "busy")
            assert p.status_code == 200 and not p.json().get("id"), p.text
    finally:
        problems = c.stop()
    assert not problems, problems


def test_expiry_runs_once_and_every_node_forgets(tmp_path, pg_server):
    """An expired request is deleted by the leader and forgotten by the other
    node too (no node answers for it any more)."""
    c = Cluster(tmp_path, pg_server, broker={"request_expiry_s": 1, "lifecycle_interval_ms": 100})
    try:
        r = c.generate(1, "alice", 1)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        assert c.call(0, "GET", "/generate/check/" + rid).status_code == 200
        deadline = time.time() + DEADLINE_S
        while any(c.call(i, "GET", "/generate/check/" + rid).status_code != 404
                  for i in range(2)):
            assert time.time() < deadline, "the request never expired on both nodes"
            time.sleep(0.1)
        assert c.server.psql("SELECT count(*) FROM broker_requests", dbname=c.dbname) == [["0"]]
    finally:
        problems = c.stop()
    assert not problems, problems


def test_cluster_on_sqlite_is_refused(tmp_path):
    node = Node(str(tmp_path), node_config(load=["storage-sqlite", "auth", "images-fs", "broker"],
                                           providers={"storage": "sqlite", "images": "fs"},
                                           plugins={"broker": {"cluster": True}}))
    with pytest.raises(RuntimeError) as e:
        node.start()
    assert "cluster = true needs storage-pg" in str(e.value)
    assert node.stop() == 1
