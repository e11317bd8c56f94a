"""Real servers from Debian's packages on loopback: redis-server, haproxy and PostgreSQL.

Each runs in a given (temporary) directory on a free 127.0.0.1 port, never as a system service.
The scale-out tests (through ``tests/services.py``, which turns a missing program into a skip)
and ``bench/scale.py`` (which stops, saying so) both start them from here. ``make test``
installs the packages (see the Makefile); without one, constructing its server raises
:class:`MissingProgramError` naming the program and its package.

    with redis_server() as redis:
        ... redis.url ...
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
from typing import Self

from toolmesh.errors import ToolmeshError

__all__ = ["HAProxy", "MissingProgramError", "PostgresServer", "RedisServer", "find_program", "free_port",
           "haproxy", "postgres_server", "redis_server", "wait_port"]


class MissingProgramError(ToolmeshError, RuntimeError):
    """A program these servers need is not installed (or, for PostgreSQL as root, no user to run it as)."""

    def __init__(self, message: str, program: str, package: str) -> None:
        super().__init__(message)
        #: The program looked for, e.g. ``"redis-server"``.
        self.program = program
        #: The Debian package that has it, e.g. ``"redis-tools"``.
        self.package = package


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port`` (``RuntimeError`` if ``proc`` exits
    first, ``TimeoutError`` after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def find_program(name: str, package: str) -> str:
    """The path of ``name`` from Debian package ``package``: on the PATH, in /usr/bin or /usr/sbin, or in
    /usr/lib/postgresql/<version>/bin (Debian keeps PostgreSQL's programs off the PATH; newest first).
    Raises :class:`MissingProgramError` when it is nowhere."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}",
                     *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True))
         if os.path.exists(p)), None)
    if found is None:
        raise MissingProgramError(f"{name} is not installed (Debian package {package!r}; `make test` installs it)",
                                  name, package)
    return found


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, wait: float) -> None:
    """Send ``sig``, wait up to ``wait`` seconds, then kill."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RedisServer:
    """A redis-server without persistence; :meth:`stop` and :meth:`start` keep its port."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        """``cluster``: a one-node Redis Cluster owning every slot (multi-key scripts need one slot)."""
        self.binary = find_program("redis-server", "redis-server")
        self.workdir = workdir
        self.cluster = cluster
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    @contextlib.contextmanager
    def running(cls, *, cluster: bool = False) -> Iterator[Self]:
        """One started in a temporary directory while the block runs (stopped, directory removed, after)."""
        with tempfile.TemporaryDirectory(prefix="tm-redis-") as tmp:
            server = cls(Path(tmp), cluster=cluster)
            server.start()
            try:
                yield server
            finally:
                server.stop()

    def command(self) -> list[str]:
        """The redis-server command line (its log in the work directory)."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.workdir / "redis.log")]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf"),
                     "--cluster-port", str(free_port())]
        return args

    def start(self) -> None:
        """Start it and wait until it listens (and, as a cluster, until the cluster is ok)."""
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            log = self.workdir / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis-server did not start: {exc}\n{tail}") from exc
        if self.cluster:
            self.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            deadline = time.monotonic() + 10
            while "cluster_state:ok" not in self.cli("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError("one-node Redis Cluster did not become ok")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 10 s)."""
        _stop(self.proc, signal.SIGTERM, 10)
        self.proc = None

    def cli(self, *args: str) -> str:
        """Run one command with redis-cli (for assertions on keys and stats)."""
        cli = find_program("redis-cli", "redis-tools")
        return subprocess.run([cli, "-p", str(self.port), "--raw", *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout


class HAProxy:
    """haproxy in front of some backends on loopback, round-robin, no stickiness.

    ``check``: a path to health-check every 100 ms (a backend is out after one failed check: its
    connection refused, or no answer within 2 s);
    a request that cannot connect to a backend is then sent to another (``redispatch``), while
    a request already sent to a backend that dies is not retried (it fails, as it should)."""

    def __init__(self, workdir: Path, backends: list[int], check: str | None = None) -> None:
        """Proxy 127.0.0.1:<a free port> to ``backends`` (ports on 127.0.0.1)."""
        self.binary = find_program("haproxy", "haproxy")
        self.workdir = workdir
        self.port = free_port()
        self.backends = backends
        self.check = check
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, backends: list[int], check: str | None = None) -> Iterator[Self]:
        """One started in a temporary directory while the block runs (stopped, directory removed, after)."""
        with tempfile.TemporaryDirectory(prefix="tm-haproxy-") as tmp:
            proxy = cls(Path(tmp), backends, check)
            proxy.start()
            try:
                yield proxy
            finally:
                proxy.stop()

    def command(self) -> list[str]:
        """Write the configuration (a file of its own per port) and return the haproxy command line."""
        opts = " check inter 100ms fall 1 rise 2" if self.check else ""
        servers = "\n".join(f"    server s{i} 127.0.0.1:{p}{opts}" for i, p in enumerate(self.backends))
        # `timeout check` defaults to `inter` (100 ms): on a busy machine a slow health answer took a
        # live replica out; a dead one is still out at once (its connection is refused).
        checks = (f"    option httpchk GET {self.check}\n    timeout check 2s\n    option redispatch\n"
                  "    retries 3\n    retry-on conn-failure\n") if self.check else ""
        cfg = self.workdir / f"haproxy-{self.port}.cfg"
        cfg.write_text(
            "global\n    maxconn 4096\n\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n"
            f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend be\n\n"
            f"backend be\n    balance roundrobin\n{checks}{servers}\n"
        )
        return [self.binary, "-f", str(cfg), "-db"]

    def start(self) -> None:
        """Start it and wait until it listens."""
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 10 s)."""
        _stop(self.proc, signal.SIGTERM, 10)
        self.proc = None


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb into ``workdir``, 127.0.0.1 on a free port, its unix socket in
    ``workdir``, fsync off. :meth:`stop` and :meth:`start` keep the data and the port.

    PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user (Debian's
    package creates it), else as ``nobody``. ``new_session``: the server runs in a session of its own
    (a benchmark's Ctrl-C reaches only the benchmark, which stops it)."""

    _names = itertools.count()

    def __init__(self, workdir: Path, *, new_session: bool = False) -> None:
        """A cluster in ``workdir`` (not created until :meth:`init`)."""
        self.initdb = find_program("initdb", "postgresql")
        self.postgres = find_program("postgres", "postgresql")
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = free_port()
        self.new_session = new_session
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
                raise MissingProgramError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as",
                                          "postgres", "postgresql")

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Self]:
        """A fresh cluster in a temporary directory while the block runs (stopped, directory removed, after)."""
        with tempfile.TemporaryDirectory(prefix="tm-pg-") as tmp:
            server = cls(Path(tmp))
            server.init()
            server.start()
            try:
                yield server
            finally:
                server.stop()

    def url(self, database: str = "postgres") -> str:
        """A connection URL (trust authentication on loopback: the password is not checked)."""
        return f"postgresql://toolmesh:secret@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (``initdb``)."""
        subprocess.run([self.initdb, "-D", str(self.data), "-U", "toolmesh", "--auth=trust", "-E", "UTF8",
                        "--no-sync", "--no-instructions"], user=self.user, check=True, capture_output=True,
                       timeout=120, cwd=self.workdir)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait (up to ``timeout`` seconds) until it takes connections."""
        log = open(self.workdir / "postgres.log", "ab")  # the child keeps its own copy
        self.proc = subprocess.Popen(
            [self.postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.workdir), "-F", "-c", "max_connections=200"],
            user=self.user, stdout=log, stderr=log, cwd=self.workdir, start_new_session=self.new_session)
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until a connection succeeds (``RuntimeError`` with the log's tail if the server exits)."""
        import psycopg  # an optional dependency: only what starts PostgreSQL needs it

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
        """The server's log so far."""
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *, immediate: bool = False) -> None:
        """Shut down (``immediate``: SIGQUIT, like a crash; else SIGINT, PostgreSQL's fast shutdown)."""
        _stop(self.proc, signal.SIGQUIT if immediate else signal.SIGINT, 30)
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


def redis_server(*, cluster: bool = False) -> contextlib.AbstractContextManager[RedisServer]:
    """A fresh redis-server on a free loopback port while the block runs (``cluster``: a one-node
    Redis Cluster, i.e. cluster mode's rules on keys without the other nodes)."""
    return RedisServer.running(cluster=cluster)


def haproxy(backends: list[int], check: str | None = None) -> contextlib.AbstractContextManager[HAProxy]:
    """haproxy round-robin over ``backends`` (ports on 127.0.0.1) while the block runs
    (``check``: health-checked on that path, with redispatch; see :class:`HAProxy`)."""
    return HAProxy.running(backends, check)


def postgres_server() -> contextlib.AbstractContextManager[PostgresServer]:
    """A fresh PostgreSQL cluster on a free loopback port while the block runs."""
    return PostgresServer.running()
