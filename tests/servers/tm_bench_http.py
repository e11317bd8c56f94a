"""Speed check (not a test): sequential ``tools/call`` of an async ``add`` over HTTP.

Compares toolmesh's Streamable HTTP frontend with the SDK's own ``streamable_http_app()``
(both on uvicorn + httptools + uvloop), using a plain aiohttp keep-alive client.
Usage: ``python tests/servers/tm_bench_http.py [N]``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import aiohttp
import orjson
import uvloop

SERVER_SRC = """
import sys
from mcp.server import MCPServer
mcp = MCPServer("bench")
@mcp.tool()
async def add(a: int, b: int) -> int:
    return a + b
port = int(sys.argv[2])
if sys.argv[1] == "toolmesh":
    from toolmesh.servers import serve
    serve(mcp, "http", port=port)
else:
    import uvicorn
    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning",
                http="httptools", loop="uvloop", access_log=False)
"""
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "add",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(port: int, n: int) -> tuple[float, float, float]:
    url = f"http://127.0.0.1:{port}/mcp"
    lat: list[float] = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 200):
            params = {"name": "add", "arguments": {"a": i, "b": 1}, "_meta": META}
            body = orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params})
            t = time.perf_counter()
            async with s.post(url, data=body, headers=HEADERS) as r:
                data = await r.read()
            if i >= 200:
                lat.append(time.perf_counter() - t)
            assert b'"isError":false' in data, data
    lat.sort()
    return n / sum(lat), lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    for name in ("toolmesh", "sdk"):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER_SRC, name, str(port)])
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            rate, p50, p99 = uvloop.run(run(port, n if name == "toolmesh" else max(500, n // 3)))
            print(f"{name:9s} {rate:7.0f} calls/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
