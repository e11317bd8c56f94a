"""Exact limits through real gateways sharing one Redis (STO-2): ``toolmesh serve --workers 2``,
and two serve processes (2 workers each) behind haproxy round-robin and hit alternately.

Rates are one token an hour, so the elapsed time adds nothing: a limit of burst b admits exactly
min(requests, b). Without shared state each worker kept its own buckets (2 workers admitted 60
of 100 against a burst of 30).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from gateway_support import Gateway, running
from scale_support import commands
from services import RedisServer
from toolmesh.gateway.auth import create_key
from toolmesh.store.sqlite import Store

SLOW = 1 / 60  # requests per minute: one an hour

pytestmark = pytest.mark.timeout(120)


@dataclass
class Fleet:
    redis: RedisServer
    one: Gateway
    two: Gateway
    keys: dict[str, list[str]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One Redis and two ``toolmesh serve --workers 2`` processes sharing it (and one SQLite store)."""
    tmp = tmp_path_factory.mktemp("scale")
    with services.redis_server() as redis:
        keys = make_keys(tmp / "tm.db", {"acme": 4, "beta": 2, "gamma": 4, "delta": 2, "epsilon": 4, "zeta": 4, "eta": 1})
        cfg = config(redis, tmp / "tm.db", replicas=4, max_backoff=0.5)
        one, two = Gateway(tmp / "one", cfg, workers=2), Gateway(tmp / "two", cfg, workers=2)
        with running(one, two):
            yield Fleet(redis, one, two, keys)


def make_keys(store: Path, wanted: dict[str, int]) -> dict[str, list[str]]:
    """API keys with the ``chat`` scope, ``wanted[tenant]`` of each, written to the store in-process."""
    async def go() -> dict[str, list[str]]:
        db = Store(str(store))
        try:
            return {tenant: [(await create_key(db, tenant, ["chat"]))["key"] for _ in range(n)]
                    for tenant, n in wanted.items()}
        finally:
            await db.aclose()

    return asyncio.run(go())


def config(redis: RedisServer, store: Path, **state: Any) -> dict[str, Any]:
    return {
        "store": {"path": str(store)},
        "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "api_key": "x", "model": "gpt-4o-mini"}]},
        # A generous timeout: on a crowded test machine a starved event loop must not count as
        # Redis down (that would fall back to the per-process share and blur the exact counts).
        "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0, **state},
        "agent": {"user_limits": {"requests_per_minute": 5, "max_concurrent_runs": 100}},
        "gateway": {"metrics_public": True, "rate_limits": {
            "tenant": {"requests_per_minute": SLOW, "burst": 30},
            "key": {"requests_per_minute": SLOW, "burst": 10},
            "tenants": {t: {"requests_per_minute": SLOW, "burst": 1000} for t in ("beta", "delta")},
        }},
    }


