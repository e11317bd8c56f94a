"""Shared CLI plumbing: config loading, JSON output, exit codes, the event loop."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import orjson
import typer

from toolmesh.errors import ConfigError
from toolmesh.hub.configfile import ToolmeshConfig, load_config, parse_config

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (tool error, unreachable server)
EXIT_USAGE = 2  # bad invocation, bad config, unknown server/tool, invalid arguments


def home() -> Path:
    """Where toolmesh keeps state: ``$TOOLMESH_HOME`` or ``~/.toolmesh`` (never the working directory)."""
    return Path(os.environ.get("TOOLMESH_HOME") or Path.home() / ".toolmesh")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when available (it is a dependency on Linux)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    sys.stdout.flush()


def fail(message: str, *, code: int = EXIT_USAGE, as_json: bool = False, **extra: Any) -> NoReturn:
    """Report an error (stderr, and a JSON object on stdout with ``--json``) and exit."""
    if as_json:
        emit_json({"ok": False, "error": message, **extra})
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def config_path(config: Path | None) -> Path | None:
    """The config file named by ``--config``, else by ``$TOOLMESH_CONFIG``; None when neither is."""
    return config or (Path(p) if (p := os.environ.get("TOOLMESH_CONFIG")) else None)


def load(config: Path | None, *, as_json: bool = False) -> ToolmeshConfig:
    """The config named by ``--config``, ``$TOOLMESH_CONFIG``, or the bundled demo configuration."""
    path = config_path(config)
    try:
        if path is None:
            from toolmesh.servers.demo import demo_config

            return parse_config(demo_config(), "<bundled demo config>")
        if not path.exists():
            fail(f"config file {str(path)!r} does not exist", as_json=as_json)
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), as_json=as_json)
