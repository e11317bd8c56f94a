"""Admin changes across replicas through Redis (STO-2): two ``toolmesh serve`` processes share one
Redis and one SQLite file; a key revoked or a server registered on one is honoured by the other.

Every path that does not go through Redis is shut: the key cache lives an hour, and the store poll
of admin changes pauses while the change channel is up. So the other replica can only learn of a
change from the pub/sub message, or from the version key when a message was lost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from conftest import ServerProcess, free_port
from gateway_support import Gateway, running
from services import RedisServer
from toolmesh.gateway.auth import create_key, hash_key
from toolmesh.store.sqlite import Store

ADD = str(Path(__file__).parent / "servers" / "tm_add_server.py")

pytestmark = pytest.mark.timeout(120)


@dataclass
class Pair:
    redis: RedisServer
    one: Gateway
    two: Gateway
    db: Path
    keys: list[str]
    upstream: ServerProcess


def _store(db: Path, job: Callable[[Store], Any]) -> Any:
    async def go() -> Any:
        store = Store(str(db))
        try:
            return await job(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("scale-admin")
    db = tmp / "tm.db"

    async def make(store: Store) -> list[str]:
        return [(await create_key(store, "default", ["chat", "admin"]))["key"] for _ in range(5)]

    keys = _store(db, make)
    port = free_port()
    upstream = ServerProcess([sys.executable, ADD, "http", str(port)], port).start()
    with services.redis_server() as redis:
        cfg = {
            "store": {"path": str(db)},
            "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                     "api_key": "x", "model": "gpt-4o-mini"}]},
            "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0, "max_backoff": 0.5},
            "gateway": {"metrics_public": True, "key_cache_ttl": 3600},
        }
        one, two = Gateway(tmp / "one", cfg), Gateway(tmp / "two", cfg)
        try:
            with running(one, two, together=False):
                yield Pair(redis, one, two, db, keys, upstream)
        finally:
            upstream.stop()


def status(gw: Gateway, key: str) -> int:
    return httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``check`` until it holds (the bound is generous: the tests do not time the push)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_revoked_key_is_refused_by_the_other_replica(pair: Pair) -> None:
    one, two, key = pair.one, pair.two, pair.keys[0]
    admin = {"Authorization": f"Bearer {pair.keys[4]}"}
    assert status(two, key) == 200  # now cached on two for an hour
    r = httpx.delete(one.url + f"/admin/keys/{hash_key(key)[:12]}", headers=admin)
    assert r.status_code == 200, r.text
    assert status(one, key) == 401
    assert eventually(lambda: status(two, key) == 401)
    assert status(two, pair.keys[1]) == 200  # only that key was forgotten


def test_server_registered_on_one_reaches_the_other(pair: Pair) -> None:
    one, two = pair.one, pair.two
    admin = {"Authorization": f"Bearer {pair.keys[4]}"}
    entry = {"name": "late", "transport": "http", "url": f"http://127.0.0.1:{pair.upstream.port}/mcp"}
    assert httpx.post(one.url + "/admin/servers", headers=admin, json=entry).status_code == 201
    # /metrics is not an admin request, so it does not read the store first: only the push tells two.
    assert eventually(lambda: 'server="late"' in httpx.get(two.url + "/metrics").text)
    assert httpx.delete(one.url + "/admin/servers/late", headers=admin).status_code == 200
    assert eventually(lambda: 'server="late"' not in httpx.get(two.url + "/metrics").text)


def test_a_lost_message_is_caught_by_the_version_key(pair: Pair) -> None:
    two, key = pair.two, pair.keys[1]
    assert status(two, key) == 200
    # Revoked in the store behind the gateways' backs: no message, so two keeps its cached lookup...
    assert _store(pair.db, lambda s: s.revoke_api_key(hash_key(key)))
    time.sleep(1.5)  # three version checks
    assert status(two, key) == 200
    # ...until the version moves (a change whose message was lost): two reloads from the store.
    pair.redis.cli("INCR", "tm:events:v")
    assert eventually(lambda: status(two, key) == 401)


def test_changes_made_while_redis_is_down_arrive_when_it_is_back(pair: Pair) -> None:
    one, two, redis, key = pair.one, pair.two, pair.redis, pair.keys[2]
    admin = {"Authorization": f"Bearer {pair.keys[4]}"}
    assert status(two, key) == 200
    redis.stop()
    try:
        assert httpx.delete(one.url + f"/admin/keys/{key}", headers=admin).status_code == 200
        assert status(one, key) == 401
    finally:
        redis.start()  # same port, empty
    assert eventually(lambda: status(two, key) == 401)
    # And the channel works again: a revocation after the restart is pushed as before.
    key = pair.keys[3]
    assert status(two, key) == 200
    assert eventually(lambda: httpx.delete(one.url + f"/admin/keys/{key}", headers=admin).status_code == 200)
    assert eventually(lambda: status(two, key) == 401)
