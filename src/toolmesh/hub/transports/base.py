"""What every MCP connection shares: request bookkeeping, inbound routing, ``_meta``.

A :class:`Connection` speaks JSON-RPC to one server over one transport; how it agrees on a
protocol revision with the server (the handshake era or 2026-07-28) is
:class:`~toolmesh.hub.transports.negotiate.Negotiation`'s part.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from toolmesh.errors import (
    ConnectionFailedError,
    McpRemoteError,
    ProtocolError,
    ToolTimeoutError,
)
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports.listen import ListenLoop
from toolmesh.hub.transports.negotiate import Negotiation
from toolmesh.hub.transports.types import (
    CLIENT_CAPABILITIES,
    CLIENT_INFO,
    HANDSHAKE_VERSIONS,
    LEGACY,
    META_CLIENT_CAPS,
    META_CLIENT_INFO,
    META_RELATED,
    META_SERVER_INFO,
    META_VERSION,
    METHOD_NOT_FOUND,
    MODERN,
    SWEEP_INTERVAL,
    UNSUPPORTED_VERSION,
    LogHandler,
    NotificationHandler,
    Pending,
    ProgressCallback,
    ServerIdentity,
    ServerRequestHandler,
)

# Re-exported: the transports and the Hub import these from here.
__all__ = [
    "CLIENT_CAPABILITIES", "CLIENT_INFO", "HANDSHAKE_VERSIONS", "LEGACY", "META_CLIENT_CAPS",
    "META_CLIENT_INFO", "META_RELATED", "META_SERVER_INFO", "META_VERSION", "METHOD_NOT_FOUND", "MODERN",
    "UNSUPPORTED_VERSION", "Connection", "LogHandler", "NotificationHandler", "Pending", "ProgressCallback",
    "ServerIdentity", "ServerRequestHandler",
]

log = logging.getLogger("toolmesh.hub")


class Connection(Negotiation):
    """One live connection to one MCP server. Created closed; ``start()`` opens it."""

    #: The 2026-07-28 ``subscriptions/listen`` stream keeper (transports that keep one; else None).
    listen_loop: ListenLoop | None = None

    def __init__(self, config: ServerConfig, client_capabilities: dict[str, Any] | None = None) -> None:
        """``client_capabilities`` (else ``config.client_capabilities``, else roots only) is what
        this client advertises: in ``initialize`` and in every 2026-07-28 request's ``_meta``."""
        self.config = config
        self.identity = ServerIdentity()
        self.closed = False
        self.on_notification: NotificationHandler | None = None
        #: The last known definition of a tool, by name (the Hub's catalogue): transports that
        #: derive request headers from a tool's schema (HTTP ``Mcp-Param-*``) look it up here.
        self.tool_definition: Callable[[str], dict[str, Any] | None] | None = None
        #: The resource URIs to ask a 2026-07-28 listen stream for (the Hub's subscriptions).
        self.resource_uris: Callable[[], list[str]] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int | str, Pending] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by the first request
        self._progress: dict[int | str, Pending] = {}
        #: Requests in flight that take the server's requests or log messages (``on_request``/``on_log``).
        self._routed: dict[int | str, Pending] = {}
        #: Server→client requests being answered by a handler, by the server's request id.
        self._serving: dict[Any, asyncio.Task[None]] = {}
        caps = client_capabilities if client_capabilities is not None else config.client_capabilities
        self.client_capabilities: dict[str, Any] = caps if caps is not None else CLIENT_CAPABILITIES
        self._meta: dict[str, Any] = {
            META_VERSION: MODERN,
            META_CLIENT_INFO: CLIENT_INFO,
            META_CLIENT_CAPS: self.client_capabilities,
        }

    # -- to implement per transport -------------------------------------------------
    @abstractmethod
    async def _open(self) -> None:
        """Open the transport (spawn the process, connect the socket...)."""

    @abstractmethod
    async def _send_request(self, msg: dict[str, Any], pending: Pending) -> dict[str, Any]:
        """Send ``msg`` and return the JSON-RPC response message (not just the result)."""

    @abstractmethod
    async def _send_notification(self, msg: dict[str, Any]) -> None:
        """Send a notification; no answer is expected."""

    @abstractmethod
    async def _close(self) -> None:
        """Release everything the transport holds. Must be idempotent."""

    # -- public ----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """False once the connection is closed or its transport broke."""
        return not self.closed

    @property
    def modern(self) -> bool:
        return self.identity.protocol == MODERN

    async def start(self) -> None:
        """Open the transport and agree on a protocol revision."""
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await self._open()
                await self._negotiate()
        except TimeoutError as exc:
            await self.close()
            raise ConnectionFailedError(
                f"server {self.config.name!r}: no answer within {self.config.connect_timeout:g}s while connecting"
            ) from exc
        except BaseException:
            await self.close()
            raise

    def _sweep(self) -> None:
        """Cancel the requests whose deadline passed; re-arm while any are in flight."""
        self._sweeper = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        soonest = now + SWEEP_INTERVAL
        armed = False
        for p in self._pending.values():
            if p.timed_out or p.task is None:  # no waiting task: a listen stream, open until closed
                continue
            armed = True
            if p.deadline <= now:
                if p.task is not None and not p.task.done():
                    p.timed_out = True
                    p.task.cancel()
            elif p.deadline < soonest:
                soonest = p.deadline
        if armed:
            self._sweeper = loop.call_at(soonest, self._sweep)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._fail_all(ConnectionFailedError(f"server {self.config.name!r}: connection closed"))
        for task in list(self._serving.values()):
            task.cancel()
        await self._close()

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        max_timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_request: ServerRequestHandler | None = None,
        on_log: LogHandler | None = None,
        remaining: float | None = None,
        hard_remaining: float | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its ``result``.

        ``timeout`` is extended by each progress notification, never beyond
        ``max_timeout`` from the start. ``remaining``/``hard_remaining``: what is left of a
        caller's whole-call deadline and hard cap (a retry): this request ends by then too.
        Raises :class:`McpRemoteError` for a JSON-RPC error, :class:`ToolTimeoutError` on
        timeout (after telling the server to cancel), :class:`ConnectionFailedError` when the
        transport breaks.

        ``on_request`` answers the server's requests that belong to this one (sampling,
        elicitation, roots); ``on_log`` receives its ``notifications/message``. A message
        belongs to this request when it arrives on its HTTP response stream, names it in
        ``_meta["io.modelcontextprotocol/related-request-id"]``, or (nothing named) this is
        the only request in flight with such a hook.
        """
        if self.closed:
            raise ConnectionFailedError(f"server {self.config.name!r}: connection closed")
        rid = next(self._ids)
        p: dict[str, Any] = dict(params) if params else {}
        if on_progress is not None:
            meta = dict(p.get("_meta") or {})
            meta["progressToken"] = rid
            p["_meta"] = meta
        if self.identity.protocol == MODERN:
            p["_meta"] = {**self._meta, **p["_meta"]} if "_meta" in p else self._meta
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if p:
            msg["params"] = p
        loop = self._loop
        if loop is None:  # looked up once: on Python 3.11 each lookup is a getpid() syscall
            loop = self._loop = asyncio.get_running_loop()
        t = timeout if timeout is not None else self.config.timeout
        hard = max(max_timeout if max_timeout is not None else self.config.max_timeout, t)
        first = t
        if remaining is not None:
            first = min(t, remaining)
        if hard_remaining is not None:
            hard = min(hard, hard_remaining)
        now = loop.time()
        task = asyncio.current_task(loop)
        pending = Pending(loop.create_future(), on_progress, task, t, now + hard, deadline=now + first)
        self._pending[rid] = pending
        # One sweep per connection enforces every deadline: no timer per call (a TimerHandle
        # pushed on and popped off the loop's heap for each request was ~7 % of a gateway call).
        if self._sweeper is None:
            self._sweeper = loop.call_later(min(SWEEP_INTERVAL, first), self._sweep)
        if on_progress is not None:
            self._progress[rid] = pending
        routed = on_request is not None or on_log is not None
        if routed:
            pending.on_request = on_request
            pending.on_log = on_log
            self._routed[rid] = pending
        try:
            response = await self._send_request(msg, pending)
        except asyncio.CancelledError:
            if pending.timed_out and task is not None and task.uncancel() == 0:
                await self._cancel_remote(rid, "timeout")
                raise ToolTimeoutError(
                    f"server {self.config.name!r}: {method} did not finish within {t:g}s"
                ) from None
            await self._cancel_remote(rid, "cancelled by caller")
            raise
        finally:
            self._pending.pop(rid, None)
            if on_progress is not None:
                self._progress.pop(rid, None)
            if routed:
                self._routed.pop(rid, None)
        return self._result_of(response, method)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            msg["params"] = params
        await self._send_notification(msg)

    # -- shared machinery ------------------------------------------------------------
    def _result_of(self, response: dict[str, Any], method: str) -> dict[str, Any]:
        if "result" in response:
            result = response["result"]
            if not isinstance(result, dict):
                raise ProtocolError(f"server {self.config.name!r}: {method} result is not an object")
            return result
        err = response.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            raise McpRemoteError(
                code if isinstance(code, int) else -32603, str(err.get("message", "")), err.get("data")
            )
        raise ProtocolError(f"server {self.config.name!r}: response to {method} has neither result nor error")

    async def _cancel_remote(self, rid: int, reason: str) -> None:
        """Tell the server to stop working on ``rid`` (best effort, never raises)."""
        if self.closed:
            return
        try:
            await asyncio.wait_for(
                self._send_notification(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": rid, "reason": reason},
                    }
                ),
                1.0,
            )
        except (Exception, asyncio.CancelledError):
            log.debug("could not send cancellation for %s to %s", rid, self.config.name)

    def _fail_all(self, exc: BaseException) -> None:
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
                # Retrieved by the waiter; mark as seen so a waiter that left never warns.
                p.future.exception()

    async def _dispatch(self, msg: Any, origin: Pending | None = None) -> None:
        """Route one inbound message (response, notification, or server request).

        ``origin`` is the request whose HTTP response stream carried the message."""
        if not isinstance(msg, dict):
            if isinstance(msg, list):  # JSON-RPC batch from an old server
                for m in msg:
                    await self._dispatch(m, origin)
                return
            log.warning("server %s sent a non-object message; ignored", self.config.name)
            return
        method = msg.get("method")
        if method is None:
            rid = msg.get("id")
            p = self._pending.get(rid) if isinstance(rid, int | str) else None
            if p is not None and not p.future.done():
                p.future.set_result(msg)
            return
        params = msg.get("params") or {}
        if "id" in msg:
            owner = origin if origin is not None else self._related(params, "on_request")
            handler = owner.on_request if owner is not None else None
            if handler is None:
                await self._answer_server_request(msg)
            else:  # in a task: a human may take minutes to answer, the reader must go on
                sid = msg["id"]
                task = asyncio.get_running_loop().create_task(self._serve_request(msg, handler))
                self._serving[sid] = task
                task.add_done_callback(lambda t: self._serving.pop(sid, None) if self._serving.get(sid) is t else None)
        elif method == "notifications/message" and (
            (owner := origin if origin is not None else self._related(params, "on_log")) is not None
            and owner.on_log is not None
        ):
            try:
                r = owner.on_log(params)
                if r is not None:
                    await r
            except Exception:
                log.exception("log callback failed")
        elif method == "notifications/cancelled" and isinstance(params, dict):
            serving = self._serving.get(params.get("requestId"))
            if serving is not None:
                serving.cancel()
            else:
                await self._handle_notification(method, params)
        else:
            await self._handle_notification(method, params)

    def _related(self, params: Any, hook: str) -> Pending | None:
        """The in-flight request a server message without a stream of its own belongs to."""
        routed = self._routed
        if not routed:
            return None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and META_RELATED in meta:
            related = meta[META_RELATED]
            return routed.get(related) if isinstance(related, int | str) else None
        candidates = [p for p in routed.values() if getattr(p, hook) is not None]
        return candidates[0] if len(candidates) == 1 else None

    async def _serve_request(self, msg: dict[str, Any], handler: ServerRequestHandler) -> None:
        """Answer one server→client request with ``handler``'s result (or its error)."""
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"]}
        try:
            result = await handler(msg["method"], msg.get("params") or {})
            reply["result"] = result if isinstance(result, dict) else {}
        except McpRemoteError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            reply["error"] = error
        except asyncio.CancelledError:
            return  # the server cancelled it, or the connection is closing: nothing to answer
        except Exception as exc:
            log.exception("handler for %s from %s failed", msg["method"], self.config.name)
            reply["error"] = {"code": -32603, "message": f"client failed to handle {msg['method']}: {exc}"}
        await self._reply(reply)

    async def _reply(self, reply: dict[str, Any]) -> None:
        try:
            await self._send_notification(reply)
        except Exception:
            log.debug("could not send a reply to %s", self.config.name)

    async def _handle_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/progress":
            p = self._progress.get(params.get("progressToken"))  # type: ignore[arg-type]
            if p is None:
                return
            if not p.timed_out:
                p.deadline = min(asyncio.get_running_loop().time() + p.extend_by, p.hard_deadline)
            if p.on_progress is not None:
                try:
                    r = p.on_progress(params.get("progress", 0.0), params.get("total"), params.get("message"))
                    if r is not None:
                        await r
                except Exception:
                    log.exception("progress callback failed")
            return
        if self.on_notification is not None:
            try:
                r2 = self.on_notification(method, params)
                if r2 is not None:
                    await r2
            except Exception:
                log.exception("notification handler failed for %s", method)

    async def _answer_server_request(self, msg: dict[str, Any]) -> None:
        method = msg["method"]
        if method == "ping":
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"], "result": {}}
        elif method == "roots/list":
            reply = {"jsonrpc": "2.0", "id": msg["id"], "result": {"roots": []}}
        else:
            reply = {
                "jsonrpc": "2.0",
                "id": msg["id"],
                "error": {"code": METHOD_NOT_FOUND, "message": f"client does not support {method}"},
            }
        await self._reply(reply)
