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


# What each malformed body is, which decides the answer an endpoint owes it:
PARSE = "parse"  # not JSON at all (or JSON no parser should accept): JSON-RPC -32700
NOT_REQUEST = "not-request"  # JSON, but not one JSON-RPC request object: -32600
BAD_PARAMS = "bad-params"  # a well-formed request whose params are wrong: -32602


def _bodies() -> list[tuple[str, bytes]]:
    rng = random.Random(7)  # fixed seed: none of these 25 byte strings happens to be valid JSON
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) for _ in range(25)]
    return [
        *((PARSE, j) for j in junk),
        (PARSE, b""), (NOT_REQUEST, b"null"), (NOT_REQUEST, b"0"), (NOT_REQUEST, b'"x"'), (NOT_REQUEST, b"[]"),
        (NOT_REQUEST, b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
        (PARSE, b"[" * 5000 + b"]" * 5000),  # deeper than any parser's nesting limit
        (NOT_REQUEST, b'{"jsonrpc":"2.0"}'), (NOT_REQUEST, b'{"jsonrpc":"2.0","id":{},"method":"tools/list"}'),
        (NOT_REQUEST, b'{"jsonrpc":"2.0","id":1,"method":7}'),
        (BAD_PARAMS, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}'),
        (BAD_PARAMS, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"catalog__search_products",'
                     b'"arguments":"not-an-object"}}'),
        (PARSE, b'{"jsonrpc":"2.0","id":1e999,"method":"tools/list"}'),  # an id that is no finite number
        (PARSE, b'{"a":' + b"1" * 10000 + b"}"),
        (PARSE, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\ud800\"}}".encode(
            "utf-8", "surrogatepass")),  # a lone surrogate is not UTF-8
        (NOT_REQUEST, b'{"model":5,"messages":"hi"}'),
        (NOT_REQUEST, b'{"model":"x","messages":[{"role":"alien","content":[1,2]}]}'),
        (NOT_REQUEST, b'{"model":"x","messages":[],"stream":"yes","tools":{}}'),
    ]


def _check_answer(path: str, kind: str, modern: bool, r: httpx.Response) -> None:
    """The exact client error ``path`` owes a malformed body of ``kind`` (``modern``: 2026 MCP headers sent)."""
    where = (path, kind, modern, r.status_code, r.text[:300])
    body = r.json()
    if path.startswith("/servers/catalog/messages/"):
        # Legacy SSE: the session is looked up before the body is read; an unknown one is 404.
        assert r.status_code == 404, where
        assert body["error"] == {"code": -32600, "message": "Session not found"}, where
    elif path.endswith("/mcp"):
        assert r.status_code == 400, where
        assert body["jsonrpc"] == "2.0", where
        # Without the 2026 headers a request that is not `initialize` lacks its session: invalid request.
        want = {PARSE: -32700, NOT_REQUEST: -32600, BAD_PARAMS: -32602 if modern else -32600}[kind]
        assert body["error"]["code"] == want, where
        if kind != BAD_PARAMS:
            assert body["id"] is None, where  # no id could be read from the body
    else:  # the OpenAI-style APIs: /v1/chat/completions and /admin/servers
        assert r.status_code == 400, where
        assert body["error"]["type"] == "invalid_request_error", where
        if kind == PARSE:
            assert "JSON" in body["error"]["message"], where


@pytest.mark.parametrize("path", ["/mcp", "/servers/catalog/mcp", "/v1/chat/completions", "/admin/servers",
                                  "/servers/catalog/messages/?session_id=nope"])
def test_malformed_bodies_get_client_errors_and_the_worker_lives(gw: Gateway, key: str, path: str) -> None:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=30) as client:
        for kind, body in _bodies():
            for extra in ({}, {"mcp-protocol-version": PV, "mcp-method": "tools/list"}):
                r = client.post(gw.url + path, headers={**headers, **extra}, content=body)
                _check_answer(path, kind, bool(extra), r)
        assert client.get(gw.url + "/healthz").status_code == 200
        ok = client.post(gw.url + "/mcp", headers={**headers, "mcp-protocol-version": PV, "mcp-method": "tools/list"},
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                               "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": PV,
                                                    "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert ok.status_code == 200 and ok.json()["result"]["tools"]


def test_odd_requests_at_the_edge(gw: Gateway, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    with httpx.Client(timeout=30) as client:
        put = client.request("PUT", gw.url + "/mcp", headers=auth)
        assert put.status_code == 405 and "POST" in put.headers["allow"]
        assert client.get(gw.url + "/../../etc/passwd", headers=auth).status_code == 404
        # Normalised to /mcp: a GET there is the session stream, which needs Accept: text/event-stream.
        assert client.get(gw.url + "/servers/../mcp", headers=auth).status_code == 406
        assert client.get(gw.url + "/servers/nope/mcp", headers=auth).status_code == 404
        assert client.post(gw.url + "/mcp", headers={**auth, "content-type": "text/plain"},
                           content=b"{}").status_code == 415
        assert client.post(gw.url + "/mcp", headers={"authorization": "Basic dXNlcjpwdw=="}).status_code == 401
        # 8 kB of header is within the server's limits: it is the key that is wrong.
        long_key = client.post(gw.url + "/mcp", headers={"authorization": "Bearer " + "x" * 8000})
        assert long_key.status_code == 401 and long_key.headers["www-authenticate"].startswith("Bearer")
        too_big = client.post(gw.url + "/v1/chat/completions", headers=auth, content=b"{" + b" " * 70000 + b"}")
        assert too_big.status_code == 413
    # A client that sends half a request and vanishes must not wedge anything.
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\nAuthorization: Bearer "
                  + key.encode() + b"\r\nContent-Type: application/json\r\n\r\n{\"jsonrpc\"")
    assert httpx.get(gw.url + "/healthz").status_code == 200
