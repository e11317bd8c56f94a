"""Ended handshake-era sessions are refused by every replica through Redis tombstones.

Two ``toolmesh serve`` processes stand for two hosts: each has its own SQLite store (nothing
shared but Redis and ``gateway.session_secret``), so the only way one learns that the other
ended a session is the tombstone in Redis. A session opened on one and used on both is ended
(DELETE) on one; one second later the other refuses it, whether it held the session already
or meets the id for the first time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

import services
from gateway_support import Gateway, demo_server, running
from services import RedisServer

pytestmark = pytest.mark.timeout(120)
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@dataclass
class Replicas:
    redis: RedisServer
    one: Gateway
    two: Gateway


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("tombstones")
    with services.redis_server() as redis:
        cfg = {"servers": {"catalog": demo_server("catalog")},
               "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0, "max_backoff": 0.5},
               "gateway": {"session_secret": "s3cret-shared-by-both-replicas-0123456789"}}
        # Separate stores (as on two hosts): only Redis carries the tombstones.
        one, two = Gateway(tmp / "one", cfg, no_auth=True), Gateway(tmp / "two", cfg, no_auth=True)
        with running(one, two, together=False):
            yield Replicas(redis, one, two)


def _open(gw: Gateway) -> str:
    r = httpx.post(gw.url + "/mcp", headers=HEADERS, json=INIT)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def _list(gw: Gateway, sid: str) -> int:
    return httpx.post(gw.url + "/mcp", headers={**HEADERS, "mcp-session-id": sid}, json=LIST).status_code


def test_delete_on_one_replica_is_honoured_by_the_other(replicas: Replicas) -> None:
    one, two = replicas.one, replicas.two
    held = _open(one)
    unseen = _open(one)
    assert _list(two, held) == 200 and _list(one, held) == 200  # both serve it (sealed id)
    assert httpx.delete(one.url + "/mcp", headers={**HEADERS, "mcp-session-id": held}).status_code == 200
    assert httpx.delete(one.url + "/mcp", headers={**HEADERS, "mcp-session-id": unseen}).status_code == 200
    time.sleep(1.0)  # the bound: every replica refuses an ended session within a second
    assert _list(two, held) == 404  # held by two before the DELETE
    assert _list(two, unseen) == 404  # never seen by two
    assert _list(one, held) == 404
    # Redis holds a digest of the id (never the id) that lives as long as a session may.
    key = "tm:{sessions}:ended:" + hashlib.sha256(held.encode()).hexdigest()[:32]
    assert replicas.redis.cli("EXISTS", key).strip() == "1"
    assert int(replicas.redis.cli("TTL", key)) > 6 * 24 * 3600
    assert held not in replicas.redis.cli("KEYS", "*")
    # A live session is untouched by its neighbour's end.
    other = _open(two)
    assert _list(one, other) == 200


def test_delete_while_redis_is_down_is_shared_once_it_is_back(replicas: Replicas) -> None:
    one, two = replicas.one, replicas.two
    sid = _open(one)
    assert _list(two, sid) == 200
    replicas.redis.stop()
    try:
        # The replica that received the DELETE honours it at once, Redis or not.
        assert httpx.delete(one.url + "/mcp", headers={**HEADERS, "mcp-session-id": sid}).status_code == 200
        assert _list(one, sid) == 404
    finally:
        replicas.redis.start()  # same port, empty
    # With no further traffic on `one`, its owed tombstone reaches Redis, and `two` refuses the session.
    key = "tm:{sessions}:ended:" + hashlib.sha256(sid.encode()).hexdigest()[:32]
    deadline = time.monotonic() + 30
    while replicas.redis.cli("EXISTS", key).strip() != "1":
        assert time.monotonic() < deadline, "the tombstone owed during the outage never reached Redis"
        time.sleep(0.2)
    time.sleep(1.0)
    assert _list(two, sid) == 404
