"""The lean HTTP client against a real socket server that misbehaves in controlled ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from toolmesh.net.fasthttp import FastHttpPool, HttpError

H = b"Content-Type: application/json\r\n"


async def serve(handler: Callable[[bytes], list[bytes | None]]) -> tuple[asyncio.Server, int, list[int]]:
    """Each request gets the byte chunks ``handler`` returns; ``None`` closes the connection."""
    connections: list[int] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                for chunk in handler(body):
                    if chunk is None:
                        writer.close()
                        return
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, connections


@pytest.fixture
async def pool_for() -> AsyncIterator[Callable[[int], FastHttpPool]]:
    pools: list[FastHttpPool] = []

    def make(port: int) -> FastHttpPool:
        pools.append(FastHttpPool(f"http://127.0.0.1:{port}/mcp", limit=4))
        return pools[-1]

    yield make
    for p in pools:
        await p.aclose()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_keep_alive_reuses_one_connection(pool_for: Callable[[int], FastHttpPool]) -> None:
    server, port, conns = await serve(lambda body: [ok(body)])
    async with server:
        pool = pool_for(port)
        for i in range(20):
            resp, _ = await pool.post(b'{"n":%d}' % i, H)
            assert resp.status == 200 and resp.body == b'{"n":%d}' % i
        assert len(conns) == 1


async def test_chunked_body_split_across_packets(pool_for: Callable[[int], FastHttpPool]) -> None:
    def chunked(body: bytes) -> list[bytes | None]:
        return [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\n{\"a\":\r\n", b"3\r\n1}\n\r\n", b"0\r\n\r\n"]

    server, port, _ = await serve(chunked)
    async with server:
        resp, _ = await pool_for(port).post(b"{}", H)
        assert resp.body == b'{"a":1}\n'


async def test_connection_close_then_new_connection(pool_for: Callable[[int], FastHttpPool]) -> None:
    server, port, conns = await serve(
        lambda body: [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", None])
    async with server:
        pool = pool_for(port)
        for _ in range(3):
            resp, _ = await pool.post(b"{}", H)
            assert resp.body == b"{}"
        assert len(conns) == 3


async def test_server_dies_mid_body_is_a_clear_error(pool_for: Callable[[int], FastHttpPool]) -> None:
    server, port, _ = await serve(
        lambda body: [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"par", None])
    async with server:
        with pytest.raises(HttpError, match="closed the connection"):
            await pool_for(port).post(b"{}", H)


async def test_malformed_response_is_a_clear_error(pool_for: Callable[[int], FastHttpPool]) -> None:
    server, port, _ = await serve(lambda body: [b"NOT HTTP AT ALL\r\n\r\n"])
    async with server:
        with pytest.raises(HttpError, match="malformed"):
            await pool_for(port).post(b"{}", H)


async def test_streamed_sse_response(pool_for: Callable[[int], FastHttpPool]) -> None:
    def sse(body: bytes) -> list[bytes | None]:
        return [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"10\r\ndata: progress\n\n\r\n", b"d\r\ndata: final\n\n\r\n", b"0\r\n\r\n"]

    server, port, conns = await serve(sse)
    async with server:
        pool = pool_for(port)
        for _ in range(2):
            resp, conn = await pool.post(b"{}", H)
            assert resp.streaming
            chunks = []
            while chunk := await resp.read_chunk():
                chunks.append(chunk)
            await pool.done(conn, resp)
            assert b"".join(chunks) == b"data: progress\n\ndata: final\n\n"
        assert len(conns) == 1  # a fully read stream returns its connection to the pool


async def test_done_on_a_buffered_response_does_not_pool_its_connection_twice(
        pool_for: Callable[[int], FastHttpPool]) -> None:
    # A streaming caller that got a plain JSON answer (an HTTP 400, say) calls done() as for a stream.
    # A second release put the connection in the pool twice: the next two requests shared it and one
    # waited for an answer the other had taken (found as a 60 s hang in a reasoning batch under load).
    server, port, conns = await serve(lambda body: [ok(body)])
    async with server:
        pool = pool_for(port)
        resp, conn = await pool.post(b'{"first":1}', H)
        assert not resp.streaming
        await pool.done(conn, resp)
        await pool.done(conn, resp)
        both = await asyncio.wait_for(asyncio.gather(pool.post(b'{"a":1}', H), pool.post(b'{"b":2}', H)), 5)
        assert [r.body for r, _ in both] == [b'{"a":1}', b'{"b":2}']
        assert len(conns) == 2 and pool.connections == 2


async def test_refused_connection_is_marked_before_send() -> None:
    server, port, _ = await serve(lambda body: [])
    server.close()
    await server.wait_closed()
    pool = FastHttpPool(f"http://127.0.0.1:{port}/mcp")
    with pytest.raises(HttpError) as info:
        await pool.post(b"{}", H)
    assert info.value.before_send
    await pool.aclose()


async def test_concurrency_limit_is_respected(pool_for: Callable[[int], FastHttpPool]) -> None:
    server, port, conns = await serve(lambda body: [ok(body)])
    async with server:
        pool = pool_for(port)  # limit=4
        results = await asyncio.gather(*(pool.post(b'{"i":%d}' % i, H) for i in range(40)))
        assert [r.body for r, _ in results] == [b'{"i":%d}' % i for i in range(40)]
        assert len(conns) <= 4


async def test_pool_slots_are_fifo_and_survive_cancellation() -> None:
    import asyncio

    from toolmesh.net.fasthttp import _Slots

    slots = _Slots(1)
    assert slots.try_acquire() and not slots.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()  # gives up while waiting: must not take or leak a slot
    await asyncio.sleep(0)
    slots.release()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.sleep(0)
    assert order == [0, 2]
    slots.release()
    assert slots.try_acquire() and not slots.try_acquire()  # exactly one slot again
    # A slot handed to a waiter that is cancelled in the same turn is passed on, not lost.
    late = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert slots.try_acquire()
    await asyncio.gather(*tasks, return_exceptions=True)
