"""What an SDK ``Context`` needs from a request: a session-like back-channel.

SDK tools call ``ctx.report_progress(...)`` / ``ctx.info(...)`` / ``ctx.elicit(...)`` /
``ctx.session.create_message(...)``, which reach ``ctx.request_context.session``. The SDK's
``ServerSession`` drags its whole dispatcher along; :class:`RequestSession` is the small
duck-typed stand-in toolmesh hands over, writing notifications straight to the frontend's
outbound channel and sending server→client requests through :func:`ask_client`.

Server→client requests (``sampling/createMessage``, ``elicitation/create``, ``roots/list``,
``ping``) exist only in the handshake era, on a channel that can carry them: the POST's SSE
stream (Streamable HTTP), the legacy SSE stream, a WebSocket or stdio. The request goes out
through the request's ``notify`` channel with a fresh id; the client's JSON-RPC response is
routed back by ``Dispatcher.handle`` to the future parked on the :class:`Conn`
(:meth:`Conn.resolve`). On the 2026-07-28 wire a server asks with an ``InputRequiredResult``
instead, so :func:`ask_client` refuses there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitResult,
    EmptyResult,
    ListRootsResult,
)
from pydantic import BaseModel

from toolmesh.servers.state import LOG_LEVELS, Conn

logger = logging.getLogger(__name__)

#: Sends one JSON-RPC message (a ready dict) to the client of the current request.
Notify = Callable[[dict[str, Any]], Awaitable[None]]
_R = TypeVar("_R", bound=BaseModel)

#: The client capability each server→client request needs (``None``: always allowed).
CLIENT_CAPABILITY_FOR: dict[str, str | None] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
    "ping": None,
}
#: Default wait for the client's answer (a human may be filling in an elicitation form).
ASK_TIMEOUT = 300.0


class Req:
    """One inbound request as the method handlers see it."""

    __slots__ = ("conn", "headers", "id", "meta", "method", "modern", "notify", "params", "version")

    def __init__(
        self,
        rid: Any,
        method: str,
        params: dict[str, Any],
        meta: Mapping[str, Any] | None,
        version: str,
        modern: bool,
        conn: Conn | None,
        notify: Notify | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.id = rid
        self.method = method
        self.params = params
        self.meta = meta
        self.version = version
        self.modern = modern
        self.conn = conn
        self.notify = notify
        self.headers = headers


def can_ask_client(req: Req) -> bool:
    """Whether this request's channel can carry a server→client request."""
    return not req.modern and req.conn is not None and req.notify is not None


async def ask_client(
    req: Req, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = ASK_TIMEOUT
) -> dict[str, Any]:
    """Send the server→client request ``method`` while serving ``req``; returns the client's result.

    Raises ``NoBackChannelError`` (an ``MCPError``, code -32600) when the request's channel cannot
    carry requests (2026-07-28 wire, stateless HTTP, a JSON-only HTTP client), ``MCPError``
    -32021 when the client did not declare the capability the method needs, ``MCPError`` with
    the client's code/message/data when it answers with an error, and ``TimeoutError`` after
    ``timeout`` seconds. Cancelling the caller tells the client (``notifications/cancelled``).
    """
    conn = req.conn
    notify = req.notify
    if req.modern or conn is None or notify is None:
        raise NoBackChannelError(method)
    needed = CLIENT_CAPABILITY_FOR.get(method)
    caps = conn.client_caps if isinstance(conn.client_caps, Mapping) else {}
    if needed is not None and not isinstance(caps.get(needed), Mapping):
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            f"The client did not declare the {needed!r} capability {method!r} needs",
            {"requiredCapabilities": {needed: {}}},
        )
    rid, future = conn.expect_response()
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        message["params"] = dict(params)
    try:
        await notify(message)
        async with asyncio.timeout(timeout):
            answer = await future
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await notify({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}})
        raise
    finally:
        conn.pending.pop(rid, None)
    error = answer.get("error")
    if error is not None:
        if not isinstance(error, Mapping):
            raise MCPError(-32603, f"malformed error answer to {method!r}")
        code = error.get("code")
        raise MCPError(code if type(code) is int else -32603, str(error.get("message", "")), error.get("data"))
    result = answer.get("result")
    if not isinstance(result, dict):
        raise MCPError(-32603, f"the client's answer to {method!r} carries no result object")
    return result


