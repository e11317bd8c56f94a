"""Hub coalescing and result cache against a real upstream process over real sockets.

The upstream (tests/servers/hub_cache_server.py) counts its calls and sleeps 20 ms per call;
``counts()`` reads its counters, so every test measures deltas (the process is shared)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest

from conftest import SERVERS, ServerProcess, free_port
from toolmesh.errors import ToolTimeoutError
from toolmesh.hub import ChangeEvent, Hub, ServerConfig
from toolmesh.hub.resultcache import ResultCache
from toolmesh.hub.transports.http import FORWARDED_HEADERS
from toolmesh.observability.prometheus import render_prometheus

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
WAIT = 10.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    port = free_port()
    sp = ServerProcess([sys.executable, str(SERVERS / "hub_cache_server.py"), str(port)], port).start()
    yield sp
    sp.stop()


class Clock:
    """A clock the test moves by hand (injected into the ResultCache)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(sp: ServerProcess, protocol: str = MODERN, **kw: Any) -> ServerConfig:
    return ServerConfig(name="up", url=f"http://127.0.0.1:{sp.port}/mcp", protocol=protocol, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub()
    yield h
    await h.aclose()


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


async def counts(hub: Hub) -> dict[str, int]:
    res = await hub.call_tool("up", "counts", {})
    assert res.ok, res.error
    data: dict[str, int] = res.structured if isinstance(res.structured, dict) else orjson.loads(res.text)
    return data


async def until(predicate: Callable[[], Any]) -> None:
    async with asyncio.timeout(WAIT):
        while not await predicate():  # noqa: ASYNC110 - a counter in another process: nothing to await
            await asyncio.sleep(0.02)


async def ready(hub: Hub, name: str = "up", tenant: str = "default") -> None:
    """Connect, and on 2026-07-28 wait for the listen stream: its acknowledgement drops what was
    cached before it (changes in between are not replayed), so tests start after it."""
    handle = hub.server(name, tenant=tenant)
    conn = await handle.connection()

    async def listening() -> bool:
        loop = getattr(conn, "listen_loop", None)
        return loop is None or loop.opened >= 1

    await until(listening)


def server_stats(hub: Hub) -> dict[str, Any]:
    stats: dict[str, Any] = hub.metrics()["servers"]["up"]
    return stats


# -- coalescing -------------------------------------------------------------------------------
async def test_64_identical_calls_reach_the_upstream_once(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("lookup", 0)
    s = sku()
    results = await asyncio.gather(*(hub.call_tool("up", "lookup", {"sku": s}) for _ in range(64)))
    assert all(r.ok for r in results)
    assert {r.structured["n"] for r in results} == {before + 1}
    assert (await counts(hub))["lookup"] == before + 1
    # Every caller got its own copy: mutating one result changes no other.
    results[0].structured["sku"] = "mutated"
    assert all(r.structured["sku"] == s for r in results[1:])
    assert server_stats(hub)["results"]["coalesced"] == 63


async def test_a_caller_mutating_its_result_at_once_changes_no_other(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    s = sku()

    async def grab() -> bytes:
        result = await hub.forward("up", "tools/call", {"name": "lookup", "arguments": {"sku": s}})
        seen = orjson.dumps(result, option=orjson.OPT_SORT_KEYS)
        result.clear()  # what a gateway may do to its copy before the others resume
        return seen

    seen = await asyncio.gather(*(grab() for _ in range(8)))
    assert len(set(seen)) == 1 and s.encode() in seen[0]
    assert server_stats(hub)["results"]["coalesced"] == 7


async def test_different_arguments_are_not_coalesced(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("lookup", 0)
    a, b = sku(), sku()
    # Key order does not matter (canonical arguments); values do.
    await asyncio.gather(hub.call_tool("up", "lookup", {"sku": a}), hub.call_tool("up", "lookup", {"sku": b}),
                         hub.forward("up", "tools/call", {"arguments": {"sku": a}, "name": "lookup"}))
    assert (await counts(hub))["lookup"] == before + 2


async def test_non_read_only_tools_are_never_coalesced(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("reserve", 0)
    s = sku()
    results = await asyncio.gather(*(hub.call_tool("up", "reserve", {"sku": s}) for _ in range(8)))
    assert len({r.text for r in results}) == 8
    assert (await counts(hub))["reserve"] == before + 8


async def test_coalescing_can_be_turned_off(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, coalesce=False))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("lookup", 0)
    s = sku()
    await asyncio.gather(*(hub.call_tool("up", "lookup", {"sku": s}) for _ in range(4)))
    assert (await counts(hub))["lookup"] == before + 4


async def test_a_cancelled_caller_leaves_the_call_running_for_the_others(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = await counts(hub)
    s = sku()
    tasks = [asyncio.create_task(hub.call_tool("up", "hold", {"sku": s, "seconds": 0.4})) for _ in range(3)]
    await asyncio.sleep(0.1)
    tasks[0].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert all(not isinstance(r, BaseException) and r.ok for r in done[1:])
    after = await counts(hub)
    assert after["hold"] == before.get("hold", 0) + 1
    assert after.get("hold_cancelled", 0) == before.get("hold_cancelled", 0)


async def test_the_shared_call_is_cancelled_when_every_caller_left(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("hold_cancelled", 0)
    s = sku()
    tasks = [asyncio.create_task(hub.call_tool("up", "hold", {"sku": s, "seconds": 5})) for _ in range(3)]
    await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert hub.server("up").shared.in_flight == 0

    async def cancelled_upstream() -> bool:
        return (await counts(hub)).get("hold_cancelled", 0) == before + 1

    await until(cancelled_upstream)


async def test_a_caller_timing_out_does_not_affect_the_others(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = await counts(hub)
    s = sku()
    patient = asyncio.create_task(hub.call_tool("up", "hold", {"sku": s, "seconds": 0.4}))
    await asyncio.sleep(0.05)
    with pytest.raises(ToolTimeoutError):
        await hub.call_tool("up", "hold", {"sku": s, "seconds": 0.4}, timeout=0.1)
    result = await patient
    assert result.ok and result.text.startswith(f"held {s}"), result
    assert result.attempts == 1, result
    after = await counts(hub)
    assert after["hold"] == before.get("hold", 0) + 1
    assert after.get("hold_cancelled", 0) == before.get("hold_cancelled", 0)


async def test_progress_reaches_every_caller_of_a_shared_call(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("steps", 0)
    s = sku()
    seen: dict[int, list[float]] = {0: [], 1: []}

    def recorder(i: int) -> Callable[[float, float | None, str | None], None]:
        return lambda progress, total, message: seen[i].append(progress)

    results = await asyncio.gather(*(hub.call_tool("up", "steps", {"sku": s, "n": 3}, on_progress=recorder(i))
                                     for i in (0, 1)))
    assert all(r.ok for r in results)
    assert seen[0] == seen[1] == [1, 2, 3]
    assert (await counts(hub))["steps"] == before + 1
    # A caller without a progress callback is served apart (it is not sent progress it did not ask for).
    await asyncio.gather(hub.call_tool("up", "steps", {"sku": s, "n": 1}, on_progress=recorder(0)),
                         hub.call_tool("up", "steps", {"sku": s, "n": 1}))
    assert (await counts(hub))["steps"] == before + 3


# -- result cache -----------------------------------------------------------------------------
async def test_cached_results_expire_after_their_ttl(upstream: ServerProcess) -> None:
    clock = Clock()
    async with Hub(result_cache=ResultCache(clock=clock)) as hub:
        await hub.register(config(upstream, cache={"ttl": 5}))
        await ready(hub)
        s = sku()
        first = await hub.call_tool("up", "lookup", {"sku": s})
        clock.now += 4.9
        again = await hub.call_tool("up", "lookup", {"sku": s})
        assert again.structured == first.structured and again.attempts == 0
        clock.now += 0.2
        fresh = await hub.call_tool("up", "lookup", {"sku": s})
        assert fresh.structured["n"] > first.structured["n"]
        stats = server_stats(hub)["results"]
        assert (stats["hits"], stats["misses"]) == (1, 2)
        assert hub.metrics()["result_cache"]["expirations"] == 1


async def test_the_cache_is_off_unless_configured(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    s = sku()
    first = await hub.call_tool("up", "lookup", {"sku": s})
    second = await hub.call_tool("up", "lookup", {"sku": s})
    assert second.structured["n"] > first.structured["n"]
    assert len(hub.result_cache) == 0


async def test_errors_and_non_read_only_tools_are_not_cached(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, cache={"ttl": 3600}))
    await ready(hub)
    before = await counts(hub)
    s = sku()
    for _ in range(2):
        bad = await hub.call_tool("up", "flaky", {"sku": s})
        assert bad.is_error
        await hub.call_tool("up", "reserve", {"sku": s})
    after = await counts(hub)
    assert after["flaky"] == before.get("flaky", 0) + 2
    assert after["reserve"] == before.get("reserve", 0) + 2
    assert len(hub.result_cache) == 0


async def test_a_tool_named_explicitly_is_cached_whatever_its_annotations(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, cache={"ttl": 3600, "tools": ["reserve"]}))
    await ready(hub)
    s = sku()
    first = await hub.call_tool("up", "reserve", {"sku": s})
    second = await hub.call_tool("up", "reserve", {"sku": s})
    assert first.text == second.text
    # ... and only it: the wildcard-free list leaves the read-only lookup uncached.
    a = await hub.call_tool("up", "lookup", {"sku": s})
    b = await hub.call_tool("up", "lookup", {"sku": s})
    assert a.structured["n"] != b.structured["n"]


@pytest.mark.parametrize("protocol", [MODERN, LEGACY])
async def test_list_changed_drops_the_cached_results(hub: Hub, upstream: ServerProcess, protocol: str) -> None:
    events: asyncio.Queue[ChangeEvent] = asyncio.Queue()
    hub.add_change_listener(events.put_nowait)
    await hub.register(config(upstream, protocol, cache={"ttl": 3600}))
    await ready(hub)
    release = hub.watch("up")
    s = sku()
    first = await hub.call_tool("up", "lookup", {"sku": s})
    assert (await hub.call_tool("up", "lookup", {"sku": s})).structured == first.structured
    assert len(hub.result_cache) == 1
    await hub.call_tool("up", "change", {})
    event = await asyncio.wait_for(events.get(), WAIT)
    assert event.method == "notifications/tools/list_changed"
    assert len(hub.result_cache) == 0
    fresh = await hub.call_tool("up", "lookup", {"sku": s})
    assert fresh.structured["n"] > first.structured["n"]
    release()


async def test_re_registration_starts_with_an_empty_cache(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, cache={"ttl": 3600}))
    await ready(hub)
    s = sku()
    first = await hub.call_tool("up", "lookup", {"sku": s})
    assert len(hub.result_cache) == 1
    await hub.unregister("up")
    assert len(hub.result_cache) == 0
    await hub.register(config(upstream, cache={"ttl": 3600}))
    await ready(hub)
    again = await hub.call_tool("up", "lookup", {"sku": s})
    assert again.structured["n"] > first.structured["n"]


# -- isolation --------------------------------------------------------------------------------
async def test_users_with_different_forwarded_credentials_never_share(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, forward_headers=["X-User-Token"], cache={"ttl": 3600}))
    await ready(hub)
    await hub.list_tools()
    before = (await counts(hub)).get("lookup", 0)
    s = sku()

    async def as_user(token: str, trace: int) -> list[str | None]:
        # What the gateway passes: the allowed caller headers, plus a per-call traceparent.
        FORWARDED_HEADERS.set(f"X-User-Token: {token}\r\ntraceparent: 00-{trace:032x}-{trace:016x}-01\r\n".encode())
        results = await asyncio.gather(*(hub.call_tool("up", "lookup", {"sku": s}) for _ in range(16)))
        return [r.structured["token"] for r in results]

    seen = await asyncio.gather(as_user("alice", 1), as_user("bob", 2), as_user("alice", 3), as_user("bob", 4))
    assert seen[0] == seen[2] == ["alice"] * 16
    assert seen[1] == seen[3] == ["bob"] * 16
    assert (await counts(hub))["lookup"] == before + 2  # one per user: coalesced, then cached
    # A caller without the header is a third identity.
    anonymous = await hub.call_tool("up", "lookup", {"sku": s})
    assert anonymous.structured["token"] is None


async def test_tenants_never_share(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, cache={"ttl": 3600}), tenant="a")
    await ready(hub, tenant="a")
    await hub.register(config(upstream, cache={"ttl": 3600}), tenant="b")
    await ready(hub, tenant="b")
    s = sku()
    ra, rb = await asyncio.gather(hub.call_tool("up", "lookup", {"sku": s}, tenant="a"),
                                  hub.call_tool("up", "lookup", {"sku": s}, tenant="b"))
    assert ra.structured["n"] != rb.structured["n"]


async def test_metrics_reach_prometheus(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream, cache={"ttl": 3600}))
    await ready(hub)
    await hub.list_tools()
    s = sku()
    await asyncio.gather(*(hub.call_tool("up", "lookup", {"sku": s}) for _ in range(4)))
    await hub.call_tool("up", "lookup", {"sku": s})
    text = render_prometheus(hub.tool_metrics)
    assert 'toolmesh_calls_coalesced_total{server="up"} 3.0' in text
    assert 'toolmesh_result_cache_hits_total{server="up"} 1.0' in text
    assert 'toolmesh_result_cache_misses_total{server="up"} 4.0' in text


async def test_ensure_registered_applies_a_new_cache_section_in_place(hub: Hub, upstream: ServerProcess) -> None:
    await hub.register(config(upstream))
    await ready(hub)
    s = sku()
    a = await hub.call_tool("up", "lookup", {"sku": s})
    b = await hub.call_tool("up", "lookup", {"sku": s})
    assert a.structured["n"] != b.structured["n"]
    assert await hub.ensure_registered(config(upstream, cache={"ttl": 3600}))
    assert not await hub.ensure_registered(config(upstream, cache={"ttl": 3600}))
    c = await hub.call_tool("up", "lookup", {"sku": s})
    d = await hub.call_tool("up", "lookup", {"sku": s})
    assert c.structured == d.structured
    assert hub.server("up").connects == 1  # the connection was kept
    assert hub.status()[0]["results"]["hits"] == 1


class CountingShared:
    """A shared result level that only counts fleet-wide invalidations (the Redis one is tested in
    test_scale_results.py; here the question is when the Hub asks for one)."""

    def __init__(self) -> None:
        self.invalidated = 0

    async def get(self, scope: str, key: str) -> tuple[bytes | None, float, int] | None:
        return None, 0.0, 0

    def put(self, scope: str, key: str, body: bytes, ttl: float, generation: int) -> asyncio.Future[object] | None:
        return None

    def invalidate(self, scope: str) -> None:
        self.invalidated += 1


async def test_a_first_listen_stream_keeps_the_shared_results_and_a_broken_one_drops_them(
        upstream: ServerProcess) -> None:
    """Every worker's first listen stream used to bump the fleet's generation, so each process
    that connected wiped the results all the others had shared. Only a stream that was open and
    broke (this process may have missed a change nobody else heard) drops them everywhere."""
    hub = Hub()
    shared = CountingShared()
    hub.result_cache.shared = shared
    try:
        await hub.register(config(upstream, cache={"ttl": 3600}))
        await ready(hub)
        assert shared.invalidated == 0
        handle = hub.server("up")
        await handle.drop()
        conn = await handle.connection()

        async def reopened() -> bool:
            return shared.invalidated > 0 and getattr(conn, "listen_loop", None) is not None

        await until(reopened)
        assert shared.invalidated == 1
    finally:
        await hub.aclose()
