"""A ServerHandle reports to any HandleOwner (not only the Hub), through public callbacks only;
the Hub builds its limits and breaker stores through the factories it is given; and the call
path's retry step repeats only what is safe to repeat.

Against real stdio server processes: what the owner hears is what the call path did."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from conftest import SERVERS
from toolmesh.errors import CircuitOpenError, InvalidArgumentsError, McpRemoteError
from toolmesh.hub import CircuitConfig, HealthConfig, Hub, ServerConfig, ServerHandle
from toolmesh.hub.resultcache import ResultCache
from toolmesh.observability.health import HealthTracker
from toolmesh.observability.metrics import ToolMetrics
from toolmesh.resilience import (
    CapacityLimiter,
    CircuitBreaker,
    CircuitState,
    CircuitStore,
    ConcurrencyLimiter,
    LocalCircuitStore,
)

SERVER = str(SERVERS / "hub_forward_server.py")


class RecordingOwner:
    """A HandleOwner that writes down every report."""

    def __init__(self) -> None:
        self.client_capabilities: dict[str, Any] | None = None
        self.tool_metrics = ToolMetrics()
        self.result_cache = ResultCache()
        self.events: list[tuple[Any, ...]] = []

    def new_health(self, config: ServerConfig) -> HealthTracker:
        self.events.append(("new_health", config.name))
        return HealthTracker(config.name, min_requests=1, window=HealthConfig().window)

    def new_limiter(self, limit: int, name: str) -> CapacityLimiter:
        self.events.append(("new_limiter", limit, name))
        return ConcurrencyLimiter(limit, name=name)

    def new_circuit_store(self, key: str) -> CircuitStore:
        self.events.append(("new_circuit_store", key))
        return LocalCircuitStore()

    def on_circuit_change(self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        self.events.append(("circuit", breaker.name, old.value, new.value))

    def on_connected(self) -> None:
        self.events.append(("connected",))

    def on_catalog_changed(self, server: str) -> None:
        self.events.append(("catalog_changed", server))

    def emit_change(self, tenant: str, user: str | None, server: str, method: str, params: dict[str, Any]) -> None:
        self.events.append(("change", tenant, server, method))


async def test_handle_reports_to_its_owner() -> None:
    owner = RecordingOwner()
    config = ServerConfig(name="up", command=sys.executable, args=[SERVER, "stdio"], protocol="2025-11-25",
                          circuit=CircuitConfig(failure_threshold=1, reset_timeout=60))
    handle = ServerHandle(config, "acme", None, owner)  # mypy: a RecordingOwner is a HandleOwner
    try:
        assert owner.events == [("new_limiter", 64, "server up"), ("new_circuit_store", "acme/*/up"),
                                ("new_health", "up")]
        result = await handle.call_tool("point", {"x": 3})
        assert result.ok and result.structured == {"x": 3, "y": 6} and result.attempts == 1
        assert owner.events.count(("connected",)) == 1
        assert ("new_circuit_store", "acme/*/up/point") in owner.events  # the tool's breaker, on first use

        failed = await handle.call_tool("fail", {"message": "nope"})
        assert failed.is_error and not failed.ok and failed.attempts == 1

        with pytest.raises(InvalidArgumentsError, match="x"):  # refused before sending: not a call
            await handle.call_tool("point", {"x": "three"})

        stats = owner.tool_metrics.snapshot()["servers"][handle.label]
        assert (stats["calls"], stats["successes"], stats["failures"]) == (2, 1, 1)
        assert stats["tools"]["point"]["calls"] == 1 and stats["tools"]["fail"]["failures"] == 1

        # The breakers were built with the owner's callback: a failure past the threshold is heard,
        # and the guard step then refuses before anything is sent.
        handle.guard("point").record_failure()
        assert ("circuit", "up/point", "closed", "open") in owner.events
        assert ("circuit", "up", "closed", "open") in owner.events
        with pytest.raises(CircuitOpenError):
            await handle.call_tool("point", {"x": 1})
        assert owner.tool_metrics.snapshot()["servers"][handle.label]["calls"] == 2
    finally:
        await handle.close()


async def test_hub_takes_its_limits_and_circuit_stores_from_the_factories() -> None:
    """The seam a shared (e.g. Redis) implementation plugs into: the Hub builds every limit and
    breaker store through the factories it was given."""
    limits: list[tuple[int, str]] = []
    stores: dict[str, LocalCircuitStore] = {}

    def limiter(limit: int, name: str) -> CapacityLimiter:
        limits.append((limit, name))
        return ConcurrencyLimiter(limit, name=name)

    def store(key: str) -> CircuitStore:
        stores[key] = LocalCircuitStore()
        return stores[key]

    config = ServerConfig(name="up", command=sys.executable, args=[SERVER, "stdio"], protocol="2025-11-25",
                          max_concurrency=3)
    async with Hub(tenant_concurrency=7, limiter_factory=limiter, circuit_store_factory=store) as hub:
        await hub.register(config, tenant="acme")
        result = await hub.call_tool("up", "fail", {}, tenant="acme")
        assert result.is_error
    assert limits == [(3, "server up"), (7, "tenant acme")]
    assert sorted(stores) == ["acme/*/up", "acme/*/up/fail"]
    # A tool error is not a failure of the server: nothing was counted in either store.
    assert stores["acme/*/up/fail"].total_failures == 0 and stores["acme/*/up"].total_failures == 0


async def test_call_path_retries_only_what_is_safe_to_repeat() -> None:
    """The retry step, against a real server whose tools time out once (JSON-RPC -32001)."""
    config = ServerConfig(name="flaky", command=sys.executable, args=[str(SERVERS / "hub_retry_server.py")],
                          retries=2)
    async with Hub() as hub:
        await hub.register(config)
        read = await hub.call_tool("flaky", "flaky_read", {})
        assert read.ok and read.attempts == 2 and read.text == "flaky_read answered on run 2"

        with pytest.raises(McpRemoteError) as refused:
            await hub.call_tool("flaky", "flaky_write", {})
        assert refused.value.code == -32001
        ran = await hub.call_tool("flaky", "calls", {"tool": "flaky_write"})
        assert ran.structured == {"result": 1}  # sent once: a write is never repeated blindly
