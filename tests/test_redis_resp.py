"""The pipelined Redis client of the shared state (toolmesh.store.resp) against a real redis-server:
each caller its own reply under concurrency, NOSCRIPT recovery, Redis stopped and restarted under
load, timeouts, AUTH and SELECT, and releases of one user's slots sent as one ZREM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import pytest

import services
from services import RedisServer
from toolmesh.errors import ConfigError
from toolmesh.store.redis_limits import SharedLimiter
from toolmesh.store.redis_state import LuaScript, RedisState
from toolmesh.store.resp import (
    Endpoint,
    RedisConnectionError,
    RedisTimeoutError,
    ReplyError,
    RespClient,
    pack,
    pack_tail,
)
from toolmesh.store.shared import Limit, StateSettings, StateUnavailableError


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


def client(server: RedisServer, *, timeout: float = 2.0, url: str | None = None) -> RespClient:
    return RespClient(Endpoint.from_url(url or server.url), timeout=timeout, connect_timeout=2.0)


def state(server: RedisServer, **kw: object) -> RedisState:
    return RedisState(StateSettings.model_validate({"url": server.url, "timeout": 2.0, "max_backoff": 0.2, **kw}))


def calls(server: RedisServer, command: str) -> int:
    """Calls of one command so far (``INFO commandstats``; subcommands as ``script|load``)."""
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` holds (failing the test after ``timeout`` seconds)."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_each_of_200_concurrent_callers_gets_its_own_reply(redis_server: RedisServer) -> None:
    c = client(redis_server)
    try:
        for _ in range(2):  # the first round waits for the connection, the second finds it open
            writes = c.writes
            echoed, counted = await asyncio.gather(
                asyncio.gather(*(c.send(pack("ECHO", f"caller-{i}")) for i in range(200))),
                asyncio.gather(*(c.send(pack("INCR", "n")) for _ in range(200))))
            assert echoed == [f"caller-{i}".encode() for i in range(200)]
            assert len(set(counted)) == 200  # every INCR's own value, none delivered twice
            # Written together, not one write per command.
            assert c.writes - writes < 10
        assert await c.send(pack("GET", "n")) == b"400"
        assert c.connects == 1
    finally:
        await c.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_server: RedisServer) -> None:
    c = client(redis_server)
    try:
        futs = [c.send(pack("ECHO", str(i))) for i in range(100)]
        for fut in futs[::2]:
            fut.cancel()
        kept = await asyncio.gather(*futs[1::2])
        assert kept == [str(i).encode() for i in range(1, 100, 2)]
        assert await c.send(pack("ECHO", "after")) == b"after"
    finally:
        await c.aclose()


async def test_error_replies_go_to_their_caller_only(redis_server: RedisServer) -> None:
    c = client(redis_server)
    try:
        results = await asyncio.gather(c.send(pack("SET", "s", "x")), c.send(pack("INCR", "s")),
                                       c.send(pack("NOSUCHCOMMAND")), c.send(pack("GET", "s")),
                                       return_exceptions=True)
        assert results[0] == b"OK" and results[3] == b"x"
        assert isinstance(results[1], ReplyError) and results[1].code == "ERR"
        assert isinstance(results[2], ReplyError) and "unknown command" in str(results[2])
        with pytest.raises(TypeError):
            pack("SET", "k", True)
    finally:
        await c.aclose()


async def test_script_reloaded_once_after_flush_under_concurrency(redis_server: RedisServer) -> None:
    st = state(redis_server)
    script = LuaScript("echo_key.lua", "return {KEYS[1], ARGV[1]}")
    try:
        assert await st.run(script, ["k0"], ["v0"]) == [b"k0", b"v0"]
        redis_server.cli("SCRIPT", "FLUSH")
        loads = calls(redis_server, "script|load")
        got = await asyncio.gather(*(st.run(script, [f"k{i}"], [f"v{i}"]) for i in range(50)))
        assert got == [[f"k{i}".encode(), f"v{i}".encode()] for i in range(50)]
        # 50 NOSCRIPTs answered by one load, sent ahead of the 50 calls again.
        assert calls(redis_server, "script|load") - loads == 1
        assert st.available and st.outages == 0
    finally:
        await st.aclose()


async def test_redis_restart_under_load_then_recovery(redis_server: RedisServer) -> None:
    st = state(redis_server)
    outcomes: list[str] = []
    stop = asyncio.Event()

    async def caller(i: int) -> None:
        while not stop.is_set():
            try:
                await st.command("INCR", f"c{i}")
                outcomes.append("ok")
            except StateUnavailableError:
                outcomes.append("down")
            await asyncio.sleep(0.005)

    try:
        tasks = [asyncio.create_task(caller(i)) for i in range(20)]
        await until(lambda: outcomes.count("ok") >= 200)
        await asyncio.to_thread(redis_server.stop)
        await until(lambda: "down" in outcomes[-20:])
        assert not st.available and st.outages == 1
        await asyncio.to_thread(redis_server.start)  # same port, empty
        assert await st.wait_available(10.0)
        ok = outcomes.count("ok")
        await until(lambda: outcomes.count("ok") >= ok + 200)
        stop.set()
        await asyncio.gather(*tasks)
        assert st.outages == 1  # one outage, however many callers saw it
        assert int(redis_server.cli("GET", "c0")) >= 1  # written to the restarted Redis
    finally:
        stop.set()
        await st.aclose()


async def test_a_silent_redis_times_out_then_recovers(redis_server: RedisServer) -> None:
    st = state(redis_server, timeout=0.3)
    try:
        assert await st.command("PING") == b"PONG"
        redis_server.cli("CLIENT", "PAUSE", "1500", "ALL")  # Redis holds every client's commands
        with pytest.raises(StateUnavailableError, match="RedisTimeoutError"):
            await st.command("SET", "k", "1")
        assert not st.available
        with pytest.raises(StateUnavailableError):  # refused at once while down
            await st.command("GET", "k")
        assert await st.wait_available(10.0)
        assert await st.command("GET", "k") in (b"1", None)  # the paused SET ran or not: either is fine
        assert await st.command("ECHO", "in step") == b"in step"  # no late reply left to shift answers
    finally:
        await st.aclose()


async def test_the_client_alone_times_out_and_fails_connects(redis_server: RedisServer) -> None:
    c = client(redis_server, timeout=0.3)
    try:
        assert await c.send(pack("PING")) == b"PONG"
        redis_server.cli("CLIENT", "PAUSE", "1000", "ALL")
        pending = [c.send(pack("ECHO", str(i))) for i in range(5)]
        for fut in pending:
            with pytest.raises(RedisTimeoutError):
                await fut
        await asyncio.sleep(1.0)
        assert await c.send(pack("ECHO", "x")) == b"x"  # a new connection
        assert c.connects == 2
    finally:
        await c.aclose()
    redis_server.stop()
    c = client(redis_server)
    try:
        with pytest.raises(RedisConnectionError):
            await c.send(pack("PING"))
    finally:
        await c.aclose()
        redis_server.start()


async def test_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    redis_server.cli("CONFIG", "SET", "requirepass", "s3cret")
    base = f"127.0.0.1:{redis_server.port}"
    good = client(redis_server, url=f"redis://:s3cret@{base}/3")
    bad = client(redis_server, url=f"redis://:wrong@{base}/0")
    try:
        assert await good.send(pack("SET", "where", "db3")) == b"OK"
        assert redis_server.cli("-a", "s3cret", "--no-auth-warning", "-n", "3", "GET", "where").strip() == "db3"
        with pytest.raises(RedisConnectionError, match="refused the connection's set-up"):
            await bad.send(pack("PING"))
    finally:
        await good.aclose()
        await bad.aclose()
        redis_server.cli("-a", "s3cret", "--no-auth-warning", "CONFIG", "SET", "requirepass", "")


def test_urls() -> None:
    ep = Endpoint.from_url("rediss://al%40ice:p%3Aw@redis.internal:6380/2?ssl_cert_reqs=none")
    assert (ep.host, ep.port, ep.db, ep.tls, ep.verify, ep.username, ep.password) == (
        "redis.internal", 6380, 2, True, False, "al@ice", "p:w")
    assert Endpoint.from_url("redis://h").port == 6379 and not Endpoint.from_url("redis://h").tls
    unix = Endpoint.from_url("unix:///run/redis.sock?db=4&password=pw")
    assert (unix.path, unix.db, unix.password) == ("/run/redis.sock", 4, "pw")
    assert unix.handshake() == [pack("AUTH", "pw"), pack("SELECT", 4)]
    assert Endpoint.from_url("redis://h/0").handshake() == []
    for bad in ("http://h", "redis://h/x", "redis://h/-1", "unix://"):
        with pytest.raises(ValueError):
            Endpoint.from_url(bad)


async def test_releases_of_one_user_go_out_as_one_zrem(redis_server: RedisServer) -> None:
    st = state(redis_server)
    try:
        limiter = SharedLimiter(st)
        slots = [Limit.slots("uc:bob", 50)]
        admitted = await asyncio.gather(*(limiter.admit("acme", slots) for _ in range(40)))
        assert all(d.admitted for d in admitted)
        assert int(redis_server.cli("ZCARD", "tm:{acme}:uc:bob")) == 40
        before = calls(redis_server, "zrem")
        await asyncio.gather(*(d.release() for d in admitted))
        # Every slot freed by the time its release returned, in one command.
        assert int(redis_server.cli("ZCARD", "tm:{acme}:uc:bob")) == 0
        assert calls(redis_server, "zrem") - before == 1
        # A release cancelled while it gathers others still frees them all.
        again = await asyncio.gather(*(limiter.admit("acme", slots) for _ in range(10)))
        first = asyncio.ensure_future(again[0].release())
        rest = [asyncio.ensure_future(d.release()) for d in again[1:]]
        await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await asyncio.gather(*rest)
        assert int(redis_server.cli("ZCARD", "tm:{acme}:uc:bob")) == 0
    finally:
        await st.aclose()


async def test_a_server_that_is_not_redis_is_a_connection_error() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = RespClient(Endpoint.from_url(f"redis://127.0.0.1:{port}/0"), timeout=2.0, connect_timeout=2.0)
    try:
        with pytest.raises(RedisConnectionError, match="bad reply"):
            await c.send(pack("PING"))
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()


def test_retired_max_connections_loads_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """redis-py's pool size is gone with the pool: old configs load, with a warning; unknown keys still fail."""
    with caplog.at_level(logging.WARNING):
        s = StateSettings.from_section({"url": "redis://127.0.0.1:1", "max_connections": 64})
    assert s.url == "redis://127.0.0.1:1"
    assert "state.max_connections is no longer used" in caplog.text
    with pytest.raises(ConfigError, match="state.maxconn"):
        StateSettings.from_section({"maxconn": 1})


