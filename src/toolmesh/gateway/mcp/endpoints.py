"""MCP endpoints of the gateway (GW-2): ``/mcp`` and ``/servers/{name}/mcp`` on every transport.

Each (tenant, view) pair gets a :class:`GatewayDispatcher` and the frontends of
:mod:`toolmesh.servers` around it: Streamable HTTP (both protocol eras; 2026-07-28 is
stateless, so any worker or replica answers), legacy SSE (``sse`` + ``messages``) and
WebSocket (``ws``). Handshake-era session ids are sealed (:class:`SealedSessions`): the
id carries the negotiated version and client capabilities under an HMAC, so a worker
that never saw the ``initialize`` serves the session. Legacy SSE streams are bound to
the connection that opened them (use one worker or sticky routing for that transport).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from toolmesh.gateway.auth import Principal
from toolmesh.gateway.mcp.dispatch import CURRENT_HEADERS, CURRENT_PRINCIPAL, GatewayDispatcher
from toolmesh.gateway.mcp.relay import RedisSessionRelay
from toolmesh.gateway.mcp.tombstones import RedisTombstones
from toolmesh.gateway.mcp.view import View
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import PRINCIPAL_KEY, send_error
from toolmesh.net.asgi import Receive, Scope, Send
from toolmesh.net.onewrite import on_shutdown
from toolmesh.servers.guard import Guard
from toolmesh.servers.http import StreamableHttp
from toolmesh.servers.relay import SessionRelay
from toolmesh.servers.sse import LegacySse
from toolmesh.servers.state import Conn
from toolmesh.servers.ws import WebSocketFrontend
from toolmesh.store.sqlite import Store

_CAP_KEYS = ("sampling", "elicitation", "roots", "experimental")
#: How long a sealed handshake-era session id stays valid (and a tombstone is kept).
SESSION_MAX_AGE = 7 * 24 * 3600.0


class SealedSessions:
    """Handshake-era session ids that carry their own state: ``payload.mac`` (base64url).

    The payload holds the tenant, the negotiated protocol version, the client's
    capabilities (top-level keys only) and the issue time; the MAC is HMAC-SHA256 with the
    gateway's session secret (shared by workers through the store, by replicas through
    ``gateway.session_secret``). A session is only valid for its own tenant, and only with
    the API key that opened it: the payload carries a keyed hash of the key's id, so an id
    seen in a log or a proxy is useless with any other key (session hijacking).
    """

    def __init__(self, secret: bytes, tenant: str, max_age: float, store: Store | None = None,
                 shared: RedisTombstones | None = None, *, remember: float = 2 * 1800.0) -> None:
        """``shared``: tombstones of ended sessions go to Redis (every replica), not the store.

        ``remember``: how long this process keeps an ended session in memory. Longer than the
        frontends' idle timeout, so a session still held open here learns of its end; after that
        the durable tombstone (store or Redis) answers, and memory stays bounded under churn."""
        self.secret = secret
        self.tenant = tenant
        self.max_age = max_age
        self.store = store
        self.shared = shared
        self.remember = remember
        # Both keyed by the id's digest (ids can be kilobytes), with the monotonic time noted.
        self._ended: dict[str, float] = {}
        self._synced = time.time()
        self._ended_keys: dict[str, float] = {}
        self._pruned = time.monotonic()
        self._purged = 0.0

    @staticmethod
    def _digest(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()[:32]

    @staticmethod
    def _tombstone(sid: str) -> str:
        return "mcp-session-ended/" + SealedSessions._digest(sid)

    def _forget_old(self) -> None:
        """Drop what is older than ``remember`` (at most once a minute: dicts are insertion-ordered)."""
        now = time.monotonic()
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        horizon = now - self.remember
        for cache in (self._ended, self._ended_keys):
            for key in [k for k, at in cache.items() if at < horizon]:
                del cache[key]

    def _note_ended(self, sid: str) -> None:
        self._forget_old()
        self._ended[self._digest(sid)] = time.monotonic()

    @property
    def remembered(self) -> int:
        """How many ended sessions this process holds in memory (bounded by ``remember``)."""
        return len(self._ended) + len(self._ended_keys)

    def _known_ended(self, sid: str) -> bool:
        return self._digest(sid) in self._ended

    async def end(self, sid: str) -> None:
        """The client ended the session (DELETE): no worker may open it again."""
        self._note_ended(sid)
        if self.shared is not None:
            await self.shared.end(self._digest(sid))
        elif self.store is not None:
            await self.store.put_checkpoint(self._tombstone(sid), time.time())

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, payload, hashlib.sha256).digest()[:18]).decode()

    def holder(self, scope: Scope) -> str:
        """The credential of a request: its API key's id (``""`` when no principal is attached)."""
        principal = scope.get(PRINCIPAL_KEY)
        return principal.key_id if isinstance(principal, Principal) else ""

    def _binding(self, holder: str) -> str:
        # Keyed, so the sealed payload (readable base64) does not reveal even the key's id.
        return self._mac(b"holder:" + holder.encode())[:16]

    def seal(self, msg: Any, scope: Scope) -> str:
        params = msg.get("params") if isinstance(msg, dict) else None
        params = params if isinstance(params, dict) else {}
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        caps = params.get("capabilities")
        kept = {k: v for k, v in caps.items() if k in _CAP_KEYS} if isinstance(caps, dict) else {}
        body = {"t": self.tenant, "k": self._binding(self.holder(scope)), "v": version, "c": kept,
                "i": int(time.time()),
                "n": base64.urlsafe_b64encode(hashlib.sha256(str(time.perf_counter_ns()).encode()).digest()[:6])
                .decode()}
        payload = base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}"

    async def ended(self, sid: str) -> bool:
        """Whether ``sid`` was ended, here or (learnt within ~0.2 s) by another worker."""
        if self.shared is not None:
            return self._known_ended(sid) or await self.shared.ended(self._digest(sid))
        now = time.time()
        if self.store is not None and now - self._synced > 0.2:
            since, self._synced = self._synced - 1.0, now
            rows = await self.store.fetchall(
                "SELECT key FROM checkpoints WHERE key LIKE 'mcp-session-ended/%'"
                " AND updated_at >= ?", (since,))
            seen = time.monotonic()
            self._ended_keys.update((r[0], seen) for r in rows)
            self._forget_old()
            if now - self._purged > 3600.0:
                # Tombstones outlive their sessions by nothing: a sealed id older than max_age is refused anyway.
                self._purged = now
                await self.store.execute("DELETE FROM checkpoints WHERE key LIKE 'mcp-session-ended/%'"
                                         " AND updated_at < ?", (now - self.max_age,))
        return self._known_ended(sid) or self._tombstone(sid) in self._ended_keys

    async def open(self, sid: str, scope: Scope) -> Conn | None:
        conn = self.verify(sid, scope)
        if conn is None or self._known_ended(sid):
            return None
        # Runs once per session per worker (then the worker knows it): cheap enough to ask.
        if self.shared is not None:
            if await self.shared.exists(self._digest(sid)):
                self._note_ended(sid)
                return None
        elif self.store is not None and await self.store.get_checkpoint(self._tombstone(sid)) is not None:
            self._note_ended(sid)
            return None
        return conn

    def verify(self, sid: str, scope: Scope | None = None) -> Conn | None:
        """The session sealed in ``sid`` if the MAC, tenant, age and the credential of ``scope``
        (none: a session sealed without one) check out; tombstones are not looked at."""
        payload, sep, mac = sid.partition(".")
        if not sep or len(sid) > 4096 or not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            body = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(body, dict) or body.get("t") != self.tenant:
            return None
        holder = self.holder(scope or {})
        if not hmac.compare_digest(str(body.get("k", "")), self._binding(holder)):
            return None
        if time.time() - float(body.get("i", 0)) > self.max_age:
            return None
        conn = Conn(f"session:{sid[:24]}", shared=True)
        conn.version = body.get("v")
        conn.client_caps = body.get("c") or {}
        conn.initialized = True
        conn.owner = holder
        return conn


