"""A real PostgreSQL for horde-node's tests.

One server per test run: initdb in a temporary folder, `pg_ctl start` on a
free loopback port (its unix socket in the same folder, so nothing touches
/var/run/postgresql), stopped and removed when the Python process exits.
Each test that wants a clean slate gets its own database on it.

PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the `postgres` user (the Debian package creates it) and the folder is
chown'd to it. Client programs (psql) connect over TCP with trust auth.

The server runs with fsync off: tests are about behaviour, not power cuts;
the storage provider still asks for synchronous commits per session.

Usage from a test module run by scripts/pytest (which puts tests/ on the
module path, next to tests/harness.py):

    import pg
    from pg import pg_server, pg_dsn      # fixtures

    def test_x(pg_dsn): ...               # a fresh database, its dsn
    def test_y(pg_server): pg_server.restart()

Environment: HN_PG_BIN overrides the folder of initdb/pg_ctl/postgres.
Tests skip (with the reason) only when the server binaries are missing;
`make test` installs them (scripts/install-deps.sh).
"""
import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

_counter = itertools.count(1)


def find_bindir():
    """Folder holding initdb, pg_ctl and postgres, or None."""
    candidates = []
    if os.environ.get("HN_PG_BIN"):
        candidates.append(os.environ["HN_PG_BIN"])
    candidates.append("/usr/lib/postgresql/15/bin")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary folder."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.as_postgres = os.geteuid() == 0
        self.root = tempfile.mkdtemp(prefix="hn-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = None
        self.user = "postgres"
        self.running = False
        self._lock = threading.Lock()
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)  # clients (root) reach the socket folder

    def _run(self, args, check=True, timeout=120):
        cmd = [os.path.join(self.bindir, args[0])] + list(args[1:])
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           cwd=self.root)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s\n%s" % (
                " ".join(args[:2]), r.returncode, r.stdout, r.stderr, self.server_log()[-3000:]))
        return r

    def server_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def init(self):
        self._run(["initdb", "-D", self.data, "-U", self.user, "--auth=trust",
                   "--encoding=UTF8", "--locale=C", "--no-sync"])

    def start(self):
        """Starts the server (on the same port as before, after a stop)."""
        with self._lock:
            if self.running:
                return
            if not os.path.exists(self.data):
                self.init()
            tries = 1 if self.port else 3
            for attempt in range(tries):
                port = self.port or _free_port()
                opts = " ".join([
                    "-c port=%d" % port,
                    "-c listen_addresses=127.0.0.1",
                    "-c unix_socket_directories=%s" % self.root,
                    "-c fsync=off",
                    "-c full_page_writes=off",
                    "-c max_connections=300",
                    "-c shared_buffers=32MB",
                    "-c log_min_messages=warning",
                ])
                r = self._run(["pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                               "-o", opts, "start"], check=False)
                if r.returncode == 0:
                    self.port = port
                    self.running = True
                    return
                if attempt == tries - 1:
                    raise RuntimeError("pg_ctl start failed:\n%s%s\n%s" % (
                        r.stdout, r.stderr, self.server_log()[-3000:]))

    def stop(self, mode="fast"):
        """Stops the server: `fast` ends sessions cleanly, `immediate` is a crash."""
        with self._lock:
            if not self.running:
                return
            self._run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"])
            self.running = False

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def dsn(self, dbname="postgres"):
        return "host=127.0.0.1 port=%d user=%s dbname=%s" % (self.port, self.user, dbname)

    def psql(self, sql, dbname="postgres", check=True):
        """Runs SQL with psql; returns its output rows as lists of strings."""
        r = subprocess.run(
            [os.path.join(self.bindir, "psql") if os.path.exists(os.path.join(self.bindir, "psql"))
             else "psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", dbname, "-c", sql],
            capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def create_database(self, name=None):
        """A new empty database; returns its dsn."""
        name = name or "hn_test_%d_%d" % (os.getpid(), next(_counter))
        self.psql('CREATE DATABASE "%s"' % name)
        return self.dsn(name)

    def terminate_sessions(self, dbname, application="horde-node"):
        """Kills the backends serving application on dbname (a lost connection
        without a server restart). Returns how many were killed."""
        rows = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = '%s' AND application_name = '%s'" % (dbname, application))
        return int(rows[0][0])

    def cleanup(self):
        try:
            if self.running:
                self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_server = None
_server_lock = threading.Lock()


def shared_server():
    """The run's one server, started on first use; skips when PostgreSQL is
    not installed."""
    global _server
    with _server_lock:
        if _server is None:
            bindir = find_bindir()
            if bindir is None:
                pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin, "
                            "or set HN_PG_BIN); `make test` installs them")
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam("postgres")
                except KeyError:
                    raise RuntimeError("running as root needs a `postgres` user to run the "
                                       "server as (the postgresql package creates it)")
            server = PgServer(bindir)
            atexit.register(server.cleanup)
            server.start()
            _server = server
        elif not _server.running:
            _server.start()  # a test stopped it and failed before starting it again
        return _server


@pytest.fixture(scope="session")
def pg_server():
    """The run's PostgreSQL server (a PgServer)."""
    return shared_server()


@pytest.fixture
def pg_dsn(pg_server):
    """The dsn of a fresh, empty database on the run's server."""
    return pg_server.create_database()
