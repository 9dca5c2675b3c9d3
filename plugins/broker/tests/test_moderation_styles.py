"""Image styles, examples and collections (§1.7), and `style` on generate:
prompt template, params and models applied; the owner credited 2 kudos."""
import time
import uuid
from urllib.parse import quote

from hordetest import assert_error, make_horde  # noqa: F401

STYLE = {"name": "watercolor", "info": "soft paint", "prompt": "{p}, watercolor###{np}",
         "params": {"steps": 12, "sampler_name": "k_euler", "cfg_scale": 6.0, "width": 576},
         "models": ["Deliberate"], "tags": ["paint"], "public": True, "nsfw": False}


def call(h, method, path, body=None, key=None):
    headers = {"apikey": key} if key else {}
    return h.http.request(method, h.url + path, json=body, headers=headers, timeout=30)


def create(h, user="alice", **over):
    r = call(h, "POST", "/styles/image", dict(STYLE, **over), key=h.keys[user])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == "OK" and body["warnings"] == []
    return body["id"]


def test_style_roles_and_validation(make_horde):
    h = make_horde()
    assert call(h, "POST", "/styles/image", STYLE).status_code == 400       # no apikey
    assert_error(call(h, "POST", "/styles/image", STYLE, key="0000000000"), 403,
                 "StylesAnonForbidden")
    assert_error(call(h, "POST", "/styles/image", STYLE, key=h.keys["bob"]), 403,
                 "StylesRequiresCustomizer")
    assert_error(call(h, "POST", "/styles/image", STYLE, key="bad-key-0000"), 401,
                 "InvalidAPIKey")
    for over, rc in (({"prompt": "{p} only, no negative"}, "StylePromptMissingVars"),
                     ({"models": []}, "BadRequest"),
                     ({"models": ["a1", "a2", "a3", "a4", "a5", "a6"]}, "BadRequest"),
                     ({"tags": ["t%d" % i for i in range(11)]}, "BadRequest"),
                     ({"params": {"width": 513}}, "BadRequest"),
                     ({"params": {"sampler_name": "nope"}}, "BadRequest"),
                     ({"name": ""}, "BadRequest"),
                     ({"sharedkey": str(uuid.uuid4())}, "BadRequest")):
        assert_error(call(h, "POST", "/styles/image", dict(STYLE, **over), key=h.keys["alice"]),
                     400, rc)
    body = dict(STYLE)
    del body["models"]
    assert_error(call(h, "POST", "/styles/image", body, key=h.keys["alice"]), 400, "BadRequest")
    create(h)
    # a name is unique per user, not per horde
    assert_error(call(h, "POST", "/styles/image", STYLE, key=h.keys["alice"]), 400, "BadRequest")
    create(h, user="mod")


