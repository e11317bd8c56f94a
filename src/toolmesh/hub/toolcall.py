"""The state of one ``tools/call`` on its way through a server handle's layers.

A :class:`~toolmesh.hub.handle.ServerHandle` hands one :class:`ToolCall` down its one-concern
steps (circuit guard → argument validation → recording → concurrency limit → retries → one
attempt), the way ``httpx.Client.send`` hands a request down. One object per call instead of
closures per call: what a step learns (whether a retry is safe, the attempts made) is written
here for the steps after it and for the caller.

:func:`normalise_call` reads the tool calls a model asked for (OpenAI, Anthropic or plain shapes)
for :meth:`Hub.batch_call <toolmesh.hub.hub.Hub.batch_call>`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import orjson

from toolmesh.errors import (
    CircuitOpenError,
    ConnectionFailedError,
    InvalidArgumentsError,
    McpRemoteError,
    SessionLostError,
    ToolTimeoutError,
)
from toolmesh.hub.transports.types import LogHandler, ProgressCallback, ServerRequestHandler
from toolmesh.hub.types import JsonDict

__all__ = ["ToolCall", "idempotent", "is_retryable", "normalise_call"]


class ToolCall:
    """One ``tools/call``: what goes out, the caller's hooks, and what the steps found out."""

    __slots__ = (
        "arguments",
        "attempts",
        "circuit_open",
        "deadline",
        "extend_by",
        "hard_deadline",
        "on_log",
        "on_progress",
        "on_request",
        "params",
        "safe_retry",
        "start",
        "timeout",
        "tool",
    )

    def __init__(
        self,
        tool: str,
        params: JsonDict,
        arguments: JsonDict | None,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        on_request: ServerRequestHandler | None = None,
        on_log: LogHandler | None = None,
        start: float | None = None,
    ) -> None:
        """``arguments`` given: they are checked against the tool's schema before anything is sent."""
        self.tool = tool
        self.params = params
        self.arguments = arguments
        self.timeout = timeout
        self.on_progress = on_progress
        self.on_request = on_request
        self.on_log = on_log
        self.start = time.perf_counter() if start is None else start
        #: Requests sent so far (retries included).
        self.attempts = 0
        #: Whether the tool's annotations make an ambiguous failure safe to re-send.
        self.safe_retry = False
        #: Set when the circuit was open and the server's fallback answered instead.
        self.circuit_open: CircuitOpenError | None = None
        #: The whole call's deadline on ``time.monotonic()`` (set by :meth:`arm`): every attempt,
        #: reconnect and backoff sleep ends by then. Progress moves it, up to ``hard_deadline``.
        self.deadline: float | None = None
        self.hard_deadline = 0.0
        self.extend_by = 0.0

    def arm(self, timeout: float, max_timeout: float) -> None:
        """Start the call's deadline (once; later calls keep it): ``timeout`` seconds from now,
        extended by each progress notification, never past ``max(max_timeout, timeout)`` from now."""
        if self.deadline is not None:
            return
        now = time.monotonic()
        self.extend_by = timeout
        self.deadline = now + timeout
        self.hard_deadline = now + max(max_timeout, timeout)

    def budget(self) -> tuple[float, float]:
        """(seconds left until the deadline, seconds left until the hard cap); both >= 0."""
        if self.deadline is None:
            raise RuntimeError("ToolCall.budget() before arm()")
        now = time.monotonic()
        return max(0.0, self.deadline - now), max(0.0, self.hard_deadline - now)

    def progress_hook(self) -> ProgressCallback | None:
        """The caller's progress callback, wrapped so that progress also moves the call's deadline
        (a later retry gets the extended time); ``None`` without a callback (no token is sent)."""
        hook = self.on_progress
        if hook is None:
            return None

        def progressed(progress: float, total: float | None, message: str | None) -> Awaitable[None] | None:
            if self.deadline is not None:
                self.deadline = min(time.monotonic() + self.extend_by, self.hard_deadline)
            return hook(progress, total, message)

        return progressed

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.perf_counter() - self.start) * 1000.0


def idempotent(definition: dict[str, Any] | None) -> bool:
    """A tool may be re-sent after an ambiguous failure only if it says it is safe."""
    if not definition:
        return False
    ann = definition.get("annotations") or {}
    return bool(ann.get("readOnlyHint") or ann.get("idempotentHint"))


def is_retryable(exc: BaseException, safe_retry: bool) -> bool:
    """Whether a failed attempt may be repeated: always when the session was lost (nothing ran),
    after a connection failure only if nothing was sent or the tool is safe to repeat, after a
    timeout or a remote error only for a safe tool and a transient error."""
    if isinstance(exc, SessionLostError):
        return True
    if isinstance(exc, ConnectionFailedError):
        return getattr(exc, "before_send", False) or safe_retry
    if isinstance(exc, ToolTimeoutError | McpRemoteError):
        return safe_retry and bool(getattr(exc, "retryable", False))
    return False


def normalise_call(call: Any, index: int) -> tuple[str, str, Any]:
    """(call_id, exposed_name, arguments-or-error) from any supported tool-call shape."""
    get = call.get if isinstance(call, dict) else (lambda k, d=None: getattr(call, k, d))
    call_id = get("id") or get("tool_call_id") or f"call_{index}"
    fn = get("function")
    if fn is not None:
        fget = fn.get if isinstance(fn, dict) else (lambda k, d=None: getattr(fn, k, d))
        name, raw = fget("name"), fget("arguments")
    else:
        name = get("name")
        raw = get("input") if get("input") is not None else get("arguments")
    if not isinstance(name, str) or not name:
        return str(call_id), "", InvalidArgumentsError(f"tool call {call_id!r} has no function name")
    args: Any
    if raw is None or raw == "":
        args = {}
    elif isinstance(raw, str | bytes):
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            args = InvalidArgumentsError(f"arguments of tool call {call_id!r} are not valid JSON: {exc}")
    else:
        args = raw
    if not isinstance(args, dict | BaseException):
        args = InvalidArgumentsError(f"arguments of tool call {call_id!r} must be a JSON object")
    return str(call_id), name, args

