"""Server configuration model: how the Hub reaches one MCP server."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from toolmesh.net.addrguard import ConnectGuard

TransportName = Literal["stdio", "http", "sse", "websocket", "inprocess"]
ProtocolPin = Literal["auto", "2025-11-25", "2026-07-28"]

#: Header names whose values are never logged or printed.
SECRET_HINTS = ("authorization", "token", "key", "secret", "password", "cookie", "credential")


#: An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Headers the transport owns: forwarding a caller's copy would break or confuse the wire. And the
#: caller's credentials: they are the gateway's, never passed on (MCP "token passthrough", docs/security.md).
_HOP_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection", "accept",
                          "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name",
                          "authorization", "proxy-authorization", "cookie"})

class CircuitConfig(BaseModel):
    """Circuit breaker thresholds for one server (HUB-5)."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int = Field(5, ge=1)
    reset_timeout: float = Field(30.0, gt=0)
    fallback: str | None = Field(
        None, description="text returned as the tool's (error) result while the circuit is open, instead of raising"
    )


class HealthConfig(BaseModel):
    """Thresholds that move a server between active / degraded / error (HUB-4)."""

    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(10, ge=1)
    warning_error_rate: float = Field(0.2, ge=0, le=1)
    critical_error_rate: float = Field(0.5, ge=0, le=1)
    window: int = Field(100, ge=1, description="how many recent calls the error rate is computed over")


def _read_only(definition: dict[str, Any] | None) -> bool:
    ann = (definition or {}).get("annotations")
    return isinstance(ann, dict) and ann.get("readOnlyHint") is True


def _pick(patterns: list[str], exclude: list[str], tool: str, definition: dict[str, Any] | None) -> str | None:
    """The pattern that makes ``tool`` eligible, or None: a tool named exactly is always eligible,
    a wildcard pattern only picks tools annotated ``readOnlyHint: true``; ``exclude`` wins."""
    if any(fnmatchcase(tool, p) for p in exclude):
        return None
    if tool in patterns:
        return tool
    if not _read_only(definition):
        return None
    return next((p for p in patterns if fnmatchcase(tool, p)), None)


class CoalesceConfig(BaseModel):
    """Identical calls in flight at the same time share one upstream call (see docs/hub.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tools: list[str] = Field(
        default_factory=lambda: ["*"],
        description="tool name patterns (fnmatch); a wildcard only picks tools annotated readOnlyHint: true, "
        "a tool named exactly is coalesced whatever its annotations",
    )
    exclude: list[str] = Field(default_factory=list, description="tool name patterns never coalesced")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    def applies(self, tool: str, definition: dict[str, Any] | None) -> bool:
        """Whether calls of ``tool`` (with this definition) are coalesced."""
        return self.enabled and _pick(self.tools, self.exclude, tool, definition) is not None


class CacheConfig(BaseModel):
    """Opt-in result cache of one server's tools (see docs/hub.md)."""

    model_config = ConfigDict(extra="forbid")

    ttl: float = Field(0.0, ge=0, description="seconds a result stays fresh; 0 turns the cache off")
    tools: list[str] | dict[str, float] = Field(
        default_factory=lambda: ["*"],
        description="tool name patterns (fnmatch), or pattern -> ttl; a wildcard only picks tools annotated "
        "readOnlyHint: true, a tool named exactly is cached whatever its annotations",
    )
    exclude: list[str] = Field(default_factory=list, description="tool name patterns never cached")
    max_entry_bytes: int = Field(1 << 20, ge=1, description="results larger than this (JSON bytes) are not cached")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("give cache a ttl, e.g. {ttl: 5}")
        return {"ttl": v} if isinstance(v, int | float) else v

    @field_validator("tools")
    @classmethod
    def _ttls(cls, v: list[str] | dict[str, float]) -> list[str] | dict[str, float]:
        if isinstance(v, dict) and any(t < 0 for t in v.values()):
            raise ValueError("a tool's ttl must be >= 0")
        return v

    def ttl_for(self, tool: str, definition: dict[str, Any] | None) -> float:
        """Seconds ``tool``'s results stay cached (0: not cached)."""
        patterns = list(self.tools)
        if not patterns or (self.ttl == 0 and not isinstance(self.tools, dict)):
            return 0.0
        picked = _pick(patterns, self.exclude, tool, definition)
        if picked is None:
            return 0.0
        return self.tools[picked] if isinstance(self.tools, dict) else self.ttl


