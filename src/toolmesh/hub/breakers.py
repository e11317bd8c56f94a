"""One server handle's circuit breakers: the server's own, one per tool, and their shared probe.

A tool's calls pass a :class:`~toolmesh.resilience.circuit_registry.CircuitGuard` made of the
server's breaker and the tool's: a dead server opens the first, one broken tool only its own.
While any of them is open, a background ``ping`` tells when the server is back; they share the
ping in flight, so a server with many open tool circuits gets one request, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from toolmesh.errors import ConnectionFailedError, McpRemoteError
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.owner import HandleOwner
from toolmesh.resilience.circuit import CircuitBreaker
from toolmesh.resilience.circuit_registry import CircuitGuard

__all__ = ["PROBE_MAX", "PROBE_TIMEOUT", "PingTarget", "ServerBreakers"]

#: How long an open circuit's background ping may take before the server counts as still down.
PROBE_TIMEOUT = 1.0
#: Longest wait between an open circuit's pings (they start at 0.25 s and double): a recovered
#: server is noticed within half a second; a dead one gets two cheap requests a second. (It was
#: 1 s: the fault campaign measured first successes up to 1.2 s after a fault ended.)
PROBE_MAX = 0.5


class PingTarget(Protocol):
    """What the breakers need of their handle: its names, its settings and a way to ping."""

    @property
    def name(self) -> str:
        """The registered server name (breaker names start with it)."""

    @property
    def label(self) -> str:
        """The metrics label (the breakers' store keys start with it)."""

    @property
    def config(self) -> ServerConfig:
        """The server's configuration (its ``circuit`` section and ``timeout``)."""

    @property
    def closed(self) -> bool:
        """True once the server was unregistered: probes fail at once."""

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> dict[str, Any]:
        """One request to the server (reconnecting if needed)."""


class ServerBreakers:
    """The breakers of one handle; :meth:`guard` hands out a tool's guard."""

    def __init__(self, handle: PingTarget, owner: HandleOwner) -> None:
        """Breakers for ``handle``; ``owner`` (the Hub) makes their stores and hears their changes."""
        self._handle = handle
        self._owner = owner
        c = handle.config.circuit
        #: The server's own breaker (every tool's guard includes it).
        self.server = CircuitBreaker(
            handle.name,
            c.failure_threshold,
            c.reset_timeout,
            on_state_change=owner.on_circuit_change,
            store=owner.new_circuit_store(handle.label),
            prober=self.probe,
            probe_max=PROBE_MAX,
        )
        self._tools: dict[str, CircuitGuard] = {}
        #: The open circuits' shared background ping in flight (see :meth:`probe`).
        self._ping: asyncio.Future[None] | None = None

    def guard(self, tool: str) -> CircuitGuard:
        """The guard of ``tool``'s calls (the server's breaker and the tool's), made on first use."""
        guard = self._tools.get(tool)
        if guard is None:
            handle = self._handle
            c = handle.config.circuit
            tool_breaker = CircuitBreaker(
                f"{handle.name}/{tool}",
                c.failure_threshold,
                c.reset_timeout,
                on_state_change=self._owner.on_circuit_change,
                store=self._owner.new_circuit_store(f"{handle.label}/{tool}"),
                prober=self.probe,
                probe_max=PROBE_MAX,
            )
            guard = self._tools[tool] = CircuitGuard(self.server, tool_breaker)
        return guard

    def stop(self) -> None:
        """Stop every background probe (the server was unregistered)."""
        self.server.stop_probing()
        for guard in self._tools.values():
            guard.tool.stop_probing()

    async def probe(self) -> None:
        """An open circuit's background probe: one ``ping`` (reconnecting if needed). Any answer,
        even a JSON-RPC error, shows the server is back; a timeout or a failed connect does not.
        The server's and its tools' circuits share a ping in flight: one request, not one each."""
        if self._handle.closed:
            raise ConnectionFailedError(f"server {self._handle.name!r} was unregistered")
        ping = self._ping
        if ping is None or ping.done():
            ping = self._ping = asyncio.ensure_future(self._ping_once())
            ping.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen even if nobody waits
        await asyncio.shield(ping)

    async def _ping_once(self) -> None:
        handle = self._handle
        with contextlib.suppress(McpRemoteError):
            await handle.request("ping", timeout=min(handle.config.timeout, PROBE_TIMEOUT))
