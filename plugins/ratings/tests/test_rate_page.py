"""The rating page (/rate) in a real headless Chromium (Debian's chromium,
driven by playwright-core from tests/browser, installed by `make test` through
scripts/install-deps.sh): three images rated by clicking and one with the
keyboard shortcuts, with an API key and anonymously; the ratings must arrive
at the node and the page must show the kudos earned. A screenshot is saved in
the test's output folder. Skipped only when Chromium is not installed."""
import json
import os
import shutil
import subprocess

import pytest

from ratingstest import V1, Ratings, entries

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Chromium is not installed (%s)" % CHROMIUM)


def ensure_playwright():
    if os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed to install playwright-core (scripts/install-deps.sh does it)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True,
                   timeout=300)


def drive(node, key, out_dir):
    ensure_playwright()
    os.makedirs(out_dir, exist_ok=True)
    r = subprocess.run(["node", "rate.mjs", node.node.url, key or "-", str(out_dir)],
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_page_is_served(make_node, tmp_path):
    node = Ratings(make_node, tmp_path)
    r = node.get("/rate")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/rating/new" in r.text and 'id="kudos-earned"' in r.text


def test_rate_page_with_key(make_node, tmp_path):
    node = Ratings(make_node, tmp_path,
                   datasets=[{"name": "laion", "entries": entries(5, width=256, height=256)}])
    before = node.kudos("alice")
    out = tmp_path / "browser-output"
    got = drive(node, node.keys["alice"], out)
    assert got["count"] == "4" and got["earned"] == "20"
    assert len({x["id"] for x in got["rated"]}) == 4
    for x in got["rated"]:
        ratings = node.get(V1 + "/image/ratings/" + x["id"]).json()["ratings"]
        assert ratings == [{"username": "alice#%d" % node.ids["alice"], "rating": x["rating"],
                            "artifacts": x["artifacts"]}]
    assert node.kudos("alice") == before + 20
    shot = out / "rate-page.png"
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # keep a copy where CI collects test output, when asked to
    keep = os.environ.get("HN_TEST_OUTPUT")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "rate-page.png"))


def test_rate_page_anonymous(make_node, tmp_path):
    node = Ratings(make_node, tmp_path, datasets=[{"name": "laion", "entries": entries(5)}])
    got = drive(node, None, tmp_path / "anon")
    assert got["count"] == "4" and got["earned"] == "0"
    for x in got["rated"]:
        ratings = node.get(V1 + "/image/ratings/" + x["id"]).json()["ratings"]
        assert ratings == [{"username": "Anonymous#0", "rating": x["rating"],
                            "artifacts": x["artifacts"]}]
