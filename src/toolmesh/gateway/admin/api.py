"""Admin API (GW-4) under ``/admin/``: servers, sessions, usage and cost, routing, audit, keys.

The gateway app has checked the ``admin`` scope; every route acts on the caller's tenant
only (``web.principal_of(scope).tenant``). Routing rules are gateway-wide (one LLM router
serves every tenant). JSON in and out; errors in the gateway's error shape with ``param``
naming the offending field.

::

    GET    /admin/servers                     status of each server (health, circuit, config)
    POST   /admin/servers                     register {name, ...ServerConfig fields}   201 / 400 / 409
    GET    /admin/servers/{name}              one server
    PATCH  /admin/servers/{name}              {cache?, coalesce?}: change how its results are shared
    DELETE /admin/servers/{name}              unregister
    POST   /admin/servers/{name}/test         fresh connection + tools/list report
    GET    /admin/sessions[?user=&limit=&offset=]
    GET    /admin/sessions/{id}               with its history
    DELETE /admin/sessions/{id}
    GET    /admin/usage?group_by=tenant|user|model|day[,...]&since=&until=[&user=&model=]
    GET    /admin/routing                     router snapshot (rules, deployments)
    POST   /admin/routing                     {scenario, strategy?, models?}
    PUT    /admin/routing/rules/{scenario}    {strategy?, models?}
    DELETE /admin/routing/rules/{scenario}
    GET    /admin/audit[?since=&limit=&user=&server=&tool=&status=]
    GET    /admin/keys | POST /admin/keys {scopes?, name?} | DELETE /admin/keys/{key_id or key}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from toolmesh.errors import StateUnavailableError
from toolmesh.gateway.admin import data
from toolmesh.gateway.admin.request import Request
from toolmesh.gateway.admin.servers import ServersAdmin
from toolmesh.gateway.admin.sync import Overlay
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import principal_of, send_bytes, send_json
from toolmesh.net.asgi import Receive, Scope, Send

__all__ = ["AdminApi"]

log = logging.getLogger("toolmesh.gateway")

Handler = Callable[..., Awaitable[Any]]
#: Admin answers are live data: never cached by a browser or a proxy, never sniffed.
NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


class AdminApi:
    """The ``/admin/`` ASGI sub-app of one gateway worker."""

    def __init__(self, gw: Gateway, *, sync_interval: float = 1.0) -> None:
        self.gw = gw
        self.overlay = Overlay(gw, interval=sync_interval)
        self.servers = ServersAdmin(self.overlay)
        gw.extras["admin_overlay"] = self.overlay
        self.overlay.start()
        s = self.servers
        # (first path segment, number of segments) -> {method: handler(req, *path params)}
        self._routes: dict[tuple[str, int], dict[str, Handler]] = {
            ("servers", 1): {"GET": s.list, "POST": s.create},
            ("servers", 2): {"GET": _arg(s.get), "PATCH": _arg(s.update), "DELETE": _arg(s.delete)},
            ("servers", 3): {"POST": _arg(s.test)},
            ("sessions", 1): {"GET": data.list_sessions},
            ("sessions", 2): {"GET": _arg(data.get_session), "DELETE": _arg(data.delete_session)},
            ("usage", 1): {"GET": data.usage},
            ("routing", 1): {"GET": self._routing, "POST": self._routing_post},
            ("routing", 3): {"PUT": self._rule_put, "DELETE": self._rule_delete, "GET": self._rule_get},
            ("audit", 1): {"GET": data.audit},
            ("keys", 1): {"GET": data.list_keys, "POST": data.create_api_key},
            ("keys", 2): {"DELETE": _arg(data.revoke_api_key)},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _send_error(send, ApiError(404, "the admin API is HTTP only"))
            return
        req = Request.from_scope(self.gw, principal_of(scope), scope, receive)
        try:
            handler = self._find(req)
            # Another worker may have changed servers or rules: catch up first (one small query).
            await self.overlay.sync()
            result = await handler(req)
        except ApiError as err:
            await _send_error(send, err)
            return
        except StateUnavailableError as exc:  # the store's database (PostgreSQL) is down: retry later
            await _send_error(send, ApiError(503, str(exc), retry_after=1.0))
            return
        except Exception as exc:  # a bug in one admin call must not take the worker down
            log.exception("admin %s %s failed", req.method, scope["path"])
            await _send_error(send, ApiError(500, f"internal error: {type(exc).__name__}"))
            return
        status, body = result if isinstance(result, tuple) else (200, result)
        await send_json(send, status, body, headers=NO_STORE)

    def add_routes(self, routes: dict[tuple[str, int], dict[str, Handler]]) -> None:
        """Mount more admin routes ((first segment, segment count) -> {method: handler(req)}), e.g. the dashboard's."""
        clash = set(routes) & set(self._routes)
        if clash:
            raise ValueError(f"admin routes already taken: {sorted(clash)}")
        self._routes.update(routes)

    def route_table(self) -> list[tuple[str, str]]:
        """Every admin route as ``(method, path template)``, e.g. ``("GET", "/admin/servers/{name}")``."""
        out: list[tuple[str, str]] = []
        for (seg, count), methods in self._routes.items():
            if count == 1:
                path = f"/admin/{seg}"
            elif count == 2:
                path = f"/admin/{seg}/{{id}}"
            else:
                middle = {"servers": "{name}", "routing": "rules"}.get(seg, "{id}")
                last = {"servers": "test", "routing": "{scenario}"}.get(seg, "{id}")
                path = f"/admin/{seg}/{middle}/{last}"
            out.extend((method, path) for method in methods)
        return sorted(out, key=lambda r: (r[1], r[0]))

    def _find(self, req: Request) -> Callable[[Request], Awaitable[Any]]:
        parts = req.parts
        if not parts:
            raise ApiError(404, "admin routes: " + ", ".join(sorted({seg for seg, _ in self._routes})))
        methods = self._routes.get((parts[0], len(parts)))
        if methods is None or (parts[0] == "servers" and len(parts) == 3 and parts[2] != "test") or (
                parts[0] == "routing" and len(parts) == 3 and parts[1] != "rules"):
            raise ApiError(404, f"no admin route /admin/{'/'.join(parts)}")
        handler = methods.get(req.method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            raise ApiError(405, f"{req.method} is not allowed here (allowed: {allow})",
                           headers=[(b"allow", allow.encode())])
        return handler

    # -- routing rules -----------------------------------------------------------------------
    async def _routing(self, req: Request) -> dict[str, Any]:
        return self.servers.routing()

    async def _routing_post(self, req: Request) -> dict[str, Any]:
        body = await req.json()
        scenario = body.pop("scenario", None)
        if not isinstance(scenario, str):
            raise ApiError(400, "scenario: required (a rule name, e.g. \"default\" or \"peak\")", param="scenario")
        return await self.servers.set_rule(req, scenario, body)

    async def _rule_put(self, req: Request) -> dict[str, Any]:
        return await self.servers.set_rule(req, req.parts[2], await req.json())

    async def _rule_delete(self, req: Request) -> dict[str, Any]:
        return await self.servers.set_rule(req, req.parts[2], None)

    async def _rule_get(self, req: Request) -> dict[str, Any]:
        rules = self.servers.routing().get("rules", {})
        rule = rules.get(req.parts[2])
        if rule is None:
            raise ApiError(404, f"no routing rule {req.parts[2]!r}")
        return {"scenario": req.parts[2], **rule}

    async def aclose(self) -> None:
        await self.overlay.aclose()


def _arg(fn: Callable[[Request, str], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
    """Adapt a handler taking the path parameter (the second segment) to ``handler(req)``."""

    async def call(req: Request) -> Any:
        return await fn(req, req.parts[1])

    return call


async def _send_error(send: Send, err: ApiError) -> None:
    """The admin error shape (:meth:`ApiError.admin_body`), with the error's headers."""
    await send_bytes(send, err.status, err.admin_body(), headers=[*err.response_headers(), *NO_STORE])
