"""Every validation rule of POST /generate/async (§1.1), /generate/pop (§1.4)
and /generate/submit (§1.5), each with its status and rc."""
import uuid

import pytest

from hordetest import (WEBP_1PX, assert_error, b64, horde, make_horde, png,  # noqa: F401
                       png_header)

SDXL = "AlbedoBase XL (SDXL)"
FLUX = "Flux.1-Schnell fp8 (Compact)"
SD2 = "stable_diffusion_2.1"
CASCADE = "Stable Cascade 1.0"
SRC = b64(WEBP_1PX)

# (name, request body, user, expected status, expected rc)
ASYNC_CASES = [
    ("style", {"style": "no-such-style"}, "alice", 404, "StyleNotFound"),
    ("webhook_http", {"webhook": "http://example.com/hook"}, "alice", 400, "BadRequest"),
    ("proxied_account", {"proxied_account": "someone"}, "alice", 400, "OnlyServiceAccountProxy"),
    ("blank_prompt", {"prompt": "   "}, "alice", 400, "MissingPrompt"),
    ("disable_batching_untrusted", {"disable_batching": True, "params": {"n": 2}}, "bob", 400,
     "RequiresTrust"),
    ("unknown_worker", {"workers": [str(uuid.uuid4())]}, "alice", 404, "WorkerNotFound"),
    ("invalid_worker_id", {"workers": ["not-a-uuid"]}, "alice", 404, "WorkerNotFound"),
    ("special_field", {"params": {"special": {"x": 1}}}, "alice", 400,
     "SpecialFieldNeedsSpecialUser"),
    ("special_model", {"models": ["horde_special::alice#1"]}, "alice", 403,
     "SpecialModelNeedsSpecialUser"),
    ("mask_without_source", {"source_mask": SRC}, "alice", 400, "SourceMaskUnnecessary"),
    ("controlnet_sd2", {"models": [SD2], "source_image": SRC,
                        "params": {"control_type": "normal"}}, "alice", 400,
     "ControlNetUnsupported"),
    ("controlnet_pix2pix", {"models": ["pix2pix"], "source_image": SRC,
                            "params": {"control_type": "canny"}}, "alice", 400,
     "ControlNetUnsupported"),
    ("controlnet_no_source", {"params": {"control_type": "canny"}}, "alice", 400,
     "ControlNetSourceMissing"),
    ("controlnet_inpainting", {"source_image": b64(png(8, 8, True)),
                               "source_processing": "inpainting",
                               "params": {"control_type": "canny"}}, "alice", 400,
     "ControlNetInpaintingMismatch"),
    ("hires_sdxl", {"models": [SDXL], "params": {"hires_fix": True}}, "alice", 400,
     "HiResFixMismatch"),
    ("controlnet_sdxl", {"models": [SDXL], "source_image": SRC,
                         "params": {"control_type": "canny"}}, "alice", 400,
     "ControlNetMismatch"),
    ("hires_flux", {"models": [FLUX], "params": {"hires_fix": True}}, "alice", 400,
     "HiResMismatch"),
    ("too_many_loras", {"params": {"loras": [{"name": str(i)} for i in range(6)]}}, "alice",
     400, "TooManyLoras"),
    ("lora_version", {"params": {"loras": [{"name": "abc", "is_version": True}]}}, "alice", 400,
     "BadLoraVersion"),
    ("too_many_tis", {"params": {"tis": [{"name": str(i)} for i in range(21)]}}, "alice", 400,
     "TooManyTIs"),
    ("remix_not_cascade", {"source_processing": "remix", "source_image": SRC}, "alice", 400,
     "InvalidRemix"),
    ("too_many_extra_sources", {"models": [CASCADE], "source_processing": "remix",
                                "source_image": SRC,
                                "extra_source_images": [{"image": SRC}] * 6}, "alice", 400,
     "TooManyExtraSourceImages"),
    ("extra_sources_not_remix", {"source_image": SRC, "extra_source_images": [{"image": SRC}]},
     "alice", 400, "InvalidExtraSourceImages"),
    ("extra_sources_untrusted", {"models": [CASCADE], "source_processing": "remix",
                                 "source_image": SRC,
                                 "extra_source_images": [{"image": SRC}] * 2}, "bob", 400,
     "MoreThanMinExtraSourceImage"),
    ("control_map_twice", {"params": {"image_is_control": True, "return_control_map": True}},
     "alice", 400, "ControlNetInvalidPayload"),
    ("transparent_flux", {"models": [FLUX], "params": {"transparent": True}}, "alice", 400,
     "InvalidTransparencyModel"),
    ("transparent_img2img", {"source_image": SRC, "params": {"transparent": True}}, "alice", 400,
     "InvalidTransparencyImg2Img"),
    ("qr_without_texts", {"params": {"workflow": "qr_code"}}, "alice", 400, "MissingExtraTexts"),
    ("texts_without_workflow", {"params": {"extra_texts": [{"text": "t", "reference": "abc"}]}},
     "alice", 400, "InvalidExtraTexts"),
    ("model_needs_source", {"models": ["pix2pix"]}, "alice", 400, "SourceImageRequiredForModel"),
    ("prompt_too_long", {"prompt": "word " * 7501}, "alice", 400, "InvalidPromptSize"),
    ("postprocessor_as_model", {"models": ["GFPGAN"]}, "alice", 400, "UnexpectedModelName"),
    ("two_upscalers", {"params": {"post_processing": ["RealESRGAN_x4plus", "NMKD_Siax"]}},
     "alice", 400, "TooManyUpscalers"),
    ("cfg_decimals", {"params": {"cfg_scale": 7.555}}, "alice", 400, "BadCFGDecimals"),
    ("source_not_image", {"source_image": b64(b"just some text, not an image")}, "alice", 400,
     "ImageValidationFailed"),
    ("source_not_base64", {"source_image": "%%%not base64%%%"}, "alice", 400,
     "ImageValidationFailed"),
    ("source_url", {"source_image": "https://example.invalid/x.png"}, "alice", 400,
     "ImageValidationFailed"),
    ("source_too_large", {"source_image": b64(png_header(4000, 3000))}, "alice", 400,
     "SourceImageResolutionExceeded"),
    ("inpainting_no_alpha", {"source_image": b64(png(8, 8, False)),
                             "source_processing": "inpainting"}, "alice", 400,
     "InpaintingMissingMask"),
]


