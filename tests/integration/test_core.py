"""The core over real processes: -t, config errors with file and line,
command dispatch, the out-of-tree example plugin over HTTP, the error
envelope, CORS, limits and graceful stop."""
import os
import signal
import socket
import subprocess
import time

import requests

from harness import BINARY, BUILD, ROOT, node_config

HELLO = os.path.join(BUILD, "abi", "hello.so")


def run(*args, timeout=30):
    return subprocess.run([BINARY] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def test_t_on_the_default_config_prints_plugins_and_hooks(tmp_path):
    r = run("-t", "-c", os.path.join(ROOT, "etc", "horde-node.conf"),
            "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "plugins:" in r.stdout and "hooks:" in r.stdout
    assert "http_authenticate" in r.stdout and "routes:" in r.stdout


def test_t_prints_hook_order_and_masks_secrets(tmp_path):
    conf = tmp_path / "n.conf"
    conf.write_text(node_config(load=[HELLO], plugins={"hello": {"greeting": "Hi"}}))
    r = run("-t", "-c", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "hello" in r.stdout and "1.0.0" in r.stdout
    assert 'greeting = "Hi"' in r.stdout
    assert "/api/v2/hello/{name}" in r.stdout


def test_misspelt_key_names_key_file_and_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('load = ["%s"];\nplugins: {\n  hello: {\n    greting = "x";\n  };\n};\n'
                    % HELLO)
    r = run("-t", "-c", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0
    assert 'plugin "hello"' in r.stderr
    assert 'unknown key "greting"' in r.stderr
    assert "%s:4" % conf in r.stderr
    # and the node does not start either
    r = run("-c", str(conf), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0 and "greting" in r.stderr


def test_out_of_range_and_unloaded_section(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('load = ["%s"];\nplugins: { hello: {\n repeat = 99; }; };\n' % HELLO)
    r = run("-t", "-c", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0
    assert '"repeat" must be an integer in [1, 10]' in r.stderr and "%s:3" % conf in r.stderr
    conf.write_text('load = ["%s"];\nplugins: {\n hello: { };\n kudos: { };\n};\n' % HELLO)
    r = run("-t", "-c", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0
    assert '"kudos", which is not loaded' in r.stderr and "%s:4" % conf in r.stderr


def test_missing_plugin_file(tmp_path):
    conf = tmp_path / "n.conf"
    conf.write_text('node: { log_level = "warn"; };\nload = [ "no-such-plugin" ];\n')
    r = run("-t", "-c", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0
    assert "no-such-plugin" in r.stderr and "%s:2" % conf in r.stderr


def test_plugin_commands_and_help(tmp_path):
    conf = tmp_path / "n.conf"
    conf.write_text(node_config(load=[HELLO], plugins={"hello": {"greeting": "Hey",
                                                                 "repeat": 2}}))
    r = run("-c", str(conf), "--data-dir", str(tmp_path / "d"), "hello", "bob")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hey, bob!\nHey, bob!\n"
    r = run("-c", str(conf), "--data-dir", str(tmp_path / "d"), "help")
    assert r.returncode == 0 and "hello" in r.stdout and "plugin hello" in r.stdout
    r = run("-c", str(conf), "--data-dir", str(tmp_path / "d"), "nope")
    assert r.returncode != 0 and 'unknown command "nope"' in r.stderr


def test_example_plugin_over_http(make_node):
    node = make_node(load=[HELLO], plugins={"hello": {"greeting": "Bonjour"}})
    r = requests.get(node.url + "/api/v2/hello/world", timeout=5)
    assert r.status_code == 200
    assert r.json()["hello"] == "world" and r.json()["greeting"] == "Bonjour"
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Horde-Node" in r.headers
    # percent-decoded path parameters
    assert requests.get(node.url + "/api/v2/hello/a%20b", timeout=5).json()["hello"] == "a b"
    # the data dir given on the command line is used
    assert os.path.isdir(node.data_dir)


def test_envelope_for_unknown_routes_and_methods(make_node):
    node = make_node(load=[HELLO])
    r = requests.get(node.url + "/api/v2/nothing/here", timeout=5)
    assert r.status_code == 404
    body = r.json()
    assert set(body) >= {"message", "rc"}
    r = requests.delete(node.url + "/api/v2/hello/x", timeout=5)
    assert r.status_code == 405
    assert "rc" in r.json()
    r = requests.options(node.url + "/api/v2/hello/x", timeout=5,
                         headers={"Access-Control-Request-Method": "GET",
                                  "Origin": "http://example.org"})
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "apikey" in r.headers.get("Access-Control-Allow-Headers", "").lower()


def test_body_limit_gives_413(make_node):
    node = make_node(load=[HELLO], node={"max_body": 4096})
    r = requests.post(node.url + "/api/v2/hello/x", data=b"x" * 100000, timeout=10)
    # libevent 2.1 answers an oversized body itself (its own small page, not
    # the JSON envelope: it has no error hook); the status is what matters.
    assert r.status_code == 413
    assert requests.get(node.url + "/api/v2/hello/x", timeout=5).status_code == 200


def test_garbage_requests_never_crash(make_node):
    node = make_node(load=[HELLO])
    for raw in (b"\x00\x01\x02garbage\r\n\r\n", b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n", b"POST /api/v2/hello/x HTTP/1.1\r\n"
                b"Content-Length: -5\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
            s.sendall(raw)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert requests.get(node.url + "/api/v2/hello/still-up", timeout=5).status_code == 200


def test_sigterm_stops_cleanly(make_node):
    node = make_node(load=[HELLO])
    assert requests.get(node.url + "/api/v2/hello/x", timeout=5).status_code == 200
    assert node.stop(signal.SIGTERM) == 0


def test_sighup_keeps_running(make_node):
    node = make_node(load=[HELLO])
    node.proc.send_signal(signal.SIGHUP)
    assert requests.get(node.url + "/api/v2/hello/x", timeout=5).status_code == 200
    deadline = time.time() + 5  # the log line is written on the main loop
    while "reload" not in node.read_log() and time.time() < deadline:
        time.sleep(0.05)
    assert "reload" in node.read_log()