class _Endpoint:
    """The frontends of one (tenant, view)."""

    def __init__(self, gw: Gateway, view: View, base: str, tombstones: RedisTombstones | None = None,
                 relay: SessionRelay | None = None) -> None:
        s = gw.settings
        self.generation = gw.hub.generation
        self.dispatcher = GatewayDispatcher(gw, view)
        # Host/Origin are checked once by the gateway app; the frontends only cap bodies.
        guard = Guard(host=s.host, validate_origin=False, max_body=s.max_body)
        codec = SealedSessions(gw.session_secret, view.tenant, max_age=SESSION_MAX_AGE, store=gw.store,
                               shared=tombstones, remember=2 * s.session_idle_timeout)
        self.http = StreamableHttp(self.dispatcher, guard, max_sessions=s.max_sessions,
                                   session_idle_timeout=s.session_idle_timeout, session_codec=codec,
                                   mirror=gw.stream_mirror, relay=relay)
        self.sse = LegacySse(self.dispatcher, guard, messages_path=f"{base}/messages/")
        self.ws = WebSocketFrontend(self.dispatcher, guard)
        # GET streams would otherwise hold a graceful shutdown for its whole timeout.
        self._remove_hook = on_shutdown(self.http.end_streams)

    def close(self) -> None:
        """Stop change delivery and end the GET and listen streams (the gateway is stopping)."""
        self._remove_hook()
        self.dispatcher.close()
        self.http.end_streams()

    async def retire(self) -> None:
        """Replaced by a new view: clients hear that their lists changed, then streams end."""
        self._remove_hook()
        await self.dispatcher.changes.retire()
        self.http.end_streams()


