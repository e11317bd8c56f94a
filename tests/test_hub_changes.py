"""Hub change notifications: upstream list_changed / resources/updated reach the Hub's change
listeners in both protocol eras (2026-07-28 over a subscriptions/listen stream, the handshake era
over the session), against real server processes whose catalogue changes at run time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import SERVERS, ServerProcess, free_port
from toolmesh.errors import ServerNotFoundError
from toolmesh.hub import ChangeEvent, Hub, ServerConfig
from toolmesh.hub.handle import ServerHandle

SERVER = str(SERVERS / "hub_changes_server.py")
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
TOOLS_CHANGED = "notifications/tools/list_changed"
UPDATED = "notifications/resources/updated"
WAIT = 10.0
#: Longer than any test: a listing can only look fresh because a notification invalidated it.
HOUR = 3600.0


def _http(kind: str, *extra: str) -> Iterator[ServerProcess]:
    port = free_port()
    sp = ServerProcess([sys.executable, SERVER, kind, str(port), *extra], port).start()
    yield sp
    sp.stop()


@pytest.fixture
def tm_http() -> Iterator[ServerProcess]:
    """toolmesh.servers' HTTP frontend (both eras; 2026-07-28 serves subscriptions/listen)."""
    yield from _http("toolmesh")


@pytest.fixture
def sdk_http() -> Iterator[ServerProcess]:
    """The SDK's Streamable HTTP app: handshake-era notifications ride the session's GET stream."""
    yield from _http("sdk")


@pytest.fixture
def quiet_http() -> Iterator[ServerProcess]:
    """A 2026-07-28 server without subscriptions/listen (advertises no listChanged)."""
    yield from _http("toolmesh", "--no-listen")


