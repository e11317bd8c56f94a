"""uvicorn's httptools protocol with one ``send()`` per response instead of two.

uvicorn writes a response's head and its body with separate ``transport.write`` calls;
uvloop sends each at once, so a small JSON response costs two syscalls (about a fifth of
a gateway call's CPU in the profile, docs/benchmarks.md). :class:`OneWriteHttpToolsProtocol`
hands uvicorn a transport that gathers the writes of one loop iteration and sends them
together on the next: same bytes, same order, one syscall. A streaming response still
goes out as it is produced (each iteration's writes are flushed).

Use it as uvicorn's ``http`` implementation: ``uvicorn.Config(app, http=OneWriteHttpToolsProtocol)``.

uvicorn has no limit on how long a client may take to send a request's headers (its keep-alive
timeout starts only after a response), so connections that trickle a header at a time would be
held forever (slowloris). This protocol closes a connection whose request headers are not
complete within :data:`HEADER_TIMEOUT` seconds of its first byte or of the connection opening.

uvicorn tells an app nothing when it starts a graceful shutdown until every response has
finished, so long-lived streams would hold the shutdown for its whole timeout.
:func:`on_shutdown` registers a callback run when uvicorn begins shutting this protocol's
connections down, so an app can end its streams then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _GatheringTransport:
    """Wraps a transport: ``write`` buffers until the loop's next turn; all else delegates."""

    __slots__ = ("_buf", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buf: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._buf is None:
            self._buf = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._buf.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def _flush(self) -> None:
        buf = self._buf
        self._buf = None
        if buf and not self._transport.is_closing():
            self._transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def close(self) -> None:
        self._flush()  # what was written before close() still goes out, as with a plain transport
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._buf = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        pending = sum(map(len, self._buf)) if self._buf else 0
        return self._transport.get_write_buffer_size() + pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_on_shutdown: dict[object, Callable[[], None]] = {}


def on_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` (once) when the server starts shutting connections down; returns a remover."""
    token = object()
    _on_shutdown[token] = callback

    def remove() -> None:
        _on_shutdown.pop(token, None)

    return remove


def _shutting_down() -> None:
    callbacks = list(_on_shutdown.values())
    _on_shutdown.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one bad callback must not stop the others or the shutdown
            logging.getLogger("toolmesh.net").exception("shutdown callback failed")


#: Seconds a client has to send a request's complete headers (from connect, or from the request's
#: first byte on a kept-alive connection) before the connection is closed ($TOOLMESH_HEADER_TIMEOUT).
HEADER_TIMEOUT = float(os.environ.get("TOOLMESH_HEADER_TIMEOUT") or 10.0)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses leave in one write and whose request headers must
    arrive within :data:`HEADER_TIMEOUT` (see the module doc)."""

    _header_timer: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        _shutting_down()
        super().shutdown()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_GatheringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        # Only a connection still waiting for headers: one whose request is being served is not touched.
        if self.cycle is None or self.cycle.response_complete:
            if not self.transport.is_closing():
                self.transport.close()
