"""Session turns on PostgreSQL: no lock for the whole database (a session's own row orders its
writers), so turns of different sessions do not queue behind each other or behind an admin change,
and concurrent turns of one session from two processes all land. Real PostgreSQL (tests/services.py).
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from services import PostgresServer
from toolmesh.llm.types import Message
from toolmesh.store import SessionStore, Store
from toolmesh.store.postgres import WRITE_LOCK

pytest_plugins = ("store_engines",)
pytestmark = pytest.mark.timeout(120)


async def test_a_turn_does_not_wait_for_the_database_wide_write_lock(pg: PostgresServer) -> None:
    url = pg.create_database()
    async with Store(url) as store:
        sessions = SessionStore(store)
        s = await sessions.get("t", "ann", "c")
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))  # an admin change in another process
            await asyncio.wait_for(sessions.append(s, [Message(role="user", content="hi")]), 10)
            await asyncio.wait_for(sessions.replace_history(s, [Message(role="user", content="sum")], "s"), 10)
            # A read-modify-write transaction does wait for it (the lock is real).
            admin = asyncio.ensure_future(store.run(lambda conn: conn.execute("BEGIN IMMEDIATE")))
            await asyncio.sleep(0.5)
            assert not admin.done()
            other.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
            await asyncio.wait_for(admin, 10)
            await store.run(lambda conn: conn.execute("ROLLBACK"))
        assert [m.content for m in (await SessionStore(store).get("t", "ann", "c")).history] == ["sum"]


async def test_concurrent_turns_from_two_processes_all_land(pg: PostgresServer) -> None:
    url = pg.create_database()
    async with Store(url) as a, Store(url) as b:
        one, two = SessionStore(a), SessionStore(b)

        async def turns(sessions: SessionStore, who: str, conversation: str) -> None:
            for i in range(20):
                s = await sessions.get("t", "ann", conversation)
                await sessions.append(s, [Message(role="user", content=f"{who}{i}")])

        await asyncio.gather(turns(one, "a", "shared"), turns(two, "b", "shared"), turns(one, "c", "own"))
        shared = [m.content for m in (await SessionStore(a).get("t", "ann", "shared")).history]
        assert sorted(shared) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)])
        assert [x for x in shared if x.startswith("a")] == [f"a{i}" for i in range(20)]  # each writer in order
        own = [m.content for m in (await SessionStore(b).get("t", "ann", "own")).history]
        assert own == [f"c{i}" for i in range(20)]
        assert await a.fetchone("SELECT COUNT(*) FROM sessions") == (2,)
