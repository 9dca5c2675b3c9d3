"""Black-box tests of the image pool fed by shared generations, of POST
/api/v2/generate/rate/{id} (a requester rates their own shared request, with
the horde's rcs and rewards), and of the export (command and download)
against what was rated. Run with scripts/pytest."""
import csv
import io
import json

import pytest

from ratingstest import V1, V2, Ratings, assert_error, entries


@pytest.fixture
def node(make_node, tmp_path):
    return Ratings(make_node, tmp_path)


def shared_request(node, n=2, user="alice", **body):
    rid = node.generate(user, shared=True, params={"steps": 10, "sampler_name": "k_euler",
                                                   "n": n, "width": 512, "height": 512,
                                                   "cfg_scale": 6.5}, **body)["id"]
    jobs = [node.work(seed=50 + i) for i in range(n)]
    assert all(jobs)
    return rid, jobs


def test_shared_generations_enter_the_pool(node):
    rid, jobs = shared_request(node)
    assert node.status(rid)["shared"] is True
    assert node.wait_pool("horde-shared", 2) == 2
    # a request that is not shared stays out
    private = node.generate("bob")["id"]
    assert node.work(seed=99)
    assert node.status(private)["shared"] is False

    got = {node.pop("carol")["id"] for _ in range(2)}
    assert got == set(jobs)
    assert_error(node.get(V1 + "/rating/new", "carol"), 404, "NoImagesToRate")
    # the requester is not served their own images
    assert_error(node.get(V1 + "/rating/new", "alice"), 404, "NoImagesToRate")
    # the image outlives the request's own storage: served by the ratings API
    r = node.http.get(node.node.url + V1 + "/image/file/" + jobs[0], timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"


def test_rate_own_generation_checks(node):
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_error(node.post(V2 + "/generate/rate/" + unknown, {"best": unknown}), 404,
                 "RequestNotFound")
    assert_error(node.post(V2 + "/generate/rate/nope", {"best": unknown}), 404, "RequestNotFound")

    # not done yet
    waiting = node.generate("alice", shared=True)["id"]
    assert_error(node.post(V2 + "/generate/rate/" + waiting, {"best": unknown}), 400,
                 "AestheticsNotCompleted")
    node.work()
    # not shared
    private = node.generate("bob")["id"]
    job = node.work()
    assert_error(node.post(V2 + "/generate/rate/" + private, {"ratings": [
        {"id": job, "rating": 5}]}), 400, "AestheticsNotPublic")

    rid, jobs = shared_request(node)
    url = V2 + "/generate/rate/" + rid
    assert_error(node.post(url, {"ratings": [{"id": unknown, "rating": 5}]}), 400,
                 "ProcGenNotFound")
    assert_error(node.post(url, {"ratings": [{"id": jobs[0], "rating": 5},
                                             {"id": jobs[0], "rating": 6}]}), 400,
                 "AestheticsDuplicate")
    assert_error(node.post(url, {"best": unknown}), 400, "ProcGenNotFound")
    assert_error(node.post(url, {}), 400, "AestheticsMissing")
    for bad in ({"ratings": [{"id": jobs[0], "rating": 11}]}, {"ratings": "x"},
                {"best": "short"}):
        assert_error(node.post(url, bad), 400, "BadRequest")
    # a best alone in a set of one
    solo, solo_jobs = shared_request(node, n=1)
    assert_error(node.post(V2 + "/generate/rate/" + solo, {"best": solo_jobs[0]}), 400,
                 "AestheticsSolo")


def test_rate_own_tie_needs_best_among_tied(node):
    rid, jobs = shared_request(node, n=3)
    url = V2 + "/generate/rate/" + rid
    body = {"best": jobs[2], "ratings": [{"id": jobs[0], "rating": 9},
                                         {"id": jobs[1], "rating": 9},
                                         {"id": jobs[2], "rating": 4}]}
    assert_error(node.post(url, body), 400, "AestheticsConfused")


def test_rate_own_rewards_once(node):
    rid, jobs = shared_request(node)
    node.wait_pool("horde-shared", 2)
    consumed = node.status(rid)["kudos"]
    before = node.kudos("alice")
    url = V2 + "/generate/rate/" + rid
    r = node.post(url, {"ratings": [{"id": jobs[0], "rating": 8, "artifacts": 1},
                                    {"id": jobs[1], "rating": 3}]})
    assert r.status_code == 200, r.text
    want = min(15, max(consumed - 1, 0))
    assert r.json() == {"reward": pytest.approx(want)}
    assert node.kudos("alice") == pytest.approx(before + want)
    assert_error(node.post(url, {"best": jobs[0]}), 400, "AestheticsAlreadyExist")
    assert node.kudos("alice") == pytest.approx(before + want)
    # the ratings are in the pool under the requester's name
    got = node.get(V1 + "/image/ratings/" + jobs[0]).json()
    assert got["ratings"] == [{"username": "alice#%d" % node.ids["alice"], "rating": 8,
                               "artifacts": 1}]


def test_rate_own_best_only_reward(node):
    rid, jobs = shared_request(node)
    consumed = node.status(rid)["kudos"]
    r = node.post(V2 + "/generate/rate/" + rid, {"best": jobs[1]})
    assert r.status_code == 200, r.text
    assert r.json()["reward"] == pytest.approx(min(15, max(consumed - 1, 0)))


def read_export(node, tmp_path, fmt):
    out = tmp_path / ("export-" + fmt)
    r = node.node.command("ratings", "export", "--format", fmt, str(out))
    assert r.returncode == 0, r.stderr
    text = (out / ("ratings." + fmt)).read_text()
    rows = ([json.loads(x) for x in text.splitlines()] if fmt == "jsonl"
            else list(csv.DictReader(io.StringIO(text))))
    return out, rows, text


def test_export_holds_every_accepted_rating(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, datasets=[{"name": "laion", "entries": entries(2)}])
    rid, jobs = shared_request(node, n=1)
    node.wait_pool("horde-shared", 1)
    rated = {}
    for user, rating, artifacts in (("bob", 7, 2), ("carol", 4, None), (None, 9, 0)):
        for _ in range(3):
            p = node.pop(user)
            node.rate(user, p["id"], rating, artifacts=artifacts)
            rated.setdefault(p["id"], []).append((rating, artifacts))

    out, rows, _ = read_export(node, tmp_path, "jsonl")
    assert len(rows) == 9
    assert sorted((r["image_id"], r["rating"], r["artifacts"]) for r in rows) == sorted(
        (i, v, a) for i, lst in rated.items() for v, a in lst)
    for r in rows:
        mine = [v for v, _ in rated[r["image_id"]]]
        assert r["count"] == len(mine) and r["mean"] == pytest.approx(
            round(sum(mine) / len(mine), 2))
        assert r["url"].endswith("/api/v1/image/file/" + r["image_id"])
        assert len(r["rater"]) == 64 and r["rater_trust"] == 1
        saved = (out / r["file"]).read_bytes()
        # the command knows the node's public URL, not the test's random port
        assert saved == node.get(V1 + "/image/file/" + r["image_id"]).content
    shared = [r for r in rows if r["image_id"] == jobs[0]]
    assert shared and all(r["prompt"] == "a watercolor fox" and r["model"] == "Deliberate"
                          and r["sampler"] == "k_euler" and r["width"] == 512
                          and r["steps"] == 10 and r["cfg_scale"] == 6.5
                          and r["dataset"] == "horde-shared" and r["seed"] == "50"
                          for r in shared)
    laion = [r for r in rows if r["dataset"] == "laion"]
    assert laion and all(r["prompt"].startswith("img prompt") and r["model"].startswith("model-")
                         for r in laion)
    # the same rater hashes the same
    assert len({r["rater"] for r in rows}) == 3
    assert "CC-BY-SA-4.0" in (out / "README.md").read_text()

    _, csv_rows, _ = read_export(node, tmp_path, "csv")
    assert len(csv_rows) == 9
    assert {(r["image_id"], int(r["rating"])) for r in csv_rows} == {
        (r["image_id"], r["rating"]) for r in rows}

    # the download endpoint serves the same rows
    d = node.get(V1 + "/download/ratings.jsonl")
    assert d.status_code == 200
    assert sorted(json.loads(x)["image_id"] for x in d.text.splitlines()) == sorted(
        r["image_id"] for r in rows)
    d = node.get(V1 + "/download/ratings.csv")
    assert d.status_code == 200 and d.headers["Content-Type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(d.text)))) == 9
    assert_error(node.get(V1 + "/download/secrets.txt"), 404, "FileNotFound")
    bad = node.node.command("ratings", "export", "--format", "parquet", str(tmp_path / "x"))
    assert bad.returncode == 2
