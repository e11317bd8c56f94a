"""The Hub: a multi-tenant MCP client (SPEC §1).

    hub = Hub()
    await hub.register(ServerConfig(name="catalog", command="python", args=[...]))
    tools = await hub.to_openai_tools()
    result = await hub.call_tool("catalog", "get_product_info", {"sku": "SKU-1001"})
    results = await hub.batch_call(message.tool_calls)   # keyed by tool_call_id
    await hub.aclose()

Servers are registered per tenant (and optionally per user: a user's server
shadows the tenant's server of the same name for that user only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from toolmesh.errors import (
    ConnectionFailedError,
    InvalidArgumentsError,
    ServerNotFoundError,
)
from toolmesh.hub.batch import run_batch
from toolmesh.hub.changes import ChangeSource
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.convert import anthropic_tool, openai_tool
from toolmesh.hub.handle import ServerHandle
from toolmesh.hub.janitor import IdleJanitor
from toolmesh.hub.naming import ToolNameMap
from toolmesh.hub.probe import probe
from toolmesh.hub.result import ToolResult
from toolmesh.hub.resultcache import ResultCache
from toolmesh.hub.transports.base import LogHandler, ProgressCallback, ServerRequestHandler
from toolmesh.observability.health import HealthEvent, HealthTracker
from toolmesh.observability.metrics import ToolMetrics
from toolmesh.resilience.abc import CapacityLimiter, CircuitStore
from toolmesh.resilience.circuit import CircuitBreaker, CircuitState
from toolmesh.resilience.circuit_state import LocalCircuitStore
from toolmesh.resilience.limits import ConcurrencyLimiter

log = logging.getLogger("toolmesh.hub")

DEFAULT_TENANT = "default"
StatusCallback = Callable[[HealthEvent], Awaitable[None] | None]
#: ``(limit, name) -> limiter``: where the Hub's concurrency limits live.
LimiterFactory = Callable[[int, str], CapacityLimiter]
#: ``key -> store``: where a circuit breaker's state and counts live.
CircuitStoreFactory = Callable[[str], CircuitStore]

_Key = tuple[str, str | None]  # (tenant, user)


class Hub(ChangeSource):
    """Connects many MCP servers per tenant and calls their tools fast and safely."""

    def __init__(
        self,
        *,
        janitor_interval: float = 30.0,
        batch_concurrency: int = 32,
        tenant_concurrency: int = 512,
        client_capabilities: dict[str, Any] | None = None,
        limiter_factory: LimiterFactory | None = None,
        circuit_store_factory: CircuitStoreFactory | None = None,
        result_cache: ResultCache | None = None,
    ) -> None:
        """``tenant_concurrency`` bounds the calls in flight per tenant across all its servers
        (each server is bounded by its own ``max_concurrency`` too). ``client_capabilities`` is
        what every connection advertises (a server's ``client_capabilities`` overrides it;
        default: roots only), e.g. ``{"sampling": {}, "elicitation": {}}`` for a gateway.

        ``limiter_factory(limit, name)`` makes the per-tenant and per-server concurrency limits and
        ``circuit_store_factory(key)`` the stores of the circuit breakers (key: the server's metrics
        label, ``label/tool`` for a tool's breaker); the defaults keep both in this process.

        ``result_cache`` holds the tool results of servers configured with ``cache:`` (default: a
        64 MiB :class:`~toolmesh.hub.resultcache.ResultCache`, shared by all servers)."""
        self.tenant_concurrency = tenant_concurrency
        self.client_capabilities = client_capabilities
        self._limiter_factory = limiter_factory
        self._circuit_store_factory = circuit_store_factory
        self._tenant_limits: dict[str, CapacityLimiter] = {}
        self._servers: dict[_Key, dict[str, ServerHandle]] = {}
        self._names: dict[_Key, ToolNameMap] = {}
        self._status_callbacks: list[StatusCallback] = []
        self._metrics = ToolMetrics()
        self._result_cache = result_cache if result_cache is not None else ResultCache()
        self._janitor = IdleJanitor(janitor_interval, self.close_idle)
        self.batch_concurrency = batch_concurrency
        self.closed = False
        #: Bumped on every register/unregister: lets callers cache views of the registry cheaply.
        self.generation = 0

    # -- registry (HUB-2) ---------------------------------------------------------------
    async def register(
        self, config: ServerConfig, *, tenant: str = DEFAULT_TENANT, user: str | None = None, connect: bool = False
    ) -> ServerHandle:
        """Add a server. Raises ``ValueError`` if the name is taken (use :meth:`ensure_registered`)."""
        servers = self._servers.setdefault((tenant, user), {})
        if config.name in servers:
            raise ValueError(f"server {config.name!r} is already registered for tenant {tenant!r}")
        handle = ServerHandle(config, tenant, user, self)
        servers[config.name] = handle
        self.generation += 1
        log.info("registered server %s for tenant %s: %s", config.name, tenant, config.redacted())
        if connect:
            await handle.connection()
        return handle

    async def register_many(
        self, configs: Mapping[str, ServerConfig] | Iterable[ServerConfig], *, tenant: str = DEFAULT_TENANT
    ) -> None:
        items = configs.values() if isinstance(configs, Mapping) else configs
        for cfg in items:
            if cfg.enabled:
                await self.ensure_registered(cfg, tenant=tenant)

    async def unregister(self, name: str, *, tenant: str = DEFAULT_TENANT, user: str | None = None) -> bool:
        """Remove a server and close its connection. False when it was not registered."""
        servers = self._servers.get((tenant, user), {})
        handle = servers.pop(name, None)
        if handle is None:
            return False
        self.generation += 1
        names = self._names.get((tenant, user))
        if names is not None:
            names.remove_server(name)
        await handle.close()
        self._metrics.remove_server(handle.label)
        return True

    async def ensure_registered(
        self, config: ServerConfig, *, tenant: str = DEFAULT_TENANT, user: str | None = None
    ) -> bool:
        """Idempotent register: re-registers only when url/command/transport/headers changed;
        a changed ``cache`` / ``coalesce`` section is applied in place (cached results go).

        Returns True when something was (re)registered or changed."""
        existing = self._servers.get((tenant, user), {}).get(config.name)
        if existing is not None:
            if existing.config.connection_key() == config.connection_key():
                if (existing.config.cache, existing.config.coalesce) == (config.cache, config.coalesce):
                    return False
                existing.reshare(config)
                return True
            await self.unregister(config.name, tenant=tenant, user=user)
        await self.register(config, tenant=tenant, user=user)
        return True

    def servers(self, *, tenant: str = DEFAULT_TENANT, user: str | None = None) -> dict[str, ServerHandle]:
        """The servers visible to (tenant, user): the user's own shadow the tenant's."""
        merged = dict(self._servers.get((tenant, None), {}))
        if user is not None:
            merged.update(self._servers.get((tenant, user), {}))
        return merged

    def tenants(self) -> list[str]:
        return sorted({t for t, _ in self._servers})

    def server(self, name: str, *, tenant: str = DEFAULT_TENANT, user: str | None = None) -> ServerHandle:
        if user is not None:
            h = self._servers.get((tenant, user), {}).get(name)
            if h is not None:
                return h
        h = self._servers.get((tenant, None), {}).get(name)
        if h is None:
            known = ", ".join(sorted(self.servers(tenant=tenant, user=user))) or "none"
            raise ServerNotFoundError(f"no server {name!r} for tenant {tenant!r} (registered: {known})")
        return h

    async def test_connection(
        self, target: str | ServerConfig, *, tenant: str = DEFAULT_TENANT, user: str | None = None
    ) -> dict[str, Any]:
        """Open a fresh connection, list tools, close. Never raises: reports ``ok`` and ``error``."""
        config = target if isinstance(target, ServerConfig) else self.server(target, tenant=tenant, user=user).config
        return await probe(config, self.client_capabilities)

    # -- catalogue (HUB-7, HUB-8) -------------------------------------------------------
    async def list_tools(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        user: str | None = None,
        server: str | None = None,
        refresh: bool = False,
    ) -> list[dict[str, Any]]:
        """MCP tool definitions of every server (or one), each with ``name`` namespaced.

        The original names are kept in ``_server`` and ``_tool``. A server that cannot
        be reached is skipped with a warning: one dead server never hides the others."""
        handles = [self.server(server, tenant=tenant, user=user)] if server else list(
            self.servers(tenant=tenant, user=user).values()
        )
        names = self._name_map(tenant, user)
        results = await asyncio.gather(*(h.list("tools", refresh=refresh) for h in handles), return_exceptions=True)
        out: list[dict[str, Any]] = []
        for handle, tools in zip(handles, results, strict=True):
            if isinstance(tools, BaseException):
                if server is not None:
                    raise tools
                log.warning("listing tools of %s failed: %s", handle.name, tools)
                continue
            for tool in tools:
                exposed = names.add(handle.name, tool["name"])
                out.append({**tool, "name": exposed, "_server": handle.name, "_tool": tool["name"]})
        return out

    async def list_catalog(
        self, kind: str, *, tenant: str = DEFAULT_TENANT, user: str | None = None, server: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """``resources``, ``resource_templates`` or ``prompts`` of every server, by server."""
        handles = [self.server(server, tenant=tenant, user=user)] if server else list(
            self.servers(tenant=tenant, user=user).values()
        )
        results = await asyncio.gather(*(h.list(kind) for h in handles), return_exceptions=True)
        return {h.name: ([] if isinstance(r, BaseException) else r) for h, r in zip(handles, results, strict=True)}

    async def read_resource(self, server: str, uri: str, *, tenant: str = DEFAULT_TENANT,
                            user: str | None = None) -> dict[str, Any]:
        return await self.server(server, tenant=tenant, user=user).request("resources/read", {"uri": uri})

    async def get_prompt(self, server: str, name: str, arguments: dict[str, str] | None = None, *,
                         tenant: str = DEFAULT_TENANT, user: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name}
        if arguments:
            params["arguments"] = arguments
        return await self.server(server, tenant=tenant, user=user).request("prompts/get", params)

    async def to_openai_tools(self, *, tenant: str = DEFAULT_TENANT, user: str | None = None,
                              server: str | None = None) -> list[dict[str, Any]]:
        """OpenAI function-tool definitions; names map back with :meth:`resolve`."""
        return [openai_tool(t, t["name"]) for t in await self.list_tools(tenant=tenant, user=user, server=server)]

    async def to_anthropic_tools(self, *, tenant: str = DEFAULT_TENANT, user: str | None = None,
                                 server: str | None = None) -> list[dict[str, Any]]:
        return [anthropic_tool(t, t["name"]) for t in await self.list_tools(tenant=tenant, user=user, server=server)]

    def resolve(self, exposed: str, *, tenant: str = DEFAULT_TENANT, user: str | None = None) -> tuple[str, str]:
        """(server, tool) for a namespaced name produced by :meth:`list_tools`."""
        return self._name_map(tenant, user).resolve(exposed)

    async def resolve_async(
        self, exposed: str, *, tenant: str = DEFAULT_TENANT, user: str | None = None
    ) -> tuple[str, str]:
        """Like :meth:`resolve`, but lists the tools first when the name is not known yet."""
        found = self._name_map(tenant, user).get(exposed)
        if found is None:
            await self.list_tools(tenant=tenant, user=user)
            found = self._name_map(tenant, user).resolve(exposed)
        return found

    def _name_map(self, tenant: str, user: str | None) -> ToolNameMap:
        m = self._names.get((tenant, user))
        if m is None:
            m = self._names[(tenant, user)] = ToolNameMap()
        return m

    # -- calls (HUB-6) ------------------------------------------------------------------
    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        user: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        validate: bool = True,
        on_request: ServerRequestHandler | None = None,
    ) -> ToolResult:
        """Call one tool. A tool-reported error comes back as ``ToolResult(is_error=True)``;
        everything else (unknown server/tool, bad arguments, timeout, open circuit, dead
        server) raises a :class:`ToolmeshError` subclass.

        ``on_request(method, params) -> result`` answers what the server asks during the call
        (sampling, elicitation, roots; 2026-07-28 ``input_required`` rounds are completed with
        it). Without it such a call ends as ``ToolResult(error_type="InputRequired")``."""
        handle = self.server(server, tenant=tenant, user=user)
        async with self._tenant_limit(tenant):
            return await handle.call_tool(tool, arguments, timeout=timeout, on_progress=on_progress,
                                          validate=validate, on_request=on_request)

    async def forward(
        self,
        server: str,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        user: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_request: ServerRequestHandler | None = None,
        on_log: LogHandler | None = None,
    ) -> dict[str, Any]:
        """Send ``method`` with ``params`` (the server's own names) and return its raw ``result``.

        For a gateway: nothing in the result is interpreted or copied (``isError``,
        ``structuredContent``, ``_meta``, 2026-07-28 ``resultType: "input_required"`` all pass
        through), and ``params`` go out as given (``inputResponses``, ``requestState``, the
        caller's ``_meta``, merged over the connection's envelope on 2026-07-28).

        ``tools/call`` runs through the same circuit breakers, concurrency limits, retry rules,
        health and metrics as :meth:`call_tool`, without argument validation (the server
        validates); other methods through the tenant's and the server's concurrency limits.
        Errors are :meth:`call_tool`'s; :class:`McpRemoteError` keeps the server's JSON-RPC
        ``code``, ``message`` and ``data``.

        ``on_request(method, params) -> result`` answers the server's requests that belong to
        this call (``sampling/createMessage``, ``elicitation/create``, ``roots/list``; raise
        :class:`McpRemoteError` to answer with an error); ``on_log(params)`` receives its
        ``notifications/message``. Without them the Hub answers as usual (ping, empty roots,
        "not supported")."""
        handle = self.server(server, tenant=tenant, user=user)
        if params is not None and not isinstance(params, dict):
            raise InvalidArgumentsError(f"{method} to {server!r}: params must be a JSON object")
        async with self._tenant_limit(tenant):
            if method == "tools/call":
                return await handle.forward_tool(
                    params or {}, timeout=timeout, on_progress=on_progress, on_request=on_request, on_log=on_log
                )
            async with handle.limiter:
                return await handle.request(
                    method, params, timeout=timeout, on_progress=on_progress, on_request=on_request, on_log=on_log
                )

    def _tenant_limit(self, tenant: str) -> CapacityLimiter:
        limiter = self._tenant_limits.get(tenant)
        if limiter is None:
            limiter = self._tenant_limits[tenant] = self.new_limiter(self.tenant_concurrency, f"tenant {tenant}")
        return limiter

    async def call(self, exposed: str, arguments: dict[str, Any] | None = None, *,
                   tenant: str = DEFAULT_TENANT, user: str | None = None, **kw: Any) -> ToolResult:
        """Call by namespaced name (as given to a model)."""
        server, tool = await self.resolve_async(exposed, tenant=tenant, user=user)
        return await self.call_tool(server, tool, arguments, tenant=tenant, user=user, **kw)

    async def batch_call(
        self,
        tool_calls: Iterable[Any],
        *,
        tenant: str = DEFAULT_TENANT,
        user: str | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
    ) -> dict[str, ToolResult]:
        """Run many calls concurrently (bounded); results keyed by ``tool_call_id`` in input order.

        Accepts OpenAI ``tool_calls`` (``{"id", "function": {"name", "arguments": "<json>"}}``,
        dicts or SDK objects), Anthropic ``tool_use`` blocks (``{"id", "name", "input"}``) and
        plain ``{"id", "name", "arguments"}``. Never raises for a single call's failure."""
        return await run_batch(self, tool_calls, tenant=tenant, user=user, timeout=timeout,
                               concurrency=concurrency or self.batch_concurrency)

    # -- health, metrics, events (HUB-4, HUB-9) -----------------------------------------
    def on_status_change(self, callback: StatusCallback) -> None:
        """Register an async (or sync) callback for server status changes."""
        self._status_callbacks.append(callback)
        for servers in self._servers.values():
            for h in servers.values():
                h.health.add_listener(callback)

    @property
    def tool_metrics(self) -> ToolMetrics:
        """The per-server and per-tool call metrics every handle records in (HUB-9)."""
        return self._metrics

    @property
    def result_cache(self) -> ResultCache:
        """The tool-result cache of every server (each registration has its own scope in it)."""
        return self._result_cache

    # -- what the handles report (the HandleOwner protocol) ----------------------------------
    def new_health(self, config: ServerConfig) -> HealthTracker:
        """A health tracker for ``config``'s handle, wired to the status callbacks."""
        hc = config.health
        tracker = HealthTracker(
            config.name,
            min_requests=min(hc.min_requests, hc.window),
            warning_error_rate=max(hc.warning_error_rate, 1e-9),
            critical_error_rate=max(hc.critical_error_rate, hc.warning_error_rate, 1e-9),
            window=hc.window,
        )
        for cb in self._status_callbacks:
            tracker.add_listener(cb)
        return tracker

    def new_limiter(self, limit: int, name: str) -> CapacityLimiter:
        """A concurrency limit of ``limit`` holders, from the ``limiter_factory`` if one was given."""
        if self._limiter_factory is not None:
            return self._limiter_factory(limit, name)
        return ConcurrencyLimiter(limit, name=name)

    def new_circuit_store(self, key: str) -> CircuitStore:
        """The store of one breaker, from the ``circuit_store_factory`` if one was given."""
        if self._circuit_store_factory is not None:
            return self._circuit_store_factory(key)
        return LocalCircuitStore()

    def on_circuit_change(self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        """A handle's breaker changed state."""
        log.warning("circuit %s: %s -> %s", breaker.name, old, new)

    def on_catalog_changed(self, server: str) -> None:
        """A server's catalogue changed (its handle already dropped the cached listings)."""
        log.info("catalogue of %s changed", server)

    def on_connected(self) -> None:
        """A handle opened a connection: the idle janitor runs while any may be open."""
        self._janitor.ensure()

    def status(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """One snapshot per registered server (all tenants unless one is named)."""
        out: list[dict[str, Any]] = []
        for (t, _u), servers in self._servers.items():
            if tenant is None or t == tenant:
                out.extend(h.snapshot() for h in servers.values())
        return out

    def metrics(self) -> dict[str, Any]:
        """Per tool and per server: calls, successes, failures, timeouts, latency percentiles,
        cache and session stats (HUB-9)."""
        snap = self._metrics.snapshot()
        snap["health"] = {
            f"{h.tenant}/{h.name}": h.health.snapshot() for servers in self._servers.values() for h in servers.values()
        }
        snap["catalog"] = {
            f"{h.tenant}/{h.name}": h.catalog.stats() for servers in self._servers.values() for h in servers.values()
        }
        snap["result_cache"] = self._result_cache.stats()
        return snap

    # -- lifecycle (HUB-3) --------------------------------------------------------------
    async def close_idle(self, now: float | None = None) -> int:
        """Close connections idle for longer than their server's ``idle_ttl``; returns how many."""
        now = time.monotonic() if now is None else now
        closed = 0
        for servers in list(self._servers.values()):
            for h in list(servers.values()):
                ttl = h.config.idle_ttl
                if (ttl is not None and h.conn is not None and h.limiter.in_flight == 0 and not h.watchers
                        and now - h.last_used > ttl):
                    await h.drop()
                    closed += 1
        return closed

    async def aclose(self) -> None:
        """Close every connection (and stop every spawned process)."""
        self.closed = True
        await self._janitor.stop()
        handles = [h for servers in self._servers.values() for h in servers.values()]
        await asyncio.gather(*(h.close() for h in handles), return_exceptions=True)

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["DEFAULT_TENANT", "CircuitStoreFactory", "ConnectionFailedError", "Hub", "LimiterFactory", "StatusCallback"]
