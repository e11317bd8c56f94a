"""The gateway's shared state: everything one worker needs, built from one configuration file.

Sub-apps (MCP endpoint, OpenAI API, admin API, operations) receive the :class:`Gateway`
and read what they need from it; none of them owns process-wide state of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from toolmesh.agent.budget import DailySpend
from toolmesh.agent.factory import AgentStack, build_agent
from toolmesh.errors import ServerNotFoundError
from toolmesh.gateway.auth import ANONYMOUS, EdgeLimits, KeyRing, Principal, SharedEdgeLimits
from toolmesh.gateway.config import GatewaySettings
from toolmesh.hub import ChangeEvent, Hub
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.configfile import ToolmeshConfig
from toolmesh.llm.ratelimit import KeyedLimits
from toolmesh.store.limits import UserLimits
from toolmesh.store.redis_budget import SharedSpend
from toolmesh.store.redis_circuits import SharedCircuits
from toolmesh.store.redis_events import SharedEvents
from toolmesh.store.redis_limits import AdmissionRider, SharedLimiter
from toolmesh.store.redis_model_limits import SharedDeploymentLimits, SharedKeyLimits
from toolmesh.store.redis_results import RedisResults
from toolmesh.store.redis_state import RedisState, process_state
from toolmesh.store.redis_streams import RedisStreamMirror
from toolmesh.store.shared import Admission, StateSettings
from toolmesh.store.shared_users import SharedUserLimits
from toolmesh.store.sqlite import AUDIT_SQL

log = logging.getLogger("toolmesh.gateway")

_SECRET_KEY = "gateway/session-secret"
#: Scope key set by the app when a chat completion's tenant and key limits wait for its user's
#: (see :meth:`Gateway.defers_chat_limits`).
DEFERRED_LIMITS_KEY = "toolmesh.deferred_limits"
#: Tenant suffix of the handshake-era twin connections (see :meth:`Gateway.handshake_route`).
HANDSHAKE_TENANT_SUFFIX = "#handshake"
#: What the gateway's upstream connections advertise (answered by the downstream client).
FORWARDED_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": False}}


class ToolSpans(Protocol):
    """Trace spans for forwarded tool calls (the ops sub-app, when tracing is on)."""

    def tool_span(self, server: str, tool: str) -> tuple[Any, bytes]:
        """A started span and the ``traceparent`` header line that carries it upstream."""
        ...

    def end_tool_span(self, span: Any, status: str) -> None:
        """Close a span from :meth:`tool_span` with the call's outcome."""
        ...


