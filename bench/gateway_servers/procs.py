"""Processes of the gateway benchmark: servers on free loopback ports, the wrk runs, cleanup.

Everything here is synchronous: the load comes from ``wrk`` (C) and every server is its own
process, so the benchmark process only starts, waits and reads results.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import runner

HERE = Path(__file__).resolve().parent
LUA = HERE / "calls.lua"
PY = sys.executable
#: Quiet peers: FastMCP logs at INFO level and prints a banner.
CHILD_ENV = {**os.environ, "FASTMCP_LOG_LEVEL": "WARNING", "FASTMCP_SHOW_SERVER_BANNER": "false"}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_ALL: list[Proc] = []


free_port = runner.free_port


_die_with_parent = runner.die_with_parent


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
            out[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    parents = _ppid_map()
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds used so far by ``pids`` (gone processes count 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_busy_seconds() -> float | None:
    """CPU seconds every process of the machine spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


class Proc:
    """One server subprocess (its own session, so Ctrl-C reaches only the benchmark)."""

    def __init__(self, name: str, argv: list[str], *, port: int, env: dict[str, str] | None = None,
                 ready_path: str | None = None, ready_status: tuple[int, ...] = (200,)) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.env = env or CHILD_ENV
        self.ready_path = ready_path
        self.ready_status = ready_status
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None
        self._pids: list[int] = []

    def start(self) -> Proc:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        _ALL.append(self)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the port answers (``ready_path``: with one of ``ready_status``); fails fast if the process exits."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                if self.ready_path is None:
                    conn.connect()
                    conn.close()
                    break
                conn.request("GET", self.ready_path)
                status = conn.getresponse().status
                conn.close()
                if status in self.ready_status:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.tail()}")
            time.sleep(0.1)
        self._pids = tree(self.proc.pid)  # uvicorn workers, stdio children

    def pids(self) -> list[int]:
        assert self.proc is not None
        return sorted(set(self._pids) | set(tree(self.proc.pid)))

    def tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        data: bytes = self.log.read()
        return data.decode(errors="replace")[-2000:]

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process and everything it started, SIGKILL what is left after ``grace``."""
        if self.proc is None:
            return
        victims = self.pids() if self.proc.poll() is None else [p for p in self._pids if _alive(p)]
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            self.proc.poll()  # reap our direct child so it does not linger as a zombie
            time.sleep(0.05)
        for pid in victims:
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def stop_all() -> None:
    """Stop every process this module started (idempotent; also used by signal handlers)."""
    while _ALL:
        _ALL.pop().stop()


# -- wrk -----------------------------------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk(url: str, *, conns: int, seconds: int, env: dict[str, str], timeout_s: int = 10,
        script: Path = LUA, grace_s: int = 60) -> dict[str, Any]:
    """One wrk run (one thread) with ``script`` (default ``calls.lua``; any script printing the
    ``@@WRK_JSON`` line of ``wrk_report.lua``); returns its JSON summary plus ``cpu_s`` of wrk itself.
    ``timeout_s``: wrk's per-request timeout; ``grace_s``: how long past ``seconds`` wrk may take."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk; `make bench` installs it)")
    argv = [exe, "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout_s}s", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=seconds + grace_s, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("@@WRK_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr[-500:]} {out.stdout[-500:]}")
    result: dict[str, Any] = orjson.loads(line.split(" ", 1)[1])
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def create_key(config: Path, env: dict[str, str], scopes: str, timeout: float = 60) -> str:
    """A new API key of the ``default`` tenant with ``scopes`` (comma-separated), made by
    ``toolmesh keys create`` against the gateway's ``config`` (before the gateway starts)."""
    out = subprocess.run([PY, "-m", "toolmesh.cli.main", "keys", "create", "--config", str(config), "--tenant",
                          "default", "--scopes", scopes, "--json"], env=env, capture_output=True, check=False,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"toolmesh keys create failed: {out.stderr.decode()[-1000:]}")
    return str(orjson.loads(out.stdout)["key"])


# -- small HTTP helpers (setup only, never timed) -------------------------------------------------


def post(port: int, path: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, orjson.dumps(body), {"Content-Type": "application/json",
                                                        "Accept": "application/json, text/event-stream", **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _json_of(raw: bytes) -> Any:
    text = raw.decode()
    if text.lstrip().startswith("{"):
        return orjson.loads(text)
    for line in text.splitlines():  # an SSE reply: the last data line is the response
        if line.startswith("data:"):
            last = line[5:].strip()
    return orjson.loads(last)


MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}


def list_tools(port: int, path: str, token: str | None = None, era: str = "2026-07-28") -> list[str]:
    """Tool names at an endpoint (``tools/list``; 2026-07-28, or a stateless 2025-11-25 request)."""
    headers = {"Mcp-Protocol-Version": era}
    params: dict[str, Any] = {}
    if era >= "2026":
        headers["Mcp-Method"] = "tools/list"
        params["_meta"] = MODERN_META
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, raw = post(port, path, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}, headers)
    if status != 200:
        raise RuntimeError(f"tools/list at :{port}{path} answered {status}: {raw[:300]!r}")
    msg = _json_of(raw)
    if "result" not in msg:
        raise RuntimeError(f"tools/list at :{port}{path} failed: {msg}")
    return [t["name"] for t in msg["result"]["tools"]]


def handshake_session(port: int, path: str = "/mcp") -> str:
    """Open one 2025-11-25 session (initialize + notifications/initialized); returns its Mcp-Session-Id."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "toolmesh-bench", "version": "1"}}}
    status, headers, raw = post(port, path, init, {})
    sid = headers.get("mcp-session-id")
    if status != 200 or not sid:
        raise RuntimeError(f"initialize at :{port}{path} answered {status} without a session: {raw[:300]!r}")
    h = {"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
    status, _, raw = post(port, path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, h)
    if status not in (200, 202):
        raise RuntimeError(f"notifications/initialized answered {status}: {raw[:300]!r}")
    return sid
