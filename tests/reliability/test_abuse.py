"""Abuse and limits (issue 11): oversized bodies and headers, slow clients,
path traversal on the file-serving routes, forged and expired signed URLs,
huge source images, secrets kept out of logs, answers and the database.
Real nodes over real sockets; every refusal is checked for its status (and
the horde's {"message", "rc"} envelope where the node, not libevent, answers).
"""
import base64
import hashlib
import hmac
import os
import socket
import time
import urllib.parse

import requests

from reliability_helpers import (Horde, assert_envelope, count, png, png_header, record,
                                 WEBP_1PX)


def _raw(port, data, timeout=20):
    """Sends raw bytes; returns (what the server answered, whether it closed
    the connection) once it closed, answered in full, or `timeout` passed."""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
    return out, closed


def _status(answer):
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


# ---- body and header limits ----------------------------------------------------------------------

def test_body_and_header_limits(make_node):
    h = Horde(make_node, node={"max_body": 8192, "max_headers": 4096, "timeout": 2})
    tries = count(5)
    for i in range(tries):
        big = {"prompt": "x" * (9000 + i * 1000)}
        r = h.post("/generate/async", big, key=h.keys["alice"])
        assert r.status_code == 413, r.status_code
    # a 1 GB Content-Length with a few bytes: libevent refuses to buffer it
    # (lingering close drains what comes, then 413); a client that stops
    # sending is dropped at `timeout`. Never served, never buffered.
    lying = 0
    for i in range(count(2)):
        ans, closed = _raw(h.node.port, b"POST /api/v2/generate/async HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n"
                           b"\r\n{" + b" " * 65536 * i)
        assert closed, "a connection announcing 1 GB stayed open past the timeout"
        assert _status(ans) in (None, 408, 413), ans[:200]
        lying += 1
    assert h.get("/status/heartbeat").status_code == 200
    record("request body over max_body: JSON bodies of 9-13 KB (max_body 8 KB)", tries,
           "refused 413; node kept serving")
    record("Content-Length of 1 GB with a stalled body", lying,
           "not buffered; the stalled connection closed at `timeout`; never served")
    header_tries = 0
    for size in (5000, 20000, 200000):
        ans, closed = _raw(h.node.port, b"GET /api/v2/status/heartbeat HTTP/1.1\r\nHost: x\r\n"
                           b"X-Big: " + b"a" * size + b"\r\n\r\n")
        st = _status(ans)
        # libevent answers 400 (2.1) or closes the connection at the limit
        assert st in (400, 413, 431, None), ans[:200]
        assert closed or st is not None
        header_tries += 1
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    ans, closed = _raw(h.node.port, b"GET /api/v2/status/heartbeat HTTP/1.1\r\nHost: x\r\n"
                       + many + b"\r\n")
    assert _status(ans) in (400, 413, 431, None), ans[:200]
    header_tries += 1
    assert h.get("/status/heartbeat").status_code == 200
    record("request headers over max_headers 4 KB (one 5 KB-200 KB header; 2000 headers)",
           header_tries, "refused 400 or connection closed, never served; node kept serving")


# ---- slow clients ----------------------------------------------------------------------------------

