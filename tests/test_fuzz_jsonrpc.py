"""Fuzzing the JSON-RPC decoder of the server frontends.

In process: any decoded message → :meth:`Dispatcher.handle` answers with the JSON-RPC error
code the envelope rules predict (-32600/-32601/-32602...), never -32603 and never an exception.
Over HTTP (a real ``tm_add_server.py http`` process on a loopback port): any body and header
mix → a JSON-RPC answer with the right code (-32700 for non-JSON), never a 5xx; the server
still answers a normal call afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from conftest import SERVERS, ServerProcess, free_port
from fuzz_support import fuzz
from toolmesh.servers import ToolServer
from toolmesh.servers.dispatch import Dispatcher
from toolmesh.servers.state import Conn

PV_KEY = "io.modelcontextprotocol/protocolVersion"
CAPS_KEY = "io.modelcontextprotocol/clientCapabilities"
MODERN = "2026-07-28"
CODES = {-32700, -32600, -32601, -32602, -32001, -32020, -32021, -32022, -32029}

server = ToolServer("fuzz")


@server.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.prompt()
def greet(name: str) -> str:
    """Greet someone."""
    return f"Hello {name}"


@server.resource("res://greeting")
def greeting() -> str:
    return "hello"


DISPATCHER = Dispatcher(server)
KNOWN = sorted(set(DISPATCHER.legacy_methods) | set(DISPATCHER.modern_methods))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "name", "uri", "x", ""]) | st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
metas = st.one_of(
    json_values,
    st.fixed_dictionaries({PV_KEY: st.sampled_from([MODERN, "2025-11-25", "1999-01-01"]) | json_scalars},
                          optional={CAPS_KEY: json_values, "progressToken": json_values}),
)
params = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["add", "greet", "nope"]) | json_values,
        "arguments": json_values | st.fixed_dictionaries({}, optional={"a": json_values, "b": json_values,
                                                                       "name": json_values}),
        "uri": st.sampled_from(["res://greeting", "res://none", "::"]) | json_values,
        "level": st.sampled_from(["debug", "loud"]) | json_values,
        "protocolVersion": json_values, "capabilities": json_values, "cursor": json_values,
        "_meta": metas, "inputResponses": json_values, "requestState": json_values,
    }),
)
ABSENT: Any = object()


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` most of the time, else ``other`` or the member left out."""
    return st.tuples(st.integers(0, 4), valid, other | st.just(ABSENT)).map(lambda t: t[2] if t[0] == 4 else t[1])


# Mostly well-formed requests with one or two members broken, so every rule of the ladder is reached.
requests = st.fixed_dictionaries({
    "jsonrpc": mostly(st.just("2.0"), st.sampled_from(["1.0", "2"]) | json_scalars),
    "id": mostly(st.integers(-(2**63), 2**63 - 1) | st.text(max_size=4), json_values),
    "method": mostly(st.sampled_from([*KNOWN, "nope/nope", "notifications/cancelled"]), json_scalars),
    "params": mostly(params, json_values),
    "result": st.just(ABSENT) | json_values,
    "error": st.just(ABSENT) | json_values,
}).map(lambda m: {k: v for k, v in m.items() if v is not ABSENT})
messages = st.one_of(json_values, requests, st.lists(requests, max_size=3))


def expected_code(msg: Any) -> int | str | None:
    """The error code the envelope rules give ``msg``; ``"handler"`` when a handler decides."""
    if type(msg) is not dict:
        return -32600
    method, rid = msg.get("method"), msg.get("id", KeyError)
    if msg.get("jsonrpc") != "2.0" or type(method) is not str:
        is_response = rid is not KeyError and "method" not in msg and ("result" in msg or "error" in msg)
        return None if is_response else -32600
    if rid is KeyError:
        return None
    if type(rid) not in (str, int):
        return -32600
    p = msg.get("params")
    if p is not None and type(p) is not dict:
        return -32602
    meta = (p or {}).get("_meta")
    if type(meta) is dict and PV_KEY in meta:
        if CAPS_KEY not in meta or type(meta[PV_KEY]) is not str:
            return -32602
        if meta[PV_KEY] != MODERN:
            return -32022
        return "handler" if method in DISPATCHER.modern_methods else -32601
    return "handler" if method in DISPATCHER.legacy_methods else -32601


