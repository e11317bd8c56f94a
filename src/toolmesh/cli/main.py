"""The ``toolmesh`` command line (IF-2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from toolmesh import __version__
from toolmesh.cli.bench import bench_app
from toolmesh.cli.common import EXIT_FAILED, EXIT_OK, config_path, emit_json, fail, home, load, run_async
from toolmesh.cli.migrate import migrate_command
from toolmesh.cli.reason import reason_command
from toolmesh.errors import (
    ConfigError,
    InvalidArgumentsError,
    ServerNotFoundError,
    ToolmeshError,
    ToolNotFoundError,
)

app = typer.Typer(
    name="toolmesh",
    help="A production runtime for LLM tool calling over MCP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
servers_app = typer.Typer(help="Configured MCP servers: list, status, test.", no_args_is_help=True)
tools_app = typer.Typer(help="Tools of the configured servers.", no_args_is_help=True)
app.add_typer(servers_app, name="servers")
app.add_typer(tools_app, name="tools")
keys_app = typer.Typer(help="Gateway API keys: create, revoke.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML/TOML toolmesh config or mcpServers JSON (default: bundled demo)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"toolmesh {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """toolmesh: hub, agent runtime and gateway for MCP tools."""


# -- servers --------------------------------------------------------------------------
async def _check_all(cfg_servers: dict[str, Any], check: bool) -> list[dict[str, Any]]:
    from toolmesh.hub import Hub

    hub = Hub()
    try:
        rows: list[dict[str, Any]] = []
        enabled = [c for c in cfg_servers.values() if c.enabled]
        reports = {}
        if check:
            import asyncio

            results = await asyncio.gather(*(hub.test_connection(c) for c in enabled))
            reports = {r["name"]: r for r in results}
        for c in cfg_servers.values():
            row: dict[str, Any] = {"name": c.name, "transport": c.transport}
            if not c.enabled:
                row["status"] = "disabled"
            elif not check:
                row["status"] = "unchecked"
            else:
                r = reports[c.name]
                row["status"] = "active" if r["ok"] else "error"
                row.update({k: r.get(k) for k in ("protocol", "tool_count", "latency_ms", "error")})
            rows.append(row)
        return rows
    finally:
        await hub.aclose()


@servers_app.command("list")
def servers_list(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="connect to each server to report status")] = True,
) -> None:
    """List configured servers with their transport and status (active / error / disabled)."""
    cfg = load(config, as_json=as_json)
    rows = run_async(_check_all(cfg.servers, check))
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "transport", "status", "protocol", "tools", "latency ms", "error")
    for r in rows:
        style = {"active": "green", "error": "red"}.get(r["status"], "yellow")
        table.add_row(r["name"], r["transport"], f"[{style}]{r['status']}[/]", str(r.get("protocol") or ""),
                      str(r.get("tool_count") or ""), str(r.get("latency_ms") or ""), str(r.get("error") or ""))
    Console().print(table)


@servers_app.command("status")
def servers_status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Connect to every server and report protocol, tool count and latency."""
    servers_list(config=config, as_json=as_json, check=True)


