"""Handshake-era session ids are bound to the API key that opened them (session hijacking).

A real gateway (2 workers, so a request lands on the worker that opened the session or on
one that only has the sealed id) and real keys minted by the CLI: a session opened with key
A answers key A on every worker, and is refused (404, as if unknown) to key B of the same
tenant, for POST, GET and DELETE alike; B cannot end A's session either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway_support import Gateway, demo_server
from toolmesh.gateway.auth import Principal
from toolmesh.gateway.mcp import SealedSessions
from toolmesh.gateway.web import PRINCIPAL_KEY

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


def _scope(key_id: str, tenant: str = "default") -> dict[str, Any]:
    return {PRINCIPAL_KEY: Principal(tenant=tenant, scopes=frozenset({"mcp"}), key_id=key_id)}


def test_sealed_id_opens_only_for_its_key() -> None:
    a = SealedSessions(b"s" * 32, "default", max_age=60)
    sid = a.seal(INIT, _scope("aaaaaaaaaaaa"))
    conn = a.verify(sid, _scope("aaaaaaaaaaaa"))
    assert conn is not None and conn.owner == "aaaaaaaaaaaa"
    assert a.verify(sid, _scope("bbbbbbbbbbbb")) is None  # same tenant, other key
    assert a.verify(sid) is None  # no credential at all
    assert "aaaaaaaaaaaa" not in sid  # the key's id is not readable in the (base64) payload


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gw-binding"), {"servers": {"catalog": demo_server("catalog")}},
                workers=2).start()
    yield g
    g.stop()


def _headers(key: str, sid: str | None = None) -> dict[str, str]:
    h = {"authorization": f"Bearer {key}", "content-type": "application/json",
         "accept": "application/json, text/event-stream"}
    if sid:
        h["mcp-session-id"] = sid
    return h


def _open(gw: Gateway, key: str) -> str:
    r = httpx.post(gw.url + "/mcp", headers=_headers(key), json=INIT)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def test_other_key_of_same_tenant_is_refused_on_every_worker(gw: Gateway) -> None:
    key_a, key_b = gw.key("default", "mcp"), gw.key("default", "mcp")
    sid = _open(gw, key_a)
    workers: set[int] = set()
    # A fresh connection each time lands on either worker (the one that sealed the id or not). The
    # kernel hands a shared socket's connections to whichever worker accepts first, so on a busy
    # machine (or while the second worker is still starting) one may take a long run of them: keep
    # trying for a while rather than a fixed count (one CI run saw 60 in a row on one worker).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with httpx.Client() as fresh:
            workers.add(fresh.get(gw.url + "/healthz").json()["worker"])
            stolen = fresh.post(gw.url + "/mcp", headers=_headers(key_b, sid), json=LIST)
            assert stolen.status_code == 404, stolen.text
            assert stolen.json()["error"]["message"] == "Session not found"
            own = fresh.post(gw.url + "/mcp", headers=_headers(key_a, sid), json=LIST)
            assert own.status_code == 200, own.text
            assert any(t["name"].endswith("search_products") for t in own.json()["result"]["tools"])
        if len(workers) == 2:
            break
        time.sleep(0.05)
    assert len(workers) == 2, f"every fresh connection for 60 s landed on worker {workers}"


def test_other_key_cannot_listen_or_end_the_session(gw: Gateway) -> None:
    key_a, key_b = gw.key("default", "mcp"), gw.key("default", "mcp")
    sid = _open(gw, key_a)
    get = {**_headers(key_b, sid), "accept": "text/event-stream"}
    assert httpx.get(gw.url + "/mcp", headers=get).status_code == 404
    for _ in range(4):  # whichever worker answers, B's DELETE finds nothing to end
        with httpx.Client() as fresh:
            assert fresh.delete(gw.url + "/mcp", headers=_headers(key_b, sid)).status_code == 404
    assert httpx.post(gw.url + "/mcp", headers=_headers(key_a, sid), json=LIST).status_code == 200
    assert httpx.delete(gw.url + "/mcp", headers=_headers(key_a, sid)).status_code == 200
    time.sleep(1.0)  # the other worker learns of the end through the store within ~0.2 s
    for _ in range(4):
        with httpx.Client() as fresh:
            assert fresh.post(gw.url + "/mcp", headers=_headers(key_a, sid), json=LIST).status_code == 404


def test_key_of_another_tenant_is_refused(gw: Gateway) -> None:
    key_a, key_other = gw.key("default", "mcp"), gw.key("acme", "mcp")
    sid = _open(gw, key_a)
    r = httpx.post(gw.url + "/mcp", headers=_headers(key_other, sid), json=LIST)
    assert r.status_code == 404
