"""Shared pytest fixtures for horde-node's black-box tests (a pytest plugin).

Every test that needs a node starts real `horde-node` processes on random
loopback ports with a temporary config and data dir, and talks to them over
real HTTP, under Debian's interpreter (/usr/bin/python3, through scripts/pytest).

    def test_x(make_node):
        node = make_node(load=["storage-sqlite", "auth"], plugins={"auth": {...}})
        r = requests.get(node.url + "/api/v2/status/heartbeat")

Loaded as a plugin, not found as a conftest.py: scripts/pytest puts tests/ on
PYTHONPATH and passes `-p harness`, so the fixtures and the --storage option
serve tests/ and every plugins/<name>/tests/ alike, and test modules import
helpers from it (`from harness import node_config`). Run any test with
scripts/pytest (it takes pytest's arguments).

Environment: HN_BUILD (default ./build) and HN_SHARED (default ../shared).
"""
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("HN_BUILD", os.path.join(ROOT, "build")))
SHARED = os.path.abspath(os.environ.get("HN_SHARED", os.path.join(ROOT, "..", "shared")))
BINARY = os.path.join(BUILD, "horde-node")

# Lines that mean a sanitizer or the node itself found a bug: a test whose
# node printed one fails even if every assertion held (nginx-tests' idea).
ALERTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def conf_value(v):
    """A Python value written as libconfig text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return "%dL" % v if abs(v) > 2**31 - 1 else str(v)
    if isinstance(v, float):
        text = repr(v)
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(conf_value(x) for x in v) + "]"
    raise TypeError("cannot write %r to a config" % (v,))


def node_config(load=(), providers=None, plugins=None, node=None):
    """libconfig text for a node."""
    out = []
    node = dict(node or {})
    node.setdefault("log_level", "info")
    out.append("node: {")
    for k, v in node.items():
        out.append("  %s = %s;" % (k, conf_value(v)))
    out.append("};")
    out.append("load = %s;" % conf_value(list(load)))
    if providers:
        out.append("providers: {")
        for k, v in providers.items():
            out.append("  %s = %s;" % (k, conf_value(v)))
        out.append("};")
    if plugins:
        out.append("plugins: {")
        for name, keys in plugins.items():
            out.append("  %s: {" % name)
            for k, v in (keys or {}).items():
                out.append("    %s = %s;" % (k, conf_value(v)))
            out.append("  };")
        out.append("};")
    return "\n".join(out) + "\n"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One horde-node process with its own config and data dir."""

    def __init__(self, workdir, config_text, env=None):
        self.workdir = workdir
        self.config = os.path.join(workdir, "horde-node.conf")
        self.data_dir = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "node.log")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.port = None
        self.proc = None
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.logs = []

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def base_args(self):
        return [BINARY, "-c", self.config, "--data-dir", self.data_dir]

    def start(self, timeout=20.0):
        if self.port is None:
            self.port = free_port()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.base_args() + ["--listen", "127.0.0.1:%d" % self.port],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("horde-node exited with %s:\n%s"
                                   % (self.proc.returncode, self.read_log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("horde-node did not listen within %ss:\n%s" % (timeout, self.read_log()))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Stops the node; returns its exit code (negative: killed by a signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("horde-node did not stop within %ss after %s"
                                     % (timeout, sig))
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def command(self, *args, timeout=120, check=False, input=None):
        """Runs `horde-node -c CONF --data-dir DIR args...`; a CompletedProcess."""
        return subprocess.run(self.base_args() + list(args), capture_output=True, text=True,
                              timeout=timeout, check=check, env=self.env, input=input)

    def alerts(self):
        return [line for line in self.read_log().splitlines()
                if any(a in line for a in ALERTS)]


@pytest.fixture
def make_node(tmp_path):
    """Factory: make_node(load=[...], providers={...}, plugins={...}, node={...},
    start=True, config_text=None) -> a started Node. All are stopped at the end
    of the test, and sanitizer reports in their logs fail the test."""
    nodes = []

    def factory(load=(), providers=None, plugins=None, node=None, start=True,
                config_text=None, env=None):
        workdir = tmp_path / ("node%d" % len(nodes))
        workdir.mkdir()
        text = config_text if config_text is not None else node_config(
            load, providers, plugins, node)
        n = Node(str(workdir), text, env)
        nodes.append(n)
        if start:
            n.start()
        return n

    yield factory
    problems = []
    for n in nodes:
        try:
            rc = n.stop()
            if rc not in (None, 0, -signal.SIGKILL):
                problems.append("node exited with %s:\n%s" % (rc, n.read_log()[-4000:]))
        except AssertionError as e:
            problems.append(str(e))
        alerts = n.alerts()
        if alerts:
            problems.append("sanitizer/alert lines in the node log:\n" + "\n".join(alerts[:20]))
    if problems:
        pytest.fail("\n\n".join(problems))


def pytest_addoption(parser):
    # The broker suite's storage (plugins/broker/tests/hordetest.py): `postgres`
    # runs every node on storage-pg + images-db, each test on its own database
    # of the run's one PostgreSQL server (tests/pg.py); `postgres-cluster` also
    # turns the broker's cluster mode on. HN_TEST_STORAGE too.
    parser.addoption("--storage", choices=("sqlite", "postgres", "postgres-cluster"),
                     default=os.environ.get("HN_TEST_STORAGE", "sqlite"),
                     help="storage provider of the broker suite's nodes")


def pytest_configure(config):
    storage = config.getoption("storage")
    os.environ["HN_TEST_STORAGE"] = "postgres" if storage.startswith("postgres") else storage
    if storage == "postgres-cluster":
        os.environ["HN_TEST_STORAGE_CLUSTER"] = "1"


@pytest.fixture
def shared_dir():
    if not os.path.isdir(SHARED):
        pytest.skip("shared data not found at %s (set HN_SHARED)" % SHARED)
    return SHARED
