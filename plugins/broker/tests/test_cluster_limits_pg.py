"""Cluster mode (plugins/broker/cluster.c, stats.c, generate.c, pop.c): more
of what used to be per node.

- /stats/img/totals counts the images finished through every node ("minute"
  and "hour" from mod_stats_recent, the rest from mod_stats_img);
- a request the cluster-wide concurrency limit refuses (429) does not count
  as an image requested;
- max_untrusted_workers holds across nodes: the new worker's row is inserted
  under a per-user advisory lock, and only if the owner's workers in the
  table stay within the limit.

Real PostgreSQL (tests/pg.py), real broker processes over loopback HTTP."""
import os
import sys

from harness import ROOT
from hordetest import REGEN
from test_cluster_counters_pg import finish, user_records, wait_for
from test_cluster_pg import Cluster, register_workers

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_server  # noqa: E402,F401  (fixture)


def pop_job(c, node, name):
    """A job for worker `name` through `node`, once that node knows one."""
    def probe():
        p = c.pop(node, name)
        assert p.status_code == 200, p.text
        return p.json().get("id")
    return wait_for("a job through node %d" % node, probe)


def test_totals_count_images_finished_through_every_node(tmp_path, pg_server):
    c = Cluster(tmp_path, pg_server)
    try:
        register_workers(c, ["statter"])
        for node in (0, 1):
            r = c.generate(node, "alice", 1)
            assert r.status_code == 202, r.text
            jid = pop_job(c, node, "statter")
            s = c.submit(node, jid)
            assert s.status_code == 200, s.text

        def both_counted():
            for node in (0, 1):
                t = c.call(node, "GET", "/stats/img/totals").json()
                got = [t[k]["images"] for k in ("minute", "hour", "day", "month", "total")]
                if got != [2, 2, 2, 2, 2]:
                    return None
            return True

        wait_for("both nodes' totals count both images", both_counted)
        t0 = c.call(0, "GET", "/stats/img/totals").json()
        t1 = c.call(1, "GET", "/stats/img/totals").json()
        assert t0 == t1, (t0, t1)
        assert t0["minute"]["ps"] > 0 and t0["minute"]["ps"] == t0["total"]["ps"]
    finally:
        finish(c)


def test_request_refused_by_the_cluster_limit_is_not_counted(tmp_path, pg_server):
    """Node 1 does not learn of node 0's request (its sync round is a minute
    away), so its own check passes and the table's refuses (429)."""
    c = Cluster(tmp_path, pg_server, broker={"lifecycle_interval_ms": 100,
                                             "cluster_sync_ms": 60000})
    try:
        r = c.generate(0, "alice", 20)
        assert r.status_code == 202, r.text
        r = c.generate(1, "alice", 20)  # 40 > 30 in the cluster, 20 on node 1
        assert r.status_code == 429, r.text
        assert r.json()["rc"] == "TooManyPrompts"
        # taken back before the answer went out
        assert user_records(c, 1, "alice")["request"]["image"] == 0
        assert user_records(c, 0, "alice")["request"]["image"] == 20
        # an accepted one still counts; the row (both nodes' flushes) has
        # exactly the two accepted requests
        assert c.generate(1, "alice", 10).status_code == 202
        assert user_records(c, 1, "alice")["request"]["image"] == 10
        wait_for("the row says 30", lambda: c.server.psql(
            "SELECT images_requested FROM broker_user_stats WHERE images_requested > 0",
            dbname=c.dbname) == [["30"]])
    finally:
        finish(c)


def pop_as(c, node, user, name):
    return c.call(node, "POST", "/generate/pop",
                  {"name": name, "models": ["Deliberate"], "bridge_agent": REGEN,
                   "max_pixels": 4194304}, key=c.keys[user])


def test_untrusted_worker_limit_holds_across_nodes(tmp_path, pg_server):
    """Node 1 would not learn of node 0's workers for a minute: only the table
    can tell it ursula is at her limit (1: the horde refuses a new worker when
    more than the limit exist, so two are allowed)."""
    c = Cluster(tmp_path, pg_server, broker={"cluster_sync_ms": 60000,
                                             "max_untrusted_workers": 1})
    try:
        assert pop_as(c, 0, "ursula", "u-one").status_code == 200
        assert pop_as(c, 1, "ursula", "u-two").status_code == 200
        for node in (1, 0):  # node 1 knows one of hers, node 0 the other
            r = pop_as(c, node, "ursula", "u-three")
            assert r.status_code == 403, r.text
            body = r.json()
            assert body["rc"] == "TooManyWorkers", body
            assert "up to 1 distinct workers" in body["message"], body
            assert c.call(node, "GET", "/workers/name/u-three").status_code == 404
        rows = c.server.psql("SELECT name FROM broker_workers ORDER BY name", dbname=c.dbname)
        assert rows == [["u-one"], ["u-two"]], rows
        # the known ones keep popping; trusted users are not limited
        assert pop_as(c, 1, "ursula", "u-two").status_code == 200
        for name in ("w-1", "w-2", "w-3"):
            assert c.pop(1, name).status_code == 200
    finally:
        finish(c)
