"""toolmesh.servers stdio frontend, with the server as a real child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from conftest import SERVERS

SERVER = str(SERVERS / "tm_add_server.py")
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy", "auto"])
async def test_sdk_client_over_stdio(mode: str) -> None:
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    params = StdioServerParameters(command=sys.executable, args=[SERVER, "stdio", "--policy"])
    async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
        tools = (await client.list_tools()).tools
        assert "add" in {t.name for t in tools}
        assert (await client.call_tool("add", {"a": 20, "b": 22})).structured_content == {"result": 42}
        await client.call_tool("slow", {"steps": 2, "delay": 0.01}, progress_callback=on_progress)
        assert progress == [1, 2]
        with pytest.raises(MCPError) as err:
            await client.call_tool("sleepy", {"seconds": 30})
        assert err.value.code == -32001


class Proc:
    """The test server over raw pipes: write lines, read lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, env: dict[str, str] | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SERVER,
            "stdio",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        return cls(proc)

    async def send(self, raw: bytes | dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((raw if isinstance(raw, bytes) else orjson.dumps(raw)) + b"\n")
        await self.proc.stdin.drain()

    async def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, "server closed stdout"
        return dict(orjson.loads(line))

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_raw_errors_and_eof_exit() -> None:
    p = await Proc.start()
    try:
        await p.send(b"{oops")
        msg = await p.recv()
        assert msg["error"]["code"] == -32700 and msg["id"] is None
        await p.send({"jsonrpc": "2.0", "id": 1, "method": 5})
        assert (await p.recv())["error"]["code"] == -32600
        await p.send({"jsonrpc": "2.0", "id": 2, "method": "nope/nope"})
        assert (await p.recv())["error"]["code"] == -32601
        await p.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "zzz", "arguments": {}}})
        assert (await p.recv())["error"]["code"] == -32602
        await p.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "add", "_meta": META}})
        reply = await p.recv()
        assert reply["id"] == 4 and reply["result"]["isError"] is True and reply["result"]["resultType"] == "complete"
        assert p.proc.stdin is not None
        p.proc.stdin.close()
        assert await asyncio.wait_for(p.proc.wait(), 30) == 0
    finally:
        await p.close()


async def test_cancel_and_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    p = await Proc.start({"TM_CANCEL_MARKER": str(marker)})
    try:
        call = {"name": "slow", "arguments": {"steps": 1000, "delay": 0.05}, "_meta": {"progressToken": "t"}}
        await p.send({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": call})
        first = await p.recv()
        assert first["method"] == "notifications/progress" and first["params"]["progressToken"] == "t"
        await p.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 10}})
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.read_text() == "cancelled"
        # The server is still serving after the cancel; no reply is sent for request 10.
        await p.send({"jsonrpc": "2.0", "id": 11, "method": "ping"})
        while (msg := await p.recv()).get("method") == "notifications/progress":
            pass
        assert msg["id"] == 11
        p.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.proc.wait(), 30) == 0
    finally:
        await p.close()


async def test_eof_exits_with_a_listen_stream_open() -> None:
    """A client that goes away (stdin closed: it exited, or was killed) while its 2026-07-28
    listen stream is open must not leave the server running (it waited on the stream forever,
    so a gateway killed with -9 left every stdio server behind as an orphan)."""
    p = await Proc.start()
    try:
        params = {"notifications": {"toolsListChanged": True}, "_meta": META}
        await p.send({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": params})
        ack = await p.recv()
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert p.proc.stdin is not None
        p.proc.stdin.close()
        assert await asyncio.wait_for(p.proc.wait(), 30) == 0
    finally:
        await p.close()
