"""Real servers from Debian's packages for the scale-out tests: redis-server and haproxy on loopback.

Each runs in a temporary directory on a free 127.0.0.1 port and is stopped (and its directory
removed) when its ``with`` block ends. ``make test`` installs the packages (see the Makefile); without them the
tests that need one skip, saying which package is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["HAProxy", "RedisServer", "free_port", "haproxy", "redis_server", "wait_port"]


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
    """haproxy in front of some backends on loopback, round-robin, no stickiness."""

    def __init__(self, workdir: Path, backends: list[int]) -> None:
        self.binary = _binary("haproxy", "haproxy")
        self.workdir = workdir
        self.port = free_port()
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(self.backends))
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            "global\n    maxconn 4096\n\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n"
            f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend be\n\n"
            f"backend be\n    balance roundrobin\n{servers}\n"
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
def haproxy(backends: list[int]) -> Iterator[HAProxy]:
    """haproxy round-robin over ``backends`` (ports on 127.0.0.1) while the block runs."""
    with tempfile.TemporaryDirectory(prefix="tm-haproxy-") as tmp:
        proxy = HAProxy(Path(tmp), backends)
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()
