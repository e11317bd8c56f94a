"""Client-side schema rules: SEP-2243 ``x-mcp-header`` parameters and SEP-2106 no network ``$ref``."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator

import pytest

from toolmesh.errors import InvalidArgumentsError
from toolmesh.hub.argcheck import ArgumentValidator
from toolmesh.hub.catalog import Catalog
from toolmesh.hub.transports.headers import encode_header_value, header_map, invalid_header_reason, param_headers


def b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.parametrize(("value", "wire"), [
    ("us-west1", "us-west1"), ("us west 1", "us west 1"), ("", ""),
    (" padded ", b64(" padded ")), ("Hello, 世界", b64("Hello, 世界")), ("a\r\nb", b64("a\r\nb")),
    ("\tx", b64("\tx")), ("=?base64?abc?=", b64("=?base64?abc?=")),
])
def test_header_values_are_encoded_only_when_needed(value: str, wire: str) -> None:
    assert encode_header_value(value) == wire


def prop(kind: str, header: object) -> dict[str, object]:
    return {"type": kind, "x-mcp-header": header}


@pytest.mark.parametrize(("properties", "bad"), [
    ({"a": prop("string", "Region")}, False),
    ({"a": prop("integer", "P"), "b": prop("boolean", "V")}, False),
    ({"a": prop("string", "")}, True),
    ({"a": prop("object", "Data")}, True),
    ({"a": prop("number", "Score")}, True),
    ({"a": prop("string", "My Region")}, True),
    ({"a": prop("string", "Région")}, True),
    ({"a": prop("string", "X"), "b": prop("string", "x")}, True),
])
def test_invalid_annotations_are_detected(properties: dict[str, object], bad: bool) -> None:
    assert (invalid_header_reason({"type": "object", "properties": properties}) is not None) is bad


def test_annotation_under_an_applicator_is_invalid() -> None:
    schema = {"type": "object", "anyOf": [{"properties": {"a": prop("string", "A")}}]}
    assert invalid_header_reason(schema) is not None


def test_param_headers_mirror_annotated_values_and_omit_null() -> None:
    schema = {"type": "object", "properties": {
        "region": prop("string", "Region"), "n": prop("integer", "N"), "v": prop("boolean", "Verbose"),
        "nested": {"type": "object", "properties": {"k": prop("string", "Key")}}, "plain": {"type": "string"}}}
    mapping = header_map(schema)
    lines = param_headers(mapping, {"region": " x", "n": 42, "v": None, "nested": {"k": "é"}, "plain": "p"})
    assert lines.endswith("\r\n")
    assert set(lines.split("\r\n")[:-1]) == {f"Mcp-Param-Region: {b64(' x')}", "Mcp-Param-N: 42",
                                              f"Mcp-Param-Key: {b64('é')}"}
    assert param_headers(mapping, {"v": False}) == "Mcp-Param-Verbose: false\r\n"


async def test_catalog_leaves_out_tools_with_invalid_annotations() -> None:
    listing = {"tools": [
        {"name": "good", "inputSchema": {"type": "object", "properties": {"r": prop("string", "Region")}}},
        {"name": "bad", "inputSchema": {"type": "object", "properties": {"r": prop("number", "Score")}}},
        {"name": "plain", "inputSchema": {"type": "object"}},
    ]}

    async def fetch(method: str, params: object) -> dict[str, object]:
        return listing

    catalog = Catalog(60.0)
    assert [t["name"] for t in await catalog.get("tools", fetch)] == ["good", "plain"]
    assert catalog.tool("bad") is None and catalog.tool("good") is not None


@pytest.fixture
def canary() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback that records every request for the referenced schema."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"type": "object", "properties": {"displayName": {"type": "integer"}}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/profile.json", hits
    server.shutdown()
    server.server_close()


def test_validation_never_fetches_a_network_ref(canary: tuple[str, list[str]]) -> None:
    url, hits = canary
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "$defs": {"userId": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
              "properties": {"id": {"$ref": "#/$defs/userId"}, "profile": {"$ref": url}}, "required": ["id"]}
    check = ArgumentValidator(schema, "srv/lookup_user")
    check({"id": "user-1", "profile": {"displayName": "Ada"}})  # left to the server, not fetched
    with pytest.raises(InvalidArgumentsError, match="does not match"):
        check({"id": "NOT VALID"})  # same-document refs still resolve
    assert hits == []