class RequestSession:
    """Per-request back-channel with the subset of ``ServerSession`` the SDK ``Context`` uses."""

    __slots__ = ("_caps", "_min_log", "_notify", "_raw_caps", "_req", "progress_token", "request_id")

    def __init__(
        self,
        notify: Notify | None,
        *,
        request_id: Any,
        progress_token: str | int | None,
        min_log_level: int | None,
        client_capabilities: Any,
        req: Req | None = None,
    ) -> None:
        self._notify = notify
        self._req = req
        self.request_id = request_id
        self.progress_token = progress_token
        # Index into LOG_LEVELS of the lowest level delivered; None = deliver nothing.
        self._min_log = min_log_level
        self._raw_caps = client_capabilities
        self._caps: ClientCapabilities | None = None

    @property
    def client_capabilities(self) -> ClientCapabilities | None:
        """The client's declared capabilities (parsed lazily; few tools ask)."""
        if self._caps is None and isinstance(self._raw_caps, Mapping):
            try:
                self._caps = ClientCapabilities.model_validate(self._raw_caps)
            except ValueError:
                return None
        return self._caps

    @property
    def can_send_request(self) -> bool:
        """Whether this request's channel can deliver a server→client request."""
        return self._req is not None and can_ask_client(self._req)

    @property
    def protocol_version(self) -> str:
        """The protocol version this request speaks."""
        return self._req.version if self._req is not None else "2025-11-25"

    def check_client_capability(self, capability: ClientCapabilities) -> bool:
        """Whether the client declared every capability set in ``capability`` (top level)."""
        declared = self._raw_caps if isinstance(self._raw_caps, Mapping) else {}
        wanted = capability.model_dump(by_alias=True, exclude_none=True)
        return all(isinstance(declared.get(key), Mapping) for key in wanted)

    async def send_notification(
        self, method: Any, params: Mapping[str, Any] | None = None, related_request_id: Any = None
    ) -> None:
        """Send a notification on this request's channel (dropped if there is none).

        Takes a method name and params, or an SDK notification model (``ServerSession`` style).
        """
        if self._notify is None:
            return
        if isinstance(method, BaseModel):
            msg: dict[str, Any] = {"jsonrpc": "2.0", **method.model_dump(by_alias=True, mode="json", exclude_none=True)}
        else:
            msg = {"jsonrpc": "2.0", "method": method}
            if params is not None:
                msg["params"] = dict(params)
        await self._notify(msg)

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """``notifications/progress`` against this request's token; a no-op when none was given."""
        if self.progress_token is None:
            return
        await self.send_progress_notification(self.progress_token, progress, total, message)

    async def send_progress_notification(
        self,
        progress_token: str | int,
        progress: float,
        total: float | None = None,
        message: str | None = None,
        related_request_id: Any = None,
    ) -> None:
        """Send one ``notifications/progress``."""
        params: dict[str, Any] = {"progressToken": progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.send_notification("notifications/progress", params)

    async def send_log_message(
        self, level: str, data: Any, logger: str | None = None, related_request_id: Any = None
    ) -> None:
        """``notifications/message`` if the client opted into ``level`` (setLevel or ``_meta`` logLevel)."""
        if self._min_log is None:
            return
        try:
            rank = LOG_LEVELS.index(level)
        except ValueError:
            return
        if rank < self._min_log:
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self.send_notification("notifications/message", params)

    # -- server→client requests (handshake era; see ask_client) ------------------------------
    async def ask(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Raw server→client request: the client's ``result`` object (see :func:`ask_client`)."""
        if self._req is None:
            raise NoBackChannelError(method)
        return await ask_client(self._req, method, params)

    async def send_request(self, request: Any, result_type: type[_R], *_: Any, **__: Any) -> _R:
        """``ServerSession.send_request``: send an SDK request model, validate the result."""
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        result = await self.ask(data["method"], data.get("params"))
        return result_type.model_validate(result, by_name=False)

    async def create_message(self, messages: list[Any], *, max_tokens: int, **options: Any) -> Any:
        """``sampling/createMessage`` (``ServerSession.create_message`` keywords)."""
        options.pop("related_request_id", None)
        request = CreateMessageRequest(
            params=CreateMessageRequestParams(messages=messages, max_tokens=max_tokens, **options)
        )
        return await self.send_request(request, CreateMessageResult)

    async def elicit_form(self, message: str, requested_schema: dict[str, Any], related_request_id: Any = None) -> Any:
        """Form-mode ``elicitation/create``."""
        params = {"mode": "form", "message": message, "requestedSchema": requested_schema}
        if self.protocol_version < "2025-11-25":
            del params["mode"]  # the mode field arrived with 2025-11-25
        return ElicitResult.model_validate(await self.ask("elicitation/create", params), by_name=False)

    async def elicit(self, message: str, requested_schema: dict[str, Any], related_request_id: Any = None) -> Any:
        """Alias of :meth:`elicit_form` (the SDK's older name)."""
        return await self.elicit_form(message, requested_schema)

    async def elicit_url(self, message: str, url: str, elicitation_id: str, related_request_id: Any = None) -> Any:
        """URL-mode ``elicitation/create``."""
        params = {"mode": "url", "message": message, "url": url, "elicitationId": elicitation_id}
        return ElicitResult.model_validate(await self.ask("elicitation/create", params), by_name=False)

    async def list_roots(self) -> Any:
        """``roots/list``."""
        return ListRootsResult.model_validate(await self.ask("roots/list"), by_name=False)

    async def send_ping(self) -> Any:
        """``ping`` the client."""
        return EmptyResult.model_validate(await self.ask("ping"), by_name=False)


class RequestInfo:
    """Stand-in for the transport request object a ``Context`` reads headers from."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        self.headers = headers
