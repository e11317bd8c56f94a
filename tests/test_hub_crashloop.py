"""A stdio server that starts slowly or crash-loops (issue 11, finding `gw_crashloop`).

The server is a real child process: a small stdlib-only handshake-era MCP server (below) that
ignores ``server/discover`` (as handshake-only servers do before ``initialize``), sleeps a
while before it reads anything (a cold interpreter on a busy machine) and, while a flag file
exists, exits at start-up and on its next call. Each start appends a line to a log, so the
tests count processes instead of timing them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from toolmesh.errors import ConnectionFailedError, ToolTimeoutError
from toolmesh.hub import Hub, ServerConfig
from toolmesh.hub.config import CircuitConfig

SERVER = r'''
import json, os, sys, time
starts, delay, flag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
with open(starts, "a") as f:
    f.write(f"{os.getpid()}\n")
time.sleep(delay)
if os.path.exists(flag):
    sys.exit(3)
TOOL = {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                          "b": {"type": "integer"}}}}
def answer(rid, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    method, rid = msg.get("method"), msg.get("id")
    if rid is None:
        continue
    if method == "initialize":
        answer(rid, {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                     "serverInfo": {"name": "slow-crash", "version": "1"}})
    elif method == "tools/list":
        answer(rid, {"tools": [TOOL]})
    elif method == "tools/call":
        if os.path.exists(flag):
            os._exit(3)
        args = msg["params"]["arguments"]
        answer(rid, {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]})
    elif method == "ping":
        answer(rid, {})
    # server/discover and anything else before initialize: ignored, like a handshake-only server
'''


def _server(tmp: Path, delay: float, **kw: object) -> tuple[ServerConfig, Path, Path]:
    script = tmp / "slow_crash_server.py"
    script.write_text(SERVER)
    starts, flag = tmp / "starts.log", tmp / "crash.flag"
    config = ServerConfig(name="slow", transport="stdio", command=sys.executable,
                          args=[str(script), str(starts), str(delay), str(flag)], **kw)  # type: ignore[arg-type]
    return config, starts, flag


def _starts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_start_slower_than_half_the_connect_budget_connects_the_first_process(tmp_path: Path) -> None:
    # The discover probe goes unanswered for more than half the budget. The Hub used to replace
    # the process then, and the new one (as slow) had only the other half: it never connected.
    config, starts, _ = _server(tmp_path, 2.5, connect_timeout=4.0)
    async with Hub() as hub:
        handle = await hub.register(config, connect=True)
        assert handle.conn is not None and handle.conn.identity.protocol != ""
        result = await hub.call_tool("slow", "add", {"a": 2, "b": 3})
        assert result.ok, result.error
        assert result.content[0]["text"] == "5"
    assert _starts(starts) == 1


async def test_calls_shorter_than_the_start_do_not_cut_it(tmp_path: Path) -> None:
    # Each start takes longer than a call's timeout. A caller giving up must not kill the process
    # it is waiting for: the start goes on, and a later call uses it. (Circuit kept closed so the
    # callers, not the circuit's background probe, drive the reconnect.)
    config, starts, flag = _server(tmp_path, 1.5, timeout=0.5, connect_timeout=5.0,
                                   circuit=CircuitConfig(failure_threshold=1000))
    errors: list[str] = []
    async with Hub() as hub:
        await hub.register(config, connect=True)
        assert (await hub.call_tool("slow", "add", {"a": 1, "b": 1})).ok  # tools listed: calls go straight out
        flag.touch()
        try:
            await hub.call_tool("slow", "add", {"a": 1, "b": 1})
        except ConnectionFailedError:
            pass  # the process died on the call
        flag.unlink()
        before = _starts(starts)
        for _ in range(40):
            try:
                result = await hub.call_tool("slow", "add", {"a": 1, "b": 1})
            except (ToolTimeoutError, ConnectionFailedError) as exc:
                errors.append(type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            assert result.ok, result.error
            break
        else:
            raise AssertionError(f"no call succeeded; {_starts(starts) - before} processes started, errors {errors}")
    assert errors, "the first call should have ended before the slow start finished"
    assert _starts(starts) - before == 1, errors


async def test_crash_loop_recovers_with_clear_errors(tmp_path: Path) -> None:
    # While the flag exists every process dies at start-up: calls fail with clear errors and the
    # Hub keeps restarting it; once the flag is gone a call succeeds on a process started later.
    config, starts, flag = _server(tmp_path, 0.3, timeout=1.0, connect_timeout=5.0)
    async with Hub() as hub:
        await hub.register(config, connect=True)
        flag.touch()
        seen: set[str] = set()
        for _ in range(12):
            try:
                result = await hub.call_tool("slow", "add", {"a": 1, "b": 2})
            except Exception as exc:  # what a caller sees during the fault
                seen.add(type(exc).__name__)
                assert str(exc)
            else:
                raise AssertionError(f"a call succeeded during the crash loop: {result}")
            await asyncio.sleep(0.1)
        assert seen <= {"ConnectionFailedError", "SessionLostError", "CircuitOpenError", "ToolTimeoutError"}, seen
        during = _starts(starts)
        assert during >= 2  # restarted at least once during the fault
        flag.unlink()
        for _ in range(100):
            try:
                result = await hub.call_tool("slow", "add", {"a": 1, "b": 2})
            except Exception as exc:
                assert type(exc).__name__ in {"ConnectionFailedError", "CircuitOpenError", "ToolTimeoutError"}
                await asyncio.sleep(0.1)
                continue
            assert result.ok and result.content[0]["text"] == "3"
            break
        else:
            raise AssertionError("no call succeeded after the crash loop ended")
    assert _starts(starts) >= during
