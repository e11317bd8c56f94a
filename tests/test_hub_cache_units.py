"""Pure logic of the Hub's result cache and sharing policy: config, LRU by bytes, generations,
and which results may be stored (a fake ``send`` stands in for the upstream)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from pydantic import ValidationError

from toolmesh.hub import ServerConfig, parse_config
from toolmesh.hub.coalesce import SharedCalls, caller_identity
from toolmesh.hub.config import CacheConfig, CoalesceConfig
from toolmesh.hub.resultcache import ResultCache
from toolmesh.hub.toolcall import ToolCall
from toolmesh.hub.types import JsonDict

READ_ONLY = {"name": "get", "annotations": {"readOnlyHint": True}}
WRITES = {"name": "put", "annotations": {"readOnlyHint": False}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_config_defaults_and_shorthands() -> None:
    cfg = ServerConfig(name="s", url="http://x/mcp")
    assert cfg.coalesce.applies("get", READ_ONLY) and not cfg.coalesce.applies("put", WRITES)
    assert not cfg.coalesce.applies("get", None)  # unknown annotations: not read-only
    assert cfg.cache.ttl_for("get", READ_ONLY) == 0  # the cache is opt-in
    cfg = ServerConfig(name="s", url="http://x/mcp", cache=5, coalesce=False)  # type: ignore[arg-type]
    assert cfg.cache.ttl_for("get", READ_ONLY) == 5 and not cfg.coalesce.applies("get", READ_ONLY)


def test_tool_patterns_exact_names_and_excludes() -> None:
    cache = CacheConfig(ttl=5, tools=["get*", "put"], exclude=["get_secret"])
    assert cache.ttl_for("get", READ_ONLY) == 5
    assert cache.ttl_for("get", WRITES) == 0  # a wildcard only picks read-only tools
    assert cache.ttl_for("put", WRITES) == 5  # named exactly: cached whatever its annotations
    assert cache.ttl_for("get_secret", READ_ONLY) == 0
    assert cache.ttl_for("other", READ_ONLY) == 0
    per_tool = CacheConfig(tools={"get": 2, "*": 30})
    assert per_tool.ttl_for("get", READ_ONLY) == 2 and per_tool.ttl_for("list", READ_ONLY) == 30
    assert CoalesceConfig(tools=["put"]).applies("put", WRITES)
    assert not CoalesceConfig(exclude=["g*"]).applies("get", READ_ONLY)


@pytest.mark.parametrize("bad", [{"ttl": -1}, True, {"ttl": 5, "size": 3}, {"tools": {"x": -2}}])
def test_bad_cache_config_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        ServerConfig(name="s", url="http://x/mcp", cache=bad)  # type: ignore[arg-type]


def test_config_file_sections() -> None:
    cfg = parse_config({"servers": {"inv": {"url": "http://x/mcp", "cache": {"ttl": 5, "tools": ["check_*"]},
                                            "coalesce": {"exclude": ["live_*"]}}}})
    inv = cfg.servers["inv"]
    assert inv.cache.ttl == 5 and inv.cache.tools == ["check_*"] and inv.coalesce.exclude == ["live_*"]


def test_lru_by_bytes_and_ttl() -> None:
    clock = Clock()
    cache = ResultCache(max_bytes=2000, clock=clock)  # ~502 bytes an entry: three fit
    scope = cache.new_scope()
    gen = cache.generation(scope)
    body = b"x" * 300
    for i in range(3):
        assert cache.put((scope, "t", b"%d" % i, b""), body, 10, gen)
    assert cache.get((scope, "t", b"0", b"")) is not None  # 0 is now the most recently used
    assert cache.put((scope, "t", b"3", b""), body, 10, gen)
    assert cache.get((scope, "t", b"1", b"")) is None  # the least recently used went first
    assert cache.bytes <= 2000 and cache.evictions == 1
    assert not cache.put((scope, "t", b"big", b""), b"x" * 3000, 10, gen)  # larger than the budget
    clock.now = 10.0
    assert cache.get((scope, "t", b"0", b"")) is None  # expired
    with pytest.raises(ValueError):
        ResultCache(max_bytes=-1)


def test_a_result_of_a_call_begun_before_an_invalidation_is_not_stored() -> None:
    cache = ResultCache()
    scope = cache.new_scope()
    gen = cache.generation(scope)
    cache.invalidate(scope)
    assert not cache.put((scope, "t", b"{}", b""), b"{}", 10, gen)
    cache.drop_scope(scope)
    assert not cache.put((scope, "t", b"{}", b""), b"{}", 10, cache.generation(scope))


def test_caller_identity_keeps_only_the_forwarded_credentials() -> None:
    a = caller_identity(["x-user-token"], b"X-User-Token: alice\r\ntraceparent: 00-1-2-01\r\n")
    b = caller_identity(["x-user-token"], b"traceparent: 00-3-4-01\r\nx-user-token:alice\r\n")
    assert a == b == b"x-user-token:alice"
    assert caller_identity(["x-user-token"], b"X-User-Token: bob\r\n") != a
    assert caller_identity([], b"X-User-Token: bob\r\n") == b""


async def _call_twice(result: JsonDict, **cache: object) -> int:
    """How often a fake upstream is asked for two identical calls, one after the other."""
    sent = 0

    async def send(call: ToolCall) -> JsonDict:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        return orjson.loads(orjson.dumps(result))

    shared = SharedCalls(ServerConfig(name="s", url="http://x/mcp", cache=cache or {"ttl": 60}), ResultCache())
    for _ in range(2):
        await shared.send(ToolCall("get", {"name": "get", "arguments": {}}, None, None, None), READ_ONLY, send)
    return sent


async def test_what_may_be_stored() -> None:
    ok = {"content": [{"type": "text", "text": "fine"}]}
    assert await _call_twice(ok) == 1
    assert await _call_twice({**ok, "isError": True}) == 2
    assert await _call_twice({**ok, "resultType": "input_required", "inputRequests": {}}) == 2
    assert await _call_twice({**ok, "ttlMs": 0}) == 2  # the server's hint can only shorten the TTL
    assert await _call_twice({**ok, "ttlMs": 60_000}) == 1
    assert await _call_twice({"content": [{"type": "text", "text": "x" * 100}]}, ttl=60, max_entry_bytes=50) == 2


class MemoryShared:
    """The shared level in memory (pure logic; the Redis one is tested in test_scale_results.py)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.generations: dict[str, int] = {}
        self.down = False

    async def get(self, scope: str, key: str) -> tuple[bytes | None, float, int] | None:
        if self.down:
            return None
        gen = self.generations.get(scope, 0)
        found = self.entries.get((scope, key))
        if found is not None and found[0] == gen:
            return found[1], 30.0, gen
        return None, 0.0, gen

    def put(self, scope: str, key: str, body: bytes, ttl: float, generation: int) -> asyncio.Future[object] | None:
        self.entries[(scope, key)] = (generation, body)
        return None

    def invalidate(self, scope: str) -> None:
        self.generations[scope] = self.generations.get(scope, 0) + 1


