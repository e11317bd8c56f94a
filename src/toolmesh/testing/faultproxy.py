"""A fault-injecting TCP proxy for fault tests and the fault campaign (``toolmesh bench faults``).

It sits between a client (the Hub, the gateway) and a real upstream on 127.0.0.1 and forwards
bytes both ways, hurting them as the current :class:`Fault` says. The fault is switched at run
time with :meth:`FaultProxy.set` and applies at once to every connection, open or new: clients
keep pooled keep-alive connections, so a fault that only hit new connections would miss most
calls.

Modes (``Fault(mode, ...)``):

``pass``       forward untouched.
``latency``    hold every chunk ``latency`` seconds before forwarding it (both directions).
``bandwidth``  at most ``bytes_per_s`` bytes a second in each direction.
``reset``      forward ``after_bytes`` bytes of the response, then reset both sides (RST).
``half``       forward ``after_bytes`` bytes of the response, then close cleanly (FIN): a
               half-written response.
``blackhole``  accept, read and drop everything, never answer (open connections go silent).
``garbage``    answer the next request with ``payload`` (default: 512 seeded random bytes),
               then close. A ``payload`` such as a canned ``HTTP/1.1 429 ...`` response makes
               an upstream that misbehaves at the HTTP level.

Use::

    async with FaultProxy("127.0.0.1", upstream_port) as proxy:
        client_url = f"http://127.0.0.1:{proxy.port}/mcp"
        proxy.set(Fault("reset", after_bytes=100))
        ...
        proxy.clear()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "latency", "bandwidth", "reset", "half", "blackhole", "garbage"]
MODES: tuple[Mode, ...] = ("pass", "latency", "bandwidth", "reset", "half", "blackhole", "garbage")
_CHUNK = 65536


def _default_garbage() -> bytes:
    return random.Random(11).randbytes(512)


@dataclass(frozen=True)
class Fault:
    """What the proxy does to traffic; see the module docstring for the modes."""

    mode: Mode = "pass"
    latency: float = 0.0
    bytes_per_s: int = 0
    after_bytes: int = 0
    payload: bytes = field(default_factory=_default_garbage)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {', '.join(MODES)}")
        if not isinstance(self.latency, (int, float)) or not 0 <= self.latency <= 3600:
            raise ValueError("latency must be between 0 and 3600 seconds")
        if self.mode == "latency" and self.latency <= 0:
            raise ValueError("mode 'latency' needs latency > 0")
        if not isinstance(self.bytes_per_s, int) or self.bytes_per_s < 0:
            raise ValueError("bytes_per_s must be an int >= 0")
        if self.mode == "bandwidth" and self.bytes_per_s <= 0:
            raise ValueError("mode 'bandwidth' needs bytes_per_s > 0")
        if not isinstance(self.after_bytes, int) or self.after_bytes < 0:
            raise ValueError("after_bytes must be an int >= 0")
        if not isinstance(self.payload, bytes):
            raise TypeError("payload must be bytes")


PASS = Fault()


@dataclass
class ProxyStats:
    """Counters since the proxy started."""

    accepted: int = 0
    active: int = 0
    cut: int = 0  # connections ended by a reset, half or garbage fault
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client
    connect_failures: int = 0  # upstream refused or unreachable


class _Cut(Exception):
    """Raised inside a pump to end the connection the way the fault says."""

    def __init__(self, how: Literal["reset", "close"]) -> None:
        super().__init__(how)
        self.how = how


class FaultProxy:
    """A TCP proxy on ``host:port`` (port 0: a free one) to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not isinstance(target_port, int) or not 0 < target_port < 65536:
            raise ValueError(f"target_port must be a TCP port, got {target_port!r}")
        self.target_host, self.target_port = target_host, target_port
        self.host, self.port = host, port
        self.fault: Fault = PASS
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; :attr:`port` is the bound port afterwards."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def set(self, fault: Fault) -> None:
        """Switch the fault; open connections see it from their next chunk on."""
        if not isinstance(fault, Fault):
            raise TypeError("set() takes a Fault")
        self.fault = fault

    def clear(self) -> None:
        """Back to plain forwarding."""
        self.fault = PASS

    def retarget(self, port: int) -> None:
        """Send new connections to another upstream port (open ones keep theirs)."""
        self.target_port = port

    # -- one connection ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.stats.accepted += 1
        self.stats.active += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await self._connect(reader, writer)
            if up_reader is None or up_writer is None:
                return
            state = _ConnState()
            pumps = [asyncio.ensure_future(self._pump(reader, up_writer, writer, state, upstream=True)),
                     asyncio.ensure_future(self._pump(up_reader, writer, writer, state, upstream=False))]
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
                # One side ended cleanly: let the other finish what it has (HTTP/1.1 half-close).
                if not any(t.exception() for t in done if not t.cancelled()):
                    await asyncio.wait(pumps)
                for t in pumps:
                    if t.done() and not t.cancelled() and isinstance(t.exception(), _Cut):
                        self.stats.cut += 1
                        exc = t.exception()
                        assert isinstance(exc, _Cut)
                        if exc.how == "reset":
                            _reset(writer)
                            _reset(up_writer)
            finally:
                for t in pumps:
                    t.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass  # a side went away: close the other
        except asyncio.CancelledError:
            pass  # stop(): asyncio's stream callback would log a cancelled handler as an error
        finally:
            self.stats.active -= 1
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 1.0)
            self._conns.discard(task)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> tuple[asyncio.StreamReader | None, asyncio.StreamWriter | None]:
        """Open the upstream side, unless the fault answers on its own."""
        while self.fault.mode == "blackhole":
            if not await reader.read(_CHUNK):
                return None, None  # the client gave up
        if self.fault.mode == "garbage":
            await reader.read(_CHUNK)
            self.stats.cut += 1
            await self._garbage(writer)
            return None, None
        try:
            return await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.stats.connect_failures += 1
            _reset(writer)  # what the client would see from a dead upstream: a refused/reset connection
            return None, None

    async def _garbage(self, writer: asyncio.StreamWriter) -> None:
        writer.write(self.fault.payload)
        with contextlib.suppress(OSError):
            await writer.drain()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: asyncio.StreamWriter,
                    state: _ConnState, *, upstream: bool) -> None:
        """Copy ``src`` to ``dst`` chunk by chunk, applying the fault current at each chunk."""
        while True:
            data = await src.read(_CHUNK)
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                return
            fault = self.fault
            if fault.mode == "blackhole":
                continue  # dropped: the connection goes silent
            if fault.mode == "garbage" and upstream:
                await self._garbage(client)
                raise _Cut("close")
            if fault.mode in ("reset", "half") and not upstream:
                left = fault.after_bytes - state.cut_count
                if len(data) >= left:
                    if left > 0:
                        dst.write(data[:left])
                        self.stats.bytes_down += left
                        await dst.drain()
                    raise _Cut("reset" if fault.mode == "reset" else "close")
                state.cut_count += len(data)
            elif not upstream:
                state.cut_count = 0  # the count is per fault period
            if fault.mode == "latency":
                await asyncio.sleep(fault.latency)
            elif fault.mode == "bandwidth":
                await asyncio.sleep(len(data) / fault.bytes_per_s)
            dst.write(data)
            if upstream:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
            await dst.drain()


class _ConnState:
    """Per-connection bookkeeping of the pumps."""

    def __init__(self) -> None:
        self.cut_count = 0  # response bytes forwarded under a reset/half fault


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with SO_LINGER 0, so the peer sees a TCP reset rather than an orderly close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
