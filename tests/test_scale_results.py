"""Cached tool results shared by every process through Redis (``state.url``).

Two ``toolmesh serve`` processes (2 workers each) share one Redis and one counting upstream whose
``lookup`` tool is cached for an hour. The same call sent 12 times over fresh connections (every
worker of both processes) runs once upstream; without the shared level each worker ran it. A
server that announces a tools change invalidates the shared entries for everyone, and an answer
that began before the change is not served after it; per-caller identities stay apart.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from conftest import ServerProcess, free_port
from gateway_support import Gateway, running
from services import RedisServer

pytestmark = pytest.mark.timeout(120)

UPSTREAM = str(Path(__file__).parent / "servers" / "hub_cache_server.py")
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}


@dataclass
class Fleet:
    redis: RedisServer
    one: Gateway
    two: Gateway


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("shared-results")
    port = free_port()
    upstream = ServerProcess([sys.executable, UPSTREAM, str(port)], port).start()
    with services.redis_server() as redis:
        cfg = {"servers": {"up": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp",
                                  "forward_headers": ["X-User-Token"], "cache": {"ttl": 3600}}},
               "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0}}
        one, two = Gateway(tmp / "one", cfg, no_auth=True, workers=2), Gateway(tmp / "two", cfg, no_auth=True, workers=2)
        try:
            with running(one, two):
                yield Fleet(redis, one, two)
        finally:
            upstream.stop()


def _call(gw: Gateway, tool: str, args: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": tool, "connection": "close"}
    if token is not None:
        headers["x-user-token"] = token
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args,
                                                                          "_meta": ENV}}
    r = httpx.post(gw.url + "/mcp", headers=headers, json=body, timeout=30)  # a fresh connection: any worker
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    return result


def _counts(fleet: Fleet) -> dict[str, int]:
    counts: dict[str, int] = _call(fleet.one, "up__counts", {})["structuredContent"]
    return counts


def test_a_cached_result_serves_every_process(fleet: Fleet) -> None:
    before = _counts(fleet).get("lookup", 0)
    answers = [_call(g, "up__lookup", {"sku": "A-1"}, token="u1") for _ in range(6) for g in (fleet.one, fleet.two)]
    assert len({str(a["content"]) for a in answers}) == 1  # one answer, the first call's
    assert _counts(fleet).get("lookup", 0) - before == 1  # ran once for 2 processes × 2 workers
    # Another caller identity is another entry: its own call, its own answer.
    other = _call(fleet.two, "up__lookup", {"sku": "A-1"}, token="u2")
    assert str(other["content"]) != str(answers[0]["content"])
    assert _counts(fleet).get("lookup", 0) - before == 2


def test_a_tools_change_invalidates_the_shared_entries(fleet: Fleet) -> None:
    first = _call(fleet.one, "up__lookup", {"sku": "B-2"}, token="u1")
    assert _call(fleet.two, "up__lookup", {"sku": "B-2"}, token="u1")["content"] == first["content"]
    _call(fleet.one, "up__change", {})  # the upstream announces tools/list_changed
    deadline = time.monotonic() + 10
    while True:  # every connection that hears the change invalidates; then a fresh answer everywhere
        fresh = [_call(g, "up__lookup", {"sku": "B-2"}, token="u1")["content"] for g in (fleet.one, fleet.two)]
        if all(c != first["content"] for c in fresh):
            break
        assert time.monotonic() < deadline, "a result from before the change was still served"
        time.sleep(0.2)
    keys = fleet.redis.cli("--scan", "--pattern", "tm:rc:*:g").split()
    assert keys and all(int(fleet.redis.cli("GET", k).strip()) >= 1 for k in keys)


def test_the_shared_level_keeps_large_results_out_and_can_be_turned_off() -> None:
    from toolmesh.store.redis_results import RedisResults
    from toolmesh.store.redis_state import RedisState
    from toolmesh.store.shared import StateSettings

    settings = StateSettings(url="redis://127.0.0.1:9/0", shared_results_max_bytes=10)
    results = RedisResults(RedisState(settings))
    sent: list[bytes] = []
    results.state.post = lambda packed: sent.append(packed)  # type: ignore[method-assign,func-returns-value]
    results.put("s", "k", b"x" * 11, 60.0, 0)
    assert sent == []  # larger than the bound: each process keeps its own copy
    results.put("s", "k", b"x" * 10, 60.0, 0)
    assert len(sent) == 1 and b"PX" in sent[0]
    assert StateSettings(url="redis://h:6379/0").shared_results_max_bytes == 256 * 1024
