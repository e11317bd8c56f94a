"""Protocol negotiation: which MCP revision a connection speaks with its server.

Two protocol eras:

* handshake era (2025-11-25 and older): ``initialize`` + ``notifications/initialized``,
  a stateful session;
* modern era (2026-07-28): no handshake, every request carries
  ``params._meta`` with protocol version, client info and capabilities;
  ``server/discover`` tells what the server speaks.

``protocol="auto"`` probes ``server/discover`` and falls back to ``initialize``
on anything that is not positive evidence of a modern server (same policy as
the official SDK's ``mode="auto"``). Transports override the hooks below where their wire
needs more (a fresh pipe after an unanswered probe, an HTTP session id, a listen stream).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from toolmesh.errors import ConnectionFailedError, McpRemoteError, ProtocolError, ToolTimeoutError
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports.types import (
    CLIENT_INFO,
    HANDSHAKE_VERSIONS,
    LEGACY,
    META_SERVER_INFO,
    MODERN,
    UNSUPPORTED_VERSION,
    ServerIdentity,
)

__all__ = ["Negotiation"]


class Negotiation(ABC):
    """The negotiation half of a :class:`~toolmesh.hub.transports.base.Connection`."""

    config: ServerConfig
    #: What the server said about itself; ``protocol`` is the agreed revision ("" while unknown).
    identity: ServerIdentity
    #: What this client advertises.
    client_capabilities: dict[str, Any]
    #: The ``server/discover`` probe went unanswered (the server may still act on it late).
    _probe_timed_out = False

    @abstractmethod
    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its ``result``."""

    @abstractmethod
    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send one notification."""

    # -- negotiation -----------------------------------------------------------------
    async def _negotiate(self) -> None:
        pin = self.config.protocol
        if pin == MODERN:
            self.identity.protocol = MODERN
            return
        if pin == "auto" and await self._try_discover():
            return
        if pin == "auto" and self._probe_timed_out:
            await self._fresh_channel()
        await self._initialize(LEGACY if pin == "auto" else pin)

    async def _fresh_channel(self) -> None:  # noqa: B027 - optional hook
        """After an unanswered probe: a transport whose server may still adopt 2026-07-28 from
        the late probe (one process, one pipe) starts over before ``initialize``."""

    async def _try_discover(self, *, retried: bool = False) -> bool:
        """Probe ``server/discover``; True when the server speaks the modern revision."""
        self.identity.protocol = MODERN  # the probe itself carries modern _meta
        try:
            result = await self.request("server/discover", timeout=self._probe_timeout())
        except McpRemoteError as exc:
            self.identity.protocol = ""
            if exc.code == UNSUPPORTED_VERSION:
                supported = (exc.data or {}).get("supported") if isinstance(exc.data, dict) else None
                if isinstance(supported, list) and MODERN in supported and not retried:
                    # The server rejected the first attempt but lists our version: ask again (SEP-2575).
                    return await self._try_discover(retried=True)
                if supported and not any(v in HANDSHAKE_VERSIONS for v in supported):
                    raise ConnectionFailedError(
                        f"server {self.config.name!r} supports only {supported}, none of which toolmesh speaks"
                    ) from exc
            return False
        except (ToolTimeoutError, ProtocolError) as exc:
            self.identity.protocol = ""
            self._probe_timed_out = isinstance(exc, ToolTimeoutError)
            return False
        versions = result.get("supportedVersions") or []
        if MODERN not in versions:
            self.identity.protocol = ""
            return False
        self._adopt(MODERN, result)
        return True

    def _probe_timeout(self) -> float:
        # Half the connect budget: an unanswered probe must leave time for initialize. (A fixed
        # 5 s cap made a slow-to-answer modern server look legacy when connect_timeout was raised.)
        return self.config.connect_timeout / 2

    async def _initialize(self, version: str) -> None:
        self.identity.protocol = version
        result = await self.request(
            "initialize",
            {"protocolVersion": version, "capabilities": self.client_capabilities, "clientInfo": CLIENT_INFO},
            timeout=self.config.connect_timeout,
        )
        agreed = result.get("protocolVersion")
        if not isinstance(agreed, str):
            raise ProtocolError(f"server {self.config.name!r}: initialize result has no protocolVersion")
        if agreed not in HANDSHAKE_VERSIONS:
            raise ConnectionFailedError(
                f"server {self.config.name!r} answered initialize with unsupported version {agreed!r}"
            )
        self._adopt(agreed, result)
        self._after_initialize()
        await self.notify("notifications/initialized")

    def _after_initialize(self) -> None:  # noqa: B027 - optional hook
        """Hook for transports that must learn something from the handshake (HTTP session id)."""

    def _adopt(self, version: str, result: dict[str, Any]) -> None:
        info = result.get("serverInfo") or (result.get("_meta") or {}).get(META_SERVER_INFO) or {}
        self.identity = ServerIdentity(
            protocol=version,
            name=str(info.get("name", "")),
            version=str(info.get("version", "")),
            capabilities=result.get("capabilities") or {},
            instructions=result.get("instructions"),
            ttl_ms=result.get("ttlMs"),
        )
