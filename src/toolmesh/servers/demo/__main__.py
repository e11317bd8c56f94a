"""``python -m toolmesh.servers.demo NAME|all [--transport T] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from toolmesh.servers.demo import DEFAULT_PORT, NAMES, SERVERS, demo_config
from toolmesh.servers.demo.data import get_data


async def _serve_one(server: Any, transport: str, host: str, port: int) -> None:
    try:
        from toolmesh.servers import serve_async
    except ImportError:  # fall back on the SDK's own transports
        if transport == "stdio":
            await server.run_stdio_async()
        elif transport == "http":
            await server.run_streamable_http_async(host=host, port=port)
        elif transport == "sse":
            await server.run_sse_async(host=host, port=port)
        else:
            raise SystemExit("the websocket transport needs toolmesh.servers") from None
        return
    await serve_async(server, transport, host=host, port=port)  # type: ignore[arg-type]


async def _serve(names: list[str], transport: str, host: str, port: int) -> None:
    get_data()  # load (or build the cache) before accepting clients
    servers = [SERVERS[n]() for n in names]
    if transport != "stdio":
        for i, name in enumerate(names):
            print(f"{name}: {_url(transport, host, port + i)}", file=sys.stderr, flush=True)
    await asyncio.gather(*(_serve_one(s, transport, host, port + i) for i, s in enumerate(servers)))


def _url(transport: str, host: str, port: int) -> str:
    return str(demo_config(transport, host, port)["servers"][NAMES[0]]["url"])


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m toolmesh.servers.demo", description="Run a toolmesh demo MCP server.")
    ap.add_argument("name", choices=[*NAMES, "all"], help="which server ('all': every one, consecutive ports)")
    ap.add_argument("--transport", choices=["stdio", "http", "sse", "websocket"], default="stdio")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (the first port for 'all')")
    args = ap.parse_args(argv)
    if args.name == "all" and args.transport == "stdio":
        ap.error("'all' needs a network transport (http, sse or websocket): stdio serves one server")
    names = list(NAMES) if args.name == "all" else [args.name]
    coro = _serve(names, args.transport, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
