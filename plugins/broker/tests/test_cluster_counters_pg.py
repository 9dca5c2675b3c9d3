"""Cluster mode (plugins/broker/cluster.c, store.c): what used to be per node.

- users' and workers' counters are written relatively (`col = col + the
  difference since the last write`), so two nodes counting for the same user
  and worker at the same time both count, and each node shows the other's
  counts after a sync round;
- a user's concurrency limit (images waiting) holds across nodes: the
  request's insert checks the table under a per-user advisory lock;
- a stale-job fault whose commit fails while PostgreSQL is down is kept and
  committed once it is back (br_op_retry).

Real PostgreSQL (tests/pg.py), real broker processes over loopback HTTP."""
import os
import sys
import threading
import time

import pytest

from harness import ROOT
from test_cluster_pg import Cluster, register_workers, wait_done

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_server  # noqa: E402,F401  (fixture)

# a safety net against a hang, never an assertion about speed
DEADLINE_S = 240


def finish(c):
    problems = c.stop()
    assert not problems, problems


def wait_for(what, probe):
    """Polls probe() until it returns a true value; returns it."""
    deadline = time.time() + DEADLINE_S
    while True:
        v = probe()
        if v:
            return v
        assert time.time() < deadline, "never happened: " + what
        time.sleep(0.1)


def user_records(c, i, user):
    r = c.call(i, "GET", "/find_user", key=c.keys[user])
    assert r.status_code == 200, r.text
    return r.json()["records"]


