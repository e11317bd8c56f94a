"""Shared limits in a real redis-server (STO-2): the admission script's exactness, hash tags,
concurrency slot leases, and the fallback to each replica's share while Redis is down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import services
from services import RedisServer
from toolmesh.errors import ConcurrencyLimitError, ConfigError, RequestRejectedError
from toolmesh.gateway.run import resolve_settings
from toolmesh.hub.configfile import load_config
from toolmesh.resilience.abc import ClientRateLimiter, RateLimiter
from toolmesh.store.redis_limits import SharedBucket, SharedClientBuckets, SharedLimiter, limit_key
from toolmesh.store.redis_state import RedisState, process_state
from toolmesh.store.resp import ReplyError
from toolmesh.store.shared import Limit, LocalLimiter, StateSettings
from toolmesh.store.shared_users import SharedUserLimits


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


@pytest.fixture
def redis_cluster() -> Iterator[RedisServer]:
    with services.redis_server(cluster=True) as server:
        yield server


# Another process takes every slot of user bob, says how many, and waits to be killed.
HOLD_SLOTS = """
import asyncio, sys
from toolmesh.store.redis_limits import SharedLimiter
from toolmesh.store.redis_state import RedisState, process_state
from toolmesh.store.shared import Limit, StateSettings
async def main():
    limiter = SharedLimiter(RedisState(StateSettings(url=sys.argv[1], lease=1.0)))
    got = [await limiter.admit("acme", [Limit.slots("uc:bob", 3, lease=1.0)]) for _ in range(5)]
    print(sum(d.admitted for d in got), flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def settings(server: RedisServer, **kw: object) -> StateSettings:
    return StateSettings.model_validate({"url": server.url, "timeout": 2.0, **kw})


async def redis_time(state: RedisState) -> float:
    sec, usec = await state.command("TIME")
    return int(sec) + int(usec) / 1e6


async def burst(limiter: SharedLimiter, n: int, limits: list[Limit], tenant: str = "acme") -> list[bool]:
    decisions = await asyncio.gather(*(limiter.admit(tenant, limits) for _ in range(n)))
    return [d.admitted for d in decisions]


async def test_bucket_admits_exactly_burst_plus_refill(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server))
    try:
        # Two limiters = two processes' worth of clients on one Redis.
        a, b = SharedLimiter(state, replicas=2), SharedLimiter(RedisState(settings(redis_server)), replicas=2)
        rate, burst_size = 20.0, 50
        tenant = [Limit.bucket("t", rate, burst_size, "tenant acme")]
        # 500 at once from two clients, twice: at most b + r·T admitted for the T (on Redis's clock)
        # the whole test took, and at least the burst plus what the pause between the bursts refilled.
        t0 = await redis_time(state)
        first = await asyncio.gather(burst(a, 250, tenant), burst(b, 250, tenant))
        t1 = await redis_time(state)
        admitted = sum(map(sum, first))
        assert burst_size <= admitted <= burst_size + rate * (t1 - t0) + 1e-9
        await asyncio.sleep(0.5)  # the refill (10 tokens: below the capacity, so none is lost to the cap)
        t2 = await redis_time(state)
        second = await asyncio.gather(burst(a, 250, tenant), burst(b, 250, tenant))
        t3 = await redis_time(state)
        total = admitted + sum(map(sum, second))
        assert admitted + int(rate * (t2 - t1)) <= total <= burst_size + rate * (t3 - t0) + 1e-9
        assert total < burst_size + rate * 10  # not per process: 1000 asked, ~60 admitted
        await b.state.aclose()
    finally:
        await state.aclose()


async def test_all_or_nothing_and_local_refusal(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server))
    try:
        limiter = SharedLimiter(state)
        slow = 1 / 3600  # one token an hour: the test's duration adds nothing
        tenant = Limit.bucket("t", slow, 10, "tenant acme")
        key_a = Limit.bucket("k:a", slow, 4, "key a")
        key_b = Limit.bucket("k:b", slow, 100, "key b")
        got_a = await burst(limiter, 500, [tenant, key_a])
        assert sum(got_a) == 4  # the key's bucket refused the rest...
        got_b = await burst(limiter, 500, [tenant, key_b])
        assert sum(got_b) == 6  # ...without spending the tenant's tokens: 10 - 4 = 6 left
        refused = await limiter.admit("acme", [tenant, key_b])
        assert not refused.admitted and refused.refused_by == "tenant acme"
        assert refused.retry_after > 3000  # an hour per token
        # The other keys' buckets were not charged by the refusals: key b spent exactly 6.
        tokens = float(redis_server.cli("HGET", limit_key("tm", "acme", "k:b"), "tk"))
        assert 94 <= tokens < 94.01
    finally:
        await state.aclose()


