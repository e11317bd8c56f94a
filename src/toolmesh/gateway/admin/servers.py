"""Admin API: upstream servers (list, status, register, unregister, test) and routing rules."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from toolmesh.errors import ConfigError, ServerNotFoundError, validation_message
from toolmesh.gateway.admin.request import Request
from toolmesh.gateway.admin.sync import Doc, Overlay
from toolmesh.gateway.admin.upstreams import RESOLVER_KEY, check_upstream_url
from toolmesh.gateway.errors import ApiError
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.handle import ServerHandle

__all__ = ["ServersAdmin"]

#: What ``PATCH /admin/servers/{name}`` may change: how results are shared, not the connection.
PATCHABLE = ("cache", "coalesce")


class ServersAdmin:
    """``/admin/servers…`` and ``/admin/routing…`` for one worker (changes go through the overlay)."""

    def __init__(self, overlay: Overlay) -> None:
        self.overlay = overlay
        self.gw = overlay.gw

    # -- servers ---------------------------------------------------------------------------
    def entry(self, tenant: str, handle: ServerHandle) -> dict[str, Any]:
        """What the admin API shows of one server: status, health, circuit, config (secrets masked)."""
        out = handle.snapshot()
        out["source"] = self.overlay.source(tenant, handle.name)
        out["health"] = handle.health.snapshot()
        out["circuit"] = handle.circuit.snapshot()
        out["startup_check"] = self.gw.upstreams_tried.get(f"{tenant}/{handle.name}")
        out["config"] = handle.config.redacted()
        return out

    def _handle(self, req: Request, name: str) -> ServerHandle:
        handle = self.gw.hub.servers(tenant=req.tenant).get(name)
        if handle is None:
            raise ApiError(404, f"no server {name!r} for tenant {req.tenant!r}")
        return handle

    async def list(self, req: Request) -> dict[str, Any]:
        servers = self.gw.hub.servers(tenant=req.tenant)
        return {"tenant": req.tenant, "servers": [self.entry(req.tenant, h) for _, h in sorted(servers.items())]}

    async def get(self, req: Request, name: str) -> dict[str, Any]:
        return self.entry(req.tenant, self._handle(req, name))

    async def test(self, req: Request, name: str) -> dict[str, Any]:
        try:
            return await self.gw.hub.test_connection(name, tenant=req.tenant)
        except ServerNotFoundError:
            raise ApiError(404, f"no server {name!r} for tenant {req.tenant!r}") from None

    async def create(self, req: Request) -> tuple[int, dict[str, Any]]:
        body = await req.json()
        cfg = await self.validate(body)
        tenant = req.tenant
        if cfg.name in self.gw.hub.servers(tenant=tenant):
            raise ApiError(409, f"server {cfg.name!r} already exists for tenant {tenant!r}", param="name")
        raw = cfg.model_dump(mode="json", exclude={"server"})
        config_names = set(self.gw.config.tenants.get(tenant, {}))

        def mutate(doc: Doc) -> None:
            entries = doc.setdefault("servers", {}).setdefault(tenant, {})
            # Checked again inside the transaction: another worker may have just added it.
            if entries.get(cfg.name) is not None or (cfg.name not in entries and cfg.name in config_names):
                raise ApiError(409, f"server {cfg.name!r} already exists for tenant {tenant!r}", param="name")
            entries[cfg.name] = raw

        await self.overlay.change(mutate)
        return 201, self.entry(tenant, self._handle(req, cfg.name))

    async def update(self, req: Request, name: str) -> dict[str, Any]:
        """Change a server's ``cache`` / ``coalesce`` sections, on every worker. The server is
        re-registered with them (its cached results go) and from then on kept in the overlay
        like one registered through the API."""
        body = await req.json()
        unknown = sorted(set(body) - set(PATCHABLE))
        if unknown or not body:
            named = f" (not {', '.join(unknown)})" if unknown else ""
            raise ApiError(400, f"only {', '.join(PATCHABLE)} can be changed here{named}",
                           param=unknown[0] if unknown else None)
        handle = self._handle(req, name)
        if handle.config.server is not None:
            raise ApiError(400, "in-process servers cannot be changed over HTTP", param="transport")
        raw = handle.config.model_dump(mode="json", exclude={"server", "name"})
        cfg = await self.validate({**raw, **body, "name": name})
        tenant = req.tenant
        new = cfg.model_dump(mode="json", exclude={"server"})

        def mutate(doc: Doc) -> None:
            doc.setdefault("servers", {}).setdefault(tenant, {})[name] = new

        await self.overlay.change(mutate)
        return self.entry(tenant, self._handle(req, name))

    async def delete(self, req: Request, name: str) -> dict[str, Any]:
        tenant = req.tenant
        config_names = set(self.gw.config.tenants.get(tenant, {}))

        def mutate(doc: Doc) -> None:
            entries = doc.setdefault("servers", {}).setdefault(tenant, {})
            exists = entries[name] is not None if name in entries else name in config_names
            if not exists:
                raise ApiError(404, f"no server {name!r} for tenant {tenant!r}")
            entries[name] = None

        await self.overlay.change(mutate)
        return {"deleted": name, "tenant": tenant}

    async def validate(self, body: dict[str, Any]) -> ServerConfig:
        """A :class:`ServerConfig` from a request body; 400 naming the first bad field, or an
        upstream URL the gateway may not be sent to (SSRF guard: :mod:`.upstreams`)."""
        if "server" in body or body.get("transport") == "inprocess":
            raise ApiError(400, "in-process servers cannot be registered over HTTP", param="transport")
        try:
            cfg = ServerConfig.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            raise ApiError(400, f"{field or 'body'}: {validation_message(first, ServerConfig)}", param=field) from None
        if cfg.transport == "stdio" and not self.gw.settings.admin_stdio:
            raise ApiError(403, "registering stdio servers runs commands on the gateway host and is off "
                                "(set gateway.admin_stdio: true to allow it)", param="command")
        if cfg.url is not None:
            await check_upstream_url(cfg.url, self.gw.settings, self.gw.extras.get(RESOLVER_KEY))
        return cfg

    # -- routing -----------------------------------------------------------------------------
    def routing(self) -> dict[str, Any]:
        snap = getattr(self.gw.llm, "snapshot", None)
        if snap is None:
            raise ApiError(404, "this gateway's LLM client has no routing rules")
        out: dict[str, Any] = snap()
        out["changed_at_run_time"] = self.overlay.doc.get("routing") is not None
        return out

    async def set_rule(self, req: Request, scenario: str | None, rule: Any | None) -> dict[str, Any]:
        """Add/replace (``rule``) or remove (``None``) one scenario rule, everywhere."""
        router = self.gw.llm
        if getattr(router, "set_rules", None) is None:
            raise ApiError(404, "this gateway's LLM client has no routing rules")
        if not scenario or not isinstance(scenario, str) or "/" in scenario:
            raise ApiError(400, "scenario must be a non-empty name", param="scenario")
        current = {n: {"strategy": r.strategy, "models": list(r.models)} for n, r in router.rules.items()}
        if rule is None and scenario not in current:
            raise ApiError(404, f"no routing rule {scenario!r}")
        new = dict(current)
        if rule is None:
            del new[scenario]
        else:
            new[scenario] = rule
        before = router.rules
        try:
            router.set_rules(new)  # validates (strategy names, known models) before anything is stored
        except ConfigError as exc:
            param = _rule_param(exc.key, scenario)
            raise ApiError(400, str(exc), param=param) from None
        normal = {n: {"strategy": r.strategy, "models": list(r.models)} for n, r in router.rules.items()}
        try:
            await self.overlay.change(lambda doc: doc.__setitem__("routing", normal))
        except BaseException:
            router.set_rules(before)
            raise
        return self.routing()


def _rule_param(key: str | None, scenario: str) -> str:
    """``rules.peak.strategy`` → ``strategy`` (the field of the request body)."""
    if not key:
        return "rule"
    prefix = f"rules.{scenario}"
    if key.startswith(prefix + "."):
        return key[len(prefix) + 1:]
    return "rule" if key == prefix else key
