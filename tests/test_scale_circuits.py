"""Circuit-breaker state shared through Redis (STO-2): two processes' worth of clients on one real
redis-server, each with its own RedisState, mirrors and breakers, as two replicas would have."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from conftest import ServerProcess, free_port
from gateway_support import Gateway
from services import RedisServer
from toolmesh.errors import CircuitOpenError
from toolmesh.resilience.circuit import CircuitBreaker, CircuitState
from toolmesh.store.redis_circuits import SharedCircuits
from toolmesh.store.redis_events import SharedEvents
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import StateSettings

pytestmark = pytest.mark.timeout(120)

ADD = str(Path(__file__).parent / "servers" / "tm_add_server.py")
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


class Replica:
    """What one gateway process holds: its Redis client, change channel and circuit mirrors."""

    def __init__(self, url: str) -> None:
        self.state = RedisState(StateSettings(url=url, timeout=5.0, connect_timeout=2.0, max_backoff=0.2))
        self.events = SharedEvents(self.state)
        self.circuits = SharedCircuits(self.state, refresh=0.1, lease=0.6)
        self.events.listen(self.circuits.channel, self.circuits.on_message)

    def breaker(self, name: str) -> CircuitBreaker:
        return CircuitBreaker(name, failure_threshold=2, reset_timeout=0.3, store=self.circuits(name))

    async def start(self) -> None:
        self.events.start()
        self.circuits.start()
        await until(lambda: self.events.live)

    async def aclose(self) -> None:
        await self.circuits.aclose()
        await self.events.aclose()
        await self.state.aclose()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def refused(breaker: CircuitBreaker) -> bool:
    try:
        breaker.allow()
    except CircuitOpenError:
        return True
    breaker.release()
    return False


@contextlib.asynccontextmanager
async def pair(url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    one, two = Replica(url), Replica(url)
    await one.start()
    await two.start()
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


def test_open_on_one_fails_fast_on_the_other_with_one_probe(redis: RedisServer) -> None:
    async def go() -> None:
        async with pair(redis.url) as (one, two):
            a, b = one.breaker("inventory"), two.breaker("inventory")
            for _ in range(2):
                a.allow()
                a.record_failure()
            assert a.state is CircuitState.OPEN
            await until(lambda: b.state is CircuitState.OPEN)
            assert refused(b)
            # Past the reset timeout only the owner (the replica that opened it) lets a probe through...
            await asyncio.sleep(0.35)
            assert refused(b)
            a.allow()  # the probe
            assert refused(a) and refused(b)  # one probe in flight, across both replicas
            await asyncio.sleep(0.35)
            assert refused(b)  # still waiting for the probe's verdict
            a.record_success()
            assert a.state is CircuitState.CLOSED
            await until(lambda: b.state is CircuitState.CLOSED)
            assert not refused(b)
            assert redis.cli("HEXISTS", "tm:circuits", "inventory").strip() == "0"
            # A failed probe re-opens it everywhere.
            for _ in range(2):
                b.allow()
                b.record_failure()
            await until(lambda: a.state is CircuitState.OPEN)
            await asyncio.sleep(0.35)
            assert refused(a)
            b.allow()
            b.record_failure()
            assert b.state is CircuitState.OPEN and refused(b)
            assert refused(a)

    asyncio.run(go())


def test_a_dead_owner_hands_the_probe_over(redis: RedisServer) -> None:
    async def go() -> None:
        async with pair(redis.url) as (one, two):
            a, b = one.breaker("billing"), two.breaker("billing")
            for _ in range(2):
                a.allow()
                a.record_failure()
            await until(lambda: b.state is CircuitState.OPEN)
            await one.circuits.aclose()  # the owner stops renewing its lease, as a killed process would
            await asyncio.sleep(0.35)
            assert refused(b)  # its lease (0.6 s) still runs
            await until(lambda: b.store.owner == two.circuits.owner)  # taken over...
            b.allow()  # ...so this replica runs the probe now
            assert b.state is CircuitState.HALF_OPEN and refused(b)
            b.record_success()
            await until(lambda: redis.cli("HEXISTS", "tm:circuits", "billing").strip() == "0")

    asyncio.run(go())


def test_without_redis_each_replica_decides_alone(redis: RedisServer) -> None:
    async def go() -> None:
        async with pair(redis.url) as (one, two):
            a, b = one.breaker("search"), two.breaker("search")
            for _ in range(2):
                a.allow()
                a.record_failure()
            await until(lambda: b.state is CircuitState.OPEN)
            redis.stop()
            try:
                # Once the mirror is stale (no read for 2 s) the other replica probes by itself.
                await until(lambda: not refused(b))
                b.record_success()
                assert b.state is CircuitState.CLOSED
            finally:
                redis.start()
            # Redis is back (empty): the mirrors follow it again and an opening is shared once more.
            await until(lambda: two.circuits.fresh() and one.circuits.fresh())
            for _ in range(2):
                b.allow()
                b.record_failure()
            await until(lambda: a.state is CircuitState.OPEN and refused(a))

    asyncio.run(go())


# -- through real gateways ---------------------------------------------------------------------------
def call_add(gw: Gateway, key: str) -> dict[str, Any]:
    """One stateless ``tools/call`` of the upstream's ``add`` through the gateway's ``/mcp``: the JSON-RPC answer."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": "add__add",
               "authorization": f"Bearer {key}"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "add__add", "arguments": {"a": 1, "b": 2}, "_meta": ENV}}
    r = httpx.post(gw.url + "/mcp", headers=headers, json=body, timeout=30)
    answer: dict[str, Any] = r.json()
    return answer


def circuit_of(gw: Gateway, key: str) -> str:
    r = httpx.get(gw.url + "/admin/servers/add", headers={"Authorization": f"Bearer {key}"})
    return str(r.json()["circuit"]["state"])


def test_a_circuit_opened_through_one_gateway_fails_fast_on_the_other(redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    upstream = ServerProcess([sys.executable, ADD, "http", str(port)], port).start()
    cfg = {
        "store": {"path": str(tmp_path / "tm.db")},
        "servers": {"add": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp", "retries": 0,
                            "circuit": {"failure_threshold": 2, "reset_timeout": 30}}},
        "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "api_key": "x", "model": "gpt-4o-mini"}]},
        "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0, "max_backoff": 0.5},
    }
    one, two = Gateway(tmp_path / "one", cfg), Gateway(tmp_path / "two", cfg)
    try:
        one.start()
        two.start()
        key = one.key("default", "mcp,admin")
        assert "result" in call_add(one, key) and "result" in call_add(two, key)
        upstream.stop()
        for _ in range(10):  # the upstream is gone: one's circuit opens after 2 failures
            if "is open" in call_add(one, key).get("error", {}).get("message", ""):
                break
        assert circuit_of(one, key) == "open"
        deadline = time.monotonic() + 15
        while circuit_of(two, key) != "open":  # pushed to the other replica, which made no call
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Its first call fails fast, without trying the dead upstream.
        error = call_add(two, key)["error"]
        assert "is open" in error["message"], error
        # The upstream comes back: the owner's background probe half-opens it, its next call closes it
        # everywhere.
        upstream.start()
        deadline = time.monotonic() + 30
        while "result" not in call_add(one, key):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        deadline = time.monotonic() + 15
        while circuit_of(two, key) != "closed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "result" in call_add(two, key)
    finally:
        one.stop()
        two.stop()
        upstream.stop()
