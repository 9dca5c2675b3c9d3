"""GET /api/swagger.json: a valid Swagger 2.0 document whose paths are exactly
the routes the node serves (as `horde-node -t` lists them), with the horde's
model names, request models that are the validators' own tables, and every
documented path answering."""
import re

import pytest
import requests

from hordetest import make_horde  # noqa: F401

VERBS = {"get", "put", "post", "delete", "options", "head", "patch"}
PARAM_IN = {"query", "header", "path", "formData", "body"}
HORDE_MODELS = {"GenerationInputStable", "ModelGenerationInputStable", "PopInputStable",
                "SubmitInputStable", "RequestStatusStable", "RequestStatusCheck",
                "GenerationPayloadStable", "GenerationStable", "RequestAsync", "RequestError",
                "ModelPayloadStable", "ModelPayloadLorasStable", "WorkerDetails", "UserDetails"}


def served_routes(node):
    """{(METHOD, pattern)} from `horde-node -t`'s route list."""
    out = node.command("-t", check=True).stdout
    routes = set()
    section = out.split("routes:", 1)[1].split("commands:", 1)[0]
    for line in section.splitlines():
        m = re.match(r"^\s+([A-Z,]+)\s+(\S+)\s+from\s+\S+\s*$", line)
        if m:
            for method in m.group(1).split(","):
                routes.add((method, m.group(2)))
    return routes


def documented_routes(doc):
    routes = set()
    for path, item in doc["paths"].items():
        for verb in item:
            routes.add((verb.upper(), doc["basePath"] + path))
    for path, item in doc.get("x-node-paths", {}).items():
        for verb in item:
            routes.add((verb.upper(), path))
    return routes


def resolve(doc, ref):
    assert ref.startswith("#/definitions/"), ref
    name = ref[len("#/definitions/"):]
    assert name in doc["definitions"], "unresolved $ref " + ref
    return doc["definitions"][name]


def check_schema(doc, schema, where):
    assert isinstance(schema, dict), where
    if "$ref" in schema:
        resolve(doc, schema["$ref"])
        return
    if "allOf" in schema:
        for i, s in enumerate(schema["allOf"]):
            check_schema(doc, s, "%s.allOf[%d]" % (where, i))
        return
    assert schema.get("type") in {"object", "array", "string", "integer", "number",
                                  "boolean"}, (where, schema)
    for name, prop in schema.get("properties", {}).items():
        check_schema(doc, prop, where + "." + name)
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(doc, schema["additionalProperties"], where + ".*")
    if schema["type"] == "array":
        check_schema(doc, schema["items"], where + "[]")
    for req in schema.get("required", []):
        assert req in schema.get("properties", {}), (where, req)
    if "enum" in schema:
        assert isinstance(schema["enum"], list) and schema["enum"], where


def validate_swagger2(doc):
    """The structural rules of Swagger 2.0 that matter to clients and code
    generators (there is no Swagger 2.0 validator among Debian's packages)."""
    assert doc["swagger"] == "2.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["basePath"].startswith("/")
    for name, schema in doc["definitions"].items():
        check_schema(doc, schema, name)
    op_ids = set()
    for section in ("paths", "x-node-paths"):
        for path, item in doc[section].items():
            assert path.startswith("/"), path
            path_params = set(re.findall(r"\{(\w+)\}", path))
            for verb, op in item.items():
                assert verb in VERBS, (path, verb)
                assert op["operationId"] not in op_ids, op["operationId"]
                op_ids.add(op["operationId"])
                assert op["responses"], (path, verb)
                for code, resp in op["responses"].items():
                    assert code == "default" or re.match(r"^[1-5]\d\d$", code), code
                    assert resp["description"], (path, verb, code)
                    if "schema" in resp:
                        check_schema(doc, resp["schema"], "%s %s %s" % (verb, path, code))
                seen = set()
                bodies = 0
                for p in op.get("parameters", []):
                    assert p["in"] in PARAM_IN and p["name"], p
                    assert (p["in"], p["name"]) not in seen, (path, p)
                    seen.add((p["in"], p["name"]))
                    if p["in"] == "body":
                        bodies += 1
                        check_schema(doc, p["schema"], "%s %s body" % (verb, path))
                    else:
                        assert p["type"] in {"string", "integer", "number", "boolean",
                                             "array"}, p
                    if p["in"] == "path":
                        assert p["required"] is True and p["name"] in path_params, (path, p)
                assert bodies <= 1, (path, verb)
                declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                assert declared == path_params, (path, verb, declared)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from hordetest import Horde, _finish
    h = Horde(str(tmp_path_factory.mktemp("sw")), broker={"dev_test_user": True,
                                                          "rate_limits": False})
    yield h
    problems = _finish([h])
    if problems:
        pytest.fail("\n\n".join(problems))


