"""The exact wording of answers several routes share through one helper each
(validate.c br_checked_body, ip_timeouts.c duration_arg, style_catalog.c):
the missing-apikey schema errors of generate, pop, submit and worker PUT, the
range errors of IP timeout durations, the 404/403 messages of styles and
collections, and a collection's defaults on create and its changes on PATCH."""
import uuid

from hordetest import assert_error, make_horde  # noqa: F401

MISSING_HEADER = " Missing required parameter in the HTTP headers"
MISSING_BODY = "Missing required parameter in the JSON body"
STYLE = {"name": "ink", "prompt": "{p}, ink###{np}", "models": ["Deliberate"]}


def call(h, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30)


def schema_errors(r):
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["message"] == "Input payload validation failed" and body["rc"] == "BadRequest"
    return body["errors"]


def test_missing_apikey_wording(make_horde):
    h = make_horde()
    h.pop()
    wid = h.get("/workers/name/worker-1").json()["id"]
    for method, path, body, what in (
            ("POST", "/generate/async", {"prompt": "a cat"},
             "The API Key corresponding to a registered user."),
            ("POST", "/generate/pop", {"name": "w"}, "A User API key."),
            ("POST", "/generate/submit",
             {"id": str(uuid.uuid4()), "generation": "x", "seed": 1},
             "The worker's owner API key."),
            ("PUT", "/workers/" + wid, {"maintenance": True}, "A mod or owner API key.")):
        errors = schema_errors(call(h, method, path, body))
        assert errors == {"apikey": what + MISSING_HEADER}, (path, errors)
    # the schema comes before the key
    errors = schema_errors(call(h, "POST", "/generate/async", {}))
    assert "apikey" not in errors and "prompt" in errors


def test_timeout_duration_wording(make_horde):
    h = make_horde(broker={"rate_limits": False})
    mod = h.keys["mod"]
    hours_range = "hours must be an integer from 1 to 720"
    for body, want in (({"ipaddr": "10.0.0.1", "hours": 0}, hours_range),
                       ({"ipaddr": "10.0.0.1", "hours": "2"}, hours_range),
                       ({"ipaddr": "10.0.0.1"}, MISSING_BODY)):
        r = call(h, "POST", "/operations/ipaddr", body, key=mod)
        assert schema_errors(r) == {"hours": want}
    h.pop(name="w9")
    path = "/operations/block_worker_ipaddr/" + h.get("/workers/name/w9").json()["id"]
    assert schema_errors(call(h, "PUT", path, {"days": 31}, key=mod)) == \
        {"days": "days must be an integer from 1 to 30"}
    assert schema_errors(call(h, "PUT", path, {}, key=mod)) == {"days": MISSING_BODY}
    # set, listed, lifted
    r = call(h, "POST", "/operations/ipaddr", {"ipaddr": "10.0.0.0/8", "hours": 3}, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert [x["ipaddr"] for x in call(h, "GET", "/operations/ipaddr", key=mod).json()] == \
        ["10.0.0.0/8"]
    r = call(h, "DELETE", "/operations/ipaddr", {"ipaddr": "10.0.0.0/8"}, key=mod)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert call(h, "GET", "/operations/ipaddr", key=mod).json() == []


def test_style_and_collection_wording(make_horde):
    h = make_horde()
    alice, mod = h.keys["alice"], h.keys["mod"]
    missing = str(uuid.uuid4())
    for path, rc, noun in (("/styles/image/", "StyleNotFound", "Style"),
                           ("/collections/", "CollectionNotFound", "Collection")):
        body = assert_error(call(h, "GET", path + missing), 404, rc)
        assert body["message"] == "%s with ID '%s' not found." % (noun, missing)
    body = assert_error(call(h, "GET", "/collection_by_name/nothing"), 404, "CollectionNotFound")
    assert body["message"] == "Collection with ID 'nothing' not found."
    r = call(h, "POST", "/styles/image", STYLE, key=alice)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    # a collection: info "" and public unless given, in the API's key order
    r = call(h, "POST", "/collections", {"name": "set", "styles": ["ink"]}, key=alice)
    assert r.status_code == 200 and r.json() == {"id": r.json()["id"], "message": "OK",
                                                 "warnings": []}, r.text
    cid = r.json()["id"]
    co = call(h, "GET", "/collections/" + cid).json()
    assert list(co) == ["id", "name", "type", "info", "public", "styles", "use_count", "creator"]
    assert co["name"] == "set" and co["type"] == "image" and co["info"] == ""
    assert co["public"] is True and co["use_count"] == 0
    assert co["styles"] == [{"name": "ink", "id": sid}]
    # only the owner (or a moderator) may change it
    body = assert_error(call(h, "PATCH", "/collections/" + cid, {"info": "x"}, key=h.keys["bob"]),
                        403, "Forbidden")
    assert body["message"].startswith("This Collection is not owned by user bob#")
    body = assert_error(call(h, "PATCH", "/styles/image/" + sid, {"info": "x"}, key=mod), 403,
                        "Forbidden")
    assert body["message"].startswith("This Style is not owned by user mod#")
    r = call(h, "PATCH", "/collections/" + cid, {"info": "two styles", "public": False,
                                                 "name": "set2"}, key=mod)
    assert r.status_code == 200 and r.json()["id"] == cid, r.text
    co = call(h, "GET", "/collections/" + cid).json()
    assert (co["name"], co["info"], co["public"]) == ("set2", "two styles", False)
    assert list(co) == ["id", "name", "type", "info", "public", "styles", "use_count", "creator"]
    # a private collection is not listed; deleting answers OK
    assert call(h, "GET", "/collections").json() == []
    r = call(h, "DELETE", "/collections/" + cid, key=alice)
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(call(h, "GET", "/collections/" + cid), 404, "CollectionNotFound")