async def test_a_prepacked_command_is_the_one_packed_afresh(redis_server: RedisServer) -> None:
    """The admission's keys and constant arguments are packed once per tenant and limits; what
    goes out must be byte for byte what packing them anew gives, with or without a member or a
    rider's keys and arguments, and Redis must read it as those keys and arguments."""
    from toolmesh.store.redis_limits import ADMIT, _Prepared, limit_key

    limits = [Limit.bucket("t", 5.0, 10.0, "tenant a"), Limit.window("uw:u", 3, 60.0), Limit.slots("uc:u", 2)]
    prepared = _Prepared([limit_key("tm", "a", lim.name) for lim in limits], limits)
    assert prepared.command == ADMIT.packed(prepared.keys, ["-", *prepared.tail])
    assert prepared.head + pack_tail(["r-17"]) + prepared.tail_packed == ADMIT.packed(prepared.keys,
                                                                                    ["r-17", *prepared.tail])
    echo = LuaScript("echo_all.lua", "return {KEYS, ARGV}")
    st = state(redis_server)
    try:
        keys = [*prepared.keys, "tm:{a}:s:x", "tm:{a}:s:x:leases"]
        args = ["r-17", *prepared.tail, "hold-1", "30.0"]
        packed = echo.head(keys, len(args)) + pack_tail(["r-17"]) + prepared.tail_packed + pack_tail(["hold-1", "30.0"])
        assert packed == echo.packed(keys, args)
        assert await st.run_packed(echo, packed) == [[k.encode() for k in keys], [a.encode() for a in args]]
    finally:
        await st.aclose()