def test_swagger_is_valid_and_lists_every_route(served):
    h = served
    r = requests.get(h.node.url + "/api/swagger.json", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    validate_swagger2(doc)
    assert doc["basePath"] == "/api"
    assert HORDE_MODELS <= set(doc["definitions"]), HORDE_MODELS - set(doc["definitions"])
    served_set = served_routes(h.node)
    assert ("POST", "/api/v2/dev/test-user") in served_set
    assert documented_routes(doc) == served_set, (documented_routes(doc) ^ served_set)
    gen = doc["paths"]["/v2/generate/async"]["post"]
    body = [p for p in gen["parameters"] if p["in"] == "body"][0]
    assert body["schema"] == {"$ref": "#/definitions/GenerationInputStable"}
    assert gen["responses"]["202"]["schema"] == {"$ref": "#/definitions/RequestAsync"}
    assert doc["paths"]["/v2/generate/pop"]["post"]["responses"]["200"]["schema"] == \
        {"$ref": "#/definitions/GenerationPayloadStable"}


def test_request_models_are_the_validators_tables(served):
    """The documented limits are the ones enforced: a body at a documented
    limit passes schema validation, one past it is refused."""
    h = served
    doc = requests.get(h.node.url + "/api/swagger.json", timeout=30).json()
    gi = doc["definitions"]["GenerationInputStable"]
    assert gi["required"] == ["prompt"]
    assert gi["properties"]["params"] == {"$ref": "#/definitions/ModelGenerationInputStable"}
    params = doc["definitions"]["ModelGenerationInputStable"]["properties"]
    assert params["width"]["multipleOf"] == 64 and params["width"]["maximum"] == 3072
    assert "k_euler_a" in params["sampler_name"]["enum"]
    assert doc["definitions"]["SubmitInputStable"]["required"] == ["id", "seed"]
    # each documented numeric bound of params is enforced exactly there
    base = {"prompt": "a cat", "models": ["Deliberate"], "dry_run": True}
    for name in ("steps", "n", "cfg_scale", "clip_skip", "seed_variation"):
        prop = params[name]
        too_big = prop["maximum"] + 1
        r = h.post("/generate/async", dict(base, params={name: too_big}), key=h.keys["alice"])
        assert r.status_code == 400 and ("params." + name) in r.json().get("errors", {}), \
            (name, r.text)
    style = gi["properties"]["style"]
    r = h.post("/generate/async", dict(base, style="x" * (style["maxLength"] + 1)),
               key=h.keys["alice"])
    assert r.status_code == 400 and "style" in r.json()["errors"], r.text


def test_every_documented_path_answers(served):
    """Each documented route is routed: no 404 for a path with no parameters,
    no 405 for a documented method, never a 500 (bodies are empty, so most
    answer 4xx, which is fine)."""
    h = served
    doc = requests.get(h.node.url + "/api/swagger.json", timeout=30).json()
    filled = {"id": "00000000-0000-0000-0000-000000000000", "name": "nobody",
              "filter_id": "1", "ipaddr": "192.0.2.1", "worker_id":
              "00000000-0000-0000-0000-000000000000", "key": "nothing",
              "style_id": "00000000-0000-0000-0000-000000000000",
              "example_id": "00000000-0000-0000-0000-000000000000",
              "collection_id": "00000000-0000-0000-0000-000000000000",
              "style_name": "nobody", "collection_name": "nobody"}
    items = [(doc["basePath"] + p, i) for p, i in doc["paths"].items()]
    items += list(doc["x-node-paths"].items())
    for path, item in items:
        concrete = re.sub(r"\{(\w+)\}", lambda m: filled.get(m.group(1), "x"), path)
        for verb in item:
            if concrete == "/api/v2/dev/test-user":
                continue  # makes users; its own test covers it
            r = requests.request(verb.upper(), h.node.url + concrete, json={},
                                 headers={"apikey": h.keys["mod"]}, timeout=30)
            assert r.status_code != 405 and r.status_code < 500, (verb, concrete, r.text)
            if "{" not in path:
                assert r.status_code != 404 or r.json().get("rc") != "NotFound", \
                    (verb, concrete, r.text)
