"""The worker's config: every bad value is refused when the node starts (or
is checked with -t), naming the key; what the schema checks (types, ranges,
unknown keys) also names the file and line."""
import subprocess

import pytest

from harness import node_config


def lines_of(text, key):
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(key + " ="):
            return i
    raise AssertionError("%s not in config" % key)


def check_config(make_node, worker_keys, load=("cuda-sd", "worker"), providers=None):
    text = node_config(load=list(load), providers=providers or {"horde": "remote"},
                       plugins={"worker": worker_keys})
    node = make_node(config_text=text, start=False)
    r = subprocess.run(node.base_args() + ["-t"], capture_output=True, text=True, timeout=30,
                       env=node.env)
    return node, text, r


def test_a_good_config_passes(make_node):
    _, _, r = check_config(make_node, {"api_key": "A" * 22, "horde_url": "http://127.0.0.1:7001/api/",
                                       "models_to_load": ["all sd15", "top 3"],
                                       "max_power": 32, "max_threads": 2})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("key,value,word", [
    ("max_power", 0, "max_power"),
    ("max_power", 513, "max_power"),
    ("max_threads", 17, "max_threads"),
    ("queue_size", 5, "queue_size"),
    ("max_batch", 0, "max_batch"),
    ("max_threads", "two", "max_threads"),
    ("nsfw", 3, "nsfw"),
    ("models_to_load", "all", "models_to_load"),
    ("stats_output_frequency", -1, "stats_output_frequency"),
    ("pop_interval_ms", 1, "pop_interval_ms"),
    ("max_models_in_ram", 0, "max_models_in_ram"),
    ("dreamer_nmae", "typo", "dreamer_nmae"),
])
def test_schema_errors_name_file_and_line(make_node, key, value, word):
    node, text, r = check_config(make_node, {"api_key": "A" * 22, key: value})
    assert r.returncode != 0
    assert word in r.stderr, r.stderr
    assert "%s:%d" % (node.config, lines_of(text, key)) in r.stderr, r.stderr


@pytest.mark.parametrize("key,value", [
    ("api_key", "short"),
    ("api_key", "0000000000"),
    ("api_key", "a" * 21 + "!"),
    ("horde_url", "ftp://aihorde.net/api/"),
    ("horde_url", "aihorde.net"),
    ("horde_url", "http:///api"),
    ("dreamer_name", ""),
    ("owner_name", "ab"),
    ("owner_name", "node#owner"),
    ("priority_usernames", ["bob"]),
    ("models_to_load", [""]),
    ("model_reference", "ftp://example.org/sd.json"),
    ("clip_vocab_url", "file:///etc/passwd"),
    ("clip_vocab_sha256", "1234"),
])
def test_bad_values_are_refused_naming_the_key(make_node, key, value):
    keys = {"api_key": "A" * 22}
    keys[key] = value
    _, _, r = check_config(make_node, keys)
    assert r.returncode != 0
    assert "plugins.worker.%s" % key in r.stderr, r.stderr


def start_fails(make_node, text):
    node = make_node(config_text=text, start=False)
    r = subprocess.run(node.base_args() + ["--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=30, env=node.env)
    assert r.returncode != 0
    return r.stderr


def test_remote_horde_needs_an_api_key(make_node):
    err = start_fails(make_node, node_config(load=["cuda-sd", "worker"],
                                             providers={"horde": "remote"},
                                             plugins={"worker": {"horde_url": "http://127.0.0.1:9/api/"}}))
    assert "api_key is required" in err, err


def test_the_horde_must_be_chosen(make_node):
    err = start_fails(make_node, node_config(load=["cuda-sd", "worker"], plugins={"worker": {}}))
    assert "providers.horde" in err, err


def test_a_generator_is_needed(make_node):
    err = start_fails(make_node, node_config(load=["worker"], providers={"horde": "remote"},
                                             plugins={"worker": {"api_key": "A" * 22}}))
    assert "generator" in err, err


@pytest.mark.parametrize("sample", ["../../etc/horde-node.conf", "worker.conf.sample"])
def test_the_sample_configs_pass(sample, tmp_path):
    import os
    from harness import BINARY
    path = os.path.normpath(os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sample))
    r = subprocess.run([BINARY, "-t", "-c", path, "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
