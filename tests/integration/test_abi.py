"""ABI fixtures, built out of tree against the installed SDK (tests/abi),
each loaded or refused by a real horde-node with a message naming the field
that differs."""
import os
import subprocess

import pytest
import requests

from harness import BINARY, BUILD, node_config

ABI = os.path.join(BUILD, "abi")


def _abi_minor():
    """The node's HN_ABI_MINOR, read from the SDK header it was built from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "core", "include", "hn", "plugin.h")) as f:
        for line in f:
            if line.startswith("#define HN_ABI_MINOR "):
                return int(line.split()[2])
    raise AssertionError("HN_ABI_MINOR not found in plugin.h")


MINOR = _abi_minor()


def check(tmp_path, load):
    conf = tmp_path / "abi.conf"
    conf.write_text(node_config(load=load))
    return subprocess.run([BINARY, "-t", "-c", str(conf), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=30)


def so(name):
    path = os.path.join(ABI, name + ".so")
    assert os.path.exists(path), "fixture not built: %s (make abi-tests)" % path
    return path


@pytest.mark.parametrize("fixture", ["good", "old_minor"])
def test_fixture_loads(tmp_path, fixture):
    r = check(tmp_path, [so(fixture)])
    assert r.returncode == 0, r.stderr
    assert "abi_" in r.stdout and "plugins:" in r.stdout


@pytest.mark.parametrize("fixture,fragments", [
    ("new_minor", ["abi_minor is %d" % (MINOR + 1), "this node's is %d" % MINOR]),
    ("wrong_major", ["abi_major is 2", "this node's is 1"]),
    ("no_magic", ["magic is 0x00000000", "expected 0x484e504c"]),
    ("no_entry", ["does not export hn_plugin_entry()"]),
    ("bad_sig", ["build_sig is \"ptr4,long4,jansson2\""]),
    ("missing_symbol", ["undefined symbol", "hn_fixture_function_that_does_not_exist"]),
])
def test_fixture_refused(tmp_path, fixture, fragments):
    r = check(tmp_path, [so(fixture)])
    assert r.returncode != 0
    for f in fragments:
        assert f in r.stderr, r.stderr
    assert fixture + ".so" in r.stderr  # the message names the file
    assert "abi.conf:" in r.stderr       # and the config line that loaded it


def test_duplicate_name_refused(tmp_path):
    r = check(tmp_path, [so("good"), so("dup_name")])
    assert r.returncode != 0
    assert 'plugin name "abi_good"' in r.stderr and "already taken" in r.stderr, r.stderr


def test_loaded_fixture_serves_http(make_node):
    node = make_node(load=[so("good"), so("old_minor")])
    for name in ("abi_good", "abi_old_minor"):
        r = requests.get(node.url + "/api/v2/fixture/" + name, timeout=5)
        assert r.status_code == 200
        assert r.json() == {"plugin": name}
