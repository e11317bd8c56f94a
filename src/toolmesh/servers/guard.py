"""HTTP-side protections shared by the frontends: Origin checks, body limits, connection caps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from toolmesh.servers.policy import ServerPolicy

#: Default cap on one request body (bytes).
DEFAULT_MAX_BODY = 4 * 1024 * 1024
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or hostname) is the loopback interface."""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


class Guard:
    """Origin and Host validation (DNS-rebinding protection), body size limit and connection cap.

    The checks are on by default when bound to loopback: a request carrying an ``Origin``
    header must come from a loopback origin or one listed in ``allowed_origins`` (exact
    ``scheme://host[:port]``), and its ``Host`` must name a loopback host or one of
    ``allowed_hosts`` (or of the allowed origins). Requests without ``Origin`` (non-browser
    clients) pass the origin check.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        allowed_origins: Iterable[str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
        validate_origin: bool | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        policy: ServerPolicy | None = None,
    ) -> None:
        self.validate_origin = is_loopback(host) if validate_origin is None else validate_origin
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed_origins or ())
        hosts = {h.lower() for h in allowed_hosts or ()}
        hosts.update(_hostname(o) for o in self.allowed)
        self.allowed_hosts = frozenset(h for h in hosts if h)
        self.max_body = max_body
        self.policy = policy
        self.max_connections = policy.max_connections if policy is not None else None
        self.open = 0

    def check_origin(self, headers: Mapping[str, str]) -> str | None:
        """``None`` when the request may proceed, else the reason it is refused (Origin, then Host)."""
        if not self.validate_origin:
            return None
        host_header = headers.get("host")
        if host_header is not None:
            name = _hostname("//" + host_header.strip().lower())
            if not is_loopback(name) and name not in self.allowed_hosts:
                return f"Host {host_header!r} is not allowed"
        origin = headers.get("origin")
        if origin is None:
            return None
        norm = origin.rstrip("/").lower()
        if norm in self.allowed:
            return None
        if is_loopback(_hostname(norm)):
            return None
        return f"Origin {origin!r} is not allowed"

    def acquire(self) -> bool:
        """Count one more open connection; False (and counted as rejected) when at the cap."""
        if self.max_connections is not None and self.open >= self.max_connections:
            if self.policy is not None:
                self.policy.connections_rejected += 1
            return False
        self.open += 1
        if self.policy is not None:
            self.policy.connections = self.open
        return True

    def release(self) -> None:
        """Count one connection closed."""
        self.open = max(0, self.open - 1)
        if self.policy is not None:
            self.policy.connections = self.open


def _hostname(url: str) -> str:
    """The host part of a URL (``//host:port`` for a bare Host header), ``""`` when unparsable."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
