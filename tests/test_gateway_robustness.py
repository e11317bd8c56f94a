"""Bad input at every edge of the gateway: the right 4xx / JSON-RPC error, and the worker survives."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway_support import Gateway, demo_server

PV = "2026-07-28"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gw-robust"), {"servers": {"catalog": demo_server("catalog")},
                                                        "gateway": {"max_body": 65536}}).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.key("default", "chat,mcp,admin")


def _bodies() -> list[bytes]:
    rng = random.Random(7)
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) for _ in range(25)]
    return [
        *junk,
        b"", b"null", b"0", b'"x"', b"[]", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        b"[" * 5000 + b"]" * 5000, b'{"jsonrpc":"2.0"}', b'{"jsonrpc":"2.0","id":{},"method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":1,"method":7}', b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"catalog__search_products",'
        b'"arguments":"not-an-object"}}',
        b'{"jsonrpc":"2.0","id":1e999,"method":"tools/list"}', b'{"a":' + b"1" * 10000 + b"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\ud800\"}}".encode(
            "utf-8", "surrogatepass"),
        b'{"model":5,"messages":"hi"}', b'{"model":"x","messages":[{"role":"alien","content":[1,2]}]}',
        b'{"model":"x","messages":[],"stream":"yes","tools":{}}',
    ]


@pytest.mark.parametrize("path", ["/mcp", "/servers/catalog/mcp", "/v1/chat/completions", "/admin/servers",
                                  "/servers/catalog/messages/?session_id=nope"])
def test_malformed_bodies_get_client_errors_and_the_worker_lives(gw: Gateway, key: str, path: str) -> None:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=30) as client:
        for body in _bodies():
            for extra in ({}, {"mcp-protocol-version": PV, "mcp-method": "tools/list"}):
                r = client.post(gw.url + path, headers={**headers, **extra}, content=body)
                assert r.status_code < 500, (path, body[:80], r.status_code, r.text[:300])
        assert client.get(gw.url + "/healthz").status_code == 200
        ok = client.post(gw.url + "/mcp", headers={**headers, "mcp-protocol-version": PV, "mcp-method": "tools/list"},
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                               "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": PV,
                                                    "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert ok.status_code == 200 and ok.json()["result"]["tools"]


def test_odd_requests_at_the_edge(gw: Gateway, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    with httpx.Client(timeout=30) as client:
        assert client.request("PUT", gw.url + "/mcp", headers=auth).status_code in (404, 405)
        assert client.get(gw.url + "/../../etc/passwd", headers=auth).status_code == 404
        # Normalised to /mcp: a GET there is the session stream, which needs Accept: text/event-stream.
        assert client.get(gw.url + "/servers/../mcp", headers=auth).status_code in (400, 404, 406)
        assert client.get(gw.url + "/servers/nope/mcp", headers=auth).status_code == 404
        assert client.post(gw.url + "/mcp", headers={**auth, "content-type": "text/plain"},
                           content=b"{}").status_code == 415
        assert client.post(gw.url + "/mcp", headers={"authorization": "Basic dXNlcjpwdw=="}).status_code == 401
        assert client.post(gw.url + "/mcp", headers={"authorization": "Bearer " + "x" * 8000}).status_code in (
            401, 431)
        too_big = client.post(gw.url + "/v1/chat/completions", headers=auth, content=b"{" + b" " * 70000 + b"}")
        assert too_big.status_code == 413
    # A client that sends half a request and vanishes must not wedge anything.
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\nAuthorization: Bearer "
                  + key.encode() + b"\r\nContent-Type: application/json\r\n\r\n{\"jsonrpc\"")
    assert httpx.get(gw.url + "/healthz").status_code == 200
