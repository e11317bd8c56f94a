"""Faults: dead, restarted, slow and broken servers. Nothing may hang, leak or sink other calls."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from conftest import SERVERS, ServerProcess, children_of_self, fixture_stdio_args, free_port, open_fds
from toolmesh.errors import (
    CircuitOpenError,
    ConnectionFailedError,
    McpRemoteError,
    ProtocolError,
    ToolTimeoutError,
)
from toolmesh.hub import Hub, ServerConfig


def stdio_config(name: str = "fx", **kw: object) -> ServerConfig:
    cmd, args = fixture_stdio_args()
    # A process start can take over the default 10 s on a loaded 2-core CI box.
    kw.setdefault("connect_timeout", 30.0)
    return ServerConfig(name=name, command=cmd, args=args, **kw)  # type: ignore[arg-type]


async def test_server_killed_mid_call_fails_fast_and_reconnects() -> None:
    async with Hub() as hub:
        await hub.register(stdio_config(timeout=30))
        first_pid = (await hub.call_tool("fx", "pid", {})).structured["result"]
        with pytest.raises(ConnectionFailedError, match="process ended"):
            # Well under the 30 s timeout: the dead process is noticed at once.
            await asyncio.wait_for(hub.call_tool("fx", "crash", {}), 10)
        second_pid = (await hub.call_tool("fx", "pid", {})).structured["result"]
        assert second_pid != first_pid
        assert hub.server("fx").connects == 2


async def test_legacy_http_session_reinitialised_after_server_restart(fixture_http: ServerProcess) -> None:
    url = f"http://127.0.0.1:{fixture_http.port}/mcp"
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=url, protocol="2025-11-25"))
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 1})).ok
        old_session = hub.server("fx").conn.session_id  # type: ignore[union-attr]
        await asyncio.to_thread(fixture_http.restart)  # the loop keeps running, as in real life
        r = await hub.call_tool("fx", "add", {"a": 2, "b": 2})  # 404 -> re-initialise -> retried once
        assert r.ok and r.structured == {"result": 4}
        handle = hub.server("fx")
        assert handle.sessions_lost == 1 and handle.connects == 2
        assert handle.conn.session_id != old_session  # type: ignore[union-attr]


async def test_modern_http_survives_server_restart(fixture_http: ServerProcess) -> None:
    url = f"http://127.0.0.1:{fixture_http.port}/mcp"
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=url, protocol="2026-07-28"))
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 1})).ok
        await asyncio.to_thread(fixture_http.restart)  # the loop keeps running, as in real life
        assert (await hub.call_tool("fx", "add", {"a": 2, "b": 3})).structured == {"result": 5}


async def test_http_server_down_gives_clear_error_then_circuit_opens() -> None:
    port = free_port()  # nothing listens here
    async with Hub() as hub:
        cfg = ServerConfig(name="down", url=f"http://127.0.0.1:{port}/mcp", retries=0,
                           circuit={"failure_threshold": 3, "reset_timeout": 60})
        await hub.register(cfg)
        for _ in range(3):
            with pytest.raises(ConnectionFailedError, match="down"):
                await hub.call_tool("down", "add", {"a": 1, "b": 1})
        with pytest.raises(CircuitOpenError, match="open"):
            await hub.call_tool("down", "add", {"a": 1, "b": 1})
        assert hub.server("down").circuit.state.value == "open"


async def test_slow_tool_times_out_and_server_is_told_to_cancel(tmp_path: Path) -> None:
    marker = str(tmp_path / "slow")
    async with Hub() as hub:
        await hub.register(stdio_config(protocol="2025-11-25"))
        with pytest.raises(ToolTimeoutError, match="0.5s"):
            await hub.call_tool("fx", "sleep", {"seconds": 30, "marker": marker}, timeout=0.5)
        # The server received notifications/cancelled and stopped the handler.
        for _ in range(100):
            if Path(marker + ".cancelled").exists():
                break
            await asyncio.sleep(0.05)
        assert Path(marker + ".started").exists()
        assert Path(marker + ".cancelled").exists()
        assert not Path(marker + ".done").exists()
        # The connection is still good.
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 2})).ok


async def test_caller_cancellation_propagates_to_server(tmp_path: Path) -> None:
    marker = str(tmp_path / "c")
    async with Hub() as hub:
        await hub.register(stdio_config(protocol="2025-11-25"))
        task = asyncio.create_task(hub.call_tool("fx", "sleep", {"seconds": 30, "marker": marker}))
        for _ in range(100):
            if Path(marker + ".started").exists():
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if Path(marker + ".cancelled").exists():
                break
            await asyncio.sleep(0.05)
        assert Path(marker + ".cancelled").exists()


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_progress_extends_timeout_up_to_hard_max(transport: str, fixture_http: ServerProcess) -> None:
    cfg = stdio_config() if transport == "stdio" else ServerConfig(
        name="fx", url=f"http://127.0.0.1:{fixture_http.port}/mcp")
    seen: list[float] = []
    async with Hub() as hub:
        await hub.register(cfg)
        # 6 steps of 0.3 s = 1.8 s total, but never 1 s without progress: succeeds.
        r = await hub.call_tool("fx", "progress", {"steps": 6, "interval": 0.3}, timeout=1.0,
                                on_progress=lambda p, t, m: seen.append(p))
        assert r.ok and r.text == "done 6"
        assert seen == [1, 2, 3, 4, 5, 6]
        # Hard cap: progress keeps coming but max_timeout ends it.
        hub.server("fx").config.max_timeout = 1.2
        with pytest.raises(ToolTimeoutError):
            await hub.call_tool("fx", "progress", {"steps": 20, "interval": 0.3}, timeout=1.0,
                                on_progress=lambda p, t, m: None)


async def test_malformed_responses_give_clear_errors_and_keep_connection() -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="bad", command=sys.executable, args=[str(SERVERS / "bad_server.py")],
                                        retries=0))
        with pytest.raises(ProtocolError, match="not an object"):
            await hub.call_tool("bad", "notobject", {})
        with pytest.raises(ProtocolError, match="neither result nor error"):
            await hub.call_tool("bad", "noresult", {})
        with pytest.raises(McpRemoteError) as info:
            await hub.call_tool("bad", "error", {})
        assert info.value.code == -32602
        with pytest.raises(ToolTimeoutError):
            await hub.call_tool("bad", "garbage", {}, timeout=0.5)
        assert (await hub.call_tool("bad", "wrongid", {})).text == "right"
        assert (await hub.call_tool("bad", "ok", {})).text == "fine"
        assert hub.server("bad").connects == 1


async def test_200_concurrent_calls(fixture_http: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=f"http://127.0.0.1:{fixture_http.port}/mcp"))
        await hub.register(stdio_config("fs"))
        calls = [{"id": f"c{i}", "function": {"name": ("fx__add" if i % 2 else "fs__add"),
                                               "arguments": f'{{"a": {i}, "b": 1}}'}} for i in range(200)]
        results = await hub.batch_call(calls, concurrency=200)
        assert list(results) == [f"c{i}" for i in range(200)]
        assert all(r.ok for r in results.values())
        assert [r.structured["result"] for r in results.values()] == [i + 1 for i in range(200)]


async def test_batch_isolates_failures() -> None:
    async with Hub() as hub:
        await hub.register(stdio_config())
        results = await hub.batch_call(
            [
                {"id": "ok", "function": {"name": "fx__add", "arguments": '{"a": 1, "b": 2}'}},
                {"id": "badjson", "function": {"name": "fx__add", "arguments": "{nope"}},
                {"id": "schema", "function": {"name": "fx__add", "arguments": '{"a": "x"}'}},
                {"id": "unknown", "function": {"name": "nosuch__tool", "arguments": "{}"}},
                {"id": "toolerr", "function": {"name": "fx__fail", "arguments": "{}"}},
                {"id": "slow", "function": {"name": "fx__sleep", "arguments": '{"seconds": 5}'}},
            ],
            timeout=0.5,
        )
        assert list(results) == ["ok", "badjson", "schema", "unknown", "toolerr", "slow"]
        assert results["ok"].ok and results["ok"].structured == {"result": 3}
        assert results["badjson"].error_type == "InvalidArgumentsError"
        assert results["schema"].error_type == "InvalidArgumentsError"
        assert results["unknown"].error_type == "ToolNotFoundError"
        assert results["toolerr"].is_error and results["toolerr"].error_type == "ToolError"
        assert results["slow"].error_type == "ToolTimeoutError"


async def test_one_dead_server_does_not_hide_the_others() -> None:
    async with Hub() as hub:
        await hub.register(stdio_config("alive"))
        await hub.register(ServerConfig(name="dead", command="/nonexistent/mcp-server", retries=0))
        tools = await hub.list_tools()
        assert tools and {t["_server"] for t in tools} == {"alive"}
        with pytest.raises(ConnectionFailedError, match="cannot start"):
            await hub.call_tool("dead", "x", {})
        assert (await hub.call_tool("alive", "add", {"a": 1, "b": 1})).ok


async def test_health_status_changes_reach_callbacks() -> None:
    events = []

    async def on_change(ev: object) -> None:
        events.append(ev)

    async with Hub() as hub:
        hub.on_status_change(on_change)
        await hub.register(ServerConfig(name="down", url=f"http://127.0.0.1:{free_port()}/mcp", retries=0,
                                        health={"min_requests": 4, "window": 10},
                                        circuit={"failure_threshold": 100, "reset_timeout": 1}))
        for _ in range(5):
            with pytest.raises(ConnectionFailedError):
                await hub.call_tool("down", "add", {"a": 1, "b": 1}, validate=False)
        await asyncio.sleep(0.05)
        assert hub.server("down").health.status == "error"
        assert events and events[-1].new == "error"


async def test_idle_connections_are_closed_and_reopened() -> None:
    async with Hub() as hub:
        await hub.register(stdio_config(idle_ttl=0.01))
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 1})).ok
        await asyncio.sleep(0.05)
        assert await hub.close_idle() == 1
        assert hub.server("fx").conn is None
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 1})).ok
        assert hub.server("fx").connects == 2


async def test_no_leaked_processes_or_descriptors(fixture_http: ServerProcess) -> None:
    before_children = children_of_self()
    before_fds = open_fds()
    for _ in range(3):
        hub = Hub()
        for i in range(5):
            await hub.register(stdio_config(f"s{i}"))
        await hub.register(ServerConfig(name="h", url=f"http://127.0.0.1:{fixture_http.port}/mcp"))
        calls = [{"id": str(i), "name": f"s{i % 5}__add", "arguments": {"a": i, "b": 0}} for i in range(50)]
        assert all(r.ok for r in (await hub.batch_call(calls)).values())
        assert (await hub.call_tool("h", "add", {"a": 1, "b": 1})).ok
        # a crash in the middle must not leave a zombie either
        with pytest.raises(ConnectionFailedError):
            await hub.call_tool("s0", "crash", {})
        await hub.aclose()
    # aclose() returns once its processes have exited: no grace period before looking
    assert children_of_self() == before_children
    assert open_fds() <= before_fds + 2  # tolerance for lazily created loop internals


async def test_ensure_registered_is_idempotent() -> None:
    async with Hub() as hub:
        cfg = stdio_config()
        assert await hub.ensure_registered(cfg) is True
        assert (await hub.call_tool("fx", "add", {"a": 1, "b": 1})).ok
        assert await hub.ensure_registered(stdio_config()) is False  # same url/command: untouched
        assert hub.server("fx").conn is not None
        changed = stdio_config(env={"X": "1"})
        assert await hub.ensure_registered(changed) is True
        assert hub.server("fx").conn is None  # re-registered, reconnects lazily


async def test_tenants_and_users_are_isolated() -> None:
    async with Hub() as hub:
        await hub.register(stdio_config("fx"), tenant="acme")
        await hub.register(stdio_config("own"), tenant="acme", user="u1")
        assert {t["_server"] for t in await hub.list_tools(tenant="acme")} == {"fx"}
        assert {t["_server"] for t in await hub.list_tools(tenant="acme", user="u1")} == {"fx", "own"}
        with pytest.raises(LookupError):
            await hub.call_tool("own", "add", {"a": 1, "b": 1}, tenant="acme", user="u2")
        with pytest.raises(LookupError):
            await hub.call_tool("fx", "add", {"a": 1, "b": 1})  # default tenant has nothing


async def test_test_connection_reports_latency_and_tools(fixture_http: ServerProcess) -> None:
    async with Hub() as hub:
        ok = await hub.test_connection(ServerConfig(name="fx", url=f"http://127.0.0.1:{fixture_http.port}/mcp"))
        # the fixture server has exactly 8 tools (tests/servers/hub_fixture_server.py)
        assert ok["ok"] and ok["tool_count"] == 8 and ok["latency_ms"] > 0 and ok["protocol"] == "2026-07-28"
        bad = await hub.test_connection(ServerConfig(name="x", url=f"http://127.0.0.1:{free_port()}/mcp"))
        assert not bad["ok"] and "ConnectionFailedError" in bad["error"]


async def test_open_circuit_returns_configured_fallback() -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="down", url=f"http://127.0.0.1:{free_port()}/mcp", retries=0,
                                        circuit={"failure_threshold": 2, "reset_timeout": 60,
                                                 "fallback": "Inventory is unavailable right now; say so."}))
        for _ in range(2):
            with pytest.raises(ConnectionFailedError):
                await hub.call_tool("down", "check_stock", {}, validate=False)
        r = await hub.call_tool("down", "check_stock", {}, validate=False)
        assert not r.ok and r.is_error and r.error_type == "CircuitOpenError"
        assert r.text == "Inventory is unavailable right now; say so."


async def test_tenant_concurrency_bound() -> None:
    async with Hub(tenant_concurrency=3) as hub:
        await hub.register(stdio_config("a", max_concurrency=10), tenant="t")
        await hub.register(stdio_config("b", max_concurrency=10), tenant="t")
        peak = 0

        async def watch() -> None:
            nonlocal peak
            for _ in range(100):
                peak = max(peak, hub._tenant_limits["t"].in_flight)
                await asyncio.sleep(0.005)

        calls = [hub.call_tool("a" if i % 2 else "b", "sleep", {"seconds": 0.05}, tenant="t") for i in range(12)]
        await hub.call_tool("a", "add", {"a": 1, "b": 1}, tenant="t")
        results = await asyncio.gather(watch(), *calls)
        assert all(r.ok for r in results[1:])
        assert peak == 3


async def test_slow_starting_stdio_server_still_connects(tmp_path: Path) -> None:
    # The discover probe goes unanswered while the process starts; the server then reads it late
    # and adopts 2026-07-28, so an initialize on the same pipe would be refused. The Hub starts a
    # new process for the initialize instead (this one starts at once).
    cmd, args = fixture_stdio_args()
    config = ServerConfig(name="slow", command=cmd, args=[str(SERVERS / "slow_start.py"), str(tmp_path / "started"),
                                                          "5", *args], connect_timeout=8)
    async with Hub() as hub:
        handle = await hub.register(config, connect=True)
        assert handle.conn is not None
        result = await hub.call_tool("slow", "add", {"a": 2, "b": 3})
        assert result.ok, result.error
        assert (tmp_path / "started").exists()
