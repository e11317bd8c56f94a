"""stdio frontend: newline-delimited JSON-RPC on stdin/stdout (both protocol eras).

Logs never touch stdout. Requests run concurrently (one task each) so a slow tool does
not block the pipe and ``notifications/cancelled`` can stop it; the process exits on EOF (open
listen streams cancelled, other requests given ``EOF_GRACE`` seconds to answer)
or SIGTERM after cancelling whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any, BinaryIO

from toolmesh.servers.dispatch import Dispatcher, decode, encode, error_response
from toolmesh.servers.state import Conn, RpcError

logger = logging.getLogger("toolmesh.servers.stdio")

#: Longest accepted line (one JSON-RPC message), bytes.
MAX_LINE = 16 * 1024 * 1024
#: Seconds in-flight requests get to answer after stdin closed; then the server exits regardless.
EOF_GRACE = 5.0


class _Out:
    """Serialised writes of whole lines to stdout."""

    def __init__(self, writer: asyncio.StreamWriter | None, raw: BinaryIO) -> None:
        self._writer = writer
        self._raw = raw

    async def send(self, message: Any) -> None:
        line = encode(message) + b"\n"
        if self._writer is not None:
            self._writer.write(line)
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
        else:
            self._raw.write(line)
            self._raw.flush()


async def _open_stdio(stdin: BinaryIO, stdout: BinaryIO) -> tuple[asyncio.StreamReader, asyncio.StreamWriter | None]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    except (ValueError, OSError):  # stdout is a regular file: fall back to blocking writes
        return reader, None
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def serve_stdio(dispatcher: Dispatcher, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """Serve ``dispatcher`` on stdin/stdout until EOF or SIGTERM."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    reader, writer = await _open_stdio(stdin, stdout)
    out = _Out(writer, stdout)
    conn = Conn("stdio")
    tasks: set[asyncio.Task[None]] = set()
    streams: set[asyncio.Task[None]] = set()  # subscriptions/listen: open until the client leaves
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    stopping = False

    def on_sigterm() -> None:
        nonlocal stopping
        stopping = True
        if main is not None:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    async def run(msg: Any) -> None:
        try:
            response = await dispatcher.handle(msg, conn, out.send)
            if response is not None:
                await out.send(response)
        except Exception:  # the pipe is gone; nothing to answer to
            logger.debug("failed to answer a request", exc_info=True)

    try:
        async with dispatcher.lifespan():
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line over MAX_LINE
                    await out.send(error_response(None, -32600, "Message too large"))
                    continue
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    msg = decode(line)
                except RpcError as exc:
                    await out.send(error_response(None, exc.code, exc.message))
                    continue
                if type(msg) is dict and "id" not in msg:
                    await dispatcher.handle(msg, conn, out.send)  # notifications act at once (cancel)
                    continue
                task = asyncio.create_task(run(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if type(msg) is dict and msg.get("method") == "subscriptions/listen":
                    streams.add(task)
                    task.add_done_callback(streams.discard)
            # EOF: let in-flight requests finish answering, but not forever: a listen stream never
            # ends by itself, and a client that closed stdin (or died) must not leave us running.
            for task in streams:
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks), timeout=EOF_GRACE)
    except asyncio.CancelledError:
        if not stopping:
            raise
        logger.info("stdio server stopping on SIGTERM")
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.drain()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)
