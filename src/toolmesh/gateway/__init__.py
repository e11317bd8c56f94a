"""The gateway behind ``toolmesh serve``: MCP endpoints, an OpenAI-compatible API and an admin API.

Run it with :func:`serve` (what the CLI does), or mount :class:`GatewayApp` in any ASGI server::

    from toolmesh.gateway import GatewayApp
    from toolmesh.hub.configfile import load_config

    app = GatewayApp(load_config("gateway.yaml"))   # uvicorn.run(app, lifespan="on")

Layout: :mod:`~toolmesh.gateway.app` (edge checks, routing), :mod:`~toolmesh.gateway.state`
(what one worker shares), :mod:`~toolmesh.gateway.auth` (keys, scopes, edge limits),
:mod:`~toolmesh.gateway.config`, :mod:`~toolmesh.gateway.errors`, :mod:`~toolmesh.gateway.web`
(raw ASGI helpers), :mod:`~toolmesh.gateway.run` (uvicorn); one sub-package per surface:
:mod:`~toolmesh.gateway.mcp`, :mod:`~toolmesh.gateway.openai`, :mod:`~toolmesh.gateway.admin`,
:mod:`~toolmesh.gateway.ops`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolmesh.gateway.app import GatewayApp
    from toolmesh.gateway.auth import Principal, create_key, hash_key, parse_scopes
    from toolmesh.gateway.config import (
        GatewaySettings,
        LogSettings,
        OtelSettings,
        RateLimit,
        RateLimits,
        VirtualServer,
    )
    from toolmesh.gateway.errors import ApiError
    from toolmesh.gateway.run import create_app, resolve_settings, serve
    from toolmesh.gateway.state import Gateway

# Exported lazily (PEP 562): ``toolmesh keys ...`` imports toolmesh.gateway.auth, which must not
# load the whole gateway (the MCP SDK, the agent stack: seconds of imports) through this file.
_HOME = {
    "GatewayApp": "app",
    "Principal": "auth", "create_key": "auth", "hash_key": "auth", "parse_scopes": "auth",
    "GatewaySettings": "config", "LogSettings": "config", "OtelSettings": "config", "RateLimit": "config",
    "RateLimits": "config", "VirtualServer": "config",
    "ApiError": "errors",
    "create_app": "run", "resolve_settings": "run", "serve": "run",
    "Gateway": "state",
}

__all__ = [
    "ApiError",
    "Gateway",
    "GatewayApp",
    "GatewaySettings",
    "LogSettings",
    "OtelSettings",
    "Principal",
    "RateLimit",
    "RateLimits",
    "VirtualServer",
    "create_app",
    "create_key",
    "hash_key",
    "parse_scopes",
    "resolve_settings",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'toolmesh.gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"toolmesh.gateway.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
