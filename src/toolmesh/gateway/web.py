"""Small raw-ASGI helpers shared by the gateway's sub-apps (no framework on the hot path)."""

from __future__ import annotations

from typing import Any

import orjson

from toolmesh.gateway.auth import Principal
from toolmesh.net.asgi import Receive, Scope, Send

#: Where the app puts the authenticated caller for the sub-apps.
PRINCIPAL_KEY = "toolmesh.principal"


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit (answer 413)."""


def principal_of(scope: Scope) -> Principal:
    """The caller of this request (set by the gateway app before any sub-app runs)."""
    p = scope.get(PRINCIPAL_KEY)
    if not isinstance(p, Principal):
        raise RuntimeError("no principal on this request (sub-app mounted outside the gateway app?)")
    return p


def header(scope: Scope, name: bytes) -> str | None:
    """One request header (``name`` lower-case bytes), decoded, or ``None``."""
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises :class:`BodyTooLarge` past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete response."""
    h = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON response."""
    await send_bytes(send, status, orjson.dumps(obj), headers=headers)


async def send_error(
    send: Send, status: int, message: str, kind: str = "invalid_request_error",
    headers: list[tuple[bytes, bytes]] | None = None, code: str | None = None,
) -> None:
    """An error in the OpenAI error shape (``{"error": {"message", "type", "code"}}``) used gateway-wide."""
    await send_json(send, status, {"error": {"message": message, "type": kind, "code": code}}, headers)