class McpRoutes:
    """Resolves ``(view, transport)`` for the caller's tenant and runs the matching frontend."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._endpoints: dict[tuple[str, str | None], _Endpoint] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._tombstones: RedisTombstones | None = None
        #: With ``state.url``: cancellations and answers for requests another process serves.
        self.relay: RedisSessionRelay | None = None
        if gw.shared_state is not None and gw.shared_events is not None:
            self.relay = RedisSessionRelay(gw.shared_state, gw.shared_events, self._deliver)
        gw.servers_changed.append(self.refresh)

    async def _deliver(self, session: str, message: dict[str, Any]) -> bool:
        """A relayed message: to the endpoint of this process that holds its target, if any."""
        for ep in list(self._endpoints.values()):
            if await ep.http.deliver(session, message):
                return True
        return False

    def refresh(self, tenant: str) -> None:
        """Servers of ``tenant`` were registered or removed: retire the views that changed, so
        their clients hear list_changed now (the next request builds the new view)."""
        for key, ep in list(self._endpoints.items()):
            if key[0] == tenant and _stale(ep, self.gw, tenant):
                del self._endpoints[key]
                self._retire(ep)

    def _retire(self, ep: _Endpoint) -> None:
        task = asyncio.get_running_loop().create_task(ep.retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def view_for(self, tenant: str, name: str | None) -> View | None:
        """The view ``name`` (``None``: all servers) for ``tenant``, or ``None`` if it has no such view."""
        gw = self.gw
        s = gw.settings
        servers = gw.hub.servers(tenant=tenant)
        if name is None:
            # A tenant with no servers yet still gets a working (empty) endpoint whose
            # instructions say so; registering a server later announces list_changed.
            names = [n for n, h in servers.items() if h.config.enabled]
            return View(gw.hub, tenant, None, names, prefix=True, include=s.include, exclude=s.exclude)
        virtual = s.virtual_servers.get(name)
        if virtual is not None:
            if virtual.tenants is not None and tenant not in virtual.tenants:
                return None
            if any(n not in servers for n in virtual.servers):
                return None
            return View(gw.hub, tenant, name, list(virtual.servers), prefix=virtual.prefix,
                        include=virtual.include, exclude=virtual.exclude)
        if name in servers and servers[name].config.enabled:
            return View(gw.hub, tenant, name, [name])
        return None

    def endpoint(self, principal: Principal, name: str | None) -> _Endpoint | None:
        key = (principal.tenant, name)
        ep = self._endpoints.get(key)
        if ep is None or (ep.generation != self.gw.hub.generation and _stale(ep, self.gw, principal.tenant)):
            if ep is not None:
                self._retire(ep)
            view = self.view_for(principal.tenant, name)
            if view is None:
                self._endpoints.pop(key, None)
                return None
            if self._tombstones is None and self.gw.shared_state is not None:
                # One per process, built on first use (shared state is set up after the routes).
                self._tombstones = RedisTombstones(self.gw.shared_state, SESSION_MAX_AGE)
            ep = self._endpoints[key] = _Endpoint(self.gw, view, f"/servers/{name}" if name else "",
                                                  self._tombstones, self.relay)
        else:
            ep.generation = self.gw.hub.generation
        return ep

    async def __call__(self, name: str | None, tail: str, scope: Scope, receive: Receive, send: Send) -> None:
        principal: Principal = scope[PRINCIPAL_KEY]
        ep = self.endpoint(principal, name)
        if ep is None:
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
                return
            known = sorted(self.gw.hub.servers(tenant=principal.tenant)) + sorted(self.gw.settings.virtual_servers)
            hint = f"; its servers: {', '.join(known)}" if known else "; it has no MCP servers registered yet"
            await send_error(send, 404, f"tenant {principal.tenant!r} has no MCP server {name!r}{hint}",
                             "not_found_error")
            return
        CURRENT_PRINCIPAL.set(principal)
        CURRENT_HEADERS.set(scope["headers"])
        if scope["type"] == "websocket":
            if tail == "ws":
                await ep.ws(scope, receive, send)  # type: ignore[arg-type]
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
        elif tail == "mcp":
            await ep.http(scope, receive, send)  # type: ignore[arg-type]
        elif tail == "sse":
            await ep.sse.stream(scope, receive, send)  # type: ignore[arg-type]
        elif tail == "messages":
            await ep.sse.message(scope, receive, send)  # type: ignore[arg-type]
        else:
            await send_error(send, 404, f"no MCP transport {tail!r}", "not_found_error")

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            ep.close()
            for conn in ep.http.sessions.values():
                conn.cancel_all()
        self._endpoints.clear()


def _stale(ep: _Endpoint, gw: Gateway, tenant: str) -> bool:
    """A view built before servers were (un)registered at run time must be rebuilt."""
    view = ep.dispatcher.view
    current = gw.hub.servers(tenant=tenant)
    if view.name is None:
        return len(current) != len(view.servers) or any(n not in current for n in view.servers)
    return any(n not in current for n in view.servers)
