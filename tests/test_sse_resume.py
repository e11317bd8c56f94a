"""SSE resumability through the gateway (2025-11-25, SEP-1699) with real clients and processes.

* The official SDK client calls a long tool through a small TCP proxy in front of the gateway;
  after the second progress notification every proxied connection is cut. The client resumes
  with ``Last-Event-ID`` (a GET through the proxy) and still gets every progress notification,
  once each, and the result.
* The Hub resumes an upstream's response stream whose connection was cut mid-call.
* Resumption answers clearly what it cannot do: an id from another worker or replica (409), an
  unknown or malformed id (410, 400), another session's id (410, never its events).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import ServerProcess, free_port
from gateway_support import Gateway, legacy_session
from toolmesh.hub import Hub, ServerConfig

FIXTURE = str(Path(__file__).parent / "servers" / "hub_fixture_server.py")
TM_ADD = str(Path(__file__).parent / "servers" / "tm_add_server.py")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    upstream = ServerProcess([sys.executable, FIXTURE, "http", str(port)], port).start()
    config = {"servers": {"fx": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}}}
    g = Gateway(tmp_path_factory.mktemp("gw-resume"), config, no_auth=True)
    try:
        yield g.start()
    finally:
        g.stop()
        upstream.stop()


class CuttingProxy:
    """Forwards 127.0.0.1 TCP connections to ``port``; :meth:`cut` aborts every open one."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.open: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.open |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.open -= {writer, up_writer}

    def cut(self) -> None:
        self.cuts += 1
        for w in list(self.open):
            w.transport.abort()  # an RST, as when a proxy or a NAT drops the connection
        self.open.clear()

    async def stop(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.anyio
async def test_official_client_resumes_a_cut_stream_mid_call(gw: Gateway) -> None:
    proxy = CuttingProxy(gw.port)
    port = await proxy.start()
    seen: list[float] = []
    try:
        http = httpx2.AsyncClient(timeout=30)
        url = f"http://127.0.0.1:{port}/servers/fx/mcp"
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                seen.append(p)
                if p == 2:
                    # Mid-call, with notifications still to come: every connection dies.
                    asyncio.get_running_loop().call_soon(proxy.cut)

            result = await client.call_tool("progress", {"steps": 6, "interval": 0.4}, progress_callback=on_progress)
            assert result.content[0].text == "done 6"  # type: ignore[union-attr]
    finally:
        await proxy.stop()
    assert proxy.cuts == 2  # the cut mid-call, and the one of stop()
    assert seen == [1, 2, 3, 4, 5, 6]  # none lost, none twice


@pytest.mark.anyio
async def test_hub_resumes_an_upstream_stream_cut_mid_call() -> None:
    # A toolmesh server (resumable streams) behind the proxy; the Hub is the client.
    port = free_port()
    upstream = ServerProcess([sys.executable, TM_ADD, "http", str(port)], port).start()
    proxy = CuttingProxy(port)
    front = await proxy.start()
    seen: list[float] = []

    def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append(p)
        if p == 2:
            asyncio.get_running_loop().call_soon(proxy.cut)

    try:
        async with Hub() as hub:
            await hub.register(ServerConfig(name="up", url=f"http://127.0.0.1:{front}/mcp", protocol="2025-11-25",
                                            retries=0))
            r = await hub.call_tool("up", "slow", {"steps": 5, "delay": 0.3}, timeout=20, on_progress=on_progress)
            assert r.ok and r.text == "done 5"
    finally:
        await proxy.stop()
        upstream.stop()
    assert proxy.cuts == 2 and seen == [1, 2, 3, 4, 5]  # the cut mid-call, and the one of stop()


def _event_ids(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("id: ")]


def _resume(url: str, h: dict[str, str], last: str) -> httpx.Response:
    return httpx.get(url, headers={**h, "accept": "text/event-stream", "last-event-id": last}, timeout=10)


def test_resume_replays_a_finished_stream_and_refuses_clearly(gw: Gateway) -> None:
    url = f"{gw.url}/servers/fx/mcp"
    h = legacy_session(url)
    call: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                            "params": {"name": "progress", "arguments": {"steps": 3, "interval": 0.05},
                                       "_meta": {"progressToken": "p"}}}
    r = httpx.post(url, headers=h, json=call, timeout=10)
    assert r.headers["content-type"].startswith("text/event-stream")
    ids = _event_ids(r.text)
    assert len(ids) == 5 and ids[0].endswith("-0")  # priming, 3 progress, the result
    assert "retry: " in r.text
    # Resuming after the 2nd progress notification replays the 3rd and the result, nothing else.
    again = _resume(url, h, ids[2])
    assert again.status_code == 200
    assert _event_ids(again.text) == ids[3:]
    assert '"result"' in again.text and '"progress":3' in again.text.replace(" ", "")
    # Another session of the same server never sees this stream.
    other = legacy_session(url)
    refused = _resume(url, other, ids[2])
    assert refused.status_code == 410 and "unknown" in refused.json()["error"]["message"]
    token = ids[0].split("-")[0]
    elsewhere = "0" * len(token) if token != "0" * len(token) else "1" * len(token)
    refused = _resume(url, h, f"{elsewhere}-1-0")
    assert refused.status_code == 409 and "another worker or replica" in refused.json()["error"]["message"]
    assert _resume(url, h, "not-an-id").status_code == 400
    assert _resume(url, h, f"{token}-99999-0").status_code == 410
    # A JSON-only client keeps plain JSON responses (no stream, nothing kept).
    plain = httpx.post(url, headers={**h, "accept": "application/json"}, json=call, timeout=10)
    assert plain.headers["content-type"].startswith("application/json") and plain.json()["id"] == 7


def _first_lines(url: str, h: dict[str, str], last: str | None = None) -> tuple[int, list[str]]:
    headers = {**h, "accept": "text/event-stream"} | ({"last-event-id": last} if last else {})
    with httpx.stream("GET", url, headers=headers, timeout=10) as r:
        if r.status_code != 200:
            return r.status_code, []
        lines: list[str] = []
        for line in r.iter_lines():
            if not line:
                break  # the end of the first event (or comment)
            lines.append(line)
        return 200, lines


def test_session_get_stream_resumes_or_opens_afresh(gw: Gateway) -> None:
    url = f"{gw.url}/servers/fx/mcp"
    h = legacy_session(url)
    status, head = _first_lines(url, h)
    ids = [x[4:] for x in head if x.startswith("id: ")]
    assert status == 200 and len(ids) == 1 and "-g" in ids[0] and "retry: 500" in head  # priming event
    # The same stream resumed (nothing was missed): it goes on, with no new priming event.
    status, head = _first_lines(url, h, ids[0])
    assert status == 200 and head == [": resumed"]
    # A GET stream id this worker cannot resume (another worker's): a fresh stream, not an error.
    token = ids[0].split("-")[0]
    foreign = ("0" * len(token) if token != "0" * len(token) else "1" * len(token)) + "-g1-0"
    status, head = _first_lines(url, h, foreign)
    fresh = [x[4:] for x in head if x.startswith("id: ")]
    assert status == 200 and len(fresh) == 1 and fresh[0] != ids[0] and fresh[0].startswith(token)
