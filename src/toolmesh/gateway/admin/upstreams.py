"""SSRF guard of the admin API: which upstream addresses a tenant's admin key may register.

A gateway that connects wherever an admin request says can be aimed at what only it can reach:
the cloud metadata service (``169.254.169.254`` hands out the host's credentials), link-local
services, or the gateway host's own loopback services. Registration over HTTP is therefore
checked (see docs/security.md, "SSRF"):

* always refused: link-local (``169.254.0.0/16``, ``fe80::/10``: every cloud metadata service
  lives there), the other metadata addresses (``fd00:ec2::254``, ``100.100.100.200``), the
  unspecified address (``0.0.0.0``, ``::``), multicast and reserved ranges, and well-known
  metadata host names;
* loopback (``127.0.0.0/8``, ``::1``, ``localhost``): only when ``gateway.admin_allow_loopback``
  is true, which by default it is exactly when the gateway itself binds to loopback (a local
  gateway fronting local servers); a public gateway refuses it;
* ``gateway.admin_allow_networks`` (CIDRs) lets an operator allow a refused range explicitly.

Host names are resolved once here and every address they resolve to must pass; a name that
does not resolve is refused (it cannot be checked). A name that resolves to a public address now
and to a refused one later (DNS rebinding) is caught at connect time: every server registered
over HTTP carries a :func:`connect_guard` that resolves and checks the host again for each new
connection and connects to the checked address only. Servers from the configuration file are
trusted and never checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

from toolmesh.gateway.config import GatewaySettings
from toolmesh.gateway.errors import ApiError
from toolmesh.net.addrguard import ConnectGuard, IPAddress, Resolver, system_resolver
from toolmesh.servers.guard import is_loopback

__all__ = ["RESOLVER_KEY", "check_upstream_url", "connect_guard"]

#: ``Gateway.extras`` key of a custom resolver ``(host, port) -> addresses`` used by the admin API's
#: checks instead of the system's (split-horizon DNS; tests). Set it before servers are registered.
RESOLVER_KEY = "upstream_resolver"


#: Metadata services outside the link-local ranges (AWS IPv6, Alibaba Cloud).
_METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                             "instance-data.ec2.internal"})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network": reaches the gateway host
#: Resolving a name must not hold an admin request for long.
RESOLVE_TIMEOUT = 3.0


def _refusal(address: IPAddress, allow_loopback: bool) -> str | None:
    """Why ``address`` may not be an upstream (None: it may)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:169.254.169.254 reaches the IPv4 address
        address = mapped
    if address in _METADATA or address.is_link_local:
        return "is link-local or a cloud metadata address"
    if address.is_loopback:  # before "reserved": ::1 lies in the reserved ::/8
        return None if allow_loopback else "is loopback (set gateway.admin_allow_loopback: true to allow it)"
    if address.is_unspecified or address.is_multicast or address.is_reserved or address in _THIS_NETWORK:
        return "is unspecified, multicast or reserved"
    return None


def _allowed_explicitly(address: IPAddress, settings: GatewaySettings) -> bool:
    return any(address.version == net.version and address in net for net in settings.admin_allow_networks)


async def _resolve(host: str, port: int | None, resolver: Resolver) -> list[IPAddress]:
    try:
        found = await asyncio.wait_for(resolver(host, port or 0), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ApiError(400, f"url: host {host!r} does not resolve ({exc or 'timeout'}); it cannot be checked",
                       param="url") from None
    return [ipaddress.ip_address(raw.split("%", 1)[0]) for raw in found]


def _allow_loopback(settings: GatewaySettings) -> bool:
    allow = settings.admin_allow_loopback
    return is_loopback(settings.host) if allow is None else allow


def connect_guard(settings: GatewaySettings, resolver: Resolver | None = None) -> ConnectGuard:
    """The guard the gateway gives every server registered over the admin API: the same rules as
    :func:`check_upstream_url`, applied to the addresses of each new connection (DNS rebinding)."""
    allow_loopback = _allow_loopback(settings)

    def policy(address: IPAddress) -> str | None:
        why = _refusal(address, allow_loopback)
        return None if why is None or _allowed_explicitly(address, settings) else why

    return ConnectGuard(policy, resolver)


async def check_upstream_url(url: str, settings: GatewaySettings, resolver: Resolver | None = None) -> None:
    """Raise a 400 :class:`ApiError` (``param="url"``) when ``url`` points where the admin API
    may not send the gateway (see the module docstring); ``resolver`` looks names up (default:
    the system's)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ApiError(400, f"url: {exc}", param="url") from None
    if not host:
        raise ApiError(400, "url: no host", param="url")
    allow_loopback = _allow_loopback(settings)
    name = host.lower().rstrip(".")
    if name in _METADATA_NAMES:
        raise ApiError(400, f"url: host {host!r} is a cloud metadata service", param="url")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(name.split("%", 1)[0])]
    except ValueError:
        addresses = await _resolve(name, port, resolver or system_resolver)
    for address in addresses:
        why = _refusal(address, allow_loopback)
        if why is not None and not _allowed_explicitly(address, settings):
            shown = host if str(address) == name else f"{host} ({address})"
            raise ApiError(400, f"url: {shown} {why}; upstreams registered over HTTP may not point there "
                                "(gateway.admin_allow_networks can allow a range)", param="url")
