"""images-db, black-box: images kept in the storage database, on SQLite and
on PostgreSQL, compared with images-fs through the same provider calls; the
signed-URL routes with the rules images-fs documents; and two nodes on one
PostgreSQL serving each other's images.

Provider calls go through the storage contract test plugin
(build/tests/storage-pg/contract.so, which also drives the `images`
provider). PostgreSQL comes from tests/pg.py. Run:
    scripts/pytest plugins/images-db/tests/test_images_db.py
"""
import hashlib
import hmac
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from harness import BINARY, BUILD, ROOT, node_config

sys.path.insert(0, os.path.join(ROOT, "tests"))
import pg  # noqa: E402
from pg import pg_server  # noqa: E402,F401  (fixture)

CONTRACT = os.path.join(BUILD, "tests", "storage-pg", "contract.so")
SECRET = "test-secret-0123456789abcdef"
MAX_UPLOAD = 4096
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(range(200))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2


def sign(secret, method, key, expires):
    msg = f"{method}\n{key}\n{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def signed(node, method, key, ttl=60, secret=SECRET, route=None):
    expires = int(time.time()) + ttl
    route = route or ("images" if method == "GET" else "upload")
    return f"{node.url}/{route}/{key}?expires={expires}&sig={sign(secret, method, key, expires)}"


def envelope(r, status, rc):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["rc"] == rc, body
    assert body["message"]


def start(make_node, kind, dsn=None, secret=SECRET):
    """kind: "fs" (images-fs on sqlite), "db-sqlite" or "db-postgres"."""
    if not os.path.exists(CONTRACT):
        pytest.fail("%s is missing: make build/tests/storage-pg/contract.so" % CONTRACT)
    images = {"max_upload": MAX_UPLOAD}
    if secret:
        images["secret"] = secret
    if kind == "fs":
        return make_node(load=["storage-sqlite", "images-fs", CONTRACT],
                         providers={"storage": "sqlite", "images": "fs"},
                         plugins={"images-fs": images})
    if kind == "db-sqlite":
        return make_node(load=["storage-sqlite", "images-db", CONTRACT],
                         providers={"storage": "sqlite", "images": "db"},
                         plugins={"images-db": images})
    dsn = dsn or pg.shared_server().create_database()
    return make_node(load=["storage-pg", "images-db", CONTRACT],
                     providers={"storage": "postgres", "images": "db"},
                     plugins={"storage-pg": {"dsn": dsn}, "images-db": images})