class Gateway:
    """Hub, agent runtime, router, store, keys and limits of one gateway worker.

    Build it with :meth:`create`; :meth:`start` tries every configured upstream once (for
    ``/readyz``); :meth:`aclose` waits for in-flight requests (up to ``drain_timeout``)
    and releases everything.
    """

    def __init__(self, config: ToolmeshConfig, settings: GatewaySettings, stack: AgentStack) -> None:
        self.config = config
        self.settings = settings
        self.stack = stack
        self.hub: Hub = stack.hub
        self.agent = stack.agent
        self.llm = stack.llm
        self.store = stack.store
        self.registry = stack.registry
        self.ledger = stack.ledger
        self.sessions = stack.sessions
        self.keys = KeyRing(stack.store, ttl=settings.key_cache_ttl)
        self.limits = EdgeLimits(settings)
        #: Set when ``state.url`` is configured: the edge limits decided in Redis (see :meth:`share_state`).
        self.shared_limits: SharedEdgeLimits | None = None
        self.shared_state: RedisState | None = None
        self.shared_limiter: SharedLimiter | None = None
        #: Set with ``state.url``: admin changes (revoked keys, servers, rules) pushed to every worker.
        self.shared_events: SharedEvents | None = None
        #: Set with ``state.url``: the circuit breakers' state, mirrored from Redis.
        self.shared_circuits: SharedCircuits | None = None
        #: Set with ``state.url`` and a daily spend budget: its reservations held in Redis.
        self.shared_spend: SharedSpend | None = None
        #: Set with ``state.url``: resumable SSE streams copied to Redis, resumable on any replica.
        self.stream_mirror: RedisStreamMirror | None = None
        self.auth = settings.auth
        self.ready = False
        self.draining = False
        self.started_at = time.time()
        self.upstreams_tried: dict[str, dict[str, Any]] = {}
        self.session_secret: bytes = (settings.session_secret or "").encode()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._probe: asyncio.Task[None] | None = None
        #: Filled by the sub-apps at start-up (e.g. Prometheus families); free-form by design.
        self.extras: dict[str, Any] = {}
        #: Set by the ops sub-app when tracing is on: the MCP endpoint and the agent trace tool calls.
        self.tool_spans: ToolSpans | None = None
        self._twins: dict[tuple[str, str], tuple[str, str]] = {}
        self.hub.add_change_listener(self._twin_changed)
        #: Called with the tenant after an upstream was registered or removed at run time.
        self.servers_changed: list[Callable[[str], None]] = []

    @classmethod
    async def create(
        cls, config: ToolmeshConfig, settings: GatewaySettings | None = None, *, store_path: str | None = None
    ) -> Gateway:
        settings = settings or GatewaySettings.from_section(config.section("gateway"), config.source)
        state = StateSettings.from_section(config.section("state"), config.source)  # a bad key fails here, first
        # Upstreams may ask for sampling/elicitation/roots: the gateway forwards those to the
        # downstream MCP client that made the call (and refuses them for agent-runtime calls).
        # With state.url the circuit breakers' state is shared too: one open circuit, one probe, for all.
        circuits = SharedCircuits(process_state(state)) if state.url else None
        hub = Hub(client_capabilities=FORWARDED_CAPABILITIES, circuit_store_factory=circuits)
        stack = await build_agent(config, store_path=store_path, hub=hub)
        gw = cls(config, settings, stack)
        if state.url:
            gw.share_state(state, circuits)
        if not gw.session_secret:
            gw.session_secret = await gw._shared_secret()
        return gw

    def share_state(self, state: StateSettings, circuits: SharedCircuits | None = None) -> None:
        """Keep the rate limits and per-user limits in Redis (``state.url``), shared by every replica,
        with the admin changes and (``circuits``: the Hub's circuit stores) circuit states pushed.

        Nothing connects yet: the process's client opens its connections on the first request.
        """
        self.shared_state = process_state(state)
        # While Redis is down each process admits its share: limit ÷ the processes sharing it.
        replicas = state.replicas or self.settings.workers
        limiter = self.shared_limiter = SharedLimiter(self.shared_state, replicas=replicas)
        self.shared_limits = SharedEdgeLimits(self.settings, limiter)
        # Each deployment's rpm/tpm for the whole fleet, not per process (LiteLLM's multiplied limits).
        self.llm.fleet = SharedDeploymentLimits(limiter)
        # llm.limits (tokens and requests per minute per tenant and user), likewise for the fleet.
        router = self.llm
        for kind, keyed in (("tenant", router.tenant_limits), ("user", router.user_limits)):
            if isinstance(keyed, KeyedLimits) and keyed.enabled:
                shared = SharedKeyLimits(limiter, kind, keyed.rpm, keyed.tpm)
                if kind == "tenant":
                    router.tenant_limits = shared
                else:
                    router.user_limits = shared
        local = self.agent.user_limits
        if isinstance(local, UserLimits):
            self.agent.user_limits = SharedUserLimits(limiter, local.max_concurrent_runs, local.requests_per_minute,
                                                      window=local.window, lease=state.lease)
        spend = self.agent.spend
        if isinstance(spend, DailySpend) and (spend.per_user is not None or spend.per_tenant is not None):
            # Daily spend reserved and settled in Redis: one budget for the whole fleet.
            spend.scope_factory = self.shared_spend = SharedSpend(self.shared_state, lease=state.lease)
        self.stream_mirror = RedisStreamMirror(self.shared_state)
        if state.shared_results_max_bytes > 0:
            # Cached tool results once for the fleet: a tool is called once per TTL, not once per process.
            self.hub.result_cache.shared = RedisResults(self.shared_state)
        events = self.shared_events = SharedEvents(self.shared_state)
        events.on("key-revoked", self._key_revoked)
        events.on_resync(self._forget_keys)
        self.shared_circuits = circuits
        if circuits is not None:
            events.listen(circuits.channel, circuits.on_message)
        log.info("shared state: limits in Redis at %s (fallback share: 1/%d)", self.shared_state.redacted_url,
                 limiter.replicas)

    async def key_revoked(self, key_hash: str) -> None:
        """A key was revoked in the store: forget it here at once, and on every worker through Redis."""
        self.keys.forget_key(key_hash)
        if self.shared_events is not None:
            await self.shared_events.publish("key-revoked", key_hash)

    async def _key_revoked(self, data: Any) -> None:
        if isinstance(data, str):
            self.keys.forget_key(data)

    async def _forget_keys(self) -> None:
        self.keys.forget()  # changes may have been missed: look every key up again

    def defers_chat_limits(self) -> bool:
        """With the limits in Redis, a chat completion is admitted against its tenant's and key's
        limits and its user's (known only once the body is read) in one round trip: the edge
        leaves them to :meth:`admit_chat`."""
        return self.shared_limits is not None and isinstance(self.agent.user_limits, SharedUserLimits)

    async def admit_chat(self, principal: Principal, user: str | None, rider: AdmissionRider | None = None,
                         ) -> Admission:
        """The edge limits of a chat completion, with ``user``'s run limits unless None (a request
        refused before its user is known still counts against its tenant and key); ``rider``: the
        call's spend hold, taken in the same script (all or nothing with the limits)."""
        shared, users, limiter = self.shared_limits, self.agent.user_limits, self.shared_limiter
        if shared is None or limiter is None or not isinstance(users, SharedUserLimits):
            raise RuntimeError("admit_chat() without shared limits")
        if user is None:
            return await shared.admit(principal)
        if rider is not None:
            admission = await limiter.admit(principal.tenant, [*shared.rules(principal), *users.limits_for(user)],
                                            rider=rider)
        else:
            admission = await shared.admit(principal, users.limits_for(user))
        if admission.admitted:
            users.preadmit(principal.tenant, user)
        return admission

    async def _shared_secret(self) -> bytes:
        # Workers on one host share the store, so they agree on the secret; replicas on other
        # hosts need ``gateway.session_secret`` set to the same value.
        fresh = secrets.token_urlsafe(32)
        # First writer wins: every worker then reads the same value back.
        await self.store.execute(
            "INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (_SECRET_KEY, orjson.dumps(fresh), time.time()),
        )
        found = await self.store.get_checkpoint(_SECRET_KEY)
        return (found if isinstance(found, str) else fresh).encode()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Begin probing the configured upstreams in the background (``/readyz`` waits for it)."""
        self._probe = asyncio.create_task(self._try_upstreams(), name="toolmesh-gateway-probe")
        if self.shared_events is not None:
            self.shared_events.start()
        if self.shared_circuits is not None:
            self.shared_circuits.start()

    async def _try_upstreams(self) -> None:
        async def one(tenant: str, name: str) -> None:
            started = time.perf_counter()
            try:
                tools = await self.hub.list_tools(tenant=tenant, server=name)
                entry: dict[str, Any] = {"ok": True, "tools": len(tools)}
            except Exception as exc:  # a dead upstream must not stop the gateway
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                log.warning("upstream %s/%s not reachable at start-up: %s", tenant, name, exc)
            entry["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            self.upstreams_tried[f"{tenant}/{name}"] = entry

        jobs = [
            one(tenant, name)
            for tenant, servers in self.config.tenants.items()
            for name, cfg in servers.items()
            if cfg.enabled
        ]
        await asyncio.gather(*jobs)
        self.ready = True

    def enter(self) -> None:
        """Count one request in flight (for graceful shutdown)."""
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting work and wait for in-flight requests; False if some were still running."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout if timeout is None else timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        await self.drain()
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
        if self.shared_events is not None:
            await self.shared_events.aclose()
        if self.shared_circuits is not None:
            await self.shared_circuits.aclose()
        await self.stack.aclose()
        if self.shared_spend is not None:
            await self.shared_spend.aclose()
        if self.shared_limiter is not None:
            await self.shared_limiter.aclose()
        if self.stream_mirror is not None:
            await self.stream_mirror.aclose()
        if self.shared_state is not None:
            await self.shared_state.aclose()

    # -- upstream connections per protocol era ------------------------------------------
    async def handshake_route(self, tenant: str, server: str) -> tuple[str, str]:
        """(tenant, server) to forward a handshake-era client's request through.

        An ``auto`` upstream usually negotiates 2026-07-28, where servers cannot send
        sampling/elicitation requests or session logs mid-call. For handshake-era clients the
        gateway keeps a second connection pinned to 2025-11-25 (registered lazily under the
        tenant ``<tenant>#handshake``), so those features reach the client.
        """
        key = (tenant, server)
        found = self._twins.get(key)
        if found is None:
            config = self.hub.server(server, tenant=tenant).config
            if config.protocol != "auto":
                found = key
            else:
                twin_tenant = tenant + HANDSHAKE_TENANT_SUFFIX
                await self.hub.ensure_registered(config.model_copy(update={"protocol": "2025-11-25"}),
                                                 tenant=twin_tenant)
                found = (twin_tenant, server)
            self._twins[key] = found
        return found

    def _twin_changed(self, event: ChangeEvent) -> None:
        # Both connections to one upstream show the same catalogue: a change heard on one
        # (e.g. during a handshake-era client's call) makes the other's listings stale too.
        base, sep, _ = event.tenant.partition("#")
        other = base if sep else base + HANDSHAKE_TENANT_SUFFIX
        try:
            handle = self.hub.server(event.server, tenant=other, user=event.user)
        except ServerNotFoundError:
            return
        handle.catalog_changed(event.method)

    async def register_server(self, config: ServerConfig, tenant: str) -> None:
        """Register (or replace) an upstream at run time, with its handshake-era twin."""
        await self.unregister_server(config.name, tenant, announce=False)
        await self.hub.register(config, tenant=tenant)
        self._announce(tenant)

    async def unregister_server(self, name: str, tenant: str, *, announce: bool = True) -> bool:
        """Remove an upstream (and its twin); False if it was not registered."""
        self._twins.pop((tenant, name), None)
        await self.hub.unregister(name, tenant=tenant + HANDSHAKE_TENANT_SUFFIX)
        removed = await self.hub.unregister(name, tenant=tenant)
        if removed and announce:
            self._announce(tenant)
        return removed

    def _announce(self, tenant: str) -> None:
        for hook in self.servers_changed:
            try:
                hook(tenant)
            except Exception:
                log.exception("servers-changed hook failed")

    # -- auth ----------------------------------------------------------------------------
    async def principal(self, token: str | None) -> Principal | None:
        """The caller behind a bearer token (``ANONYMOUS`` when auth is off)."""
        if not self.auth:
            return ANONYMOUS
        if not token:
            return None
        return await self.keys.resolve(token)

    # -- audit ---------------------------------------------------------------------------
    def audit(
        self,
        principal: Principal,
        server: str,
        tool: str,
        arguments: Any,
        status: str,
        latency_ms: float,
        *,
        user: str | None = None,
        request_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one tool call (who, what, arguments hash, result status, latency); never raises."""
        if not self.settings.audit:
            return
        try:
            digest = hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()
            who = user or principal.user or principal.key_id
            # Every value is a str/float by construction here: skip the store's per-field checks (hot path).
            self.store.enqueue_trusted(AUDIT_SQL, (time.time(), principal.tenant, who, server, tool, digest,
                                                   status, float(latency_ms), request_id, error))
        except Exception:
            log.exception("audit write failed")