class Events:
    """A change listener that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self.seen: list[ChangeEvent] = []

    def __call__(self, event: ChangeEvent) -> None:
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def next(self) -> ChangeEvent:
        return await asyncio.wait_for(self.queue.get(), WAIT)


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for ``predicate`` (a counter inside the Hub: no event to await), at most WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def http_config(sp: ServerProcess, protocol: str, name: str = "up") -> ServerConfig:
    return ServerConfig(name=name, url=f"http://127.0.0.1:{sp.port}/mcp", protocol=protocol, catalog_ttl=HOUR)  # type: ignore[arg-type]


def stdio_config(protocol: str, *extra: str) -> ServerConfig:
    return ServerConfig(name="up", command=sys.executable, args=[SERVER, "stdio", *extra], protocol=protocol,  # type: ignore[arg-type]
                        catalog_ttl=HOUR)


def listens(handle: ServerHandle) -> int:
    """How many listen streams the server acknowledged on the current connection."""
    loop = getattr(handle.conn, "listen_loop", None)
    return loop.opened if loop is not None else 0


async def connected(hub: Hub, config: ServerConfig, *, tenant: str = "acme", user: str | None = None) -> ServerHandle:
    handle = await hub.register(config, tenant=tenant, user=user, connect=True)
    assert handle.conn is not None
    if handle.conn.modern:
        await until(lambda: listens(handle) >= 1)  # nothing is replayed: listen before changing anything
    return handle


async def reopening_announced(events: Events) -> None:
    """A reopened listen stream is announced as a change of every list it covers (the gap is
    not replayed), with no event for the first opening; then the queue is emptied."""
    first = await events.next()
    assert (first.method, first.params) == (TOOLS_CHANGED, {})
    assert all(e.params == {} and e.method.endswith("/list_changed") for e in events.seen)
    assert len({e.method for e in events.seen}) == len(events.seen)  # once per kind, not once per connection
    while not events.queue.empty():
        events.queue.get_nowait()
    events.seen.clear()


async def tool_names(hub: Hub, *, tenant: str = "acme", user: str | None = None) -> set[str]:
    return {t["_tool"] for t in await hub.list_tools(tenant=tenant, user=user)}


async def check_tool_added(hub: Hub, handle: ServerHandle, events: Events, *, user: str | None = None) -> None:
    before = await tool_names(hub, user=user)
    assert "fresh" not in before
    misses = handle.catalog.misses
    assert await tool_names(hub, user=user) == before and handle.catalog.misses == misses  # served from cache
    result = await hub.call_tool("up", "add_tool", {"name": "fresh"}, tenant="acme", user=user)
    assert result.ok, result.error
    event = await events.next()
    assert (event.tenant, event.user, event.server, event.method) == ("acme", user, "up", TOOLS_CHANGED)
    assert "io.modelcontextprotocol/subscriptionId" not in (event.params.get("_meta") or {})
    assert "fresh" in await tool_names(hub, user=user)
    assert handle.catalog.misses == misses + 1


@pytest.mark.parametrize("protocol", [MODERN, LEGACY])
async def test_http_tool_list_change_reaches_listener_and_catalogue(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, protocol))
        assert handle.conn is not None and handle.conn.identity.protocol == protocol
        await check_tool_added(hub, handle, events)


async def test_handshake_get_stream_and_user_scope(sdk_http: ServerProcess) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(sdk_http, LEGACY), user="bob")
        await check_tool_added(hub, handle, events, user="bob")


@pytest.mark.parametrize("protocol", [MODERN, LEGACY])
async def test_stdio_tool_list_change(protocol: str) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, stdio_config(protocol))
        await check_tool_added(hub, handle, events)
        # The listen request stays pending, but it is not a call: the deadline sweep stops once the calls are done.
        conn: Any = handle.conn
        await until(lambda: conn._sweeper is None)
        assert conn.alive and (protocol == LEGACY or len(conn._pending) == 1)


@pytest.mark.parametrize("protocol", [MODERN, LEGACY])
async def test_websocket_tool_list_change(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        config = ServerConfig(name="up", url=f"ws://127.0.0.1:{tm_http.port}/ws", transport="websocket",
                              protocol=protocol, catalog_ttl=HOUR)  # type: ignore[arg-type]
        handle = await connected(hub, config)
        assert handle.conn is not None and handle.conn.identity.protocol == protocol
        await check_tool_added(hub, handle, events)


@pytest.mark.parametrize("server", ["tm_http", "sdk_http"])
async def test_handshake_resource_updated_after_subscribing(server: str, request: pytest.FixtureRequest) -> None:
    sp: ServerProcess = request.getfixturevalue(server)
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        await connected(hub, http_config(sp, LEGACY))
        await hub.call_tool("up", "touch", {"uri": "changes://doc"}, tenant="acme")  # not subscribed: silent
        await hub.forward("up", "resources/subscribe", {"uri": "changes://doc"}, tenant="acme")
        await hub.call_tool("up", "touch", {"uri": "changes://doc"}, tenant="acme")
        event = await events.next()
        assert (event.server, event.method, event.params) == ("up", UPDATED, {"uri": "changes://doc"})
        assert len(events.seen) == 1


async def test_removed_listener_hears_nothing_more(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        gone, kept = Events(), Events()
        remove = hub.add_change_listener(gone)
        hub.add_change_listener(kept)
        await connected(hub, http_config(tm_http, MODERN))
        await hub.call_tool("up", "add_tool", {"name": "one"}, tenant="acme")
        assert (await kept.next()).method == TOOLS_CHANGED
        assert len(gone.seen) == 1
        remove()
        remove()  # idempotent
        await hub.call_tool("up", "add_tool", {"name": "two"}, tenant="acme")
        assert (await kept.next()).method == TOOLS_CHANGED
        assert len(gone.seen) == 1  # listeners run one after the other: it would have had it by now


async def test_raising_listener_does_not_break_the_hub(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        calls: list[ChangeEvent] = []

        def broken(event: ChangeEvent) -> None:
            calls.append(event)
            raise RuntimeError("listener bug")

        hub.add_change_listener(broken)
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, MODERN))
        for name in ("one", "two"):
            result = await hub.call_tool("up", "add_tool", {"name": name}, tenant="acme")
            assert result.ok
            assert (await events.next()).method == TOOLS_CHANGED
        assert len(calls) == 2
        assert {"one", "two"} <= await tool_names(hub)
        assert handle.conn is not None and handle.conn.alive and listens(handle) == 1


def test_add_change_listener_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="change listener must be callable"):
        Hub().add_change_listener("nope")  # type: ignore[arg-type]


async def test_no_listen_stream_without_list_changed(quiet_http: ServerProcess) -> None:
    async with Hub() as hub:
        handle = await hub.register(http_config(quiet_http, "auto"), tenant="acme", connect=True)
        assert handle.conn is not None and handle.conn.modern
        assert getattr(handle.conn, "listen_loop", "missing") is None  # discover said: nothing to listen for
        assert (await hub.call_tool("up", "add_tool", {"name": "x"}, tenant="acme")).ok


async def test_pinned_modern_connection_discovers_before_listening(quiet_http: ServerProcess,
                                                                   tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        quiet = await hub.register(http_config(quiet_http, MODERN), tenant="acme", connect=True)
        loop: Any = getattr(quiet.conn, "listen_loop", None)
        assert loop is not None and loop._task is not None  # a pinned connection skipped server/discover
        await asyncio.wait_for(asyncio.shield(loop._task), WAIT)  # ...asks it, finds no listChanged, stops
        assert loop.opened == 0 and loop.notifications == {}
        chatty = await connected(hub, http_config(tm_http, MODERN, name="chatty"))
        chatty_loop: Any = getattr(chatty.conn, "listen_loop", None)
        assert chatty_loop is not None and chatty_loop.notifications == {
            "toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}


async def test_listen_stream_ended_by_server_is_reopened(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, MODERN))
        await tool_names(hub)
        await hub.call_tool("up", "end_listens", tenant="acme")
        await until(lambda: listens(handle) >= 2)
        assert handle.catalog.misses == 1
        await tool_names(hub)
        assert handle.catalog.misses == 2  # the reopening dropped the cached listing: events may have been missed
        await reopening_announced(events)
        await hub.call_tool("up", "add_tool", {"name": "later"}, tenant="acme")
        assert (await events.next()).method == TOOLS_CHANGED
        assert "later" in await tool_names(hub)


async def test_listen_stream_reopened_after_server_restart(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, MODERN))
        conn = handle.conn
        tm_http.restart()  # the stream breaks; a stateless connection lives on
        await until(lambda: listens(handle) >= 2)
        assert handle.conn is conn
        await reopening_announced(events)
        await hub.call_tool("up", "add_tool", {"name": "after_restart"}, tenant="acme")
        assert (await events.next()).method == TOOLS_CHANGED
        assert "after_restart" in await tool_names(hub)


async def test_stdio_listen_stream_reopened() -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, stdio_config(MODERN))
        await hub.call_tool("up", "end_listens", tenant="acme")
        await until(lambda: listens(handle) >= 2)
        await reopening_announced(events)
        await hub.call_tool("up", "add_tool", {"name": "later"}, tenant="acme")
        assert (await events.next()).method == TOOLS_CHANGED


async def test_listen_stream_closes_with_the_connection(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, MODERN))
        loop: Any = getattr(handle.conn, "listen_loop", None)
        assert loop is not None and loop._task is not None and not loop._task.done()
        await hub.unregister("up", tenant="acme")
        assert loop._task.done()


async def test_watched_server_stays_connected_while_idle(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        config = http_config(tm_http, MODERN).model_copy(update={"idle_ttl": 1.0})
        handle = await hub.register(config, tenant="acme")
        assert handle.conn is None
        release = hub.watch("up", tenant="acme")
        await until(lambda: handle.conn is not None and listens(handle) >= 1)  # opened in the background
        later = time.monotonic() + 3600
        assert await hub.close_idle(later) == 0 and handle.conn is not None
        release()
        release()  # idempotent
        assert handle.watchers == 0
        assert await hub.close_idle(later) == 1 and handle.conn is None
        with pytest.raises(ServerNotFoundError):
            hub.watch("nope", tenant="acme")


@pytest.mark.parametrize("protocol", [MODERN, LEGACY])
async def test_watch_resource_in_both_eras(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        events = Events()
        hub.add_change_listener(events)
        handle = await connected(hub, http_config(tm_http, protocol))
        opened = listens(handle)
        release = await hub.watch_resource("up", "changes://doc", tenant="acme")
        assert release is not None
        second = await hub.watch_resource("up", "changes://doc", tenant="acme")  # counted, not asked twice
        assert second is not None and handle.resource_watch == {"changes://doc": 2}
        if protocol == MODERN:
            await until(lambda: listens(handle) > opened)  # the stream was replaced to ask for the URI
        await hub.call_tool("up", "touch", {"uri": "changes://doc"}, tenant="acme")
        event = await events.next()
        assert (event.server, event.method, event.params) == ("up", UPDATED, {"uri": "changes://doc"})
        assert len(events.seen) == 1  # replacing the stream is no gap: no list_changed announced
        await second()
        await release()
        await release()  # idempotent
        assert handle.resource_watch == {}
        if protocol == MODERN:
            await until(lambda: listens(handle) > opened + 1)
        # Unwatched: a touch is silent, the next list change still arrives.
        await hub.call_tool("up", "touch", {"uri": "changes://doc"}, tenant="acme")
        await hub.call_tool("up", "add_tool", {"name": "after"}, tenant="acme")
        assert (await events.next()).method == TOOLS_CHANGED
        assert [e.method for e in events.seen] == [UPDATED, TOOLS_CHANGED]


async def test_watch_resource_refused_without_a_listen_stream(quiet_http: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(http_config(quiet_http, "auto"), tenant="acme", connect=True)
        assert await hub.watch_resource("up", "changes://doc", tenant="acme") is None
        assert hub.server("up", tenant="acme").resource_watch == {}