async def test_keys_share_one_cluster_slot_per_tenant(redis_cluster: RedisServer) -> None:
    # In cluster mode Redis refuses a script whose keys are in different slots (CROSSSLOT):
    # the hash tag {tenant} is what lets one script decide a request's limits there.
    state = RedisState(settings(redis_cluster))
    try:
        limiter = SharedLimiter(state)
        limits = [Limit.bucket("t", 1, 5), Limit.bucket("k:abc", 1, 5), Limit.window("uw:al:ice", 5, 60),
                  Limit.slots("uc:al:ice", 2)]
        for tenant in ("acme", "a{b}c", "ünï"):
            decision = await limiter.admit(tenant, limits)
            assert decision.admitted and decision.shared
            await decision.release()
            keys = [limit_key("tm", tenant, lim.name) for lim in limits]
            slots = {int(redis_cluster.cli("CLUSTER", "KEYSLOT", k)) for k in keys}
            assert len(slots) == 1, keys
            assert int(redis_cluster.cli("EXISTS", *keys[:3])) == 3
        assert limit_key("tm", "acme", "t") == "tm:{acme}:t"
        # The control: the same keys without a common tag are refused by the cluster.
        with pytest.raises(ReplyError, match="same slot"):
            await state.command("EVAL", "return 1", 2, "tm:acme:t", "tm:acme:k:abc")
    finally:
        await state.aclose()


async def test_window_and_concurrency_slots(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server, lease=1.0))
    try:
        limiter = SharedLimiter(state, busy_retry_after=0.25)
        slots = [Limit.slots("uc:bob", 3, lease=1.0, label="user bob in flight")]
        held = [d for d in await asyncio.gather(*(limiter.admit("acme", slots) for _ in range(500))) if d.admitted]
        assert len(held) == 3
        refused = await limiter.admit("acme", slots)
        assert not refused.admitted and refused.retry_after == 0.25
        await held[0].release()
        await held[0].release()  # twice is harmless
        again = await limiter.admit("acme", slots)
        assert again.admitted  # the released slot is free again
        for d in (held[1], held[2], again):
            await d.release()
        # A crashed process never releases: its slots lapse with their lease (1 s on Redis's clock).
        crashed = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLD_SLOTS, redis_server.url,
                                                       stdout=subprocess.PIPE)
        try:
            assert crashed.stdout is not None and (await crashed.stdout.readline()).strip() == b"3"
            assert sum(await burst(limiter, 20, slots)) == 0  # all three held by the other process
        finally:
            crashed.kill()  # SIGKILL: no release, no more renewals
            await crashed.wait()
        await asyncio.sleep(1.3)
        after = await burst(limiter, 20, slots)
        assert sum(after) == 3
        window = [Limit.window("uw:bob", 5, 60, "user bob per minute")]
        assert sum(await burst(limiter, 200, window)) == 5
        refused = await limiter.admit("acme", window)
        assert not refused.admitted and 55 < refused.retry_after <= 60
    finally:
        await state.aclose()


async def test_long_request_keeps_its_slot(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server, lease=1.0))
    try:
        limiter = SharedLimiter(state)
        slots = [Limit.slots("uc:eve", 1, lease=1.0)]
        held = await limiter.admit("acme", slots)
        assert held.admitted
        await asyncio.sleep(1.6)  # longer than the lease: renewed every lease/3 meanwhile
        assert not (await limiter.admit("acme", slots)).admitted
        await held.release()
        assert (await limiter.admit("acme", slots)).admitted
    finally:
        await state.aclose()


