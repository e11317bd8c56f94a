"""Check the address a connection is about to use, at connect time (SSRF through DNS rebinding).

A URL checked once when it is registered proves nothing about later connections: its host name
may resolve to a public address then and to ``169.254.169.254`` (the cloud metadata service) on
the next lookup. A :class:`ConnectGuard` resolves the name itself, checks every address with a
policy, and hands back the checked addresses, which the caller connects to *instead of* the name
(the TLS server name and the Host header keep the name), so no second lookup can differ from what
was checked. :class:`GuardedResolver` does the same for aiohttp's connector (SSE, WebSocket and the
streamable-HTTP listen stream); :class:`toolmesh.net.fasthttp.FastHttpPool` takes
:meth:`ConnectGuard.addresses` as its ``resolve`` hook.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["AddressRefused", "ConnectGuard", "GuardedResolver", "IPAddress", "Resolver", "guarded_connector",
           "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``: how a name is looked up (injectable: tests, split-horizon DNS).
Resolver = Callable[[str, int], Awaitable[list[str]]]
#: ``address -> None`` (allowed) or why it is refused.
Policy = Callable[[IPAddress], str | None]


class AddressRefused(OSError):
    """A connection was not made: the host resolved to an address the policy refuses."""

    def __init__(self, message: str) -> None:
        # errno + strerror: aiohttp shows an OSError's strerror in its connect error
        super().__init__(errno.EACCES, message)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), addresses in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ConnectGuard:
    """Resolves a host with ``resolver`` and refuses it when any address fails ``policy``."""

    def __init__(self, policy: Policy, resolver: Resolver | None = None, *, timeout: float = 5.0) -> None:
        self.policy = policy
        self.resolver: Resolver = resolver or system_resolver
        self.timeout = timeout

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of ``host`` to connect to; :class:`AddressRefused` when one is refused
        (a name whose addresses are partly refused is refused whole, as at registration)."""
        host = host.strip("[]")
        try:
            found = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
        except ValueError:
            try:
                found = await asyncio.wait_for(self.resolver(host, port), self.timeout)
            except (OSError, TimeoutError) as exc:
                raise AddressRefused(f"{host} does not resolve ({exc or 'timeout'})") from exc
        if not found:
            raise AddressRefused(f"{host} resolved to no address")
        for raw in found:
            address = ipaddress.ip_address(raw.split("%", 1)[0])
            why = self.policy(address)
            if why is not None:
                shown = host if raw == host else f"{host} ({raw})"
                raise AddressRefused(f"connection to {shown} refused at connect time: the address {why}")
        return found


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: the :class:`ConnectGuard`'s checked addresses (aiohttp connects to them)."""

    def __init__(self, guard: ConnectGuard) -> None:
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        out: list[ResolveResult] = []
        for raw in await self.guard.addresses(host, port):
            v6 = ":" in raw
            out.append({"hostname": host, "host": raw, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                        "family": socket.AF_INET6 if v6 else socket.AF_INET})
        return out

    async def close(self) -> None:
        return None


def guarded_connector(guard: ConnectGuard | None) -> aiohttp.TCPConnector | None:
    """An aiohttp ``TCPConnector`` resolving through ``guard``, or ``None`` (aiohttp's default) without one."""
    if guard is None:
        return None
    return aiohttp.TCPConnector(resolver=GuardedResolver(guard))