@pytest.mark.parametrize("name,body,user,status,rc", ASYNC_CASES, ids=[c[0] for c in ASYNC_CASES])
def test_async_rejects(horde, name, body, user, status, rc):
    req = {"prompt": "a cat", "params": {"steps": 10}, "models": ["Deliberate"]}
    for k, v in body.items():
        if k == "params":
            req["params"] = dict(req["params"], **v)
        else:
            req[k] = v
    r = horde.post("/generate/async", req, key=horde.keys[user])
    assert_error(r, status, rc)


def test_async_accepts_the_valid_neighbours(horde):
    """The rules above do not refuse what they should let through."""
    ok = [
        {"source_image": b64(png(8, 8, True)), "source_processing": "inpainting"},
        {"source_image": SRC, "source_mask": SRC, "source_processing": "inpainting"},
        {"models": [CASCADE], "source_processing": "remix", "source_image": SRC,
         "extra_source_images": [{"image": SRC, "strength": 0.5}] * 2},
        {"params": {"cfg_scale": 7.55, "post_processing": ["RealESRGAN_x4plus", "GFPGAN"]}},
        {"params": {"workflow": "qr_code",
                    "extra_texts": [{"text": "https://x", "reference": "qr_code"}]}},
        {"models": []},
        {"disable_batching": True, "params": {"n": 2}},
    ]
    for extra in ok:
        req = {"prompt": "a cat", "params": {"steps": 10}, "models": ["m-neighbours"]}
        req.update(extra)
        r = horde.post("/generate/async", req, key=horde.keys["alice"])
        assert r.status_code == 202, (extra, r.text)


