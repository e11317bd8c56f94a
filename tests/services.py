"""Real servers from Debian's packages for the scale-out tests: redis-server, haproxy and PostgreSQL on loopback.

Each runs in a temporary directory on a free 127.0.0.1 port and is stopped (and its directory
removed) when its ``with`` block ends. ``make test`` installs the packages (see the Makefile); without them the
tests that need one skip, saying which package is missing.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["HAProxy", "PostgresServer", "RedisServer", "free_port", "haproxy", "postgres_server", "redis_server",
           "wait_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)),
                                       None)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {package!r}; `make test` installs it)")
    return found


class RedisServer:
    """A redis-server without persistence; :meth:`stop` and :meth:`start` keep its port."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        """``cluster``: a one-node Redis Cluster owning every slot (multi-key scripts need one slot)."""
        self.binary = _binary("redis-server", "redis-server")
        self.workdir = workdir
        self.cluster = cluster
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.workdir / "redis.log")]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf"),
                     "--cluster-port", str(free_port())]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            log = self.workdir / "redis.log"
            raise RuntimeError(f"redis-server did not start: {exc}\n{log.read_text()[-2000:] if log.exists() else ''}") from exc
        if self.cluster:
            self.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            deadline = time.monotonic() + 10
            while "cluster_state:ok" not in self.cli("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError("one-node Redis Cluster did not become ok")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cli(self, *args: str) -> str:
        """Run one command with redis-cli (for assertions on keys and stats)."""
        cli = _binary("redis-cli", "redis-tools")
        return subprocess.run([cli, "-p", str(self.port), "--raw", *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout


class HAProxy:
    """haproxy in front of some backends on loopback, round-robin, no stickiness.

    ``check``: a path to health-check every 100 ms (a backend is out after one failed check);
    a request that cannot connect to a backend is then sent to another (``redispatch``), while
    a request already sent to a backend that dies is not retried (it fails, as it should)."""

    def __init__(self, workdir: Path, backends: list[int], check: str | None = None) -> None:
        self.binary = _binary("haproxy", "haproxy")
        self.workdir = workdir
        self.port = free_port()
        self.backends = backends
        self.check = check
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        opts = " check inter 100ms fall 1 rise 2" if self.check else ""
        servers = "\n".join(f"    server s{i} 127.0.0.1:{p}{opts}" for i, p in enumerate(self.backends))
        checks = (f"    option httpchk GET {self.check}\n    option redispatch\n    retries 3\n"
                  "    retry-on conn-failure\n") if self.check else ""
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            "global\n    maxconn 4096\n\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n"
            f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend be\n\n"
            f"backend be\n    balance roundrobin\n{checks}{servers}\n"
        )
        self.proc = subprocess.Popen([self.binary, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def redis_server(*, cluster: bool = False) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port while the block runs (``cluster``: a one-node
    Redis Cluster, i.e. cluster mode's rules on keys without the other nodes)."""
    with tempfile.TemporaryDirectory(prefix="tm-redis-") as tmp:
        server = RedisServer(Path(tmp), cluster=cluster)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def haproxy(backends: list[int], check: str | None = None) -> Iterator[HAProxy]:
    """haproxy round-robin over ``backends`` (ports on 127.0.0.1) while the block runs
    (``check``: health-checked on that path, with redispatch; see :class:`HAProxy`)."""
    with tempfile.TemporaryDirectory(prefix="tm-haproxy-") as tmp:
        proxy = HAProxy(Path(tmp), backends, check)
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()


def _pg_binary(name: str) -> str:
    # Debian keeps PostgreSQL's programs in /usr/lib/postgresql/<version>/bin, off the PATH.
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package 'postgresql'; `make test` installs it)")
    return found


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb into a temp dir, 127.0.0.1 on a free port, its unix socket in
    the temp dir, fsync off. :meth:`stop` and :meth:`start` keep the data and the port.

    PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user (Debian's
    package creates it), else as ``nobody``."""

    _names = itertools.count()

    def __init__(self, workdir: Path) -> None:
        self.initdb = _pg_binary("initdb")
        self.postgres = _pg_binary("postgres")
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(workdir, entry.pw_uid, entry.pw_gid)
                break
            else:
                pytest.skip("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")

    def url(self, database: str = "postgres") -> str:
        """A connection URL (trust authentication on loopback: the password is not checked)."""
        return f"postgresql://toolmesh:secret@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        subprocess.run([self.initdb, "-D", str(self.data), "-U", "toolmesh", "--auth=trust", "-E", "UTF8",
                        "--no-sync", "--no-instructions"], user=self.user, check=True, capture_output=True,
                       timeout=120, cwd=self.workdir)

    def start(self) -> None:
        log = open(self.workdir / "postgres.log", "ab")  # the child keeps its own copy
        self.proc = subprocess.Popen(
            [self.postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.workdir), "-F", "-c", "max_connections=200"],
            user=self.user, stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *, immediate: bool = False) -> None:
        """Shut down (``immediate``: SIGQUIT, like a crash; else SIGINT, PostgreSQL's fast shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"tm_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Rows of one query (for assertions)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free loopback port while the block runs."""
    with tempfile.TemporaryDirectory(prefix="tm-pg-") as tmp:
        server = PostgresServer(Path(tmp))
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
