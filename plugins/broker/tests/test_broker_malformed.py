"""Malformed input: bad JSON, wrong types, NUL bytes, unknown or non-UUID
ids, huge and hostile bodies. Every answer is a 4xx with the horde's
envelope, never a 500, and the node keeps running (the fixture checks its
exit status and sanitizer output at the end)."""
import json
import random
import socket
import uuid

import pytest

from hordetest import assert_error, horde, make_horde  # noqa: F401

ENDPOINTS = ["/generate/async", "/generate/pop", "/generate/submit"]


def post_raw(h, path, data, key="alice", ctype="application/json"):
    return h.http.post(h.url + path, data=data, timeout=30,
                       headers={"apikey": h.keys[key], "Content-Type": ctype})


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("data", [b"{", b"not json", b"{\"prompt\": }", b"\xff\xfe\x00",
                                  b"[1, 2, 3]", b"\"a string\"", b"42", b"null", b"true",
                                  b"{\"prompt\": \"x\"} trailing"],
                         ids=["open", "text", "broken", "binary", "array", "string", "number",
                              "null", "true", "trailing"])
def test_bad_json_bodies(horde, path, data):
    r = post_raw(horde, path, data)
    assert_error(r, 400)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_nul_bytes(horde, path):
    body = {"prompt": "a\u0000b", "name": "w\u0000", "id": "x\u0000", "seed": 1,
            "models": ["Deliberate"]}
    r = post_raw(horde, path, json.dumps(body).encode())
    assert_error(r, 400, "NulByteInPayload")
    r = post_raw(horde, path, b'{"prompt": "a\x00b"}')
    assert_error(r, 400)


WRONG = [None, True, 1, 1.5, "text", [], {}, [None], {"a": 1}, -1, 10**30, "\u20ac" * 3]


def test_wrong_types_everywhere(horde):
    """Every field of the three bodies, with every wrong kind of value."""
    fields = {
        "/generate/async": ["prompt", "params", "nsfw", "models", "workers", "source_image",
                            "source_processing", "r2", "dry_run", "webhook", "style",
                            "extra_source_images", "worker_blacklist", "censor_nsfw"],
        "/generate/pop": ["name", "models", "nsfw", "threads", "amount", "max_pixels",
                          "blacklist", "bridge_agent", "priority_usernames", "allow_lora"],
        "/generate/submit": ["id", "generation", "state", "seed", "gen_metadata", "censored"],
    }
    params = ["width", "height", "steps", "n", "cfg_scale", "sampler_name", "seed", "loras",
              "tis", "post_processing", "karras", "control_type", "special", "clip_skip"]
    base = {"/generate/async": {"prompt": "x", "models": ["m-wrong"], "params": {"steps": 10}},
            "/generate/pop": {"name": "wrong-w", "models": ["m-wrong"]},
            "/generate/submit": {"id": str(uuid.uuid4()), "seed": 1}}
    key = {"/generate/async": "alice", "/generate/pop": "wally", "/generate/submit": "wally"}
    seen = 0
    for path, names in fields.items():
        for name in names:
            for v in WRONG:
                body = json.loads(json.dumps(base[path]))
                body[name] = v
                r = post_raw(horde, path, json.dumps(body).encode(), key=key[path])
                assert r.status_code < 500, (path, name, v, r.text)
                if r.status_code >= 400:
                    assert_error(r, r.status_code)
                seen += 1
    for name in params:
        for v in WRONG:
            body = {"prompt": "x", "models": ["m-wrong"], "params": {name: v}}
            r = post_raw(horde, "/generate/async", json.dumps(body).encode())
            assert r.status_code < 500, (name, v, r.text)
            if r.status_code >= 400:
                assert_error(r, r.status_code)
            seen += 1
    assert seen > 300


@pytest.mark.parametrize("path", ["/generate/check/", "/generate/status/"])
def test_unknown_and_malformed_request_ids(horde, path):
    for rid in [str(uuid.uuid4()), "not-a-uuid", "x" * 500, str(uuid.uuid4()).upper(),
                "' OR 1=1 --"]:
        assert_error(horde.get(path + rid), 404, "RequestNotFound")
    # the core refuses a NUL in the path, and other segments match no route
    for rid in ["%00", "..%2F..%2Fetc"]:
        r = horde.get(path + rid)
        assert_error(r, r.status_code)
        assert 400 <= r.status_code < 500
    assert_error(horde.delete("/generate/status/" + str(uuid.uuid4())), 404, "RequestNotFound")


def test_ids_are_case_insensitive(horde):
    rid = horde.generate(models=["m-case"])["id"]
    assert horde.get("/generate/check/" + rid.upper()).status_code == 200


def test_huge_bodies(make_horde):
    h = make_horde(node={"max_body": 65536})
    big = json.dumps({"prompt": "a " * 50000}).encode()
    r = post_raw(h, "/generate/async", big)
    assert 400 <= r.status_code < 500
    # deeply nested JSON
    deep = b"[" * 100000 + b"]" * 100000
    r = post_raw(h, "/generate/async", deep[:60000])
    assert_error(r, 400)
    # a prompt far over the word limit but under the body limit
    r = post_raw(h, "/generate/async", json.dumps({"prompt": "w " * 8000}).encode())
    assert_error(r, 400, "InvalidPromptSize")
    assert h.get("/status/heartbeat").status_code == 200


def test_big_seed_strings(horde):
    horde.generate(models=["m-bigseed"], params={"seed": "9" * 50000, "steps": 10})
    horde.generate(models=["m-bigseed"], params={"seed": "z" * 50000, "steps": 10})
    for _ in range(2):
        job = horde.pop(name="bigseed", models=["m-bigseed"])
        assert 0 <= int(job["payload"]["seed"]) < 2**32
        horde.submit(job["id"])


def test_random_mutations_never_500(horde):
    rng = random.Random(1234)
    valid = json.dumps({"prompt": "a cat###dog", "models": ["m-fuzz"], "nsfw": False,
                        "params": {"width": 512, "height": 512, "steps": 10, "n": 1,
                                   "loras": [{"name": "1"}], "post_processing": ["GFPGAN"]}})
    for _ in range(300):
        b = bytearray(valid.encode())
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(b))
            if op < 0.4:
                b[pos] = rng.randrange(256)
            elif op < 0.7:
                del b[pos]
            else:
                b.insert(pos, rng.choice(b'{}[]",:0\\ \x00'))
        r = post_raw(horde, "/generate/async", bytes(b))
        assert r.status_code < 500, (bytes(b), r.text)
        if r.status_code >= 400:
            assert_error(r, r.status_code)


def test_garbage_on_the_socket(horde):
    host, port = "127.0.0.1", horde.node.port
    for payload in [b"GARBAGE\r\n\r\n", b"POST /api/v2/generate/async HTTP/1.1\r\n"
                    b"Content-Length: 999999999999\r\n\r\n{", b"\x00" * 1000]:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(0.5)
            s.sendall(payload)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert horde.get("/status/heartbeat").status_code == 200
