"""The exact schema messages of transfer and award (routes.c read_move reads
both routes' arguments; the horde words them differently per route)."""
from test_kudos_http import kudos_only  # noqa: F401  (the fixture)

MISSING_BODY = " Missing required parameter in the JSON body"


def errors_of(r):
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "Input payload validation failed", r.text
    return r.json()["errors"]


def test_transfer_and_award_argument_wording(kudos_only):
    h = kudos_only
    bob = "bob#%d" % h.ids["bob"]
    for path, key, user_why, amount_why in (
            ("/kudos/transfer", "alice", "The user ID which will receive the kudos",
             "The amount of kudos to transfer invalid literal for int()"),
            ("/kudos/award", "admin", "The user ID which will receive the kudos.",
             "The amount of kudos to award. invalid literal for int()")):
        assert errors_of(h.post(path, {"username": bob})) == \
            {"apikey": "The sending user's API key. Missing required parameter in the HTTP headers"}
        assert errors_of(h.post(path, {"amount": 1}, key=h.keys[key])) == \
            {"username": user_why + MISSING_BODY}
        assert errors_of(h.post(path, {"username": bob, "amount": "x"}, key=h.keys[key])) == \
            {"amount": amount_why}
    # the default amount is 100
    r = h.post("/kudos/award", {"username": bob}, key=h.keys["admin"])
    assert r.status_code == 200 and r.json() == {"awarded": 100}, r.text
