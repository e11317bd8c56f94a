"""The ``gateway`` section of the configuration file.

::

    gateway:
      host: 127.0.0.1
      port: 8080
      workers: 1
      allowed_origins: [https://app.example.com]   # browsers' Origin header (loopback always allowed)
      allowed_hosts: [mcp.example.com]              # Host header (DNS-rebinding protection)
      max_body: 4194304                             # bytes; larger requests get 413
      rate_limits:
        tenant: {requests_per_minute: 6000}         # every tenant (override under tenants:)
        key: {requests_per_minute: 600, burst: 50}  # every API key
        tenants: {acme: {requests_per_minute: 12000}}
      virtual_servers:
        shop:                                       # /servers/shop/mcp
          servers: [catalog, pricing]
          exclude: ["pricing__internal_*"]
      session_secret: ${TOOLMESH_SESSION_SECRET}    # seals handshake-era session ids (shared by replicas)
      log: {format: json, level: info}
      otel: {endpoint: http://127.0.0.1:4318, service_name: toolmesh}
      drain_timeout: 30
      admin_allow_loopback: false                   # admin-registered upstreams on 127.0.0.1 (default: if bound there)
      admin_allow_networks: [10.20.0.0/16]          # ranges the admin API's SSRF guard would refuse, allowed
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork

from toolmesh.errors import validate_section


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Strict):
    """A token bucket: ``requests_per_minute`` sustained, ``burst`` at once (default: 1/10 of a minute)."""

    requests_per_minute: float = Field(gt=0)
    burst: int | None = Field(default=None, gt=0)

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.requests_per_minute / 10))


class RateLimits(_Strict):
    tenant: RateLimit | None = None
    key: RateLimit | None = None
    tenants: dict[str, RateLimit] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> RateLimit | None:
        return self.tenants.get(tenant, self.tenant)


class VirtualServer(_Strict):
    """A configured view over some of a tenant's upstream servers.

    One upstream: names are served unprefixed. Several: names are ``server__name`` unless
    ``prefix`` is false, in which case only names that collide get the prefix.
    ``include`` / ``exclude`` are shell-style patterns on the served tool/prompt names.
    """

    servers: list[str] = Field(min_length=1)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    prefix: bool | None = None
    tenants: list[str] | None = None  # None: every tenant that has the servers


class LogSettings(_Strict):
    format: Literal["json", "text"] = "json"
    level: str = "info"


class OtelSettings(_Strict):
    endpoint: str | None = None
    service_name: str = "toolmesh"


class GatewaySettings(_Strict):
    """Validated ``gateway`` section (every field optional)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    auth: bool = True
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    max_body: int = Field(default=4 * 1024 * 1024, gt=0)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    virtual_servers: dict[str, VirtualServer] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    session_secret: str | None = None
    key_cache_ttl: float = Field(default=10.0, ge=0)
    #: Audit log of MCP tool calls through the gateway (who, what, arguments hash, status, latency).
    audit: bool = True
    metrics_public: bool = False
    #: Let the admin API register stdio servers (that runs commands on the gateway host).
    admin_stdio: bool = False
    #: SSRF guard of admin registrations (docs/security.md): loopback upstreams allowed?
    #: (None: exactly when the gateway binds to loopback). Link-local/metadata are always refused
    #: unless a range in ``admin_allow_networks`` covers them.
    admin_allow_loopback: bool | None = None
    admin_allow_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    log: LogSettings = Field(default_factory=LogSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    drain_timeout: float = Field(default=30.0, ge=0)
    session_idle_timeout: float = Field(default=1800.0, gt=0)
    max_sessions: int = Field(default=10_000, gt=0)

    @classmethod
    def from_section(cls, section: dict[str, Any], source: str | None = None) -> GatewaySettings:
        """Validate the raw section; a :class:`ConfigError` names the first bad key."""
        return validate_section(cls, section, "gateway", source)
