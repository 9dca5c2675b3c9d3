"""Black-box tests of the ratings API v1 (/api/v1/...): pops, ratings, datasets,
image ratings, the moderation listings, their status codes and rcs, and the
kudos each accepted rating pays, over real HTTP against real nodes.
Run with scripts/pytest."""
import os
import sqlite3
import time
import uuid

import pytest
import requests

from ratingstest import V1, Ratings, assert_error, entries, make_dataset


@pytest.fixture
def node(make_node, tmp_path):
    return Ratings(make_node, tmp_path, datasets=[{"name": "laion", "entries": entries(3)}])


def test_datasets_pop_rate_and_kudos_once(node):
    ds = node.datasets()
    assert set(ds) == {"horde-shared", "laion"}
    assert ds["laion"]["image_count"] == 3 and ds["horde-shared"]["image_count"] == 0
    assert len(ds["laion"]["id"]) == 36 and isinstance(ds["laion"]["description"], str)

    before = node.kudos("alice")
    popped = node.pop("alice")
    assert set(popped) == {"id", "url", "dataset_id"}
    assert popped["dataset_id"] == ds["laion"]["id"]
    img = node.http.get(popped["url"], timeout=30)
    assert img.status_code == 200 and img.headers["Content-Type"] == "image/png"
    assert img.content in node.files.values()

    out = node.rate("alice", popped["id"], 8, artifacts=1)
    assert out == {"reward": 5.0, "message": "Rating submitted"}
    assert node.kudos("alice") == before + 5
    assert node.awarded("alice") == 5

    # a second rating of the same image: 403, and no second payment
    r = node.post(V1 + "/rating/" + popped["id"], {"rating": 3}, "alice")
    assert_error(r, 403, "RatingDuplicate")
    assert node.kudos("alice") == before + 5

    # the named artifact levels of some clients
    second = node.pop("alice")
    assert second["id"] != popped["id"]
    assert node.rate("alice", second["id"], 4, artifacts="GARBAGE")["reward"] == 5
    got = node.get(V1 + "/image/ratings/" + second["id"]).json()
    assert got["ratings"] == [{"username": "alice#%d" % node.ids["alice"], "rating": 4,
                               "artifacts": 5}]
    assert node.kudos("alice") == before + 10 and node.awarded("alice") == 10


def test_rating_input_errors(node):
    image = node.pop("alice")["id"]
    for body in ({}, {"rating": 0}, {"rating": 11}, {"rating": "7"}, {"rating": 7.5},
                 {"rating": 5, "artifacts": 6}, {"rating": 5, "artifacts": -1},
                 {"rating": 5, "artifacts": "NICE"}):
        r = node.post(V1 + "/rating/" + image, body, "alice")
        err = assert_error(r, 400, "BadRequest")
        assert err["message"] == "Input payload validation failed" and err["errors"]
    r = node.http.post(node.node.url + V1 + "/rating/" + image, data=b"{not json",
                       headers=node.headers("alice", {"Content-Type": "application/json"}))
    assert_error(r, 400)
    # nothing was stored by the refusals: the real rating still goes through
    assert node.rate("alice", image, 7, artifacts=None)["reward"] == 5


def test_not_found_not_served_bad_key(node):
    assert_error(node.post(V1 + "/rating/00000000-0000-4000-8000-000000000000", {"rating": 5},
                           "alice"), 404, "ImageNotFound")
    image = node.pop("alice")["id"]
    # bob was never served it
    assert_error(node.post(V1 + "/rating/" + image, {"rating": 5}, "bob"), 403, "ImageNotServed")
    assert_error(node.get(V1 + "/rating/new", "not-a-key"), 401, "InvalidAPIKey")
    assert_error(node.post(V1 + "/rating/" + image, {"rating": 5}, "not-a-key"), 401,
                 "InvalidAPIKey")
    assert_error(node.get(V1 + "/rating/new/no-such-dataset", "alice"), 404, "DatasetNotFound")
    assert_error(node.get(V1 + "/image/ratings/00000000-0000-4000-8000-000000000000"), 404,
                 "ImageNotFound")
    assert_error(node.get(V1 + "/image/file/00000000-0000-4000-8000-000000000000"), 404,
                 "ImageNotFound")


def test_never_twice_and_enough_raters(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, ratings={"ratings_per_image": 2},
                   datasets=[{"name": "laion", "entries": entries(4)}])
    seen = {}
    for user in ("alice", "bob"):
        ids = []
        while True:
            r = node.get(V1 + "/rating/new", user)
            if r.status_code == 404:
                assert r.json()["rc"] == "NoImagesToRate"
                break
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
            node.rate(user, ids[-1], 5)
        assert len(ids) == len(set(ids)) == 4  # every image, none twice
        seen[user] = ids
    # every image has its two ratings now: carol gets none
    assert_error(node.get(V1 + "/rating/new", "carol"), 404, "NoImagesToRate")
    for image in seen["alice"]:
        got = node.get(V1 + "/image/ratings/" + image).json()
        assert got["times_rated"] == 2 and got["total"] == 2 and got["average"] == 5.0