async def test_fallback_share_while_redis_is_down_then_recovery(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server, timeout=0.5, max_backoff=0.2))
    try:
        limiter = SharedLimiter(state, replicas=4)
        tenant = [Limit.bucket("t", 1 / 3600, 40, "tenant")]
        assert sum(await burst(limiter, 100, tenant, "acme")) == 40
        redis_server.stop()
        decisions = await asyncio.gather(*(limiter.admit("beta", tenant) for _ in range(100)))
        # Down: this replica admits its share, 40 ÷ 4 = 10, decided locally.
        assert sum(d.admitted for d in decisions) == 10
        assert not state.available and state.outages == 1
        assert all(not d.shared for d in decisions[5:]) and limiter.local_decisions == 100
        # What Redis said before it went away still holds: acme's bucket is empty for an hour.
        refused = await limiter.admit("acme", tenant)
        assert not refused.admitted and refused.retry_after > 3000
        redis_server.start()  # same port, empty (no persistence)
        assert await state.wait_available(10.0)
        decisions = await asyncio.gather(*(limiter.admit("gamma", tenant) for _ in range(100)))
        assert sum(d.admitted for d in decisions) == 40 and all(d.shared for d in decisions)
        assert int(redis_server.cli("EXISTS", limit_key("tm", "gamma", "t"))) == 1
    finally:
        await state.aclose()


async def test_down_from_the_start_costs_one_failed_connect(redis_server: RedisServer) -> None:
    redis_server.stop()
    state = RedisState(settings(redis_server, max_backoff=0.2))
    try:
        limiter = SharedLimiter(state, replicas=2)
        got = [await limiter.admit("acme", [Limit.bucket("t", 1 / 3600, 6)]) for _ in range(10)]
        assert sum(d.admitted for d in got) == 3 and state.outages == 1
    finally:
        await state.aclose()


async def test_script_reloaded_after_flush(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server))
    try:
        limiter = SharedLimiter(state)
        assert (await limiter.admit("acme", [Limit.bucket("t", 1, 5)])).admitted
        redis_server.cli("SCRIPT", "FLUSH")
        assert (await limiter.admit("acme", [Limit.bucket("t", 1, 5)])).admitted
        # Concurrent calls go out together in one pipeline: NOSCRIPT there too, then reloaded.
        redis_server.cli("SCRIPT", "FLUSH")
        got = await burst(limiter, 50, [Limit.bucket("t2", 1 / 3600, 20)])
        assert sum(got) == 20
        assert state.available and state.outages == 0
    finally:
        await state.aclose()


def test_local_limiter_share_and_settings() -> None:
    local = LocalLimiter(replicas=3)
    lim = [Limit.bucket("t", 0.001, 30), Limit.window("uw:x", 10, 60), Limit.slots("uc:x", 2)]
    got = [local.admit_now("acme", lim) for _ in range(20)]
    assert sum(d.admitted for d in got) == 1  # slots: 2 ÷ 3 rounds to the minimum of one
    assert [d.refused_by for d in got[1:3]] == ["uc:x", "uc:x"]
    assert local.in_flight("acme", "uc:x") == 1
    assert Limit.bucket("t", 3, 30).share(3) == Limit("bucket", "t", 1.0, 10.0, "t")
    assert Limit.window("w", 10, 60).share(4).amount == 2
    with pytest.raises(ValueError):
        Limit.bucket("t", 0, 5)
    with pytest.raises(ConfigError, match="state.url"):
        StateSettings.from_section({"url": "http://localhost:6379"})
    with pytest.raises(ConfigError, match="state.replicas"):
        StateSettings.from_section({"url": "redis://x", "replicas": 0})
    assert StateSettings.from_section({"url": "rediss://u:p@h:6380/1"}).url == "rediss://u:p@h:6380/1"
    assert RedisState(StateSettings(url="redis://u:secret@h:1/0")).redacted_url == "redis://***@h:1/0"