@servers_app.command("test")
def servers_test(
    name: Annotated[str, typer.Argument(help="server name")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Test one server's connection (latency, tool count); exit 1 when it fails."""
    cfg = load(config, as_json=as_json)
    if name not in cfg.servers:
        fail(f"no server {name!r} in the configuration (have: {', '.join(cfg.servers) or 'none'})", as_json=as_json)

    async def go() -> dict[str, Any]:
        from toolmesh.hub import Hub

        async with Hub() as hub:
            return await hub.test_connection(cfg.servers[name])

    report = run_async(go())
    if as_json:
        emit_json(report)
    else:
        for k, v in report.items():
            typer.echo(f"{k:>12}: {v}")
    raise typer.Exit(EXIT_OK if report["ok"] else EXIT_FAILED)


# -- tools ----------------------------------------------------------------------------
@tools_app.command("list")
def tools_list(
    config: ConfigOpt = None,
    server: Annotated[str | None, typer.Option("--server", "-s", help="only this server")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="openai | anthropic | mcp")] = "mcp",
    as_json: JsonOpt = False,
) -> None:
    """List tool definitions, namespaced per server, in OpenAI, Anthropic or MCP format."""
    if fmt not in ("openai", "anthropic", "mcp"):
        fail(f"--format must be openai, anthropic or mcp, not {fmt!r}", as_json=as_json)
    cfg = load(config, as_json=as_json)
    if server is not None and server not in cfg.servers:
        fail(f"no server {server!r} in the configuration (have: {', '.join(cfg.servers) or 'none'})", as_json=as_json)

    async def go() -> list[dict[str, Any]]:
        from toolmesh.hub import Hub

        async with Hub() as hub:
            await hub.register_many(cfg.servers)
            if fmt == "openai":
                return await hub.to_openai_tools(server=server)
            if fmt == "anthropic":
                return await hub.to_anthropic_tools(server=server)
            return [{k: v for k, v in t.items() if not k.startswith("_")}
                    for t in await hub.list_tools(server=server)]

    try:
        tools = run_async(go())
    except ToolmeshError as exc:
        fail(str(exc), code=EXIT_FAILED, as_json=as_json)
    if as_json:
        emit_json(tools)
        return
    for t in tools:
        name = t.get("name") or t.get("function", {}).get("name")
        desc = t.get("description") or t.get("function", {}).get("description") or ""
        typer.echo(f"{name:40} {desc.splitlines()[0] if desc else ''}")


# -- call -----------------------------------------------------------------------------
@app.command("call")
def call(
    server: Annotated[str, typer.Argument(help="server name")],
    tool: Annotated[str, typer.Argument(help="tool name (as the server names it)")],
    arguments: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    config: ConfigOpt = None,
    timeout: Annotated[float | None, typer.Option("--timeout", "-t", help="seconds")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Call one tool. Exit 0 when ok, 1 when the tool (or server) failed, 2 for usage errors."""
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as exc:
        fail(f"arguments are not valid JSON: {exc}", as_json=as_json)
    if not isinstance(args, dict):
        fail("arguments must be a JSON object", as_json=as_json)
    if timeout is not None and timeout <= 0:
        fail("--timeout must be positive", as_json=as_json)
    cfg = load(config, as_json=as_json)
    if server not in cfg.servers:
        fail(f"no server {server!r} in the configuration (have: {', '.join(cfg.servers) or 'none'})", as_json=as_json)

    async def go() -> dict[str, Any]:
        from toolmesh.hub import Hub

        async with Hub() as hub:
            await hub.register(cfg.servers[server])
            result = await hub.call_tool(server, tool, args, timeout=timeout)
            return result.to_dict()

    try:
        out = run_async(go())
    except (ToolNotFoundError, InvalidArgumentsError, ServerNotFoundError, ConfigError) as exc:
        fail(str(exc), as_json=as_json, error_type=type(exc).__name__)
    except ToolmeshError as exc:
        fail(str(exc), code=EXIT_FAILED, as_json=as_json, error_type=type(exc).__name__,
             content=[], structured=None, latency_ms=None)
    if as_json:
        emit_json(out)
    else:
        from toolmesh.hub.render import result_to_text

        typer.echo(result_to_text({"content": out["content"], "structuredContent": out["structured"],
                                   "isError": not out["ok"]}))
        typer.echo(f"({out['latency_ms']} ms)", err=True)
    raise typer.Exit(EXIT_OK if out["ok"] else EXIT_FAILED)


# -- chat -----------------------------------------------------------------------------
@app.command("chat")
def chat(
    question: Annotated[str | None, typer.Argument(help="one question; omit for an interactive chat")] = None,
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model or deployment name")] = None,
    user: Annotated[str, typer.Option("--user", help="user id (sessions, limits, budgets)")] = "cli",
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    conversation: Annotated[str | None, typer.Option("--conversation", help="continue a conversation")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the agent: the model chooses tools, the Hub runs them in parallel, you get the answer."""
    from toolmesh.cli.chat import run_chat

    if question is not None and not question.strip():
        fail("the question is empty", as_json=as_json)
    cfg = load(config, as_json=as_json)
    try:
        code = run_async(run_chat(cfg, question, model=model, as_json=as_json, user=user, tenant=tenant,
                                  conversation=conversation))
    except ConfigError as exc:
        fail(str(exc), as_json=as_json)
    except ToolmeshError as exc:
        fail(str(exc), code=EXIT_FAILED, as_json=as_json, error_type=type(exc).__name__)
    raise typer.Exit(code)


# -- reason ---------------------------------------------------------------------------
app.command("reason")(reason_command)
app.command("migrate")(migrate_command)


# -- eval -----------------------------------------------------------------------------
@app.command("eval")
def eval_(
    tasks: Annotated[str | None, typer.Option(
        "--tasks", help="math,code,qa,shop (comma-separated) or FILE.jsonl; shop runs in --mode agent")] = None,
    models: Annotated[str | None, typer.Option("--models", help="comma-separated model/deployment names")] = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="single | reason | both | agent (tools; default for --tasks shop)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="samples per task set")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="samples in flight")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="task generation / selection seed")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="run id (or run directory) to continue")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | md | html")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="runs directory (default $TOOLMESH_HOME/eval)")] = None,
    fail_under: Annotated[float | None, typer.Option("--fail-under", help="exit 1 if any accuracy is below")] = None,
    config: ConfigOpt = None,
) -> None:
    """Measure models on task sets: accuracy (95% CI), errors, latency, tokens, cost; single call vs reasoning."""
    from toolmesh.cli.eval import run_eval_command

    raise typer.Exit(run_eval_command(config_path=config, tasks=tasks, models=models, mode=mode, limit=limit,
                                      concurrency=concurrency, seed=seed, resume=resume, fmt=fmt, out=out,
                                      fail_under=fail_under))