async def hit(urls: list[str], keys: list[str], n: int) -> list[int]:
    """``n`` concurrent GET /v1/models, spread over ``urls`` and ``keys`` in turn; the status codes."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)  # fresh connections: every worker
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        async def one(i: int) -> int:
            r = await client.get(urls[i % len(urls)] + "/v1/models",
                                 headers={"Authorization": f"Bearer {keys[i % len(keys)]}"})
            return r.status_code

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def by_key(codes: list[int], keys: int) -> list[int]:
    return [sum(1 for i, c in enumerate(codes) if c == 200 and i % keys == k) for k in range(keys)]


def test_two_workers_admit_exactly_the_tenant_and_key_limits(fleet: Fleet) -> None:
    gw, redis = fleet.one, fleet.redis
    # Tenant acme (burst 30) through 4 keys (burst 10 each): 100 requests at once, 30 admitted.
    codes = asyncio.run(hit([gw.url], fleet.keys["acme"], 100))
    assert codes.count(200) == 30 and codes.count(429) == 70
    assert all(n <= 10 for n in by_key(codes, 4))  # and no key over its own burst
    # Tenant beta has room (1000): the keys' bursts bind, exactly 10 each.
    codes = asyncio.run(hit([gw.url], fleet.keys["beta"], 100))
    assert by_key(codes, 2) == [10, 10] and codes.count(429) == 80
    workers: set[int] = set()
    deadline = time.monotonic() + 30
    while len(workers) < 2 and time.monotonic() < deadline:  # fresh connections spread over the workers
        workers.add(httpx.get(gw.url + "/healthz").json()["worker"])
    assert len(workers) == 2  # both workers are serving
    # The buckets live in Redis, one per tenant and key, hash-tagged by tenant.
    assert int(redis.cli("EXISTS", "tm:{acme}:t", "tm:{beta}:t")) == 2
    assert len(redis.cli("KEYS", "tm:{beta}:k:*").split()) == 2


def test_two_replicas_behind_haproxy_share_the_limits(fleet: Fleet) -> None:
    one, two = fleet.one, fleet.two
    with services.haproxy([one.port, two.port]) as proxy:
        # Round-robin over both replicas (no stickiness): still 30 for the tenant.
        codes = asyncio.run(hit([f"http://127.0.0.1:{proxy.port}"], fleet.keys["gamma"], 100))
        assert codes.count(200) == 30 and codes.count(429) == 70, codes
    # Each replica directly, alternately: the keys' bursts hold across them.
    codes = asyncio.run(hit([one.url, one.url, two.url, two.url], fleet.keys["delta"], 100))
    assert by_key(codes, 2) == [10, 10]


def _counter(url: str, name: str) -> float:
    """A counter's value in one scrape of ``url``/metrics (the scrape sums the host's workers)."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_chat_completion_limits_in_one_round_trip(fleet: Fleet) -> None:
    """A chat completion's tenant, key and user limits: one script, all or nothing, then one release."""
    one, two, redis = fleet.one, fleet.two, fleet.redis
    key = fleet.keys["eta"][0]
    before = commands(redis)
    local_before = sum(_counter(r.url, "toolmesh_shared_limits_denied_locally_total") for r in (one, two))
    trips_before = sum(_counter(r.url, "toolmesh_shared_limits_round_trips_total") for r in (one, two))

    async def chat(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60.0) as client:
            async def call(i: int) -> httpx.Response:
                return await client.post((one.url, two.url)[i % 2] + "/v1/chat/completions",
                                         headers={"Authorization": f"Bearer {key}"},
                                         json={"model": "m", "user": "ursula",
                                               "messages": [{"role": "user", "content": "hi"}]})
            return list(await asyncio.gather(*(call(i) for i in range(n))))

    answers = asyncio.run(chat(20))
    refused = [r for r in answers if r.status_code == 429]
    # 5 runs a minute for the user, across both replicas; the model is down, so admitted runs fail later.
    assert len(refused) == 15, [(r.status_code, r.text[:200]) for r in answers]
    assert all(r.json()["error"]["code"] == "user_rate_limit" for r in refused)
    # Slots are released once each response is over: wait for the last releases to land.
    deadline = time.monotonic() + 10
    while int(redis.cli("ZCARD", "tm:{eta}:uc:ursula")) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = commands(redis)
    # One script per request, except requests a worker refused locally: a key Redis refused is
    # refused without a round trip until its retry-at (counted in /metrics, summed over workers).
    # (EVALSHA in Redis also counts other scripts — slot lease renewals, circuit and change events —
    # so the exact count comes from the limiter and Redis's own count bounds it.)
    local = sum(_counter(r.url, "toolmesh_shared_limits_denied_locally_total") for r in (one, two))
    trips = sum(_counter(r.url, "toolmesh_shared_limits_round_trips_total") for r in (one, two))
    assert local - local_before < 15 and trips - trips_before == 20 - (local - local_before)
    assert after["evalsha"] - before.get("evalsha", 0) >= trips - trips_before
    # ...and at most one release per admitted run (runs of one user ending in the same loop turn
    # of a worker are released by one ZREM).
    assert 1 <= after.get("zrem", 0) - before.get("zrem", 0) <= 5
    # All or nothing: the 15 refusals took no tenant or key token (burst 30 and 10, 5 spent).
    assert 24.99 < float(redis.cli("HGET", "tm:{eta}:t", "tk")) < 25.01
    assert int(redis.cli("ZCARD", "tm:{eta}:uw:ursula")) == 5
    assert int(redis.cli("ZCARD", "tm:{eta}:uc:ursula")) == 0
    # A malformed request (its user unknown) still counts against its tenant and key: one script.
    bad = httpx.post(one.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={"model": "m"})
    assert bad.status_code == 400
    assert commands(redis)["evalsha"] - after["evalsha"] == 1
    assert 23.99 < float(redis.cli("HGET", "tm:{eta}:t", "tk")) < 24.01


def test_redis_down_then_back(fleet: Fleet) -> None:
    one, two, redis = fleet.one, fleet.two, fleet.redis
    redis.stop()
    try:
        # Readiness never depends on Redis (one blip must not empty the load balancer)...
        assert httpx.get(one.url + "/readyz").status_code == 200
        # ...and requests go on, each of the 4 worker processes admitting its share: 30 ÷ 4 → 7.
        codes = asyncio.run(hit([one.url, two.url], fleet.keys["epsilon"], 100))
        assert set(codes) <= {200, 429}
        assert 0 < codes.count(200) <= 4 * 7
        # /metrics says so (one scrape merges both workers of a replica: the gauge per worker).
        texts = [httpx.get(one.url + "/metrics").text for _ in range(10)]
        assert any(re.search(r'^toolmesh_shared_state_up\{worker="\d+"\} 0\.0', t, re.M) for t in texts)
        assert any(re.search(r"^toolmesh_shared_limits_local_decisions_total [1-9]", t, re.M) for t in texts)
    finally:
        redis.start()  # same port, empty
    time.sleep(3)  # every worker's reconnect loop pings at least every max_backoff (0.5 s)
    codes = asyncio.run(hit([one.url, two.url], fleet.keys["zeta"], 100))
    assert codes.count(200) == 30 and codes.count(429) == 70
    assert int(redis.cli("EXISTS", "tm:{zeta}:t")) == 1