def test_schema_errors_have_the_horde_shape(horde):
    r = horde.post("/generate/async", {"prompt": "x", "params": {"width": 513, "steps": 0}},
                   key=horde.keys["alice"])
    body = assert_error(r, 400, "BadRequest")
    assert body["message"] == "Input payload validation failed"
    assert body["errors"]["params.width"] == "513 is not a multiple of 64"
    assert body["errors"]["params.steps"] == "0 is less than the minimum of 1"
    r = horde.post("/generate/async", {"params": {}}, key=horde.keys["alice"])
    assert assert_error(r, 400)["errors"] == {"prompt": "'prompt' is a required property"}
    r = horde.post("/generate/async", {"prompt": "x"})  # no apikey header
    assert "apikey" in assert_error(r, 400)["errors"]


def test_wrong_key(horde):
    r = horde.post("/generate/async", {"prompt": "x"}, key="not-a-key-anyone-has")
    assert_error(r, 401, "InvalidAPIKey")
    r = horde.post("/generate/pop", {"name": "w", "models": ["Deliberate"]}, key="nope-nope")
    assert_error(r, 401, "InvalidAPIKey")


def test_banned_client_agent(horde):
    r = horde.post("/generate/async", {"prompt": "x"}, key=horde.keys["alice"],
                   headers={"Client-Agent": "My-Project:v0.0.1:My-Contact"})
    assert_error(r, 403, "BannedClientAgent")


def test_maintenance_mode(make_horde):
    h = make_horde(broker={"maintenance_mode": True})
    assert_error(h.post("/generate/async", {"prompt": "x"}, key=h.keys["alice"]), 400,
                 "MaintenanceMode")


def test_concurrency_limit(horde):
    # bob has the default concurrency of 30 waiting images
    horde.generate(user="bob", params={"n": 20}, models=["m-conc"])
    r = horde.post("/generate/async", {"prompt": "x", "params": {"n": 11}, "models": ["m-conc"]},
                   key=horde.keys["bob"])
    body = assert_error(r, 429, "TooManyPrompts")
    assert "(31)" in body["message"] and "(30)" in body["message"]
    horde.generate(user="bob", params={"n": 10}, models=["m-conc"])  # exactly 30 is fine


def test_anonymous_limit_counts_per_model(make_horde):
    h = make_horde()
    anon = "0000000000"
    for _ in range(25):  # the anonymous user may have 500 waiting images
        r = h.post("/generate/async", {"prompt": "x", "params": {"n": 20}, "models": ["anon-a"]},
                   key=anon)
        assert r.status_code == 202, r.text
    r = h.post("/generate/async", {"prompt": "x", "models": ["anon-a"]}, key=anon)
    assert_error(r, 429, "TooManyPrompts")
    # ... but they count per requested model
    r = h.post("/generate/async", {"prompt": "x", "models": ["anon-b"]}, key=anon)
    assert r.status_code == 202, r.text
    # and anonymous users cannot run workers
    r = h.post("/generate/pop", {"name": "anon-w", "models": ["anon-a"]}, key=anon)
    assert_error(r, 403, "AnonForbiddenWorker")


# ---- pop ---------------------------------------------------------------------------

POP_CASES = [
    ("no_name", {"models": ["Deliberate"]}, 400, "BadRequest"),
    ("bad_priority_user", {"name": "pw", "models": ["Deliberate"],
                           "priority_usernames": ["nohash"]}, 400, "InvalidPriorityUsername"),
    ("no_models", {"name": "pw", "models": []}, 400, "BadRequest"),
    ("banned_name", {"name": "my colab box", "models": ["Deliberate"]}, 400, "BadRequest"),
    ("threads", {"name": "pw", "models": ["Deliberate"], "threads": 51}, 400, "BadRequest"),
    ("amount", {"name": "pw", "models": ["Deliberate"], "amount": 21}, 400, "BadRequest"),
    ("short_model_name", {"name": "pw", "models": ["ab"]}, 400, "BadRequest"),
    ("agent_type", {"name": "pw", "models": ["Deliberate"], "bridge_agent": 5}, 400, "BadRequest"),
]