def test_style_crud(make_horde):
    h = make_horde()
    sid = create(h)
    st = call(h, "GET", "/styles/image/" + sid).json()
    assert st["id"] == sid and st["name"] == "watercolor" and st["creator"].startswith("alice#")
    assert st["prompt"] == STYLE["prompt"] and st["params"] == STYLE["params"]
    assert st["models"] == ["Deliberate"] and st["tags"] == ["paint"]
    assert st["use_count"] == 0 and st["examples"] == [] and st["public"] is True
    assert not any(k.startswith("_") for k in st)
    assert_error(call(h, "GET", "/styles/image/" + str(uuid.uuid4())), 404, "StyleNotFound")
    assert_error(call(h, "GET", "/styles/image/nope"), 404, "StyleNotFound")
    # by name, plain or with its creator
    assert call(h, "GET", "/styles/image_by_name/watercolor").json()["id"] == sid
    assert call(h, "GET", "/styles/image_by_name/" +
                quote(st["creator"] + "::style::watercolor")).json()["id"] == sid
    assert_error(call(h, "GET", "/styles/image_by_name/nothing"), 404, "StyleNotFound")
    # the list: public only, filters, sorting, paging
    private = create(h, name="secret", public=False)
    other = create(h, name="ink", tags=["lines"], models=["Anything Diffusion"])
    listed = [s["id"] for s in call(h, "GET", "/styles/image").json()]
    assert sid in listed and other in listed and private not in listed
    assert [s["id"] for s in call(h, "GET", "/styles/image?tag=lines").json()] == [other]
    assert [s["id"] for s in
            call(h, "GET", "/styles/image?model=Anything%20Diffusion").json()] == [other]
    assert [s["id"] for s in call(h, "GET", "/styles/image?sort=age").json()] == [other, sid]
    assert call(h, "GET", "/styles/image?page=2").json() == []
    assert_error(call(h, "GET", "/styles/image?sort=best"), 400)
    # PATCH: the owner only
    assert_error(call(h, "PATCH", "/styles/image/" + sid, {"info": "x y z"}, key=h.keys["bob"]),
                 403, "Forbidden")
    assert_error(call(h, "PATCH", "/styles/image/" + sid, {"info": "x y z"}, key=h.keys["mod"]),
                 403, "Forbidden")
    assert_error(call(h, "PATCH", "/styles/image/" + sid, {"prompt": "no vars at all"},
                      key=h.keys["alice"]), 400, "StylePromptMissingVars")
    assert_error(call(h, "PATCH", "/styles/image/" + sid, {"name": "ink"}, key=h.keys["alice"]),
                 400, "BadRequest")
    r = call(h, "PATCH", "/styles/image/" + sid, {"info": "new info", "params": {"steps": 8}},
             key=h.keys["alice"])
    assert r.status_code == 200 and r.json()["id"] == sid, r.text
    st = call(h, "GET", "/styles/image/" + sid).json()
    assert st["info"] == "new info" and st["params"] == {"steps": 8}
    # survives a restart
    h.node.restart()
    assert call(h, "GET", "/styles/image/" + sid).json()["info"] == "new info"
    # DELETE: owner or moderator
    assert_error(call(h, "DELETE", "/styles/image/" + sid, key="0000000000"), 403,
                 "StylesAnonForbidden")
    assert_error(call(h, "DELETE", "/styles/image/" + sid, key=h.keys["bob"]), 403, "Forbidden")
    r = call(h, "DELETE", "/styles/image/" + sid, key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(call(h, "GET", "/styles/image/" + sid), 404, "StyleNotFound")
    r = call(h, "DELETE", "/styles/image/" + other, key=h.keys["alice"])
    assert r.status_code == 200


def test_style_examples(make_horde):
    h = make_horde()
    sid = create(h)
    path = "/styles/image/%s/example" % sid
    assert_error(call(h, "POST", path, {"url": "http://example.com/a.webp", "primary": True},
                      key=h.keys["alice"]), 400)
    assert_error(call(h, "POST", path, {"url": "https://example.com/a.webp", "primary": True},
                      key=h.keys["bob"]), 403, "Forbidden")
    ids = []
    for i in range(4):
        r = call(h, "POST", path, {"url": "https://example.com/%d.webp" % i, "primary": i == 2},
                 key=h.keys["alice"] if i < 3 else h.keys["mod"])
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    ex = call(h, "GET", "/styles/image/" + sid).json()["examples"]
    assert [e["primary"] for e in ex] == [False, False, True, False]
    assert_error(call(h, "POST", path, {"url": "https://example.com/9.webp", "primary": False},
                      key=h.keys["alice"]), 403, "TooManyStyleExamples")
    r = call(h, "DELETE", "%s/%s" % (path, ids[3]), key=h.keys["alice"])
    assert r.status_code == 200
    assert_error(call(h, "POST", path, {"url": "https://example.com/0.webp", "primary": False},
                      key=h.keys["alice"]), 400, "ExampleURLAlreadyInUse")
    r = call(h, "PATCH", "%s/%s" % (path, ids[0]), {"primary": True}, key=h.keys["alice"])
    assert r.status_code == 200, r.text
    ex = call(h, "GET", "/styles/image/" + sid).json()["examples"]
    assert [e["primary"] for e in ex] == [True, False, False]
    assert_error(call(h, "PATCH", "%s/%s" % (path, ids[0]), {"url": "https://example.com/1.webp"},
                      key=h.keys["alice"]), 400, "ExampleURLAlreadyInUse")
    assert_error(call(h, "PATCH", "%s/%s" % (path, uuid.uuid4()), {"primary": True},
                      key=h.keys["alice"]), 404, "StyleExampleNotFound")


def test_collections(make_horde):
    h = make_horde()
    a = create(h)
    b = create(h, name="ink")
    assert_error(call(h, "POST", "/collections", {"name": "mine", "styles": [a]},
                      key="0000000000"), 403, "StylesAnonForbidden")
    assert_error(call(h, "POST", "/collections", {"name": "mine", "styles": []},
                      key=h.keys["alice"]), 400)
    assert_error(call(h, "POST", "/collections", {"name": "mine", "styles": ["no-such"]},
                      key=h.keys["alice"]), 400)
    r = call(h, "POST", "/collections", {"name": "mine", "info": "two styles",
                                         "styles": [a, "ink"]}, key=h.keys["bob"])
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    co = call(h, "GET", "/collections/" + cid).json()
    assert co["name"] == "mine" and co["type"] == "image" and co["public"] is True
    assert co["styles"] == [{"name": "watercolor", "id": a}, {"name": "ink", "id": b}]
    assert call(h, "GET", "/collection_by_name/mine").json()["id"] == cid
    assert [c["id"] for c in call(h, "GET", "/collections").json()] == [cid]
    assert call(h, "GET", "/collections?type=text").json() == []
    assert_error(call(h, "GET", "/collections?type=audio"), 400)
    assert_error(call(h, "GET", "/collections/" + str(uuid.uuid4())), 404, "CollectionNotFound")
    assert_error(call(h, "GET", "/collection_by_name/none"), 404, "CollectionNotFound")
    assert_error(call(h, "PATCH", "/collections/" + cid, {"info": "mine now"},
                      key=h.keys["alice"]), 403, "Forbidden")
    r = call(h, "PATCH", "/collections/" + cid, {"styles": [b], "public": False},
             key=h.keys["bob"])
    assert r.status_code == 200, r.text
    co = call(h, "GET", "/collections/" + cid).json()
    assert co["styles"] == [{"name": "ink", "id": b}] and co["public"] is False
    # a collection as the style of a request: one of its styles
    r = h.post("/generate/async", {"prompt": "a fox", "style": cid}, key=h.keys["bob"])
    assert r.status_code == 202, r.text
    job = h.pop()
    assert job["payload"]["prompt"] == "a fox, watercolor###"
    h.node.restart()
    assert call(h, "GET", "/collections/" + cid).json()["public"] is False
    r = call(h, "DELETE", "/collections/" + cid, key=h.keys["mod"])
    assert r.status_code == 200 and r.json() == {"message": "OK"}
    assert_error(call(h, "GET", "/collections/" + cid), 404, "CollectionNotFound")


def test_style_on_generate(make_horde):
    h = make_horde()
    sid = create(h)
    r = h.post("/generate/async", {"prompt": "a fox###blurry", "style": sid,
                                   "params": {"n": 2, "steps": 50, "height": 640},
                                   "models": ["Other"]}, key=h.keys["bob"])
    assert r.status_code == 202, r.text
    job = h.pop(amount=2)
    p = job["payload"]
    assert p["prompt"] == "a fox, watercolor###blurry"
    # the style's params; the requester's n, and height since the style has none
    assert p["ddim_steps"] == 12 and p["sampler_name"] == "k_euler" and p["cfg_scale"] == 6.0
    assert p["width"] == 576 and p["height"] == 640 and len(job["ids"]) == 2
    assert job["model"] == "Deliberate"
    # by name; no negative prompt: the template's "###" stays with nothing after it
    r = h.post("/generate/async", {"prompt": "a cat", "style": "watercolor"}, key=h.keys["bob"])
    assert r.status_code == 202, r.text
    assert h.pop()["payload"]["prompt"] == "a cat, watercolor###"
    assert_error(h.post("/generate/async", {"prompt": "a cat", "style": "nothing-like-it"},
                        key=h.keys["bob"]), 404, "StyleNotFound")
    assert call(h, "GET", "/styles/image/" + sid).json()["use_count"] == 2


def test_style_owner_earns_kudos(make_horde):
    """Another user's style: the owner earns 2 (kudos_details.styled) and the
    requester pays the +2 activation tax, once, with the request's activation
    (the kudos plugin's exactly-once ledger event)."""
    h = make_horde(extra_load=["kudos"])
    sid = create(h)                       # alice's style

    def styled(name):
        d = h.get("/users/%d" % h.ids[name]).json()
        return d["kudos_details"].get("styled", 0)

    def wait_styled(name, want):
        deadline = time.time() + 10
        while styled(name) != want and time.time() < deadline:
            time.sleep(0.05)
        return styled(name)

    before = styled("alice")
    r = h.post("/generate/async", {"prompt": "a fox", "style": sid}, key=h.keys["bob"])
    assert r.status_code == 202, r.text
    assert wait_styled("alice", before + 2) == before + 2
    # her own style earns her nothing; a dry run moves nothing either
    r = h.post("/generate/async", {"prompt": "a fox", "style": sid}, key=h.keys["alice"])
    assert r.status_code == 202, r.text
    r = h.post("/generate/async", {"prompt": "a fox", "style": sid, "dry_run": True},
               key=h.keys["bob"])
    assert r.status_code == 200, r.text
    # a third request that is styled moves 2 more: so the two above moved nothing
    r = h.post("/generate/async", {"prompt": "a fox", "style": sid}, key=h.keys["bob"])
    assert r.status_code == 202, r.text
    assert wait_styled("alice", before + 4) == before + 4
