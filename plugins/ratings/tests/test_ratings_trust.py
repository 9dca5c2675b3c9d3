"""Black-box tests of the trust rules: captchas with known answers, fast
raters, divergence from the image mean; timeouts, trust, and what the export
leaves out. Run with scripts/pytest."""
import json

from ratingstest import V1, Ratings, assert_error, entries

CAPTCHAS = [{"file": "captcha%d.png" % i, "expected_rating": 7} for i in range(3)]


def captcha_node(make_node, tmp_path, **conf):
    settings = {"captcha_every": 2, "captcha_fail_limit": 1, "timeout_s": 3600}
    settings.update(conf)
    return Ratings(make_node, tmp_path, ratings=settings, datasets=[
        {"name": "laion", "entries": entries(4)},
        {"name": "captchas", "entries": CAPTCHAS, "captcha": True}])


def export_rows(node, tmp_path, name="out"):
    out = tmp_path / name
    r = node.node.command("ratings", "export", "--format", "jsonl", str(out))
    assert r.returncode == 0, r.stderr
    with open(out / "ratings.jsonl") as f:
        return [json.loads(line) for line in f]


def test_failed_captcha_times_out_and_excludes(make_node, tmp_path):
    node = captcha_node(make_node, tmp_path)
    # captcha datasets are not listed and not popped by name
    assert "captchas" not in node.datasets()
    assert_error(node.get(V1 + "/rating/new/captchas", "bob"), 404, "DatasetNotFound")

    laion = node.datasets()["laion"]["id"]
    # alice: image, captcha (answered right), image
    a1 = node.pop("alice")
    assert a1["dataset_id"] == laion
    node.rate("alice", a1["id"], 8)
    a2 = node.pop("alice")
    assert a2["dataset_id"] != laion  # the captcha
    assert node.rate("alice", a2["id"], 7)["reward"] == 5
    a3 = node.pop("alice")
    node.rate("alice", a3["id"], 6)

    # bob: one real rating, then fails the captcha
    before = node.kudos("bob")
    b1 = node.pop("bob")
    node.rate("bob", b1["id"], 2)
    b2 = node.pop("bob")
    assert b2["dataset_id"] != laion
    # the answer looks like any other: 201, but no kudos for a failed captcha
    assert node.rate("bob", b2["id"], 2) == {"reward": 0, "message": "Rating submitted"}
    assert node.kudos("bob") == before + 5
    # timed out: no more images, no more ratings
    assert_error(node.get(V1 + "/rating/new", "bob"), 403, "RatingTimeout")
    chk = node.get(V1 + "/user/check/%d" % node.ids["bob"], "mod").json()
    assert chk["captchas_failed"] == 1 and chk["excluded"] is True and chk["trust"] == 0
    chk = node.get(V1 + "/user/check/%d" % node.ids["alice"], "mod").json()
    assert chk["captchas_failed"] == 0 and chk["trust"] == 1

    rows = export_rows(node, tmp_path)
    # alice's two real ratings; no captcha rows; none of bob's
    assert sorted((r["image_id"], r["rating"]) for r in rows) == sorted(
        [(a1["id"], 8), (a3["id"], 6)])
    assert all(r["rater_trust"] == 1 for r in rows)
    # bob's rating no longer counts in the image's exported mean
    for r in rows:
        if r["image_id"] == b1["id"]:
            assert r["count"] == 1 and r["mean"] == r["rating"]


def test_captcha_tolerance_and_limit(make_node, tmp_path):
    node = captcha_node(make_node, tmp_path, captcha_fail_limit=2, captcha_tolerance=1)
    laion = node.datasets()["laion"]["id"]
    served = [node.pop("bob") for _ in range(4)]  # image, captcha, image, captcha
    assert [p["dataset_id"] == laion for p in served] == [True, False, True, False]
    # 6 is within 1 of 7: passed and paid
    assert node.rate("bob", served[1]["id"], 6)["reward"] == 5
    # 3 fails, but the limit is 2 failures: no timeout yet, trust halved
    assert node.rate("bob", served[3]["id"], 3)["reward"] == 0
    chk = node.get(V1 + "/user/check/%d" % node.ids["bob"], "mod").json()
    assert chk["captchas_failed"] == 1 and chk["trust"] == 0.5 and chk["excluded"] is False
    node.rate("bob", served[0]["id"], 5)
    rows = export_rows(node, tmp_path)
    assert [(r["image_id"], r["rater_trust"]) for r in rows] == [(served[0]["id"], 0.5)]


def test_fast_raters_are_timed_out(make_node, tmp_path):
    # every rating counts as fast; two in a row time the rater out
    node = Ratings(make_node, tmp_path, ratings={"min_rating_s": 3600, "fast_limit": 2},
                   datasets=[{"name": "laion", "entries": entries(4)}])
    for _ in range(2):
        node.rate("carol", node.pop("carol")["id"], 5)
    assert_error(node.get(V1 + "/rating/new", "carol"), 403, "RatingTimeout")
    # others are not affected
    node.pop("alice")


def test_divergent_rater_loses_trust_and_export(make_node, tmp_path):
    node = Ratings(make_node, tmp_path,
                   ratings={"divergence_min_ratings": 2, "divergence": 4, "min_trust_ratings": 2},
                   datasets=[{"name": "laion", "entries": entries(2)}])
    for user in ("alice", "carol"):
        for _ in range(2):
            node.rate(user, node.pop(user)["id"], 8)
    # bob rates both images far from their means
    for _ in range(2):
        node.rate("bob", node.pop("bob")["id"], 1)
    chk = node.get(V1 + "/user/check/%d?divergence=4" % node.ids["bob"], "mod").json()
    assert chk["suspect_divergences"] == 2 and chk["trust"] == 0
    rows = export_rows(node, tmp_path)
    assert len(rows) == 4 and {r["rating"] for r in rows} == {8}
    assert all(r["count"] == 2 and r["mean"] == 8 for r in rows)
