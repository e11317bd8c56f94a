"""``toolmesh migrate``: bring the configured store's schema up to date, then exit.

The gateway migrates at start-up too (under a lock, so concurrent replicas are safe), but a
deployment runs this once before a rollout (the Helm chart's hook Job, the compose ``migrate``
service): a failed migration then stops the rollout instead of every new replica, and no
replica starts on a half-migrated schema.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from toolmesh.cli.common import EXIT_FAILED, emit_json, fail, load, run_async
from toolmesh.errors import StateUnavailableError
from toolmesh.hub.configfile import ToolmeshConfig

__all__ = ["migrate_command", "store_target"]


def store_target(config: ToolmeshConfig) -> str:
    """What the gateway opens for this configuration (``store.url``, ``store.path`` or the default file)."""
    from toolmesh.agent.factory import store_location

    return str(store_location(config))


async def migrate(target: str, wait: float) -> dict[str, Any]:
    """Open the store (which migrates it) and close it; retry an unreachable database for ``wait`` s."""
    from toolmesh.store.schema import SCHEMA_VERSION
    from toolmesh.store.sqlite import Store

    deadline = time.monotonic() + wait
    delay = 0.25
    while True:
        store = Store(target)
        try:
            async with store:
                return {"ok": True, "engine": store.engine, "store": store.where, "schema_version": SCHEMA_VERSION}
        except StateUnavailableError:
            # A database still starting (compose, a fresh cluster): wait for it, up to --wait.
            if time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def migrate_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="the gateway's config file (names the store)")
                      ] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="seconds to wait for an unreachable database")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")] = False,
) -> None:
    """Create or upgrade the store's schema (SQLite file or PostgreSQL), then exit.

    Safe to run while gateways serve and from several processes at once. Exit status 0 when the
    schema is current, 1 when the database stayed unreachable or refused, 2 on a bad config.
    """
    from toolmesh.errors import ConfigError

    cfg = load(config, as_json=as_json)
    try:
        target = store_target(cfg)
    except ConfigError as exc:
        fail(str(exc), as_json=as_json)
    try:
        result = run_async(migrate(target, wait))
    except Exception as exc:  # unreachable, refused, or the driver's own error (sqlite3 / psycopg): named
        fail(f"migration failed: {type(exc).__name__}: {exc}", code=EXIT_FAILED, as_json=as_json,
             error_type=type(exc).__name__)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{result['engine']} store {result['store']}: schema at version {result['schema_version']}")
