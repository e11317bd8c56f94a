"""Sessions: exact message round trip, persistence, TTL, LRU, isolation, archive, per-user limits."""

from __future__ import annotations

import asyncio
import gc

import pytest

from toolmesh.errors import RequestRejectedError
from toolmesh.llm.types import Message, ToolCall
from toolmesh.store import SessionStore, Store, UserLimits, message_from_dict, message_to_dict

pytest_plugins = ("store_engines",)  # store_url: each store test on SQLite and on PostgreSQL


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def turn(i: int) -> list[Message]:
    call = ToolCall(f"call_{i}", "track_shipment", {"id": f"S{i}", "opts": {"deep": [1, 2.5, None, True]}},
                    f'{{"id": "S{i}"}}')
    bad = ToolCall(f"call_{i}b", "lookup", {}, "{not json", parse_error="Expecting property name", recovered=True)
    return [
        Message("user", f"where is S{i}? é 東京 \u0000 \n"),
        Message("assistant", None, [call, bad], reasoning="thinking…"),
        Message("tool", '{"status": "in transit"}', tool_call_id=f"call_{i}", name="track_shipment"),
        Message("tool", "", tool_call_id=f"call_{i}b", name="lookup"),
        Message("assistant", f"S{i} is in transit."),
    ]


def test_message_round_trip_exact() -> None:
    for m in [*turn(1), Message("system", ""), Message("user", None, name="bob")]:
        assert message_from_dict(message_to_dict(m)) == m
    with pytest.raises(TypeError, match="expected .*Message, not dict"):
        message_to_dict({"role": "user"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        message_to_dict(Message("robot", "x"))  # type: ignore[arg-type]


async def test_persist_and_reload_across_reopen(store_url: str) -> None:
    db = store_url
    clock = Clock()
    async with Store(db) as store:
        sessions = SessionStore(store, clock=clock)
        s = await sessions.get("acme", "ann", "c1")
        assert s.history == []
        await sessions.append(s, turn(1))
        await sessions.append(s, turn(2))
        assert s.messages == turn(1) + turn(2)
    async with Store(db) as store:
        sessions = SessionStore(store, clock=clock)
        s = await sessions.get("acme", "ann", "c1")
        assert s.history == turn(1) + turn(2)
        assert (await sessions.get("acme", "ann", "c2")).history == []


async def test_isolation_between_keys(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store, max_sessions=2)  # small cache: most gets reload from disk
        keys = [("a:b", "c", "x"), ("a", "b:c", "x"), ("a", "b", "c:x"), ("acme", "ann", "x"), ("acme", "bob", "x"),
                ("other", "ann", "x"), ("acme", "ann", "y")]
        for k in keys:
            await sessions.append(await sessions.get(*k), [Message("user", "|".join(k))])
        for _ in range(2):
            for k in keys:
                s = await sessions.get(*k)
                assert s.key == k
                assert [m.content for m in s.history] == ["|".join(k)]
        await sessions.delete("acme", "ann", "x")
        assert (await sessions.get("acme", "ann", "x")).history == []
        assert [m.content for m in (await sessions.get("acme", "bob", "x")).history] == ["acme|bob|x"]


async def test_concurrent_users_no_bleeding(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store, max_sessions=7)

        async def user(u: int) -> None:
            for i in range(10):
                s = await sessions.get("t", f"u{u % 20}", "conv")
                await sessions.append(s, [Message("user", f"u{u % 20}:{u}:{i}")])

        await asyncio.gather(*(user(u) for u in range(100)))
        for u in range(20):
            s = await sessions.get("t", f"u{u}", "conv")
            assert len(s.history) == 50
            assert all(m.content and m.content.startswith(f"u{u}:") for m in s.history)
        # Disk agrees with memory.
        fresh = SessionStore(store)
        for u in range(20):
            assert (await fresh.get("t", f"u{u}", "conv")).history == (await sessions.get("t", f"u{u}", "conv")).history


async def test_lru_evicts_and_reloads(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store, max_sessions=3)
        for i in range(10):
            await sessions.append(await sessions.get("t", "u", f"c{i}"), [Message("user", str(i))])
        assert len(sessions) == 3
        gc.collect()
        for i in range(10):
            assert [m.content for m in (await sessions.get("t", "u", f"c{i}")).history] == [str(i)]
        assert len(sessions) == 3


async def test_held_session_keeps_identity_after_eviction(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store, max_sessions=1)
        held = await sessions.get("t", "u", "a")
        await sessions.get("t", "u", "b")  # evicts "a" from the LRU
        await sessions.append(held, [Message("user", "late")])
        again = await sessions.get("t", "u", "a")
        assert again is held and [m.content for m in again.history] == ["late"]


async def test_ttl_expiry_gives_fresh_session(store_url: str) -> None:
    clock = Clock()
    db = store_url
    async with Store(db) as store:
        sessions = SessionStore(store, ttl=60, clock=clock)
        s = await sessions.get("t", "u", "c")
        await sessions.append(s, [Message("user", "old")])
        clock.t += 59
        assert (await sessions.get("t", "u", "c")).history[0].content == "old"
        clock.t += 2
        fresh = await sessions.get("t", "u", "c")
        assert fresh.history == [] and fresh is not s
        with pytest.raises(RuntimeError, match="deleted or expired"):
            await sessions.append(s, [Message("user", "ghost")])
        await sessions.append(fresh, [Message("user", "new")])
    async with Store(db) as store:  # expired on disk too, also after a restart
        clock.t += 120
        sessions = SessionStore(store, ttl=60, clock=clock)
        assert (await sessions.get("t", "u", "c")).history == []


async def test_purge_expired(store_url: str) -> None:
    clock = Clock()
    async with Store(store_url) as store:
        sessions = SessionStore(store, ttl=10, clock=clock)
        await sessions.append(await sessions.get("t", "u", "old"), [Message("user", "x")])
        clock.t += 11
        await sessions.append(await sessions.get("t", "u", "new"), [Message("user", "y")])
        assert await sessions.purge_expired() == 1
        assert await store.fetchone("SELECT COUNT(*) FROM messages") == (1,)


async def test_replace_history_archives_old_turns(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store)
        s = await sessions.get("t", "u", "c")
        await sessions.append(s, turn(1) + turn(2))
        summary = [Message("system", "Summary: two shipments asked about."), *turn(2)[-1:]]
        await sessions.replace_history(s, summary, archived_summary="two shipments")
        assert s.history == summary
        reloaded = await SessionStore(store).get("t", "u", "c")
        assert reloaded.history == summary
        archives = await sessions.archives(s)
        assert len(archives) == 1 and archives[0][1] == "two shipments" and archives[0][2] == turn(1) + turn(2)
        assert await sessions.delete("t", "u", "c") is True
        assert await store.fetchone("SELECT COUNT(*) FROM session_archive") == (0,)


async def test_bad_input_changes_nothing(store_url: str) -> None:
    async with Store(store_url) as store:
        sessions = SessionStore(store)
        s = await sessions.get("t", "u", "c")
        await sessions.append(s, [Message("user", "keep")])
        for bad, message in (
                ([Message("user", "ok"), "not a message"], "expected .*Message, not str"),
                (Message("user", "x"), "messages must be a list of Message"),
                ([Message("assistant", None, [ToolCall("1", "f", {"x": {1, 2}})])], "not JSON serializable: set"),
                ([Message("user", 5)], "content must be str or None, not int")):  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=message):
                await sessions.append(s, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="user must be str, not NoneType"):
            await sessions.get("t", None, "c")  # type: ignore[arg-type]
        assert [m.content for m in s.history] == ["keep"]
        assert [m.content for m in (await SessionStore(store).get("t", "u", "c")).history] == ["keep"]


# -- per-user limits -------------------------------------------------------------------


async def test_concurrent_runs_limit_exact() -> None:
    limits = UserLimits(max_concurrent_runs=3, requests_per_minute=None)
    gate = asyncio.Event()
    admitted, rejected = 0, 0

    async def run(user: str) -> None:
        nonlocal admitted, rejected
        try:
            async with limits.run("t", user):
                admitted += 1
                await gate.wait()
        except RequestRejectedError as e:
            assert e.reason == "concurrency" and e.retry_after is not None
            rejected += 1

    tasks = [asyncio.create_task(run(f"u{i % 4}")) for i in range(40)]
    await asyncio.sleep(0)
    assert admitted == 12 and rejected == 28
    assert limits.in_flight("t", "u0") == 3 and limits.in_flight("other", "u0") == 0
    gate.set()
    await asyncio.gather(*tasks)
    assert limits.in_flight("t", "u0") == 0
    async with limits.run("t", "u0"):
        pass


async def test_requests_per_minute_exact_with_retry_after() -> None:
    clock = Clock(0.0)
    limits = UserLimits(max_concurrent_runs=None, requests_per_minute=5, clock=clock)
    for i in range(5):
        clock.t = i * 10.0
        async with limits.run("t", "ann"):
            pass
    with pytest.raises(RequestRejectedError) as err:
        async with limits.run("t", "ann"):
            pass
    assert err.value.reason == "rate" and err.value.retry_after == pytest.approx(20.0)
    async with limits.run("t", "bob"):  # another user is unaffected
        pass
    clock.t = 60.0  # the first request left the window
    async with limits.run("t", "ann"):
        pass
    with pytest.raises(RequestRejectedError):
        limits.acquire("t", "ann")


async def test_limits_memory_bounded() -> None:
    clock = Clock(0.0)
    limits = UserLimits(max_concurrent_runs=2, requests_per_minute=3, clock=clock)
    for i in range(10_000):
        clock.t = i * 0.1
        async with limits.run("t", f"user{i}"):
            pass
    assert len(limits) < 5000
    with pytest.raises(RuntimeError):
        limits.release("t", "nobody")
    with pytest.raises(ValueError):
        UserLimits(max_concurrent_runs=0)