def test_two_nodes_count_the_same_user_and_worker(tmp_path, pg_server):
    """alice asks through both nodes at once, wally's worker pops and submits
    through both: every node ends up showing the sums, and so do the rows."""
    c = Cluster(tmp_path, pg_server, broker={"lifecycle_interval_ms": 100})
    try:
        register_workers(c, ["counted"])
        per_node, threads_per_node = 12, 2
        errors, accepted = [], {}
        lock = threading.Lock()

        def client(node):
            for _ in range(per_node // threads_per_node):
                r = c.generate(node, "alice", 1)
                with lock:
                    if r.status_code == 202:
                        accepted[r.json()["id"]] = 1
                    else:
                        errors.append(r.text)

        threads = [threading.Thread(target=client, args=(node,))
                   for node in (0, 1) for _ in range(threads_per_node)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        total = 2 * per_node
        assert len(accepted) == total
        # one worker with two threads, one popping through each node and
        # submitting through the other: both nodes count its submits (and
        # alice's and wally's) at the same time
        done = []
        deadline = time.time() + DEADLINE_S

        def worker_thread(node):
            while len(done) < total and time.time() < deadline:
                p = c.pop(node, "counted")
                if p.status_code != 200:
                    errors.append(p.text)
                    return
                jid = p.json().get("id")
                if not jid:
                    time.sleep(0.02)
                    continue
                s = c.submit(node + 1, jid)
                if s.status_code != 200:
                    errors.append(s.text)
                    return
                with lock:
                    done.append(jid)

        threads = [threading.Thread(target=worker_thread, args=(node,)) for node in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(done) == total == len(set(done))
        wait_done(c, accepted)

        def sums_everywhere():
            for i in (0, 1):
                a = user_records(c, i, "alice")
                w = user_records(c, i, "wally")
                wk = c.call(i, "GET", "/workers/name/counted").json()
                if (a["request"]["image"], w["fulfillment"]["image"],
                        wk["requests_fulfilled"]) != (total, total, total):
                    return None
            return True

        wait_for("both nodes show %d images requested/fulfilled" % total, sums_everywhere)
        # the rows have the sums too (what a restarted node loads)
        assert wait_for("the user rows", lambda: c.server.psql(
            "SELECT s.images_requested FROM broker_user_stats s WHERE s.images_requested > 0",
            dbname=c.dbname) == [[str(total)]])
        assert wait_for("the worker row", lambda: c.server.psql(
            "SELECT requests_fulfilled FROM broker_workers WHERE name = 'counted'",
            dbname=c.dbname) == [[str(total)]])
        rows = c.server.psql("SELECT images_fulfilled FROM broker_user_stats "
                             "WHERE images_fulfilled > 0", dbname=c.dbname)
        assert rows == [[str(total)]], rows
        # megapixelsteps add up the same way
        a0 = user_records(c, 0, "alice")["usage"]["megapixelsteps"]
        a1 = user_records(c, 1, "alice")["usage"]["megapixelsteps"]
        w0 = user_records(c, 0, "wally")["contribution"]["megapixelsteps"]
        assert a0 == a1 == w0 > 0
    finally:
        finish(c)


def test_user_at_its_limit_on_one_node_is_refused_on_the_other(tmp_path, pg_server):
    """Node 1 would not learn of node 0's request for a minute (its sync round
    is that slow here): only the table can tell it alice is at her limit."""
    c = Cluster(tmp_path, pg_server, broker={"cluster_sync_ms": 60000})
    try:
        limit = 30  # auth's default concurrency (the horde's)
        r = c.generate(0, "alice", 20)
        assert r.status_code == 202, r.text
        r = c.generate(1, "alice", 20)  # 40 > 30 in the cluster, 20 on node 1
        assert r.status_code == 429, r.text
        body = r.json()
        assert body["rc"] == "TooManyPrompts", body
        assert "(40)" in body["message"] and "(%d)" % limit in body["message"], body
        # exactly up to the limit is fine, through either node
        r = c.generate(1, "alice", 10)
        assert r.status_code == 202, r.text
        r = c.generate(0, "alice", 1)
        assert r.status_code == 429, r.text
        # another user is not affected
        assert c.generate(1, "bob", 20).status_code == 202
        rows = c.server.psql("SELECT user_id, sum(n) FROM broker_requests GROUP BY user_id "
                             "ORDER BY 2", dbname=c.dbname)
        assert [n for _, n in rows] == ["20", "30"], rows
    finally:
        finish(c)


def test_stale_fault_during_postgresql_outage_is_committed_after(tmp_path, pg_server):
    """The node faults a stale job while PostgreSQL is down: its commit fails,
    is kept, and lands once the database is back; the image is then handed
    out again exactly once. One node, so that no other node could fault the
    job from its own memory instead; its sync round is slow, so it still
    believes it leads (runs the sweep) while the database is away, as a leader
    does until its next round notices."""
    c = Cluster(tmp_path, pg_server, n_nodes=1,
                broker={"job_ttl_s": 1, "lifecycle_interval_ms": 100,
                        "cluster_sync_ms": 60000})
    try:
        register_workers_one(c, ["lazy", "busy"])
        r = c.generate(0, "alice", 1)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        p = c.pop(0, "lazy")
        assert p.status_code == 200 and p.json().get("id"), p.text
        lazy_job = p.json()["id"]
        pg_server.stop()
        try:
            # the job goes stale in the node's memory; its commit fails
            wait_for("the stale fault in memory", lambda: c.call(
                0, "GET", "/generate/check/" + rid).json().get("waiting") == 1)
            wait_for("a failed commit", lambda: "writer: commit failed" in c.nodes[0].read_log()
                     or "writer: batch of" in c.nodes[0].read_log())
        finally:
            pg_server.start()
        rows = wait_for("the fault committed", lambda: [row for row in c.server.psql(
            "SELECT state, aborted FROM broker_jobs", dbname=c.dbname) if row == ["2", "1"]])
        assert rows == [["2", "1"]]
        assert wait_for("the image back in the table", lambda: c.server.psql(
            "SELECT n FROM broker_requests", dbname=c.dbname) == [["1"]])
        # handed out once more, and only once
        p = wait_for("a pop after the outage", lambda: (lambda x: x if x.status_code == 200
                     and x.json().get("id") else None)(c.pop(0, "busy")))
        again = p.json()["id"]
        assert again != lazy_job
        assert c.submit(0, again).status_code == 200
        wait_done(c, {rid: 1})
        p = c.pop(0, "busy")
        assert p.status_code == 200 and not p.json().get("id"), p.text
        rows = c.server.psql("SELECT state, aborted FROM broker_jobs ORDER BY started",
                             dbname=c.dbname)
        assert rows == [["2", "1"], ["1", "0"]], rows
    finally:
        finish(c)


def register_workers_one(c, names):
    for name in names:
        r = c.pop(0, name)
        assert r.status_code == 200, r.text