class Errors(logging.Handler):
    """Records ERROR logs (a handler that raised is logged by the dispatcher)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@fuzz(400)
@given(messages, st.booleans())
@example({"jsonrpc": "2.0", "id": True, "method": "ping"}, False)
@example({"jsonrpc": "2.0", "error": None, "method": None, "id": 0}, True)  # found: was taken for a response
@example({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": "x"}}}, True)
@example({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {PV_KEY: MODERN, CAPS_KEY: {},
                                                                                  "progressToken": [1]}}}, False)
def test_dispatcher_answers_with_the_predicted_code(msg: Any, with_conn: bool) -> None:
    errors = Errors()
    log = logging.getLogger("toolmesh.servers")
    log.addHandler(errors)
    try:
        got = asyncio.run(DISPATCHER.handle(msg, Conn("fuzz") if with_conn else None))
    finally:
        log.removeHandler(errors)
    assert not errors.seen, errors.seen
    want = expected_code(msg)
    if want is None:
        assert got is None
        return
    if type(msg) is dict and "id" in msg and (msg.get("method") == "notifications/cancelled") and got is None:
        return
    assert type(got) is dict and got.get("jsonrpc") == "2.0", got
    if want == "handler":
        assert got["id"] == msg["id"]
        if "error" in got:
            assert got["error"]["code"] in CODES and got["error"]["code"] != -32603, got
        return
    assert "error" in got and got["error"]["code"] == want, (msg, got)


# -- over HTTP, against a real server process --------------------------------------------------------

class Http:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.sid = ""

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # the server may close a keep-alive connection; one retry on a new one
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()


@pytest.fixture(scope="module")
def srv() -> Iterator[Http]:
    port = free_port()
    proc = ServerProcess([sys.executable, str(SERVERS / "tm_add_server.py"), "http", str(port), "--policy"],
                         port).start()
    client = Http(port)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "f", "version": "1"}}}
    client.conn.request("POST", "/mcp", body=orjson.dumps(init), headers={"content-type": "application/json"})
    r = client.conn.getresponse()
    r.read()
    client.sid = r.getheader("mcp-session-id") or ""
    assert r.status == 200 and client.sid
    yield client
    client.conn.close()
    assert proc.proc is not None and proc.proc.poll() is None, "the server process died during fuzzing"
    proc.stop()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{", b"[]", b"null", b"\xef\xbb\xbf{}", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
                     b"1e999999", b"[" * 5000, b'{"a": "\\ud800"}']),
)


@fuzz(150)
@given(raw_bodies | messages.map(lambda m: json.dumps(m).encode()),  # stdlib: also ints beyond 64 bits
       st.sampled_from(["legacy", "modern", "none", "bad-session"]),
       st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]))
@example(b"[" * 5000, "legacy", "application/json")
# Found by this fuzzer: answered as a "Request cancelled" with id null (the dispatcher took it for a response).
@example(b'{"jsonrpc": "2.0", "error": null, "method": null, "id": 0}', "legacy", "application/json")
def test_http_answers_any_body_without_5xx(srv: Http, body: bytes, mode: str, ctype: str) -> None:
    headers = {"accept": "application/json, text/event-stream"}
    if ctype:
        headers["content-type"] = ctype
    if mode == "legacy":
        headers["mcp-session-id"] = srv.sid
    elif mode == "bad-session":
        headers["mcp-session-id"] = "nope"
    elif mode == "modern":
        headers["mcp-protocol-version"] = MODERN
    status, raw = srv.post(body, headers)
    assert status < 500, (status, raw)
    if not raw:
        assert status in (200, 202, 404), status
        return
    answer = orjson.loads(raw.split(b"data: ", 1)[1] if raw.startswith(b"event:") else raw)
    if not ctype.startswith("application/json"):
        assert status == 415
        return
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        assert status == 400 and answer["error"]["code"] == -32700, answer
        return
    if type(answer) is dict and "error" in answer:
        assert answer["error"]["code"] in CODES, answer
    del decoded


@fuzz(100)
@given(messages.filter(lambda m: type(m) is dict and type(m.get("method")) is str and "id" in m))
def test_http_modern_envelope_codes_match_the_dispatcher(srv: Http, msg: dict[str, Any]) -> None:
    """With the envelope and its routing headers in place, HTTP gives the dispatcher's code and
    the status the 2026-07-28 table gives it."""
    # It goes into a header too, whose surrounding blanks are not part of the value (RFC 9110).
    assume(msg["method"].isascii() and msg["method"].isprintable() and msg["method"] == msg["method"].strip())
    p = msg.get("params")
    if type(p) is not dict:
        p = {}
    msg = {**msg, "jsonrpc": "2.0", "params": {**p, "_meta": {PV_KEY: MODERN, CAPS_KEY: {}}}}
    headers = {"content-type": "application/json", "accept": "application/json", "mcp-protocol-version": MODERN,
               "mcp-method": msg["method"]}
    name = msg["params"].get("uri" if msg["method"] == "resources/read" else "name")
    if isinstance(name, str) and name.isascii() and name.isprintable():
        headers["mcp-name"] = name
    body = json.dumps(msg).encode()
    try:
        seen = orjson.loads(body)  # what the server decodes (ints beyond 64 bits become floats)
    except orjson.JSONDecodeError:
        assume(False)
    status, raw = srv.post(body, headers)
    assert status < 500, (status, raw)
    answer = orjson.loads(raw)
    want = expected_code(seen)
    if want == "handler":
        if "error" in answer:
            assert answer["error"]["code"] in CODES and status in (200, 400, 404, 429), answer
    elif want is not None:
        assert answer["error"]["code"] == want, (msg, answer)
        assert status == (404 if want == -32601 else 400)


def test_server_still_serves_after_fuzzing(srv: Http) -> None:
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 2, "b": 3},
                                                                         "_meta": {PV_KEY: MODERN, CAPS_KEY: {}}}}
    status, raw = srv.post(orjson.dumps(body), {"content-type": "application/json", "mcp-protocol-version": MODERN,
                                                "mcp-method": "tools/call", "mcp-name": "add"})
    assert status == 200, raw
    assert orjson.loads(raw)["result"]["content"][0]["text"] == "5"