def test_dataset_and_model_filters(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, datasets=[
        {"name": "laion", "entries": entries(4)},
        {"name": "other", "entries": entries(2, prefix="o")}])
    ds = node.datasets()
    for path, want in (("/" + ds["other"]["id"], ds["other"]["id"]), ("/other", ds["other"]["id"])):
        assert node.pop("alice", path)["dataset_id"] == want
    by_model = [node.pop("bob", "/laion/model-b") for _ in range(2)]
    assert all(p["dataset_id"] == ds["laion"]["id"] for p in by_model)
    assert_error(node.get(V1 + "/rating/new/laion/model-b", "bob"), 404, "NoImagesToRate")
    assert_error(node.get(V1 + "/rating/new/laion/model-z", "carol"), 404, "NoImagesToRate")


def test_anonymous_rates_without_kudos(node):
    popped = node.pop(None)
    assert node.rate(None, popped["id"], 6) == {"reward": 0, "message": "Rating submitted"}
    assert_error(node.post(V1 + "/rating/" + popped["id"], {"rating": 6}), 403, "RatingDuplicate")
    # the anonymous key is the same rater as no key
    other = node.pop("0000000000")
    assert other["id"] != popped["id"]
    got = node.get(V1 + "/image/ratings/" + popped["id"]).json()
    assert got["ratings"] == [{"username": "Anonymous#0", "rating": 6, "artifacts": None}]


def test_rate_limit_429(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, ratings={"max_per_minute": 2},
                   datasets=[{"name": "laion", "entries": entries(3)}])
    before = node.kudos("alice")
    ids = [node.pop("alice")["id"] for _ in range(3)]
    node.rate("alice", ids[0], 5)
    node.rate("alice", ids[1], 5)
    assert_error(node.post(V1 + "/rating/" + ids[2], {"rating": 5}, "alice"), 429,
                 "TooManyRatings")
    assert node.kudos("alice") == before + 10


def test_pop_limit_429(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, ratings={"max_pops_per_minute": 2},
                   datasets=[{"name": "laion", "entries": entries(3)}])
    node.pop("alice")
    node.pop("alice")
    assert_error(node.get(V1 + "/rating/new", "alice"), 429, "TooManyRequests")
    node.pop("bob")  # per rater


def test_teams_lists_public_teams(node):
    r = node.get(V1 + "/teams")
    assert r.status_code == 200 and isinstance(r.json(), list)
    # a team made on the horde side (broker) shows up in the ratings' form
    made = node.post("/api/v2/teams", {"name": "Raters United", "info": "we rate"}, "wally")
    if made.status_code == 404:
        pytest.skip("this broker serves no teams")
    assert made.status_code == 200, made.text
    team_id = made.json()["id"]
    got = node.get(V1 + "/teams").json()
    assert {"id": team_id, "team_name": "Raters United", "is_private": False} in got
    for t in got:
        assert set(t) == {"id", "team_name", "is_private"}


def test_import_errors(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, datasets=[])
    node.node.stop()
    # metadata as a JSON array works too
    node.import_dataset("arr", entries(2, prefix="a"), jsonl=False)
    # a captcha dataset needs expected ratings
    r = node.import_dataset("bad-captcha", entries(1, prefix="c"), captcha=True, expect_rc=1)
    assert "expected_rating" in r.stderr
    r = node.node.command("ratings", "import", str(tmp_path / "missing"))
    assert r.returncode == 1 and "metadata" in r.stderr
    assert node.node.command("ratings").returncode == 2
    node.node.start()
    assert node.datasets()["arr"]["image_count"] == 2


