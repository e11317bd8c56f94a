"""Agent benchmark: the two server subprocesses (scripted LLM, MCP tool server) and their cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

import peers
import runner

HERE = Path(__file__).resolve().parent
PY = sys.executable
_PROCS: list[subprocess.Popen[bytes]] = []
_LOGS: dict[int, Any] = {}  # pid -> the child's stderr (a temporary file)


free_port = runner.free_port


_die_with_parent = runner.die_with_parent


def _spawn(args: list[str], stdout: Any) -> subprocess.Popen[bytes]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [PY, *args], stdin=subprocess.DEVNULL, stdout=stdout, stderr=log,
        start_new_session=True,  # Ctrl-C reaches only the bench; it then stops the servers
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    _PROCS.append(proc)
    _LOGS[proc.pid] = log
    return proc


def _tail(proc: subprocess.Popen[bytes]) -> str:
    err = _LOGS.get(proc.pid)
    if err is None:
        return ""
    with contextlib.suppress(OSError, ValueError):
        err.seek(0)
        return str(err.read().decode(errors="replace"))[-2000:]
    return ""


class LLMServer:
    """``python -m toolmesh.testing.scripted_llm --port 0 --rules FILE --latency-ms L --no-log``."""

    def __init__(self, script: dict[str, Any], latency_ms: float) -> None:
        self._rules = tempfile.NamedTemporaryFile("wb", prefix="bench-agent-rules-", suffix=".json", delete=False)
        self._rules.write(orjson.dumps(script))
        self._rules.close()
        self.latency_ms = latency_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> None:
        self.proc = _spawn(["-m", "toolmesh.testing.scripted_llm", "--port", "0", "--rules", self._rules.name,
                            "--latency-ms", f"{self.latency_ms:g}", "--no-log"], subprocess.PIPE)

    async def wait_ready(self, timeout: float = 60.0) -> str:
        """Read the base URL line the server prints once it listens."""
        assert self.proc is not None and self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), timeout)
        except TimeoutError:
            raise RuntimeError(f"scripted LLM not ready after {timeout}s: {_tail(self.proc)}") from None
        self.base_url = line.decode().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError(f"scripted LLM failed to start: {_tail(self.proc)}")
        return self.base_url

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._rules.name)


class ToolServer:
    """``agent_servers/shop_server.py PORT``: three 50 ms tools over Streamable HTTP at ``/mcp``."""

    def __init__(self, delay_ms: float) -> None:
        self.port = free_port()
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.proc = _spawn([str(HERE / "shop_server.py"), str(self.port), "--delay-ms", f"{self.delay_ms:g}"],
                           subprocess.DEVNULL)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        proc = self.proc
        await peers.wait_port(proc, self.port, "tool server", lambda: _tail(proc), timeout)


def kill_all() -> None:
    """Stop every server subprocess still running: SIGTERM, then SIGKILL after 3 s."""
    runner.stop_processes(_PROCS)