# -- demo / bench ---------------------------------------------------------------------
@app.command("demo")
def demo(
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="print the demo's YAML config (a starting point for yours) and exit")] = False,
    hub_only: Annotated[bool, typer.Option("--hub-only", help="only the Hub: fixed tool calls, no model")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the reference scenario: the model picks the tools, the Hub runs them in parallel, an answer.

    Offline: the five bundled demo servers and the embedded model; no `llm:` section or API key needed.

    The first run reads the model's fixed prompt and saves its state under $TOOLMESH_HOME; later runs load it.

    --json prints {question, answer, tool_calls, usage, cost_usd, elapsed_ms, model}.
    """
    from toolmesh.cli import demo as demo_mod

    if print_config:
        typer.echo(demo_mod.config_yaml(), nl=False)
        return
    if hub_only:
        raise typer.Exit(run_async(demo_mod.run(as_json=as_json)))
    try:
        code = run_async(demo_mod.run_agent(as_json=as_json))
    except ToolmeshError as exc:
        fail(str(exc), code=EXIT_FAILED, as_json=as_json, error_type=type(exc).__name__)
    raise typer.Exit(code)


# -- gateway ----------------------------------------------------------------------------
@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="toolmesh config file (servers, llm, gateway...); default: $TOOLMESH_CONFIG, else the "
                               "bundled demo (its five servers, the embedded model)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (default gateway.host or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default gateway.port or 8080)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="worker processes")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="no API keys (local development; loopback only)")] = False,
) -> None:
    """Run the gateway: OpenAI-compatible API, MCP endpoints, admin API, /metrics."""
    from toolmesh.gateway.run import serve as run_gateway

    config = config_path(config)
    if config is None:
        # Like every other command: no config means the bundled demo. The workers read a file, so
        # it is written under $TOOLMESH_HOME (also a starting point to copy).
        from toolmesh.cli import demo as demo_mod

        config = home() / "demo-gateway.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(demo_mod.config_yaml(), encoding="utf-8")
        typer.echo(f"no --config or $TOOLMESH_CONFIG: serving the bundled demo ({config})", err=True)
    if not config.exists():
        fail(f"config file {str(config)!r} does not exist")
    overrides: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    if no_auth:
        overrides["auth"] = False
    try:
        run_gateway(str(config), overrides)
    except ConfigError as exc:
        fail(str(exc))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="tenant the key belongs to")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="the gateway's config file (names the store); default: $TOOLMESH_CONFIG, else the "
                               "bundled demo's (the store under $TOOLMESH_HOME)")] = None,
    scopes: Annotated[str, typer.Option("--scopes", help="comma-separated: chat, mcp, admin")] = "chat,mcp",
    name: Annotated[str | None, typer.Option("--name", help="a label for the key")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from toolmesh.agent.factory import store_location
    from toolmesh.gateway.auth import create_key, parse_scopes
    from toolmesh.store.sqlite import Store

    cfg = load(config, as_json=as_json)
    try:
        scope_list = parse_scopes(scopes)
    except ValueError as exc:
        fail(str(exc), as_json=as_json)
    if not tenant.strip():
        fail("--tenant must not be empty", as_json=as_json)

    async def go() -> dict[str, Any]:
        store = Store(store_location(cfg))
        try:
            return await create_key(store, tenant, scope_list, name)
        finally:
            await store.aclose()

    made = run_async(go())
    if as_json:
        emit_json(made)
    else:
        typer.echo(made["key"])
        typer.echo(f"tenant {tenant}, scopes {','.join(scope_list)} (shown once; only its hash is stored)", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key to revoke")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="the gateway's config file (names the store); default: $TOOLMESH_CONFIG, else the "
                               "bundled demo's (the store under $TOOLMESH_HOME)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key (gateways stop accepting it within gateway.key_cache_ttl seconds)."""
    from toolmesh.agent.factory import store_location
    from toolmesh.gateway.auth import hash_key
    from toolmesh.store.sqlite import Store

    cfg = load(config, as_json=as_json)

    async def go() -> bool:
        store = Store(store_location(cfg))
        try:
            return bool(await store.revoke_api_key(hash_key(key)))
        finally:
            await store.aclose()

    revoked = run_async(go())
    if as_json:
        emit_json({"ok": revoked})
    elif revoked:
        typer.echo("revoked")
    if not revoked:
        fail("no such live key", code=EXIT_FAILED, as_json=False)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover - python -m toolmesh.cli.main
    run()