def test_moderation_listings(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, ratings={"divergence_min_ratings": 1},
                   datasets=[{"name": "laion", "entries": entries(2)}])
    images = []
    for user, rating in (("alice", 9), ("bob", 1), ("carol", 8)):
        for _ in range(2):
            p = node.pop(user)
            node.rate(user, p["id"], rating, artifacts=2 if user == "bob" else None)
            images.append(p["id"])
    for path in ("/user/ratings/", "/user/validate/%d" % node.ids["bob"],
                 "/user/check/%d" % node.ids["bob"]):
        assert_error(node.get(V1 + path, "alice"), 403, "NotModerator")
        assert_error(node.get(V1 + path), 403, "NotModerator")
        assert_error(node.get(V1 + path, "nope"), 401, "InvalidAPIKey")

    got = node.get(V1 + "/user/ratings/", "mod").json()
    assert got["total"] == 6 and len(got["ratings"]) == 6
    row = got["ratings"][0]
    assert set(row) == {"username", "image", "rating", "artifacts", "average", "times_rated"}
    low = node.get(V1 + "/user/ratings/?rating=1&rating_comparison=le", "mod").json()
    assert low["total"] == 2 and {r["username"] for r in low["ratings"]} == {
        "bob#%d" % node.ids["bob"]}
    paged = node.get(V1 + "/user/ratings/?limit=2&offset=1", "mod").json()
    assert paged["total"] == 6 and len(paged["ratings"]) == 2
    art = node.get(V1 + "/user/ratings/?artifacts=2&artifacts_comparison=eq", "mod").json()
    assert art["total"] == 2
    div = node.get(V1 + "/user/ratings/?diverge=4", "mod").json()
    assert {r["rating"] for r in div["ratings"]} == {1}
    assert_error(node.get(V1 + "/user/ratings/?rating_comparison=gt", "mod"), 400, "BadRequest")
    assert_error(node.get(V1 + "/user/ratings/?limit=zero", "mod"), 400, "BadRequest")

    val = node.get(V1 + "/user/validate/%d" % node.ids["bob"], "mod").json()
    assert val["total"] == 2
    assert all(set(r) == {"image", "rating", "artifacts", "average", "times_rated"}
               for r in val["ratings"])
    assert_error(node.get(V1 + "/user/validate/abc", "mod"), 400, "BadRequest")

    chk = node.get(V1 + "/user/check/%d?minutes=120&divergence=3" % node.ids["bob"], "mod").json()
    assert chk["ratings_in_timeframe"] == 2 and chk["ratings_past_three_hours"] == 2
    assert chk["ratings_per_minute_in_timeframe"] == round(2 / 120, 4)
    assert chk["suspect_divergences"] == 2 and chk["captchas_failed"] == 0
    assert_error(node.get(V1 + "/user/check/1?minutes=0", "mod"), 400, "BadRequest")


def test_without_kudos_plugin_nothing_is_paid(make_node, tmp_path):
    """Ratings work on a node without the kudos plugin; the reward says 0."""
    node = make_node(load=["storage-sqlite", "auth", "images-fs", "ratings"],
                     providers={"storage": "sqlite", "images": "fs"},
                     plugins={"ratings": {"captcha_every": 0}}, start=False)
    r = node.command("user", "create", "alice")
    key = r.stdout.strip().splitlines()[-1]
    make_dataset(str(tmp_path / "ds"), entries(1))
    assert node.command("ratings", "import", str(tmp_path / "ds")).returncode == 0
    node.start()
    h = {"apikey": key}
    p = requests.get(node.url + V1 + "/rating/new", headers=h, timeout=30).json()
    r = requests.post(node.url + V1 + "/rating/" + p["id"], json={"rating": 5}, headers=h,
                      timeout=30)
    assert r.status_code == 201 and r.json()["reward"] == 0
    # /generate/rate has no broker to ask: the request is unknown
    r = requests.post(node.url + "/api/v2/generate/rate/00000000-0000-4000-8000-000000000000",
                      json={"best": "00000000-0000-4000-8000-000000000000"}, timeout=30)
    assert_error(r, 404)


def test_unpaid_rating_is_paid_once_after_restart(node):
    """A rating committed but not paid (a crash between the two) is paid by the
    retry timer after a restart, exactly once; a paid one is never paid again."""
    paid_image = node.pop("alice")["id"]
    node.rate("alice", paid_image, 7)
    before = node.kudos("alice")
    node.node.stop()
    db = sqlite3.connect(os.path.join(node.node.data_dir, "horde.db"))
    # the rating stands for one whose payment never happened: a fresh id (a
    # fresh payment ref), not paid; and a copy of the paid one, marked unpaid
    # with its old id (its ref was paid already)
    fresh = str(uuid.uuid4())
    db.execute("UPDATE ratings_ratings SET paid = 0 WHERE image_id = ?", (paid_image,))
    row = db.execute("SELECT id FROM ratings_ratings WHERE image_id = ?", (paid_image,)).fetchone()
    image2 = db.execute("SELECT id FROM ratings_images WHERE id != ? LIMIT 1",
                        (paid_image,)).fetchone()[0]
    db.execute("INSERT INTO ratings_ratings (id, image_id, rater, user_id, username, rating,"
               " source, client_agent, reward, paid, created) SELECT ?, ?, rater, user_id,"
               " username, 3, source, client_agent, reward, 0, created FROM ratings_ratings"
               " WHERE id = ?", (fresh, image2, row[0]))
    db.commit()
    db.close()
    node.node.start()
    deadline = time.time() + 60
    while node.kudos("alice") == before and time.time() < deadline:
        time.sleep(0.2)
    # wait until both rows are marked paid (the timer handles them in order)
    db = sqlite3.connect(os.path.join(node.node.data_dir, "horde.db"))
    while time.time() < deadline:
        if db.execute("SELECT COUNT(*) FROM ratings_ratings WHERE paid = 0").fetchone()[0] == 0:
            break
        time.sleep(0.2)
    assert db.execute("SELECT COUNT(*) FROM ratings_ratings WHERE paid = 0").fetchone()[0] == 0
    db.close()
    assert node.kudos("alice") == before + 5
    assert node.awarded("alice") == 10
