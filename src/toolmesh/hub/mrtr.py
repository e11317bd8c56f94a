"""2026-07-28 multi-round-trip requests (SEP-2322) from the client side.

A server that needs input answers ``tools/call`` (or ``prompts/get``, ``resources/read``)
with ``{"resultType": "input_required", "inputRequests": {key: {method, params}},
"requestState": "..."}``. The client fulfils every input request, then sends the original
request again — a new JSON-RPC id — with ``inputResponses`` (by the same keys) and the
``requestState`` echoed byte for byte (omitted when the server sent none). A result without
``resultType`` is complete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from toolmesh.errors import McpRemoteError, ProtocolError
from toolmesh.hub.transports.base import ServerRequestHandler

#: Rounds after which a server that keeps asking is treated as broken.
MAX_ROUNDS = 16

Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def needs_input(result: dict[str, Any]) -> bool:
    """Whether ``result`` is an ``input_required`` interim result (absent ``resultType`` = complete)."""
    return result.get("resultType") == "input_required"


async def complete(
    send: Send, params: dict[str, Any], result: dict[str, Any], on_request: ServerRequestHandler,
    *, max_rounds: int = MAX_ROUNDS,
) -> dict[str, Any]:
    """Drive ``result`` to completion: answer its input requests with ``on_request`` and re-send.

    ``send(params)`` sends the original request once more with new params. An input request
    the handler refuses (:class:`McpRemoteError`) is answered with ``{"error": {...}}``."""
    rounds = 0
    while needs_input(result):
        rounds += 1
        if rounds > max_rounds:
            raise ProtocolError(f"server still asks for input after {max_rounds} rounds")
        requests = result.get("inputRequests") or {}
        if not isinstance(requests, dict):
            raise ProtocolError("input_required result: inputRequests is not an object")
        responses: dict[str, Any] = {}
        for key, req in requests.items():
            if not isinstance(req, dict) or not isinstance(req.get("method"), str):
                raise ProtocolError(f"input_required result: input request {key!r} has no method")
            try:
                responses[key] = await on_request(req["method"], req.get("params") or {})
            except McpRemoteError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if exc.data is not None:
                    error["data"] = exc.data
                responses[key] = {"error": error}
        retry = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
        retry["inputResponses"] = responses
        if "requestState" in result:
            retry["requestState"] = result["requestState"]
        result = await send(retry)
    return result
