"""The fault proxy (toolmesh.testing.faultproxy) between a real HTTP client and a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from toolmesh.testing.faultproxy import Fault, FaultProxy

BODY = b"x" * 4000


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with FaultProxy("127.0.0.1", port) as p:
        yield p
    await runner.cleanup()


async def fetch(session: aiohttp.ClientSession, proxy: FaultProxy, timeout: float = 5.0) -> bytes:
    async with session.get(f"http://127.0.0.1:{proxy.port}/", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return await r.read()


async def test_pass_latency_and_bandwidth_forward_everything(proxy: FaultProxy) -> None:
    async with aiohttp.ClientSession() as s:
        assert await fetch(s, proxy) == BODY
        proxy.set(Fault("latency", latency=0.05))
        assert await fetch(s, proxy) == BODY
        proxy.set(Fault("bandwidth", bytes_per_s=200_000))
        assert await fetch(s, proxy) == BODY
    assert proxy.stats.bytes_down >= 3 * len(BODY)


@pytest.mark.parametrize("mode", ["reset", "half"])
async def test_cut_mid_response_then_recover_on_the_same_pool(proxy: FaultProxy, mode: str) -> None:
    async with aiohttp.ClientSession() as s:
        assert await fetch(s, proxy) == BODY  # a pooled keep-alive connection now exists
        proxy.set(Fault(mode, after_bytes=300))  # type: ignore[arg-type]
        with pytest.raises(aiohttp.ClientError):
            await fetch(s, proxy)
        proxy.clear()
        assert await fetch(s, proxy) == BODY
    assert proxy.stats.cut >= 1


async def test_blackhole_never_answers_until_cleared(proxy: FaultProxy) -> None:
    async with aiohttp.ClientSession() as s:
        proxy.set(Fault("blackhole"))
        with pytest.raises(asyncio.TimeoutError):
            await fetch(s, proxy, timeout=0.3)
        proxy.clear()
        assert await fetch(s, proxy) == BODY


async def test_garbage_and_canned_http_replies(proxy: FaultProxy) -> None:
    async with aiohttp.ClientSession() as s:
        proxy.set(Fault("garbage"))
        with pytest.raises(aiohttp.ClientError):
            await fetch(s, proxy)
        canned = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow"
        proxy.set(Fault("garbage", payload=canned))
        async with s.get(f"http://127.0.0.1:{proxy.port}/") as r:
            assert r.status == 429
            assert await r.read() == b"slow"
        proxy.clear()
        assert await fetch(s, proxy) == BODY


async def test_dead_upstream_is_a_refused_connection_and_nothing_stays_open(proxy: FaultProxy) -> None:
    async with aiohttp.ClientSession() as s:
        assert await fetch(s, proxy) == BODY
    proxy.retarget(1)  # nothing listens on port 1
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            await fetch(s, proxy)
    assert proxy.stats.connect_failures >= 1  # aiohttp retries an idempotent GET once
    for _ in range(50):  # the client's close reaches the proxy's pumps
        if proxy.stats.active == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.stats.active == 0


def test_bad_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency"):
        Fault("latency")
    with pytest.raises(ValueError, match="bytes_per_s"):
        Fault("bandwidth")
    with pytest.raises(ValueError, match="after_bytes"):
        Fault("reset", after_bytes=-1)
    with pytest.raises(TypeError):
        Fault("garbage", payload="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_port"):
        FaultProxy("127.0.0.1", 0)
