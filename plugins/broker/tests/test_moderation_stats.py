"""GET /stats/img/totals, GET /stats/img/models (model_state), GET /status/news."""
import json
import os

from hordetest import assert_error, make_horde  # noqa: F401

PS = 512 * 512 * 10  # pixelsteps of one default image at 10 k_euler steps


def zero():
    return {"images": 0, "ps": 0}


def test_stats_totals_and_models(make_horde):
    h = make_horde()
    assert h.get("/stats/img/totals").json() == {p: zero() for p in
                                                  ("minute", "hour", "day", "month", "total")}
    assert h.get("/stats/img/models").json() == {"day": {}, "month": {}, "total": {}}
    rid = h.generate(params={"steps": 10, "sampler_name": "k_euler", "n": 2},
                     disable_batching=False)["id"]
    job = h.pop(amount=2)
    for jid in job["ids"]:
        h.submit(jid)
    assert h.check(rid)["done"] is True
    # a faulted job is not an image
    h.generate(models=["Deliberate"])
    job = h.pop()
    h.submit(job["id"], state="faulted")
    totals = h.get("/stats/img/totals").json()
    for period in ("minute", "hour", "day", "month", "total"):
        assert totals[period] == {"images": 2, "ps": 2 * PS}, (period, totals)
    models = h.get("/stats/img/models").json()
    assert models == {"day": {"Deliberate": 2}, "month": {"Deliberate": 2},
                      "total": {"Deliberate": 2}}
    assert h.get("/stats/img/models", params={"model_state": "custom"}).json() == \
        {"day": {}, "month": {}, "total": {}}
    assert h.get("/stats/img/models", params={"model_state": "all"}).json() == models
    assert_error(h.get("/stats/img/models", params={"model_state": "nope"}), 400)
    # a model the reference does not know counts as custom
    h.generate(models=["my-own-model"])
    job = h.pop(models=("my-own-model",))
    h.submit(job["id"])
    assert h.get("/stats/img/models", params={"model_state": "custom"}).json()["total"] == \
        {"my-own-model": 1}
    assert "my-own-model" not in h.get("/stats/img/models").json()["total"]
    # the day, month and total survive a restart (the rings start again)
    h.node.restart()
    totals = h.get("/stats/img/totals").json()
    assert totals["total"] == {"images": 3, "ps": 3 * PS}
    assert totals["day"] == totals["month"] == totals["total"]
    assert h.get("/stats/img/models", params={"model_state": "all"}).json()["total"] == \
        {"Deliberate": 2, "my-own-model": 1}


def test_news(make_horde, tmp_path):
    h = make_horde()
    assert h.get("/status/news").json() == []
    news = [{"date_published": "2026-11-01", "newspiece": "horde-node serves the horde API",
             "title": "Hello", "importance": "Information", "tags": ["node"]},
            {"date_published": "2026-11-02", "newspiece": "Second", "title": "Two"}]
    path = tmp_path / "news.json"
    path.write_text(json.dumps(news))
    h2 = make_horde(broker={"news_file": str(path)})
    got = h2.get("/status/news").json()
    assert got[0] == dict(news[0], more_info_urls=[])
    assert got[1] == dict(news[1], importance="Information", tags=[], more_info_urls=[])
    assert os.path.exists(path)


def test_news_file_must_be_a_list(make_node, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"not": "a list"}')
    node = make_node(load=["storage-sqlite", "auth", "images-fs", "broker"],
                     providers={"storage": "sqlite", "images": "fs"},
                     plugins={"broker": {"news_file": str(path)}}, start=False)
    r = node.command("-t")
    assert r.returncode != 0 and "news_file" in r.stdout + r.stderr, (r.stdout, r.stderr)
