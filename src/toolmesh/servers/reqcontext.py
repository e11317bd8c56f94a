"""What an SDK ``Context`` needs from a request: a session-like back-channel for progress and logs.

SDK tools call ``ctx.report_progress(...)`` / ``ctx.info(...)``, which reach
``ctx.request_context.session``. The SDK's ``ServerSession`` drags its whole dispatcher
along; :class:`RequestSession` is the small duck-typed stand-in toolmesh hands over,
writing notifications straight to the frontend's outbound channel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp_types import ClientCapabilities

from toolmesh.servers.state import LOG_LEVELS

logger = logging.getLogger(__name__)

#: Sends one JSON-RPC notification (a ready dict) to the client of the current request.
Notify = Callable[[dict[str, Any]], Awaitable[None]]


class RequestSession:
    """Per-request back-channel with the subset of ``ServerSession`` the SDK ``Context`` uses."""

    __slots__ = ("_caps", "_min_log", "_notify", "_raw_caps", "progress_token", "request_id")

    def __init__(
        self,
        notify: Notify | None,
        *,
        request_id: Any,
        progress_token: str | int | None,
        min_log_level: int | None,
        client_capabilities: Any,
    ) -> None:
        self._notify = notify
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

    async def send_notification(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send an arbitrary notification on this request's channel (dropped if there is none)."""
        if self._notify is None:
            return
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
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

    async def elicit(self, *args: Any, **kwargs: Any) -> Any:
        """Server→client requests are not offered by toolmesh's frontends."""
        raise NotImplementedError("elicitation is not supported by toolmesh frontends")

    async def create_message(self, *args: Any, **kwargs: Any) -> Any:
        """Server→client requests are not offered by toolmesh's frontends."""
        raise NotImplementedError("sampling is not supported by toolmesh frontends")


class RequestInfo:
    """Stand-in for the transport request object a ``Context`` reads headers from."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str] | None) -> None:
        self.headers = headers