def test_slow_clients_do_not_block_others_and_are_dropped(make_node):
    """Slowloris: many connections that send half a request and stall. Other
    clients are still answered, and the stalled ones are closed by the node's
    `timeout` (libevent's read timeout)."""
    h = Horde(make_node, node={"timeout": 2})
    n = count(40)
    slow = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", h.node.port), timeout=30)
        s.sendall(b"POST /api/v2/generate/async HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        slow.append(s)
    # a half-sent body too
    s = socket.create_connection(("127.0.0.1", h.node.port), timeout=30)
    s.sendall(b"POST /api/v2/generate/async HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"p")
    slow.append(s)
    served = 0
    for _ in range(count(10)):
        r = h.post("/generate/async", h.generate_body(), key=h.keys["alice"], timeout=10)
        assert r.status_code == 202, r.text
        served += 1
    closed = 0
    for s in slow:
        try:
            data = s.recv(4096)  # blocks until the node gives up on this client
            closed += 1 if (data == b"" or data.startswith(b"HTTP/1.1 408")
                            or data.startswith(b"HTTP/1.1 400")) else 0
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass
        s.close()
    assert closed == len(slow), "%d of %d stalled connections still open" % (
        len(slow) - closed, len(slow))
    record("slowloris: %d stalled half-sent requests (timeout = 2 s)" % len(slow), 1,
           "%d other requests served meanwhile; %d/%d stalled connections closed by the node"
           % (served, closed, len(slow)))
    # trickling clients: one byte every 0.5 s, under the 2 s read timeout.
    # libevent's timeout restarts with every read and 2.1 has no deadline for
    # a whole request head, so these are NOT dropped (a known limit, see
    # docs/RELIABILITY.md); what must hold is that nobody else waits for them.
    trick = [socket.create_connection(("127.0.0.1", h.node.port), timeout=30)
             for _ in range(count(10))]
    head = b"GET /api/v2/status/heartbeat HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 64
    served_meanwhile, dropped = 0, 0
    for i in range(8):
        for s in trick:
            try:
                s.sendall(head[i:i + 1])
            except OSError:
                pass
        r = h.get("/status/heartbeat", timeout=10)
        assert r.status_code == 200
        served_meanwhile += 1
        time.sleep(0.5)
    for s in trick:
        s.settimeout(0.2)
        try:
            dropped += 1 if s.recv(1) == b"" else 0
        except socket.timeout:
            pass
        except OSError:
            dropped += 1
        s.close()
    record("trickling clients: %d connections sending 1 byte / 0.5 s (timeout = 2 s)"
           % len(trick), 1,
           "%d other requests served meanwhile; %d/%d tricklers dropped (libevent 2.1 has no"
           " deadline for a whole request head: see Known limits)"
           % (served_meanwhile, dropped, len(trick)))


# ---- path traversal ------------------------------------------------------------------------------

TRAVERSALS = [
    "../images.secret", "..%2Fimages.secret", "%2e%2e%2fimages.secret", "%2E%2E/images.secret",
    "..%252Fimages.secret", "....//images.secret", "..\\images.secret", "%2e%2e%5cimages.secret",
    "/etc/passwd", "%2Fetc%2Fpasswd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", ".tmp-x", ".",
    "..", "%00", "a%00b", "images.secret%00.webp", "%c0%ae%c0%ae%2fimages.secret",
    "x" * 300, "..;/images.secret", "%2e%2e", "a/../../images.secret",
]


def test_path_traversal_on_file_routes(make_node):
    """GET /images/{key} and PUT /upload/{key} never reach outside the images
    folder, whatever the encoding; the signing secret next to it is never served."""
    h = Horde(make_node)
    secret_path = os.path.join(h.node.data_dir, "images.secret")
    secret = open(secret_path).read().strip() if os.path.exists(secret_path) else None
    passwd = open("/etc/passwd").read()
    tried = 0
    statuses = set()
    for t in TRAVERSALS:
        for method, prefix in (("GET", "/images/"), ("PUT", "/upload/")):
            for query in ("", "?expires=9999999999&sig=" + "0" * 64):
                url = h.node.url + prefix + t + query
                req = requests.Request(method, url, data=b"AAAA" if method == "PUT" else None)
                prepared = req.prepare()
                prepared.url = url  # keep the encoding as written
                r = h.http.send(prepared, timeout=10)
                tried += 1
                statuses.add(r.status_code)
                assert r.status_code in (400, 403, 404, 405), (method, t, r.status_code, r.text)
                if secret:
                    assert secret not in r.text
                assert "root:x:0:0" not in r.text and passwd[:40] not in r.text
    # nothing was written outside the images folder
    stray = [f for f in os.listdir(h.node.data_dir)
             if f not in ("images", "images.secret") and not f.endswith((".db", "-wal", "-shm",
                                                                          ".sqlite", ".sqlite3"))]
    assert not [f for f in stray if "AAAA" in f], stray
    assert h.get("/status/heartbeat").status_code == 200
    record("path traversal on GET /images/{key} and PUT /upload/{key} (%d encodings)"
           % len(TRAVERSALS), tried,
           "refused (%s); the secret and /etc/passwd never served; nothing written outside"
           % "/".join(str(s) for s in sorted(statuses)))


# ---- signed URLs -------------------------------------------------------------------------------

def _sign(secret, method, key, expires):
    msg = ("%s\n%s\n%d" % (method, key, expires)).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def test_forged_and_expired_signed_urls(make_node):
    """A real R2 flow gives a signed upload and download URL; every tampered
    variant is refused 403 (InvalidSignature / ExpiredSignature)."""
    h = Horde(make_node)
    r = h.post("/generate/async", h.generate_body(r2=True), key=h.keys["alice"])
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    job = h.pop("wendy", "w-r2")
    assert job.get("id") and job.get("r2_upload"), job
    up = job["r2_upload"]
    assert requests.put(up, data=base64.b64decode(WEBP_1PX), timeout=10).status_code in (200, 201, 204)
    assert h.submit("wendy", job["id"], generation="R2").status_code == 200
    img = h.get("/generate/status/" + rid).json()["generations"][0]["img"]
    assert requests.get(img, timeout=10).content == base64.b64decode(WEBP_1PX)
    u = urllib.parse.urlsplit(img)
    q = dict(urllib.parse.parse_qsl(u.query))
    base = "%s://%s%s" % (u.scheme, u.netloc, u.path)
    key = u.path.rsplit("/", 1)[1]
    exp, sig = int(q["expires"]), q["sig"]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    forged = {
        "flipped last hex digit": "?expires=%d&sig=%s" % (exp, flipped),
        "expires moved later": "?expires=%d&sig=%s" % (exp + 1, sig),
        "expires with a leading zero": "?expires=0%d&sig=%s" % (exp, sig),
        "truncated signature": "?expires=%d&sig=%s" % (exp, sig[:32]),
        "no signature": "?expires=%d" % exp,
        "no expires": "?sig=%s" % sig,
        "empty query": "",
        "signature twice, first bad": "?expires=%d&sig=%s&sig=%s" % (exp, flipped, sig),
        "expires not a number": "?expires=abc&sig=%s" % sig,
        "huge expires": "?expires=99999999999999999999999&sig=%s" % sig,
    }
    tried = 0
    for name, query in forged.items():
        r = requests.get(base + query, timeout=10)
        assert r.status_code == 403, (name, r.status_code)
        assert_envelope(r, 403)
        tried += 1
    # upper-case hex is the same signature written differently: accepted
    assert requests.get(base + "?expires=%d&sig=%s" % (exp, sig.upper()),
                        timeout=10).status_code == 200
    # the GET signature does not open the upload route
    r = requests.put(h.node.url + "/upload/" + key + "?" + u.query, data=b"evil", timeout=10)
    assert r.status_code == 403, r.text
    tried += 1
    # another key with this key's signature
    r = requests.get(base.replace(key, key[:-1] + ("a" if key[-1] != "a" else "b")) + "?" + u.query,
                     timeout=10)
    assert r.status_code in (403, 404), r.text
    tried += 1
    # expired: signed with the node's own secret, in the past
    secret_path = os.path.join(h.node.data_dir, "images.secret")
    secret = open(secret_path).read().strip()
    past = int(time.time()) - 10
    r = requests.get(base + "?expires=%d&sig=%s" % (past, _sign(secret, "GET", key, past)),
                     timeout=10)
    assert_envelope(r, 403, "ExpiredSignature")
    tried += 1
    # and our signer agrees with the node's (so the expired check above was real)
    future = int(time.time()) + 600
    r = requests.get(base + "?expires=%d&sig=%s" % (future, _sign(secret, "GET", key, future)),
                     timeout=10)
    assert r.status_code == 200
    assert requests.get(img, timeout=10).status_code == 200  # the real one still works
    record("forged/tampered signed image URLs (%d variants) and an expired one" % (tried - 1),
           tried, "refused 403 InvalidSignature / ExpiredSignature; the genuine URL still works")


# ---- source images -----------------------------------------------------------------------------

def test_huge_and_malformed_source_images(make_node):
    h = Horde(make_node)
    cases = {
        "PNG header claiming 100000x100000": png_header(100000, 100000),
        "PNG header claiming 3073x3072": png_header(3073, 3072),
        "PNG header claiming 2^31x2^31": png_header(2**31 - 1, 2**31 - 1),
        "valid 4000x4000 PNG (16 Mpx, ~50 KB)": png(4000, 4000),
        "truncated PNG signature": b"\x89PNG\r\n",
        "not an image": b"hello world" * 10,
        "RIFF/WEBP header only": b"RIFF\x10\x00\x00\x00WEBPVP8X",
    }
    tried = 0
    rcs = set()
    for name, data in cases.items():
        body = h.generate_body(source_image=base64.b64encode(data).decode(),
                               source_processing="img2img")
        r = h.post("/generate/async", body, key=h.keys["alice"])
        env = assert_envelope(r, 400)
        rcs.add(env["rc"])
        tried += 1
    for text in ("%%%not base64%%%", "http://127.0.0.1:1/x.png", "A" * 7):
        r = h.post("/generate/async", h.generate_body(source_image=text,
                                                      source_processing="img2img"),
                   key=h.keys["alice"])
        env = assert_envelope(r, 400)
        rcs.add(env["rc"])
        tried += 1
    # a normal small source image is accepted
    r = h.post("/generate/async", h.generate_body(source_image=base64.b64encode(png(64, 64)).decode(),
                                                  source_processing="img2img"),
               key=h.keys["alice"])
    assert r.status_code == 202, r.text
    record("oversized / huge-pixel / malformed source images", tried,
           "refused 400 (%s) before decoding; a 64x64 PNG accepted" % ", ".join(sorted(rcs)))


# ---- secrets ---------------------------------------------------------------------------------------

SIGNING_SECRET = "sEcReT-signing-key-0f3c9a7d"
DB_PASSWORD = "pW-do-not-log-7731"


def test_secrets_stay_out_of_logs_answers_and_the_database(make_node):
    """API keys, the URL signing key and a DB password never appear in the
    node's log (debug level), in any answer, in `horde-node -t` output, and
    API keys are stored only hashed (the SQLite file and its WAL are scanned)."""
    h = Horde(make_node, node={"log_level": "debug"}, images={"secret": SIGNING_SECRET})
    answers = []
    keys = list(h.keys.values())
    for name, key in h.keys.items():
        answers.append(h.get("/find_user", key=key).text)
        answers.append(h.get("/users/%d" % h.ids[name], key=key).text)
        # a wrong key that shares a prefix with a real one
        answers.append(h.post("/generate/async", h.generate_body(), key=key[:-2] + "zz").text)
    answers.append(h.post("/generate/async", h.generate_body(), key=h.keys["alice"]).text)
    job = h.pop("wendy", "w-secret")
    answers.append(str(job))
    if job.get("id"):
        answers.append(h.submit("wendy", job["id"]).text)
    answers.append(h.post("/generate/async", {"prompt": 5}, key=h.keys["alice"]).text)
    h.node.stop()
    check = h.node.command("-t")
    answers.append(check.stdout + check.stderr)
    log = h.node.read_log()
    files = h.data_files()
    leaks = []
    for secret in keys + [SIGNING_SECRET]:
        if secret in log:
            leaks.append("log holds %s..." % secret[:4])
        if any(secret in a for a in answers):
            leaks.append("an answer holds %s..." % secret[:4])
    for path, data in files.items():
        for key in keys:
            if key.encode() in data:
                leaks.append("%s holds an API key in clear" % os.path.basename(path))
    # the key hashes are there instead (hex SHA-256): the users table has no key column in clear
    with h.db() as db:
        cols = [c[1] for c in db.execute("PRAGMA table_info(users)")]
    assert not [c for c in cols if c in ("api_key", "apikey", "key")], cols
    # a DB password in a storage-pg dsn: a node that cannot connect names the
    # server, never the password
    from harness import BUILD
    if not os.path.exists(os.path.join(BUILD, "plugins", "storage-pg.so")):
        record("secrets (API keys, URL signing key) searched in the debug log, %d answers,"
               " `-t` output and every data file" % len(answers), len(keys) + 1,
               "none found; API keys stored only as salted SHA-256" if not leaks
               else "; ".join(leaks), not leaks)
        assert not leaks, leaks
        return
    pg = make_node(load=["storage-pg", "auth"], providers={"storage": "postgres"},
                   plugins={"storage-pg": {"dsn": "postgresql://horde:%s@127.0.0.1:1/horde"
                                           % DB_PASSWORD, "start_timeout_s": 0}}, start=False)
    out = pg.command("-t")
    run = pg.command("user", "list", timeout=60)
    # it did fail, and said where it tried to connect
    assert run.returncode != 0 and "127.0.0.1" in run.stderr, run.stderr
    for text in (out.stdout, out.stderr, run.stdout, run.stderr):
        if DB_PASSWORD in text:
            leaks.append("storage-pg output holds the DB password: %s" % text[:300])
    record("secrets (API keys, URL signing key, DB password) searched in the debug log, %d"
           " answers, `-t` output and every data file" % len(answers), len(keys) + 2,
           "none found; API keys stored only as salted SHA-256" if not leaks else "; ".join(leaks),
           not leaks)
    assert not leaks, leaks


# ---- rate limits (helper "moderation"'s plugins/broker/rate_limit.c) ---------------------------

def _has_rate_limits():
    from harness import BUILD
    try:
        with open(os.path.join(BUILD, "plugins", "broker.so"), "rb") as f:
            return b"rate_limit_loopback" in f.read()
    except OSError:
        return False


def test_per_ip_and_per_key_rate_limits(make_node):
    """Bursts of /generate/async: one IP or one API key is held at its limit
    (429 TooManyRequests) while another IP with another key is not."""
    import pytest
    if not _has_rate_limits():
        pytest.skip("this broker has no rate limits (rate_limit_loopback)")
    h = Horde(make_node, broker={"rate_limit_loopback": True}, requesters=3)
    burst = count(20)

    def fire(key, ip):
        got = {}
        for _ in range(burst):
            r = h.post("/generate/async", h.generate_body(), key=key,
                       headers={"X-Forwarded-For": ip})
            got[r.status_code] = got.get(r.status_code, 0) + 1
            if r.status_code == 429:
                assert_envelope(r, 429, "TooManyRequests")
        return got

    per_ip = fire(h.keys["req0"], "198.51.100.1")
    assert per_ip.get(429), per_ip
    # the same key from another address: the per-key limit still holds it
    per_key = fire(h.keys["req0"], "198.51.100.2")
    assert per_key.get(429), per_key
    # another key from a third address starts with its own allowance
    r = h.post("/generate/async", h.generate_body(), key=h.keys["req1"],
               headers={"X-Forwarded-For": "198.51.100.3"})
    assert r.status_code == 202, r.text
    record("bursts of %d POST /generate/async from one IP, then one key from another IP"
           % burst, 2 * burst,
           "per IP: %d accepted, %d refused 429 TooManyRequests; per key: %d accepted, %d refused;"
           " another IP and key still served" % (per_ip.get(202, 0), per_ip.get(429, 0),
                                                 per_key.get(202, 0), per_key.get(429, 0)))