def test_serve_refuses_a_bad_state_section(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("state: {url: 'redis://127.0.0.1:6379/0', lease: 0}\n")
    with pytest.raises(ConfigError, match="state.lease"):
        resolve_settings(load_config(str(path)), {})
    path.write_text("state: {url: 'redis://127.0.0.1:6379/0', replicas: 3}\n")
    assert resolve_settings(load_config(str(path)), {}).workers == 1


async def test_user_limits_shared_by_two_processes(redis_server: RedisServer) -> None:
    one, two = RedisState(settings(redis_server)), RedisState(settings(redis_server))
    try:
        a = SharedUserLimits(SharedLimiter(one), max_concurrent_runs=2, requests_per_minute=5)
        b = SharedUserLimits(SharedLimiter(two), max_concurrent_runs=2, requests_per_minute=5)
        entered = asyncio.Event()
        release = asyncio.Event()

        async def hold(limits: SharedUserLimits) -> None:
            async with limits.run("acme", "carol"):
                entered.set()
                await release.wait()

        holders = [asyncio.create_task(hold(a)), asyncio.create_task(hold(b))]
        await entered.wait()
        await asyncio.sleep(0.05)
        with pytest.raises(RequestRejectedError) as busy:
            async with b.run("acme", "carol"):
                pass
        assert busy.value.reason == "concurrency"
        async with a.run("acme", "dave"):  # another user is not affected
            pass
        release.set()
        await asyncio.gather(*holders)
        for limits in (a, b, a):  # 2 + 3 = the 5 per minute, whichever process admits them
            async with limits.run("acme", "carol"):
                pass
        with pytest.raises(RequestRejectedError) as rate:
            async with b.run("acme", "carol"):
                pass
        assert rate.value.reason == "rate" and rate.value.retry_after is not None and rate.value.retry_after > 50
        assert int(redis_server.cli("ZCARD", limit_key("tm", "acme", "uc:carol"))) == 0  # all released
    finally:
        await one.aclose()
        await two.aclose()


async def test_shared_bucket_is_a_rate_limiter(redis_server: RedisServer) -> None:
    one, two = RedisState(settings(redis_server)), RedisState(settings(redis_server))
    try:
        a = SharedBucket(SharedLimiter(one), "upstreams", "b:search", rate=1 / 3600, capacity=10)
        b = SharedBucket(SharedLimiter(two), "upstreams", "b:search", rate=1 / 3600, capacity=10)
        assert isinstance(a, RateLimiter) and (a.rate, a.capacity) == (1 / 3600, 10.0)
        assert await a.take(4) == 0.0 and await b.take(5) == 0.0  # 9 of 10, from two processes
        assert await b.take(2) > 3000  # one left: two would take another hour; nothing taken
        await a.acquire(1, timeout=0)
        with pytest.raises(ConcurrencyLimitError, match="b:search"):
            await b.acquire(1, timeout=1.0)
        with pytest.raises(ValueError):
            await a.take(11)  # more than the bucket ever holds
        clients = SharedClientBuckets(SharedLimiter(one), "server:search", rate=1 / 3600, capacity=2)
        assert isinstance(clients, ClientRateLimiter)
        assert [await clients.take("alice") for _ in range(3)][:2] == [0.0, 0.0]
        assert await clients.take("alice") > 3000 and await clients.take("bob") == 0.0
    finally:
        await one.aclose()
        await two.aclose()


async def test_out_of_memory_redis_falls_back_per_call(redis_server: RedisServer) -> None:
    state = RedisState(settings(redis_server))
    try:
        limiter = SharedLimiter(state, replicas=2)
        tenant = [Limit.bucket("t", 1 / 3600, 10)]
        redis_server.cli("CONFIG", "SET", "maxmemory", "1")  # every write refused: OOM
        got = [await limiter.admit("acme", tenant) for _ in range(3)]
        got += await asyncio.gather(*(limiter.admit("acme", tenant) for _ in range(20)))
        # Decided locally with this process's share (10 ÷ 2), and Redis is not taken for down.
        assert sum(d.admitted for d in got) == 5 and not any(d.shared for d in got)
        assert state.available and state.outages == 0
        redis_server.cli("CONFIG", "SET", "maxmemory", "0")
        assert (await limiter.admit("acme", tenant)).shared
    finally:
        await state.aclose()


async def test_one_state_per_process_until_closed(redis_server: RedisServer) -> None:
    first = process_state(settings(redis_server))
    assert process_state(settings(redis_server)) is first  # gateway limits, agent limits: one client
    await first.aclose()
    second = process_state(settings(redis_server))
    try:
        assert second is not first and second.available
        assert (await SharedLimiter(second).admit("acme", [Limit.bucket("t", 1, 5)])).shared
    finally:
        await second.aclose()
