"""The ratings plugin on PostgreSQL (storage-pg): the same SQL must work on
both stores. One pass through pops, ratings, kudos, the trust rules, a shared
generation rated by its requester, the moderation listing and the export.
Skipped only when the PostgreSQL server binaries are missing (make test
installs them)."""
import json
import os
import sys

from harness import ROOT
from ratingstest import V1, V2, Ratings, assert_error, entries

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pg import pg_dsn, pg_server  # noqa: E402,F401  (fixtures)


def test_whole_flow_on_postgres(make_node, tmp_path, pg_dsn):  # noqa: F811
    node = Ratings(make_node, tmp_path, pg_dsn=pg_dsn,
                   ratings={"captcha_every": 3, "captcha_fail_limit": 1},
                   datasets=[{"name": "laion", "entries": entries(3)},
                             {"name": "caps", "entries": [{"file": "c.png", "expected_rating": 7}],
                              "captcha": True}])
    assert node.datasets()["laion"]["image_count"] == 3
    before = node.kudos("alice")
    a = [node.pop("alice") for _ in range(2)]
    for p in a:
        assert node.rate("alice", p["id"], 9, artifacts=0)["reward"] == 5
    assert_error(node.post(V1 + "/rating/" + a[0]["id"], {"rating": 2}, "alice"), 403,
                 "RatingDuplicate")
    assert node.kudos("alice") == before + 10
    # bob fails the captcha (his third pop) and is out
    b = [node.pop("bob") for _ in range(3)]
    node.rate("bob", b[0]["id"], 1)
    assert node.rate("bob", b[2]["id"], 1)["reward"] == 0
    assert_error(node.get(V1 + "/rating/new", "bob"), 403, "RatingTimeout")

    rid = node.generate("carol", shared=True, params={"steps": 10, "n": 2})["id"]
    jobs = [node.work(seed=s) for s in (1, 2)]
    node.wait_pool("horde-shared", 2)
    r = node.post(V2 + "/generate/rate/" + rid, {"best": jobs[0], "ratings": [
        {"id": jobs[0], "rating": 8}, {"id": jobs[1], "rating": 5, "artifacts": 3}]})
    assert r.status_code == 200, r.text
    assert_error(node.post(V2 + "/generate/rate/" + rid, {"best": jobs[1]}), 400,
                 "AestheticsAlreadyExist")

    listing = node.get(V1 + "/user/ratings/?rating=5&rating_comparison=ge", "mod").json()
    assert listing["total"] == 4

    out = tmp_path / "export"
    res = node.node.command("ratings", "export", "--format", "jsonl", str(out))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (out / "ratings.jsonl").read_text().splitlines()]
    assert sorted((x["image_id"], x["rating"]) for x in rows) == sorted(
        [(a[0]["id"], 9), (a[1]["id"], 9), (jobs[0], 8), (jobs[1], 5)])
