"""The broker's hooks, seen from a plugin: a probe plugin (hook_probe.c,
compiled here) refuses, warns, rewrites, prices and prioritises requests the
way the kudos plugin will, and counts every notification."""
import os
import subprocess

import pytest

from harness import ROOT
from hordetest import assert_error, make_horde  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def probe_so(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("probe") / "hook-probe.so")
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson"], check=True,
                            capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-shared",
                    "-fPIC", "-fvisibility=hidden", "-Wl,-z,defs",
                    "-I" + os.path.join(ROOT, "core", "include"),
                    os.path.join(HERE, "hook_probe.c"), "-o", out, "-lpthread"] + cflags,
                   check=True)
    return out


def counts(h):
    return h.http.get(h.node.url + "/probe/counts", timeout=10).json()


def last(h, hook):
    return h.http.get(h.node.url + "/probe/last/" + hook, timeout=10).json()


def test_validate_price_priority_and_notifications(make_horde, probe_so):
    h = make_horde(extra_load=[probe_so])
    assert_error(h.post("/generate/async", {"prompt": "probe-refuse me"}, key=h.keys["alice"]),
                 400, "ProbeRefused")
    r = h.generate(prompt="probe-warn", models=["m-hook"])
    assert {"code": "ProbeWarning", "message": "the probe warns"} in r["warnings"]
    priced = h.generate(prompt="probe-price probe-steps", models=["m-hook"])
    assert priced["kudos"] == 42
    dry = h.post("/generate/async", {"prompt": "probe-price", "dry_run": True,
                                     "models": ["m-hook"]}, key=h.keys["alice"])
    assert dry.status_code == 200 and dry.json()["kudos"] == round((42 + 1) * 1 * 1 + 1)
    assert counts(h)["generation_enqueued"] == 2
    info = last(h, "generation_enqueued")
    assert info["id"] == priced["id"] and info["kudos"] == 42 and info["n"] == 1
    assert info["user_id"] == h.ids["alice"] and info["request"]["prompt"].startswith("probe")

    # queue order follows the priority hook, higher first
    low = h.generate(prompt="prio=1", models=["m-prio"])["id"]
    high = h.generate(prompt="prio=5", models=["m-prio"])["id"]
    mid = h.generate(prompt="prio=3", models=["m-prio"])["id"]
    order = []
    for _ in range(3):
        job = h.pop(name="prio-probe", models=["m-prio"])
        order.append(job["payload"]["prompt"])
        h.submit(job["id"])
    assert order == ["prio=5", "prio=3", "prio=1"]
    assert all(h.check(i)["done"] for i in (low, high, mid))

    # the rewritten steps reach the worker, and the reward uses the hook's price
    job = h.pop(name="hook-worker", models=["m-hook"])
    while job["payload"]["prompt"] != "probe-price probe-steps":
        h.submit(job["id"])
        job = h.pop(name="hook-worker", models=["m-hook"])
    assert job["payload"]["ddim_steps"] == 7
    assert h.submit(job["id"])["reward"] == 42
    sub = last(h, "job_submitted")
    assert sub["job"] == job["id"] and sub["kudos"] == 42 and sub["state"] == "ok"
    popped = last(h, "job_popped")
    assert popped["jobs"] == [job["id"]] and popped["model"] == "m-hook"
    checkin = last(h, "worker_checked_in")
    assert checkin["name"] == "hook-worker"

    h.generate(prompt="will fault", models=["m-fault"])
    job = h.pop(name="hook-worker", models=["m-fault"])
    h.submit(job["id"], state="faulted")
    fault = last(h, "job_faulted")
    assert fault["job"] == job["id"] and fault["stale"] is False
    c = counts(h)
    assert c["generation_enqueued"] == 6
    assert c["job_submitted"] == 5 and c["job_faulted"] == 1
    assert c["job_popped"] == 6
    assert c["worker_checked_in"] >= 6