def call(node, *steps):
    r = requests.post(node.url + "/contract/run", json={"steps": list(steps)}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["results"]


@pytest.fixture(params=["fs", "db-sqlite", "db-postgres"])
def any_node(request, make_node):
    return start(make_node, request.param)


@pytest.fixture(params=["db-sqlite", "db-postgres"])
def db_node(request, make_node):
    return start(make_node, request.param)


# ---- the provider, the same on images-fs and images-db -------------------------

def test_provider_calls_behave_like_images_fs(any_node):
    k = "job-1.webp"
    res = call(any_node,
               {"op": "image_exists", "key": k},
               {"op": "image_get", "key": k},
               {"op": "image_put", "key": k, "hex": WEBP.hex()},
               {"op": "image_exists", "key": k},
               {"op": "image_get", "key": k},
               {"op": "image_put", "key": k, "hex": PNG.hex()},
               {"op": "image_get", "key": k},
               {"op": "image_remove", "key": k},
               {"op": "image_remove", "key": k},
               {"op": "image_get", "key": k},
               {"op": "image_put", "key": "../x", "hex": "00"},
               {"op": "image_get", "key": ".hidden"},
               {"op": "image_url", "method": "GET", "key": k, "ttl": 0},
               {"op": "image_url", "method": "GET", "key": "a/b", "ttl": 60})
    assert [r.get("found") for r in res[:2]] == [False, False]
    assert res[2]["ok"] and res[3]["found"]
    assert bytes.fromhex(res[4]["hex"]) == WEBP
    assert bytes.fromhex(res[6]["hex"]) == PNG  # overwritten
    assert res[7]["found"] and not res[8]["found"] and not res[9]["found"]
    for r in res[10:]:
        assert not r["ok"] and r["status"] == 400, r
    assert res[10]["rc"] == res[11]["rc"] == "InvalidImageKey"


def test_provider_urls_work_over_http(any_node):
    res = call(any_node, {"op": "image_url", "method": "PUT", "key": "u.png", "ttl": 60},
               {"op": "image_url", "method": "GET", "key": "u.png", "ttl": 60})
    put_url, get_url = res[0]["url"], res[1]["url"]
    assert put_url.startswith(any_node.url + "/upload/u.png?expires=")
    assert get_url.startswith(any_node.url + "/images/u.png?expires=")
    assert requests.put(put_url, data=PNG, timeout=10).status_code == 200
    r = requests.get(get_url, timeout=10)
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["Content-Type"] == "image/png"
    # what a worker uploaded, the broker reads back through the provider
    assert bytes.fromhex(call(any_node, {"op": "image_get", "key": "u.png"})[0]["hex"]) == PNG


# ---- the routes, with images-fs's rules -------------------------------------------

def test_upload_then_download_with_content_types(db_node):
    for key, data, ctype in [("a.webp", WEBP, "image/webp"), ("b.png", PNG, "image/png"),
                             ("c.jpg", JPEG, "image/jpeg"),
                             ("d.bin", b"\x00\x01 not an image", "application/octet-stream")]:
        r = requests.put(signed(db_node, "PUT", key), data=data, timeout=10)
        assert r.status_code == 200 and r.content == b"", r.text
        r = requests.get(signed(db_node, "GET", key), timeout=10)
        assert r.status_code == 200 and r.content == data
        assert r.headers["Content-Type"] == ctype
        assert "max-age" in r.headers.get("Cache-Control", "")


def test_method_is_part_of_the_signature(db_node):
    requests.put(signed(db_node, "PUT", "m.webp"), data=WEBP, timeout=10)
    envelope(requests.get(signed(db_node, "PUT", "m.webp", route="images"), timeout=10),
             403, "InvalidSignature")
    envelope(requests.put(signed(db_node, "GET", "m.webp", route="upload"), data=PNG,
                          timeout=10), 403, "InvalidSignature")
    assert requests.get(signed(db_node, "GET", "m.webp"), timeout=10).content == WEBP


def test_forged_missing_and_expired_signatures(db_node):
    requests.put(signed(db_node, "PUT", "f.webp"), data=WEBP, timeout=10)
    base = f"{db_node.url}/images/f.webp"
    exp = int(time.time()) + 60
    good = sign(SECRET, "GET", "f.webp", exp)
    for url in [base, f"{base}?expires={exp}", f"{base}?sig={good}",
                f"{base}?expires={exp}&sig={sign('some-other-secret-000000', 'GET', 'f.webp', exp)}",
                f"{base}?expires={exp + 3600}&sig={good}", f"{base}?expires=0{exp}&sig={good}",
                f"{db_node.url}/images/g.webp?expires={exp}&sig={good}"]:
        envelope(requests.get(url, timeout=10), 403, "InvalidSignature")
    envelope(requests.get(signed(db_node, "GET", "f.webp", ttl=-5), timeout=10), 403,
             "ExpiredSignature")
    envelope(requests.put(signed(db_node, "PUT", "f.webp", ttl=-5), data=PNG, timeout=10), 403,
             "ExpiredSignature")
    assert requests.get(f"{base}?expires={exp}&sig={good.upper()}", timeout=10).status_code == 200


def test_bad_keys_unknown_keys_and_sizes(db_node):
    for key in ["..", ".hidden", "a..b", "a%2Fb", "%00", "k%20ey", "x" * 129]:
        exp = int(time.time()) + 60
        r = requests.get(f"{db_node.url}/images/{key}?expires={exp}"
                         f"&sig={sign(SECRET, 'GET', key, exp)}", timeout=10)
        assert r.status_code in (400, 403, 404), (key, r.status_code)
        assert "rc" in r.json()
    envelope(requests.get(signed(db_node, "GET", "never-uploaded.webp"), timeout=10), 404,
             "ImageNotFound")
    assert requests.put(signed(db_node, "PUT", "max.bin"), data=b"a" * MAX_UPLOAD,
                        timeout=10).status_code == 200
    envelope(requests.put(signed(db_node, "PUT", "big.bin"), data=b"a" * (MAX_UPLOAD + 1),
                          timeout=10), 413, "PayloadTooLarge")
    envelope(requests.get(signed(db_node, "GET", "big.bin"), timeout=10), 404, "ImageNotFound")
    envelope(requests.put(signed(db_node, "PUT", "empty.bin"), data=b"", timeout=10), 400,
             "BadRequest")


# ---- several nodes ------------------------------------------------------------------

def test_two_nodes_on_one_database_serve_each_others_images(make_node, pg_server):  # noqa: F811
    dsn = pg_server.create_database()
    a = start(make_node, "db-postgres", dsn=dsn, secret=None)
    b = start(make_node, "db-postgres", dsn=dsn, secret=None)
    dbname = dsn.rsplit("dbname=", 1)[1]
    rows = pg_server.psql("SELECT value FROM hn_images_meta WHERE name = 'secret'", dbname)
    assert len(rows) == 1 and len(rows[0][0]) == 64
    shared = rows[0][0]
    # a worker uploads through node A's URL; a client downloads through node B's
    put_url = call(a, {"op": "image_url", "method": "PUT", "key": "w.webp", "ttl": 60})[0]["url"]
    assert requests.put(put_url, data=WEBP, timeout=10).status_code == 200
    get_url = call(b, {"op": "image_url", "method": "GET", "key": "w.webp", "ttl": 60})[0]["url"]
    assert get_url.startswith(b.url)
    assert requests.get(get_url, timeout=10).content == WEBP
    # and a URL one node signed is valid on the other (behind a load balancer)
    url_a = call(a, {"op": "image_url", "method": "GET", "key": "w.webp", "ttl": 60})[0]["url"]
    assert requests.get(url_a.replace(a.url, b.url), timeout=10).content == WEBP
    assert requests.get(signed(b, "GET", "w.webp", secret=shared), timeout=10).content == WEBP
    # removing on one is seen by the other
    assert call(b, {"op": "image_remove", "key": "w.webp"})[0]["found"]
    envelope(requests.get(url_a, timeout=10), 404, "ImageNotFound")


def test_generated_secret_survives_a_restart_on_sqlite(make_node):
    n = start(make_node, "db-sqlite", secret=None)
    db = sqlite3.connect(os.path.join(n.data_dir, "horde.db"))
    secret = db.execute("SELECT value FROM hn_images_meta WHERE name = 'secret'").fetchone()[0]
    db.close()
    assert len(secret) == 64
    assert requests.put(signed(n, "PUT", "s.webp", secret=secret), data=WEBP,
                        timeout=10).status_code == 200
    n.restart()
    assert requests.get(signed(n, "GET", "s.webp", secret=secret), timeout=10).content == WEBP
    envelope(requests.get(signed(n, "GET", "s.webp"), timeout=10), 403, "InvalidSignature")


def test_without_a_storage_provider_start_fails_clearly(tmp_path):
    conf = tmp_path / "n.conf"
    conf.write_text(node_config(load=["images-db"]))
    r = subprocess.run([BINARY, "-c", str(conf), "--data-dir", str(tmp_path / "d"),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "images-db" in r.stderr and "storage provider" in r.stderr