@pytest.mark.parametrize("name,body,status,rc", POP_CASES, ids=[c[0] for c in POP_CASES])
def test_pop_rejects(horde, name, body, status, rc):
    assert_error(horde.post("/generate/pop", body, key=horde.keys["wally"]), status, rc)


def test_pop_name_of_another_owner(horde):
    horde.pop(owner="wally", name="owned-by-wally", models=["m-none"])
    r = horde.post("/generate/pop", {"name": "owned-by-wally", "models": ["m-none"]},
                   key=horde.keys["wendy"])
    assert_error(r, 403, "WrongCredentials")


def test_untrusted_worker_limit(make_horde):
    h = make_horde(broker={"max_untrusted_workers": 3})
    for i in range(4):  # the horde refuses a new worker once more than 3 exist
        h.pop(owner="wally", name="w%d" % i, models=["m-limit"])
    assert_error(h.post("/generate/pop", {"name": "w4", "models": ["m-limit"]}, key=h.keys["wally"]),
                 403, "TooManyWorkers")
    h.pop(owner="wendy", name="trusted-w9", models=["m-limit"])  # trusted: no such limit


def test_unknown_models_refused_when_configured(make_horde):
    h = make_horde(broker={"accept_unknown_models": False})
    r = h.post("/generate/pop", {"name": "w", "models": ["NotInTheReference"]},
               key=h.keys["wally"])
    assert_error(r, 400, "BadRequest")
    h.pop(name="w", models=["NotInTheReference", "Deliberate"])  # known names are kept


# ---- submit ------------------------------------------------------------------------

def test_submit_rejects(horde):
    key = horde.keys["wally"]
    r = horde.post("/generate/submit", {"id": str(uuid.uuid4()), "generation": "R2", "seed": 1},
                   key=key)
    assert_error(r, 404, "InvalidJobID")
    r = horde.post("/generate/submit", {"id": "not-a-uuid", "seed": 1}, key=key)
    assert_error(r, 404, "InvalidJobID")
    r = horde.post("/generate/submit", {"id": str(uuid.uuid4())}, key=key)
    assert assert_error(r, 400, "BadRequest")["errors"] == {"seed": "'seed' is a required property"}
    r = horde.post("/generate/submit", {"id": str(uuid.uuid4()), "seed": 1, "state": "great"},
                   key=key)
    assert "state" in assert_error(r, 400)["errors"]

    horde.generate(models=["m-submit"])
    job = horde.pop(name="submit-worker", models=["m-submit"])
    r = horde.post("/generate/submit", {"id": job["id"], "seed": 1}, key="wrong-key-123")
    assert_error(r, 401, "InvalidAPIKey")
    r = horde.post("/generate/submit", {"id": job["id"], "seed": 1}, key=horde.keys["wendy"])
    assert_error(r, 403, "WrongCredentials")
    r = horde.post("/generate/submit", {"id": job["id"], "seed": 1, "generation": "%%%"}, key=key)
    assert_error(r, 400, "ImageValidationFailed")
    r = horde.post("/generate/submit", {"id": job["id"], "seed": 1,
                                        "gen_metadata": [{"type": "lora", "value": "x"}]}, key=key)
    assert "gen_metadata.0.value" in assert_error(r, 400)["errors"]
    assert horde.submit(job["id"])["reward"] > 0
    assert_error(horde.post("/generate/submit", {"id": job["id"], "seed": 1, "generation": "R2"},
                            key=key), 400, "DuplicateGen")
