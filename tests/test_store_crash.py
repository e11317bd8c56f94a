"""Crash safety of the store (issue 11 §4): kill -9 the gateway during heavy audit and ledger writes.

"Acknowledged" (docs/reliability.md, "Store crash safety"): audit and ledger rows are written
behind the response, in batches (every 512 rows or 50 ms). A row is promised once the gateway
has answered any request that reads the store *after* the client got the call's response —
every read first writes the pending batch, and a committed WAL transaction survives the death
of the process. Rows of calls answered in the last batch window before a kill -9 may be lost;
that window is counted and printed, never asserted on (it depends on timing).

The test keeps 24 callers busy (MCP ``tools/call`` → audit rows; ``/v1/chat/completions``
passthrough → ledger rows), reads ``/admin/audit`` in a loop as the checkpoint, kills the
gateway with SIGKILL mid-load, then checks the file directly (``PRAGMA integrity_check``, every
row promised by the last completed checkpoint) and that a restarted gateway serves it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import httpx

from conftest import SERVERS, ServerProcess, free_port
from gateway_support import Gateway
from toolmesh.testing import ScriptedLLM

MCP_CALLERS = 16
CHAT_CALLERS = 8
ROWS_BEFORE_KILL = 1500  # acknowledged calls before the kill: counts, not seconds
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "calc__add"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


class Load:
    """What the callers got acknowledged, and what the checkpoints promised."""

    def __init__(self) -> None:
        self.mcp: list[str] = []  # JSON-RPC ids of answered tools/call (= audit.request_id)
        self.chat: list[str] = []  # completion ids (= usage.request_id)
        self.promised = (0, 0)  # prefixes of (mcp, chat) promised by the last completed checkpoint
        self.checkpoints = 0
        self.stop = asyncio.Event()

    @property
    def acked(self) -> int:
        return len(self.mcp) + len(self.chat)


async def mcp_caller(client: httpx.AsyncClient, load: Load, n: int) -> None:
    for i in itertools.count():
        if load.stop.is_set():
            return
        rid = f"c{n}-{i}"
        body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": "calc__add", "arguments": {"a": i, "b": n}, "_meta": META}}
        try:
            r = await client.post("/mcp", json=body, headers=MCP_HEADERS)
        except httpx.HTTPError:
            return  # the gateway died
        if r.status_code == 200 and r.json().get("result", {}).get("isError") is False:
            load.mcp.append(rid)


async def chat_caller(client: httpx.AsyncClient, load: Load) -> None:
    # A request carrying ``tools`` is passed through to the model: one ledger row keyed by the completion id.
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    body = {"model": "scripted-model", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    while not load.stop.is_set():
        try:
            r = await client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            load.chat.append(r.json()["id"])


async def checkpointer(client: httpx.AsyncClient, load: Load) -> None:
    while not load.stop.is_set():
        before = (len(load.mcp), len(load.chat))  # every one of these was answered before the read is sent
        try:
            r = await client.get("/admin/audit", params={"limit": 1})
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            load.promised = before
            load.checkpoints += 1
        await asyncio.sleep(0.05)


def read_db(path: Path) -> tuple[str, set[str], set[str]]:
    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        audit = {r[0] for r in conn.execute("SELECT request_id FROM audit")}
        usage = {r[0] for r in conn.execute("SELECT request_id FROM usage")}
    finally:
        conn.close()
    return integrity, audit, usage


async def test_kill_9_during_heavy_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    upstream = ServerProcess([sys.executable, str(SERVERS / "tm_add_server.py"), "http", str(port)], port).start()
    script = {"default": {"text": "ok", "usage": {"input_tokens": 3, "output_tokens": 1}}}
    try:
        async with ScriptedLLM(script, log_requests=False) as llm:
            config = {
                "servers": {"calc": {"url": f"http://127.0.0.1:{port}/mcp"}},
                "llm": {"deployments": [{"name": "scripted", "provider": "openai", "model": "scripted-model",
                                         "api_key": "unused", "base_url": llm.base_url}]},
                "agent": {"user_limits": {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}},
            }
            gw = Gateway(tmp_path, config)
            await asyncio.to_thread(gw.start)
            key = await asyncio.to_thread(gw.key)
            db = tmp_path / "toolmesh.db"
            load = Load()
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {key}"},
                                         timeout=30.0, limits=limits) as client:
                tasks = [asyncio.create_task(mcp_caller(client, load, n)) for n in range(MCP_CALLERS)]
                tasks += [asyncio.create_task(chat_caller(client, load)) for _ in range(CHAT_CALLERS)]
                tasks.append(asyncio.create_task(checkpointer(client, load)))
                while load.acked < ROWS_BEFORE_KILL or load.checkpoints < 3:
                    assert not all(t.done() for t in tasks), "every caller stopped before the kill"
                    await asyncio.sleep(0.02)
                assert gw.proc is not None
                os.killpg(gw.proc.pid, signal.SIGKILL)  # mid-load: writes in flight
                load.stop.set()
                await asyncio.gather(*tasks)
            gw.stop()

            integrity, audit, usage = await asyncio.to_thread(read_db, db)
            assert integrity == "ok"
            promised_mcp = load.mcp[:load.promised[0]]
            promised_chat = load.chat[:load.promised[1]]
            assert promised_mcp and promised_chat, load.promised
            assert not [r for r in promised_mcp if r not in audit]
            assert not [r for r in promised_chat if r not in usage]
            lost = [r for r in load.mcp if r not in audit] + [r for r in load.chat if r not in usage]
            print(f"\nkill -9 after {load.acked} acknowledged calls, {load.checkpoints} checkpoints: "
                  f"{len(promised_mcp) + len(promised_chat)} promised rows all present; "
                  f"{len(lost)} rows of calls answered after the last checkpoint lost")
            # Nothing was written that no caller sent (rows of calls cut by the kill may be there).
            assert all(re.fullmatch(r"c\d+-\d+", r) for r in audit)

            # The restarted gateway opens the same file and serves what was promised.
            await asyncio.to_thread(gw.start)
            async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {key}"},
                                         timeout=30.0) as client:
                r = await client.get("/admin/audit", params={"limit": 10_000})
                assert r.status_code == 200
                served = {e["request_id"] for e in r.json()["entries"]}
                assert set(promised_mcp[-100:]) <= served
                r = await client.post("/mcp", json={"jsonrpc": "2.0", "id": "after", "method": "tools/call",
                                                    "params": {"name": "calc__add", "arguments": {"a": 1, "b": 2},
                                                               "_meta": META}}, headers=MCP_HEADERS)
                assert r.status_code == 200 and r.json()["result"]["isError"] is False
            gw.stop()
            integrity, audit, _ = await asyncio.to_thread(read_db, db)
            assert integrity == "ok" and "after" in audit
    finally:
        upstream.stop()