async def test_the_shared_level_serves_other_processes_and_honours_generations() -> None:
    shared_level = MemoryShared()
    sent: list[int] = []
    gate = asyncio.Event()

    async def send(call: ToolCall) -> JsonDict:
        sent.append(1)
        if len(sent) == 2:
            await gate.wait()  # a call in flight while the server changes
        return {"content": [{"type": "text", "text": f"answer {len(sent)}"}]}

    def process() -> SharedCalls:
        cache = ResultCache()
        cache.shared = shared_level
        return SharedCalls(ServerConfig(name="s", url="http://x/mcp", cache={"ttl": 60}), cache, name="t/*/s")

    one, two = process(), process()
    call = lambda: ToolCall("get", {"name": "get", "arguments": {}}, None, None, None)  # noqa: E731
    first = await one.send(call(), READ_ONLY, send)
    assert await two.send(call(), READ_ONLY, send) == first and len(sent) == 1  # the other process's answer
    assert two.cache.get(next(iter(two.cache._entries))) is not None  # kept locally too
    # A change: the next call goes upstream; one that began before the change is not stored.
    one.invalidate()
    two.invalidate()
    slow = asyncio.ensure_future(one.send(call(), READ_ONLY, send))
    await asyncio.sleep(0)
    shared_level.invalidate(one.shared_scope)  # (another process heard a second change meanwhile)
    gate.set()
    assert (await slow)["content"][0]["text"] == "answer 2"
    fresh = await two.send(call(), READ_ONLY, send)
    assert fresh["content"][0]["text"] == "answer 3" and len(sent) == 3
    # Unreadable shared level: the server is called, nothing breaks.
    shared_level.down = True
    other = process()
    assert (await other.send(call(), READ_ONLY, send))["content"][0]["text"] == "answer 4"
    # Another configuration of the same server never shares a scope.
    changed = SharedCalls(ServerConfig(name="s", url="http://y/mcp", cache={"ttl": 60}), ResultCache(), name="t/*/s")
    assert changed.shared_scope != one.shared_scope


class SlowShared(MemoryShared):
    """A shared level whose stores complete when the test says (as Redis answering a ``SET``)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[asyncio.Future[object]] = []

    def put(self, scope: str, key: str, body: bytes, ttl: float, generation: int) -> asyncio.Future[object]:
        super().put(scope, key, body, ttl, generation)
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.writes.append(fut)
        return fut


@pytest.mark.parametrize("coalesce", [True, False])
async def test_a_stored_result_is_returned_once_the_shared_level_holds_it(coalesce: bool) -> None:
    """Read-your-writes across processes: the caller gets its answer only after the shared store
    completed, so its next call, on any process, finds the result there. A failed store does not
    fail the call."""
    shared_level = SlowShared()
    cache = ResultCache()
    cache.shared = shared_level
    calls = SharedCalls(ServerConfig(name="s", url="http://x/mcp", cache={"ttl": 60},
                                     coalesce={"enabled": coalesce}), cache, name="t/*/s")

    async def send(call: ToolCall) -> JsonDict:
        return {"content": [{"type": "text", "text": call.params["arguments"]["q"]}]}

    def call(q: str) -> ToolCall:
        return ToolCall("get", {"name": "get", "arguments": {"q": q}}, None, None, None)

    first = asyncio.ensure_future(calls.send(call("a"), READ_ONLY, send))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(shared_level.writes) == 1 and not first.done()  # stored, not yet held: no answer yet
    shared_level.writes[0].set_result(b"OK")
    assert (await first)["content"][0]["text"] == "a"
    second = asyncio.ensure_future(calls.send(call("b"), READ_ONLY, send))
    for _ in range(20):
        await asyncio.sleep(0)
    shared_level.writes[1].set_exception(ConnectionError("Redis went away"))
    assert (await second)["content"][0]["text"] == "b"  # the answer stands
    assert isinstance(shared_level.writes[1].exception(), ConnectionError)
