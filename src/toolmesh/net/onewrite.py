"""uvicorn's httptools protocol with one ``send()`` per response instead of two.

uvicorn writes a response's head and its body with separate ``transport.write`` calls;
uvloop sends each at once, so a small JSON response costs two syscalls (about a fifth of
a gateway call's CPU in the profile, docs/benchmarks.md). :class:`OneWriteHttpToolsProtocol`
hands uvicorn a transport that gathers the writes of one loop iteration and sends them
together on the next: same bytes, same order, one syscall. A streaming response still
goes out as it is produced (each iteration's writes are flushed).

Use it as uvicorn's ``http`` implementation: ``uvicorn.Config(app, http=OneWriteHttpToolsProtocol)``.

uvicorn tells an app nothing when it starts a graceful shutdown until every response has
finished, so long-lived streams would hold the shutdown for its whole timeout.
:func:`on_shutdown` registers a callback run when uvicorn begins shutting this protocol's
connections down, so an app can end its streams then.
"""

from __future__ import annotations

import asyncio
import logging
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


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses leave in one write (see the module doc)."""

    def shutdown(self) -> None:
        _shutting_down()
        super().shutdown()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_GatheringTransport(transport, self.loop))  # type: ignore[arg-type]