class ServerConfig(BaseModel):
    """One MCP server as the Hub sees it.

    Either ``command`` (stdio), ``url`` (http / sse / websocket) or ``server``
    (an in-process ``MCPServer`` object) must be given; ``transport`` is
    inferred when omitted.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(min_length=1, max_length=128)
    transport: TransportName | None = None
    # stdio
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    # remote
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # in-process
    server: Any = Field(default=None, exclude=True)
    # Checks the addresses of url's host at every connect (set by the gateway for servers
    # registered over its admin API: SSRF through DNS rebinding). Not from files or request bodies.
    connect_guard: SkipJsonSchema[ConnectGuard | None] = Field(default=None, exclude=True)
    # behaviour
    protocol: ProtocolPin = "auto"
    client_capabilities: dict[str, Any] | None = Field(
        None,
        description="capabilities this client advertises to the server (default: the Hub's, else roots only); "
        "e.g. {'sampling': {}, 'elicitation': {}} for a gateway that forwards those requests",
    )
    forward_headers: list[str] = Field(
        default_factory=list,
        description="HTTP only: headers of the gateway's caller passed on to this server with each forwarded "
        "request (e.g. ['X-User-Token']); nothing of the caller's is forwarded unless listed here",
    )
    timeout: float = Field(30.0, gt=0, description="default per-call timeout, seconds")
    max_timeout: float = Field(300.0, gt=0, description="hard cap when progress extends a call")
    connect_timeout: float = Field(10.0, gt=0)
    max_concurrency: int = Field(64, ge=1, description="concurrent calls in flight to this server")
    retries: int = Field(2, ge=0, le=10, description="retries of retryable failures")
    idle_ttl: float | None = Field(300.0, description="close an idle connection after this many seconds")
    catalog_ttl: float = Field(60.0, ge=0, description="tool list cache TTL, seconds")
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    coalesce: CoalesceConfig = Field(default_factory=CoalesceConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if any(c.isspace() for c in v) or "/" in v:
            raise ValueError("server names may not contain whitespace or '/'")
        return v

    @field_validator("headers", "env")
    @classmethod
    def _no_line_breaks(cls, v: dict[str, str]) -> dict[str, str]:
        # Header values are written verbatim onto the wire: CR/LF would smuggle headers.
        for key, value in v.items():
            if any(c in key or c in value for c in "\r\n\0"):
                raise ValueError(f"{key!r}: names and values may not contain line breaks or NUL")
        return v

    @model_validator(mode="after")
    def _infer_transport(self) -> ServerConfig:
        given = [k for k in ("command", "url", "server") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of 'command', 'url' or 'server' must be set")
        if self.transport is None:
            if self.command is not None:
                self.transport = "stdio"
            elif self.server is not None:
                self.transport = "inprocess"
            else:
                assert self.url is not None
                if self.url.startswith(("ws://", "wss://")):
                    self.transport = "websocket"
                elif self.url.rstrip("/").endswith("/sse"):
                    self.transport = "sse"
                else:
                    self.transport = "http"
        if self.forward_headers:
            if self.transport != "http":
                raise ValueError("forward_headers needs transport 'http' (headers travel with each POST)")
            bad = [h for h in self.forward_headers if not _TOKEN.fullmatch(h)]
            if bad:
                raise ValueError(f"forward_headers: {bad[0]!r} is not a valid HTTP header name")
            if any(h.lower() in _HOP_HEADERS for h in self.forward_headers):
                raise ValueError(f"forward_headers may not include {sorted(_HOP_HEADERS)}")
            self.forward_headers = [h.lower() for h in self.forward_headers]
        expected = {"stdio": "command", "inprocess": "server"}.get(self.transport, "url")
        if getattr(self, expected) is None:
            raise ValueError(f"transport {self.transport!r} needs {expected!r}")
        if self.url is not None and not self.url.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"url must be http(s):// or ws(s)://, got {self.url!r}")
        if self.max_timeout < self.timeout:
            self.max_timeout = self.timeout
        return self

    def connection_key(self) -> tuple[Any, ...]:
        """What identifies the connection: a change here means re-register (HUB-2)."""
        return (
            self.transport,
            self.command,
            tuple(self.args),
            tuple(sorted(self.env.items())),
            self.cwd,
            self.url,
            tuple(sorted(self.headers.items())),
            self.protocol,
            repr(self.client_capabilities),
            tuple(self.forward_headers),
            id(self.server) if self.server is not None else None,
        )

    def redacted(self) -> dict[str, Any]:
        """A dict safe to log or print: secret-looking header and env values masked."""
        data = self.model_dump(exclude={"server"})
        data["headers"] = {k: _mask(k, v) for k, v in self.headers.items()}
        data["env"] = {k: _mask(k, v) for k, v in self.env.items()}
        return data


def _mask(key: str, value: str) -> str:
    return "***" if any(h in key.lower() for h in SECRET_HINTS) else value
