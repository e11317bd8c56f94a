"""Shared test utilities: free ports, real server processes, leak accounting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SERVERS = TESTS / "servers"
ROOT = TESTS.parent
NPM_BIN = ROOT / ".cache" / "npm" / "node_modules" / ".bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ServerProcess:
    """A server started as a real subprocess on a loopback port; restartable."""

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        # The port may linger briefly; uvicorn sets SO_REUSEADDR.
        self.start()


@pytest.fixture
def fixture_http() -> Iterator[ServerProcess]:
    port = free_port()
    sp = ServerProcess([sys.executable, str(SERVERS / "hub_fixture_server.py"), "http", str(port)], port).start()
    yield sp
    sp.stop()


@pytest.fixture
def fixture_sse() -> Iterator[ServerProcess]:
    port = free_port()
    sp = ServerProcess([sys.executable, str(SERVERS / "hub_fixture_server.py"), "sse", str(port)], port).start()
    yield sp
    sp.stop()


def fixture_stdio_args() -> tuple[str, list[str]]:
    return sys.executable, [str(SERVERS / "hub_fixture_server.py"), "stdio"]


def children_of_self() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
