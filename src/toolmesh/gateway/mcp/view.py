"""What one MCP endpoint of the gateway shows: which upstreams, under which names (GW-2).

A :class:`View` is ``/mcp`` (every server of the caller's tenant) or ``/servers/{name}/mcp``
(a configured virtual server, or one upstream). Names:

* one upstream (``/servers/{name}/mcp``): tools, prompts and resources keep their own names;
* ``/mcp`` always prefixes, so names do not change when a tenant gains a second server;
* several, ``prefix`` on (the default): tools and prompts are ``server__name`` (the Hub's
  collision-free, reversible :class:`~toolmesh.hub.naming.ToolNameMap`);
* several, ``prefix: false``: names are kept unless two upstreams share one; the colliding
  names get the prefix and the collision is reported (``View.collisions``).

Resource URIs are kept unless two upstreams expose the same URI; each of those is then
served as ``{server}+{uri}``. ``include`` / ``exclude`` are shell patterns on served names.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from toolmesh.hub import Hub
from toolmesh.hub.naming import ToolNameMap

log = logging.getLogger("toolmesh.gateway.mcp.endpoints")

_KINDS = ("tools", "prompts")


class Names:
    """Served name ↔ (server, upstream name) for one kind (tools or prompts) of a view."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "single" | "prefix" | "auto"
        self.prefixed = ToolNameMap(prefixed=True)
        self.routes: dict[str, tuple[str, str]] = {}

    def rebuild(self, listing: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
        """Served entries for ``{server: [upstream entries]}`` and the names that collided."""
        counts: dict[str, int] = {}
        if self.mode == "auto":
            for items in listing.values():
                for it in items:
                    counts[it["name"]] = counts.get(it["name"], 0) + 1
        routes: dict[str, tuple[str, str]] = {}
        served: list[dict[str, Any]] = []
        collided: list[str] = []
        for server, items in listing.items():
            for it in items:
                name = it["name"]
                if self.mode == "single" or (self.mode == "auto" and counts[name] == 1):
                    exposed = name
                else:
                    if self.mode == "auto":
                        collided.append(f"{server}/{name}")
                    exposed = self.prefixed.add(server, name)
                routes[exposed] = (server, name)
                served.append(it if exposed == name else {**it, "name": exposed})
        self.routes = routes
        return served, collided

    def route(self, exposed: str) -> tuple[str, str] | None:
        return self.routes.get(exposed)


class View:
    """One MCP endpoint's window onto a tenant's upstream servers."""

    def __init__(
        self,
        hub: Hub,
        tenant: str,
        name: str | None,
        servers: list[str],
        *,
        prefix: bool | None = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        self.hub = hub
        self.tenant = tenant
        self.name = name
        self.servers = servers
        # ``/mcp`` passes prefix=True so names stay stable however many servers a tenant has.
        self.single = servers[0] if len(servers) == 1 and prefix is not True else None
        mode = "single" if self.single else ("auto" if prefix is False else "prefix")
        self.names = {k: Names(mode) for k in _KINDS}
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._allowed: dict[str, bool] = {}
        self.collisions: list[str] = []
        self.uri_routes: dict[str, tuple[str, str]] = {}
        self.templates: list[tuple[re.Pattern[str], str]] = []
        self._locks = {k: asyncio.Lock() for k in (*_KINDS, "resources")}

    # -- filters -------------------------------------------------------------------------
    def allowed(self, name: str) -> bool:
        """Whether a served tool/prompt name passes include/exclude (cached: called per call)."""
        ok = self._allowed.get(name)
        if ok is None:
            ok = (not self.include or any(fnmatchcase(name, p) for p in self.include)) and not any(
                fnmatchcase(name, p) for p in self.exclude
            )
            if len(self._allowed) < 100_000:
                self._allowed[name] = ok
        return ok

    # -- listings ------------------------------------------------------------------------
    async def _gather(self, kind: str) -> dict[str, list[dict[str, Any]]]:
        hub_kind = {"resourceTemplates": "resource_templates"}.get(kind, kind)
        out: dict[str, list[dict[str, Any]]] = {}
        handles = [self.hub.server(s, tenant=self.tenant) for s in self.servers]
        results = await asyncio.gather(*(h.list(hub_kind) for h in handles), return_exceptions=True)
        for server, res in zip(self.servers, results, strict=True):
            if isinstance(res, BaseException):
                if self.single is not None:
                    raise res
                log.warning("listing %s of %s failed: %s", kind, server, res)
                continue
            out[server] = res
        return out

    async def served(self, kind: str) -> list[dict[str, Any]]:
        """Served ``tools`` or ``prompts`` (names rewritten, filters applied)."""
        async with self._locks[kind]:
            listing = await self._gather(kind)
            served, collided = self.names[kind].rebuild(listing)
        if collided and collided != self.collisions:
            log.warning("view %s: names shared by several servers, served prefixed: %s", self.name or "/mcp", collided)
        if kind == "tools":
            self.collisions = collided
        return [e for e in served if self.allowed(e["name"])]

    async def route(self, kind: str, exposed: str) -> tuple[str, str] | None:
        """(server, upstream name) of a served name; lists once on a miss; None if unknown or filtered."""
        if not self.allowed(exposed):
            return None
        if self.single is not None:
            return self.single, exposed
        names = self.names[kind]
        found = names.route(exposed)
        if found is None:
            await self.served(kind)
            found = names.route(exposed)
        return found

    async def resources(self) -> list[dict[str, Any]]:
        async with self._locks["resources"]:
            listing = await self._gather("resources")
            seen: dict[str, int] = {}
            for items in listing.values():
                for it in items:
                    seen[it["uri"]] = seen.get(it["uri"], 0) + 1
            routes: dict[str, tuple[str, str]] = {}
            served: list[dict[str, Any]] = []
            for server, items in listing.items():
                for it in items:
                    uri = it["uri"]
                    exposed = uri if seen[uri] == 1 or self.single else f"{server}+{uri}"
                    routes[exposed] = (server, uri)
                    served.append(it if exposed == uri else {**it, "uri": exposed})
            self.uri_routes = routes
        return served

    async def resource_templates(self) -> list[dict[str, Any]]:
        listing = await self._gather("resourceTemplates")
        patterns: list[tuple[re.Pattern[str], str]] = []
        served: list[dict[str, Any]] = []
        for server, items in listing.items():
            for it in items:
                patterns.append((_template_regex(it.get("uriTemplate", "")), server))
                served.append(it)
        self.templates = patterns
        return served

    async def route_uri(self, uri: str) -> tuple[str, str] | None:
        """(server, upstream URI) for a served URI."""
        if self.single is not None:
            return self.single, uri
        for attempt in range(2):
            found = self.uri_routes.get(uri)
            if found is not None:
                return found
            server, sep, rest = uri.partition("+")
            if sep and server in self.servers and (server, rest) in self.uri_routes.values():
                return server, rest
            for pattern, owner in self.templates:
                if pattern.fullmatch(uri):
                    return owner, uri
            if attempt == 0:
                await asyncio.gather(self.resources(), self.resource_templates())
        return None


def _template_regex(template: str) -> re.Pattern[str]:
    """A loose matcher for an RFC 6570 URI template (each ``{...}`` matches one or more characters)."""
    parts = re.split(r"\{[^}]*\}", template)
    return re.compile(".+".join(re.escape(p) for p in parts))
