"""The soak seed (issue 11 §3): ``bench/soak.py`` for 60 s at a fifth of the campaign's load.

200 MCP sessions (HTTP and WebSocket, both protocol eras) + 40 streaming agent chats through a
real ``toolmesh serve`` process, a real toolmesh MCP server and the scripted LLM (each its own
process). Asserted: 0 errors; the gateway's open fds and asyncio tasks back at their idle
baseline once the clients are gone; resident memory growth after warm-up within a generous
bound (the campaign's < 5 % is measured by ``toolmesh bench soak``, recorded in
docs/reliability.md). Plus the leak the soak found, pinned as a unit: idle keep-alive
connections of :class:`FastHttpPool` expire.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolmesh.net.fasthttp import FastHttpPool

ROOT = Path(__file__).resolve().parent.parent
H = b"Content-Type: application/json\r\n"


async def _server() -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    """A keep-alive HTTP server that answers every request ``{}`` and never closes on its own."""
    peers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], peers


async def test_idle_pooled_connections_expire() -> None:
    server, port, peers = await _server()
    pool = FastHttpPool(f"http://127.0.0.1:{port}/", limit=8, idle_timeout=0.3)
    try:
        await asyncio.gather(*(pool.post(b"{}", H) for _ in range(8)))  # a burst opens 8 connections
        assert len(peers) == 8 and pool.connections == 8
        resp, _ = await pool.post(b"{}", H)  # a later request reuses one: no new connection
        assert resp.status == 200 and len(peers) == 8
        for _ in range(50):
            if not pool.connections:
                break
            await asyncio.sleep(0.05)
        assert pool.connections == 0  # every idle socket closed by the client, none left open
        resp, _ = await pool.post(b"{}", H)  # the pool still works after expiring everything
        assert resp.status == 200 and len(peers) == 9
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


async def test_a_connection_idle_too_long_is_not_reused_even_if_the_sweep_is_late() -> None:
    # The server may be closing it right now (uvicorn: after 5 s idle): a request sent on it could
    # be lost after the send, and a non-idempotent tool call cannot be retried.
    server, port, peers = await _server()
    pool = FastHttpPool(f"http://127.0.0.1:{port}/", idle_timeout=0.2)
    try:
        await pool.post(b"{}", H)
        time.sleep(0.3)  # block the loop: the sweep's timer cannot run before the next request
        resp, _ = await pool.post(b"{}", H)
        assert resp.status == 200 and len(peers) == 2 and pool.connections == 1
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


def test_idle_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        FastHttpPool("http://127.0.0.1:9/", idle_timeout=0)


def test_soak_seed(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--json", "--seconds", "60",
                          "--sessions", "200", "--chats", "40", "--sample", "5", "--pause", "2", "--chat-pause", "2",
                          "--session-calls", "10"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ))
    assert out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["errors"] == 0, result["first_errors"]
    assert result["calls"]["mcp"] > 1000 and result["calls"]["chat"] > 100
    assert result["peak_sessions_open"] >= 190  # a few are between two sessions at any moment
    assert result["sessions_opened"] >= 400  # each client ended its session and opened another, twice or more
    base, after, peak = result["baseline"], result["after"], result["peak"]
    assert peak["fds"] > base["fds"] + 100 and peak["tasks"] > base["tasks"] + 100  # the load was really there
    # Back to the idle baseline once the clients are gone (a little slack for a store flush in progress).
    assert after["fds"] <= base["fds"] + 2, (base, after)
    assert after["tasks"] <= base["tasks"] + 2, (base, after)
    assert result["rss_growth_pct"] < 25.0, result["samples"]
    assert out.returncode == 0, out.stderr[-3000:]
