"""The dashboard's admin data endpoints (mounted into ``/admin/``) and its static files.

::

    GET /admin/overview    servers (status, circuit, last error, error rate, p50/p95, in flight),
                           the slowest tools, requests and tool calls per interval
    GET /admin/costs?since=&until=&reference=MODEL
                           usage and cost by model, user, day and provider, totals, savings
    GET /admin/limits      per-user limits and what each recent user has in use

Every answer is about the caller's tenant only, like the rest of the admin API.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from toolmesh.gateway.admin.request import Request
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.ui.static import StaticFiles
from toolmesh.gateway.ui.traffic import RequestCounts, Traffic
from toolmesh.hub.handle import ServerHandle
from toolmesh.net.asgi import Receive, Scope, Send
from toolmesh.store.limits import UserLimits

__all__ = ["Dashboard"]

Handler = Callable[[Request], Awaitable[Any]]
_SLOWEST = 8
_COST_GROUPS = ("model", "user", "day", "provider")
_TOTAL_KEYS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
               "unpriced_requests")


class Dashboard:
    """``/ui/`` (static files, no key needed: they hold no data) and the dashboard's admin endpoints."""

    def __init__(self, gw: Gateway, requests: RequestCounts) -> None:
        self.gw = gw
        self.files = StaticFiles()
        self.traffic = Traffic(requests, gw.hub.tool_metrics)

    def routes(self) -> dict[tuple[str, int], dict[str, Handler]]:
        """For :meth:`toolmesh.gateway.admin.AdminApi.add_routes`."""
        return {("overview", 1): {"GET": self.overview}, ("costs", 1): {"GET": self.costs},
                ("limits", 1): {"GET": self.limits}}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.files(scope, receive, send)

    def start(self) -> None:
        self.traffic.start()

    async def aclose(self) -> None:
        await self.traffic.aclose()

    # -- overview --------------------------------------------------------------------------
    async def overview(self, req: Request) -> dict[str, Any]:
        gw, tenant, now = self.gw, req.tenant, time.time()
        handles = gw.hub.servers(tenant=tenant)
        last_errors = await self._last_errors(tenant)
        servers = [self._server(tenant, name, h, last_errors.get(name), now) for name, h in sorted(handles.items())]
        labels = {h.label: name for name, h in handles.items()}
        return {
            # Requests in flight besides this one (the poll itself is always in flight).
            "tenant": tenant, "at": now, "uptime_s": round(now - gw.started_at, 1),
            "in_flight": max(0, gw.in_flight - 1),
            "ready": gw.ready and not gw.draining, "servers": servers, "slowest_tools": self._slowest(labels),
            "traffic": {"interval_s": self.traffic.interval, "points": self.traffic.points(tenant, labels)},
        }

    def _server(self, tenant: str, name: str, h: ServerHandle, last_error: dict[str, Any] | None,
                now: float) -> dict[str, Any]:
        health = h.health.snapshot()
        circuit = h.circuit.snapshot()
        latency = health["latency"]
        # The breaker counts on a monotonic clock: its wall-clock opening time is now - elapsed.
        opened_at = (now - (circuit["reset_timeout"] - circuit["retry_after"])
                     if circuit["state"] == "open" else None)
        startup = self.gw.upstreams_tried.get(f"{tenant}/{name}")
        if last_error is None and startup is not None and not startup.get("ok"):
            last_error = {"at": None, "tool": None, "message": startup.get("error"), "source": "start-up check"}
        snap = h.snapshot()
        return {
            "name": name, "transport": h.config.transport, "connected": snap["connected"],
            "status": health["status"], "in_flight": snap["in_flight"],
            "requests": health["requests"], "errors": health["errors"], "error_rate": health["error_rate"],
            "p50_ms": latency["p50_ms"], "p95_ms": latency["p95_ms"],
            "circuit": {"state": circuit["state"], "consecutive_failures": circuit["consecutive_failures"],
                        "failure_threshold": circuit["failure_threshold"], "opens": circuit["opens"],
                        "retry_after": circuit["retry_after"], "opened_at": opened_at},
            "last_error": last_error,
        }

    async def _last_errors(self, tenant: str) -> dict[str, dict[str, Any]]:
        """The newest failed tool call per server, from the audit log (recent rows only: cheap)."""
        rows = await self.gw.store.fetchall(
            "SELECT server, tool, at, status, error FROM audit WHERE tenant = ? AND status != 'ok'"
            " ORDER BY id DESC LIMIT 500", (tenant,))
        out: dict[str, dict[str, Any]] = {}
        for server, tool, at, status, error in rows:
            if server not in out:
                out[server] = {"at": at, "tool": tool, "message": error or status, "source": "audit log"}
        return out

    def _slowest(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for stats in self.gw.hub.tool_metrics.servers():
            server = labels.get(stats.name)
            if server is None:
                continue
            for tool, t in list(stats.tools.items()):
                lat = t.latency.snapshot()
                if lat["p95_ms"] is None:
                    continue
                rows.append({"server": server, "tool": tool, "calls": t.calls, "failures": t.failures,
                             "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"]})
        rows.sort(key=lambda r: r["p95_ms"], reverse=True)
        return rows[:_SLOWEST]

    # -- costs -----------------------------------------------------------------------------
    async def costs(self, req: Request) -> dict[str, Any]:
        ledger = self.gw.ledger
        if ledger is None:
            raise ApiError(404, "this gateway keeps no usage ledger")
        since, until = req.time_param("since"), req.time_param("until")
        if since is not None and until is not None and until < since:
            raise ApiError(400, "until must not be before since", param="until")
        priced = sorted((m for m in self.gw.registry if m.priced),
                        key=lambda m: (-(m.output_price or 0.0), -(m.input_price or 0.0), m.name))
        reference = req.query.get("reference") or None
        if reference is not None and self.gw.registry.get(reference) is None:
            raise ApiError(400, f"reference: unknown model {reference!r}", param="reference")
        out: dict[str, Any] = {"tenant": req.tenant, "since": since, "until": until,
                               "reference_models": [m.name for m in priced]}
        for group in _COST_GROUPS:
            out["by_" + group] = await ledger.report([group], tenant=req.tenant, since=since, until=until)
        totals: dict[str, Any] = dict.fromkeys(_TOTAL_KEYS, 0)
        totals["cost_usd"] = None
        for row in out["by_model"]:
            for k in _TOTAL_KEYS:
                totals[k] += row[k] or 0
            if row["cost_usd"] is not None:
                totals["cost_usd"] = (totals["cost_usd"] or 0.0) + row["cost_usd"]
        out["totals"] = totals
        out["savings"] = (await ledger.savings(reference, tenant=req.tenant, since=since, until=until)
                          if reference is not None else None)
        return out

    # -- per-user limits ---------------------------------------------------------------------
    async def limits(self, req: Request) -> dict[str, Any]:
        gw, tenant, now = self.gw, req.tenant, time.time()
        local = gw.agent.user_limits
        max_runs = getattr(local, "max_concurrent_runs", None)
        rpm = getattr(local, "requests_per_minute", None)
        recent = await gw.store.fetchall(
            "SELECT user, SUM(CASE WHEN at >= ? THEN 1 ELSE 0 END), COUNT(*), MAX(at) FROM usage"
            " WHERE tenant = ? AND at >= ? GROUP BY user",
            (now - 60, tenant, now - 3600))
        sessions = await gw.store.fetchall(
            "SELECT user, COUNT(*), MAX(updated_at) FROM sessions WHERE tenant = ? AND updated_at >= ? GROUP BY user",
            (tenant, now - 3600))
        users: dict[str, dict[str, Any]] = {}
        for user, minute, hour, last in recent:
            users[user] = {"user": user, "completions_last_minute": int(minute or 0), "completions_last_hour": hour,
                           "sessions": 0, "last_seen": last}
        for user, count, last in sessions:
            u = users.setdefault(user, {"user": user, "completions_last_minute": 0, "completions_last_hour": 0,
                                        "sessions": 0, "last_seen": last})
            u["sessions"] = count
            u["last_seen"] = max(u["last_seen"] or 0, last or 0)
        for u in users.values():
            # Runs in flight are known to this worker's own limiter only (None with shared state in Redis).
            u["runs_in_flight"] = local.in_flight(tenant, u["user"]) if isinstance(local, UserLimits) else None
        rows = sorted(users.values(), key=lambda u: -(u["last_seen"] or 0))
        return {"tenant": tenant, "max_concurrent_runs": max_runs, "requests_per_minute": rpm,
                "shared": not isinstance(local, UserLimits), "users": rows}
