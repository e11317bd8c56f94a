"""Run the gateway: ``toolmesh serve --config FILE [--host H] [--port P] [--workers N] [--no-auth]``.

One worker runs in this process on uvloop. Several workers are uvicorn's supervisor
processes sharing one listening socket; each rebuilds the app from the config file named
in ``TOOLMESH_GATEWAY_CONFIG`` (with the command line's overrides in
``TOOLMESH_GATEWAY_OVERRIDES``), and they share the SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from toolmesh.agent.config import AgentConfig
from toolmesh.agent.factory import check_llm_section
from toolmesh.errors import ConfigError
from toolmesh.gateway.app import GatewayApp
from toolmesh.gateway.config import GatewaySettings
from toolmesh.gateway.gctune import tune_gc
from toolmesh.gateway.ops.logs import configure_logging
from toolmesh.gateway.ops.tracing import configure_tracing
from toolmesh.gateway.ops.workers import WORKERS_DIR_ENV, make_workers_dir, remove_workers_dir
from toolmesh.hub.configfile import ToolmeshConfig, load_config
from toolmesh.net.onewrite import OneWriteHttpToolsProtocol
from toolmesh.reasoning import ReasoningConfig
from toolmesh.servers.guard import is_loopback
from toolmesh.store.shared import StateSettings
from toolmesh.store.sql import StoreSettings

_CONFIG_ENV = "TOOLMESH_GATEWAY_CONFIG"
_OVERRIDES_ENV = "TOOLMESH_GATEWAY_OVERRIDES"


def resolve_settings(config: ToolmeshConfig, overrides: dict[str, Any]) -> GatewaySettings:
    """The ``gateway`` section with command-line overrides applied; refuses ``--no-auth`` off loopback.
    The other sections the workers read are checked here too, so a bad one stops ``serve`` at once."""
    section = {**config.section("gateway"), **{k: v for k, v in overrides.items() if v is not None}}
    settings = GatewaySettings.from_section(section, config.source)
    if not settings.auth and not is_loopback(settings.host):
        raise ConfigError(
            f"--no-auth is only allowed when binding to loopback (127.0.0.1/localhost/::1), not {settings.host!r}",
            key="gateway.auth",
        )
    # A bad `llm:`, `agent:`, `reasoning:`, `state:` or `store:` fails here, as a one-line error,
    # before any worker starts (a bad `reasoning:` would otherwise surface as the first run's 500).
    check_llm_section(config.section("llm"), config.source)
    AgentConfig.from_section(config.section("agent"), config.source)
    ReasoningConfig.from_section(config.section("reasoning"), config.source)
    StateSettings.from_section(config.section("state"), config.source)
    StoreSettings.from_section(config.section("store"), config.source)
    return settings


def create_app() -> GatewayApp:
    """App factory for worker processes (reads the environment set by :func:`serve`)."""
    path = os.environ[_CONFIG_ENV]
    overrides = orjson.loads(os.environ.get(_OVERRIDES_ENV, "{}"))
    config = load_config(path)
    settings = resolve_settings(config, overrides)
    _setup_observability(settings)
    app = GatewayApp(config, settings)
    tune_gc()  # this worker process is the gateway's: collect less often (see gctune)
    return app


def _setup_observability(settings: GatewaySettings) -> None:
    configure_logging(settings.log)
    configure_tracing(settings.otel)


def _uvicorn_options(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "http": OneWriteHttpToolsProtocol,
        "ws": "websockets-sansio",
        "lifespan": "on",
        "access_log": False,
        # X-Forwarded-* are not trusted (and the middleware costs every request); put the
        # client address in logs from the proxy in front instead.
        "proxy_headers": False,
        "log_config": None,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": int(settings.drain_timeout) or None,
        "timeout_keep_alive": 30,
    }


def serve(config_path: str, overrides: dict[str, Any]) -> None:
    """Blocking: serve until SIGINT/SIGTERM, then finish in-flight requests and stop."""
    import uvicorn

    config = load_config(config_path)
    settings = resolve_settings(config, overrides)
    _setup_observability(settings)
    if settings.workers > 1:
        os.environ[_CONFIG_ENV] = os.path.abspath(config_path)
        os.environ[_OVERRIDES_ENV] = orjson.dumps(overrides).decode()
        # The workers find each other here, so that one scrape shows all their totals.
        workers_dir = make_workers_dir(Path(os.environ.get("TOOLMESH_HOME") or Path.home() / ".toolmesh"))
        os.environ[WORKERS_DIR_ENV] = str(workers_dir)
        try:
            uvicorn.run(
                "toolmesh.gateway.run:create_app", factory=True, workers=settings.workers, loop="uvloop",
                **_uvicorn_options(settings),
            )
        finally:
            remove_workers_dir(workers_dir)
        return
    app = GatewayApp(config, settings)
    tune_gc()
    server = uvicorn.Server(uvicorn.Config(app, loop="none", **_uvicorn_options(settings)))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(server.serve())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(server.serve())
