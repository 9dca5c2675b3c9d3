"""images-fs, black-box: a real horde-node serving signed image URLs.

The test signs URLs itself with the node's secret (configured, or read from
<data_dir>/images.secret), following the documented scheme:
    sig = hex(HMAC-SHA256(secret, METHOD + "\\n" + key + "\\n" + expires))
Nodes come from tests/harness.py (make_node). Run:
    scripts/pytest plugins/images-fs/tests/test_images_http.py
"""
import hashlib
import hmac
import os
import stat
import time

import pytest
import requests

SECRET = "test-secret-0123456789abcdef"
MAX_UPLOAD = 4096
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(range(200))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def sign(secret, method, key, expires):
    msg = f"{method}\n{key}\n{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def signed(node, method, key, ttl=60, secret=SECRET, route=None):
    expires = int(time.time()) + ttl
    route = route or ("images" if method == "GET" else "upload")
    return f"{node.url}/{route}/{key}?expires={expires}&sig={sign(secret, method, key, expires)}"


@pytest.fixture
def node(make_node):
    return make_node(load=["images-fs"],
                     plugins={"images-fs": {"secret": SECRET, "max_upload": MAX_UPLOAD}})


def envelope(r, status, rc):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["rc"] == rc, body
    assert body["message"]


def test_upload_then_download(node):
    r = requests.put(signed(node, "PUT", "job-1.webp"), data=WEBP, timeout=10)
    assert r.status_code == 200, r.text
    assert os.path.exists(os.path.join(node.data_dir, "images", "job-1.webp"))
    r = requests.get(signed(node, "GET", "job-1.webp"), timeout=10)
    assert r.status_code == 200
    assert r.content == WEBP
    assert r.headers["Content-Type"] == "image/webp"
    assert "max-age" in r.headers.get("Cache-Control", "")


def test_png_and_overwrite(node):
    assert requests.put(signed(node, "PUT", "p.png"), data=WEBP, timeout=10).status_code == 200
    assert requests.put(signed(node, "PUT", "p.png"), data=PNG, timeout=10).status_code == 200
    r = requests.get(signed(node, "GET", "p.png"), timeout=10)
    assert r.content == PNG and r.headers["Content-Type"] == "image/png"
    leftovers = [f for f in os.listdir(os.path.join(node.data_dir, "images")) if f.startswith(".")]
    assert leftovers == []


def test_method_is_part_of_the_signature(node):
    requests.put(signed(node, "PUT", "m.webp"), data=WEBP, timeout=10)
    # an upload URL does not download, a download URL does not upload
    envelope(requests.get(signed(node, "PUT", "m.webp", route="images"), timeout=10),
             403, "InvalidSignature")
    envelope(requests.put(signed(node, "GET", "m.webp", route="upload"), data=PNG, timeout=10),
             403, "InvalidSignature")
    assert requests.get(signed(node, "GET", "m.webp"), timeout=10).content == WEBP


def test_forged_missing_and_expired_signatures(node):
    requests.put(signed(node, "PUT", "f.webp"), data=WEBP, timeout=10)
    base = f"{node.url}/images/f.webp"
    exp = int(time.time()) + 60
    good = sign(SECRET, "GET", "f.webp", exp)
    envelope(requests.get(base, timeout=10), 403, "InvalidSignature")
    envelope(requests.get(f"{base}?expires={exp}", timeout=10), 403, "InvalidSignature")
    envelope(requests.get(f"{base}?sig={good}", timeout=10), 403, "InvalidSignature")
    forged = sign("some-other-secret-000000", "GET", "f.webp", exp)
    envelope(requests.get(f"{base}?expires={exp}&sig={forged}", timeout=10), 403,
             "InvalidSignature")
    envelope(requests.get(f"{base}?expires={exp + 3600}&sig={good}", timeout=10), 403,
             "InvalidSignature")  # moved expiry
    envelope(requests.get(f"{base}?expires=0{exp}&sig={good}", timeout=10), 403,
             "InvalidSignature")
    envelope(requests.get(f"{node.url}/images/g.webp?expires={exp}&sig={good}", timeout=10),
             403, "InvalidSignature")  # another key
    envelope(requests.get(signed(node, "GET", "f.webp", ttl=-5), timeout=10), 403,
             "ExpiredSignature")
    envelope(requests.put(signed(node, "PUT", "f.webp", ttl=-5), data=PNG, timeout=10), 403,
             "ExpiredSignature")
    assert requests.get(f"{base}?expires={exp}&sig={good}", timeout=10).status_code == 200


def test_traversal_is_refused(node):
    secret_path = os.path.join(node.data_dir, "images.secret")
    for key in ["..", ".", "..%2Fimages.secret", "%2e%2e", "%2E%2E%2Fx", ".hidden", "a..b",
                "a%2Fb", "a%5Cb", "%00", "k%20ey"]:
        exp = int(time.time()) + 60
        sig = sign(SECRET, "GET", key, exp)
        r = requests.get(f"{node.url}/images/{key}?expires={exp}&sig={sig}", timeout=10)
        assert r.status_code in (400, 403, 404), (key, r.status_code)
        assert r.headers.get("Content-Type", "").startswith("application/json"), key
        assert "rc" in r.json()
        r = requests.put(f"{node.url}/upload/{key}?expires={exp}&sig={sign(SECRET, 'PUT', key, exp)}",
                         data=b"x", timeout=10)
        assert r.status_code in (400, 403, 404), (key, r.status_code)
    # nothing escaped the images folder
    assert not os.path.exists(secret_path) or open(secret_path).read() != "x"
    assert sorted(os.listdir(node.data_dir)) == ["images"]


def test_unknown_key_is_404(node):
    envelope(requests.get(signed(node, "GET", "never-uploaded.webp"), timeout=10), 404,
             "ImageNotFound")


def test_upload_size_limit(node):
    assert requests.put(signed(node, "PUT", "max.bin"), data=b"a" * MAX_UPLOAD,
                        timeout=10).status_code == 200
    envelope(requests.put(signed(node, "PUT", "big.bin"), data=b"a" * (MAX_UPLOAD + 1),
                          timeout=10), 413, "PayloadTooLarge")
    envelope(requests.get(signed(node, "GET", "big.bin"), timeout=10), 404, "ImageNotFound")
    envelope(requests.put(signed(node, "PUT", "empty.bin"), data=b"", timeout=10), 400,
             "BadRequest")


def test_generated_secret_file(make_node):
    n = make_node(load=["images-fs"])
    path = os.path.join(n.data_dir, "images.secret")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    secret = open(path).read().strip()
    assert len(secret) == 64
    assert requests.put(signed(n, "PUT", "s.webp", secret=secret), data=WEBP,
                        timeout=10).status_code == 200
    assert requests.get(signed(n, "GET", "s.webp", secret=secret),
                        timeout=10).content == WEBP
    envelope(requests.get(signed(n, "GET", "s.webp"), timeout=10), 403, "InvalidSignature")
