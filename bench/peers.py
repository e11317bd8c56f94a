"""Peers of the Hub benchmark: server subprocesses and one thin adapter per client library.

Every adapter exposes ``await call(a, b) -> int`` (the sum read from the tool's structured
result, so the benchmark can check each answer) and ``await aclose()``. Adapters must be opened
and closed in the same task: the SDK and FastMCP clients hold anyio cancel scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import runner

SERVERS = Path(__file__).resolve().parent / "servers"
PY = sys.executable
PROTOCOL = "2026-07-28"
#: Quiet peers: FastMCP logs every stdio start at INFO level.
CHILD_ENV = {**os.environ, "FASTMCP_LOG_LEVEL": "WARNING", "FASTMCP_SHOW_SERVER_BANNER": "false"}

#: Every server subprocess this process started, killed by :func:`kill_all` (also at exit).
_PROCS: list[subprocess.Popen[bytes]] = []


def server_args(lib: str, transport: str, *extra: str) -> list[str]:
    """Command-line arguments (after the interpreter) of one peer server script."""
    return [str(SERVERS / f"{lib}_server.py"), transport, *extra]


async def wait_port(proc: subprocess.Popen[bytes], port: int, what: str, tail: Any, timeout: float = 60.0) -> None:
    """Wait until ``port`` accepts connections; fail fast if ``proc`` exits. ``tail()`` explains failures."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout}s: {tail()}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


free_port = runner.free_port


_die_with_parent = runner.die_with_parent


@dataclass
class HttpServer:
    """One peer HTTP server running as a subprocess on a free loopback port."""

    lib: str
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [PY, *server_args(self.lib, "http", str(self.port), *self.extra)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=CHILD_ENV,
            start_new_session=True,  # Ctrl-C reaches only the bench; it then stops the servers
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        _PROCS.append(self.proc)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the port accepts connections (the process imports for a few seconds)."""
        assert self.proc is not None
        await wait_port(self.proc, self.port, f"{self.lib} server", self.stderr_tail, timeout)

    def stderr_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        data: bytes = self.log.read()
        return data.decode(errors="replace")[-2000:]


def kill_all() -> None:
    """Stop every server subprocess still running: SIGTERM, then SIGKILL after 3 s."""
    runner.stop_processes(_PROCS)


def _children() -> list[tuple[int, str]]:
    """(pid, command line) of every direct child of this process. Linux only (empty elsewhere)."""
    me = str(os.getpid())
    found: list[tuple[int, str]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            # Fields after the ")" closing the command name: state, ppid, ...
            fields = stat.rsplit(b")", 1)[-1].split()
            if len(fields) > 1 and fields[1].decode() == me:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    found.append((int(entry), fh.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


def kill_children() -> None:
    """SIGKILL every direct child of this process (the stdio servers the clients spawned)."""
    for pid, _ in _children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def stdio_server_pid(lib: str) -> int | None:
    """The pid of the stdio child running ``lib``'s server script (for CPU accounting)."""
    for pid, cmd in _children():
        if f"{lib}_server.py stdio" in cmd:
            return pid
    return None


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine spent busy (every core summed), from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK  # user..steal; guest time is already in user


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU seconds used so far by ``pid`` (None when unknown or unreadable)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None


# -- client adapters ---------------------------------------------------------------------------


def _sum_of(structured: Any) -> Any:
    return structured.get("result") if isinstance(structured, dict) else None


class ToolmeshClient:
    """toolmesh ``Hub`` with one registered server."""

    library = "toolmesh"

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    @classmethod
    async def open(cls, url: str | None = None, stdio_args: list[str] | None = None) -> ToolmeshClient:
        from toolmesh.hub import Hub, ServerConfig

        hub = Hub()
        if url is not None:
            cfg = ServerConfig(name="b", url=url, protocol=PROTOCOL)
        else:
            cfg = ServerConfig(name="b", command=PY, args=stdio_args or [], env=CHILD_ENV, protocol=PROTOCOL)
        await hub.register(cfg, connect=True)
        return cls(hub)

    async def call(self, a: int, b: int) -> int:
        r = await self._hub.call_tool("b", "add", {"a": a, "b": b})
        if not r.ok:
            raise RuntimeError(r.error)
        return _sum_of(r.structured)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._hub.aclose()


class _StackClient:
    """A client library whose client is an async context manager (SDK, FastMCP)."""

    library = ""

    def __init__(self, client: Any, stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self._stack = stack

    async def aclose(self) -> None:
        await self._stack.aclose()


class SdkClient(_StackClient):
    """The official SDK's ``mcp.Client``."""

    library = "sdk"

    @classmethod
    async def open(cls, url: str | None = None, stdio_args: list[str] | None = None) -> SdkClient:
        from mcp import Client, StdioServerParameters

        target: Any = url
        if url is None:
            target = StdioServerParameters(command=PY, args=stdio_args or [], env=CHILD_ENV)
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(Client(target, mode=PROTOCOL))
        return cls(client, stack)

    async def call(self, a: int, b: int) -> int:
        r = await self._client.call_tool("add", {"a": a, "b": b})
        if r.is_error:
            raise RuntimeError(str(r.content))
        return _sum_of(r.structured_content)  # type: ignore[no-any-return]


class FastmcpClient(_StackClient):
    """FastMCP 4.x ``fastmcp.Client``."""

    library = "fastmcp"

    @classmethod
    async def open(cls, url: str | None = None, stdio_args: list[str] | None = None) -> FastmcpClient:
        from fastmcp import Client
        from fastmcp.client.transports import StdioTransport

        target: Any = url if url is not None else StdioTransport(PY, stdio_args or [], env=CHILD_ENV)
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(Client(target, mode=PROTOCOL))
        return cls(client, stack)

    async def call(self, a: int, b: int) -> int:
        # raise_on_error=True (the default) raises on isError; ``data`` is shaped by the output
        # schema, so read the wire-level structured content like for the other clients.
        r = await self._client.call_tool("add", {"a": a, "b": b})
        return _sum_of(r.structured_content)  # type: ignore[no-any-return]


CLIENTS: dict[str, Any] = {"toolmesh": ToolmeshClient, "sdk": SdkClient, "fastmcp": FastmcpClient}


def fastmcp_status() -> tuple[str | None, str | None]:
    """Why the FastMCP client and server cannot be used (None when they can)."""
    try:
        import fastmcp
        from fastmcp.client.transports import StdioTransport  # noqa: F401
    except ImportError as exc:
        reason = f"fastmcp not installed ({exc}); install the 'bench' extra"
        return reason, reason
    try:
        fastmcp.FastMCP  # noqa: B018 - lazy import of the server part
    except ImportError as exc:
        return None, f"FastMCP server part not installed: {exc}"
    return None, None


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("toolmesh", "mcp", "fastmcp-slim", "fastmcp", "uvicorn", "uvloop", "httptools"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
