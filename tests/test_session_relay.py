"""Which client messages belong to another process (pure logic of :mod:`toolmesh.servers.relay`);
the relay itself, between two gateway processes over Redis, is tested in ``test_session_replicas.py``."""

from __future__ import annotations

import asyncio

from toolmesh.servers.relay import meant_elsewhere
from toolmesh.servers.state import Conn


def test_cancellations_and_answers_for_what_is_not_here_are_meant_elsewhere() -> None:
    async def go() -> None:
        conn = Conn("session:x")
        task = asyncio.get_running_loop().create_future()
        conn.inflight[5] = task  # type: ignore[assignment]
        rid, _ = conn.expect_response()
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}
        assert not meant_elsewhere(conn, cancel)
        assert meant_elsewhere(conn, {**cancel, "params": {"requestId": 6}})
        assert not meant_elsewhere(conn, {"jsonrpc": "2.0", "id": rid, "result": {}})
        assert meant_elsewhere(conn, {"jsonrpc": "2.0", "id": rid + 1, "error": {"code": 1, "message": "no"}})
        for here in ({"jsonrpc": "2.0", "method": "notifications/initialized"}, [cancel], "x"):
            assert not meant_elsewhere(conn, here)

    asyncio.run(go())


def test_shared_sessions_number_their_requests_apart() -> None:
    async def go() -> None:
        plain = Conn("a")
        assert plain.expect_response()[0] == 1
        one, two = Conn("s", shared=True), Conn("s", shared=True)
        a, b = one.expect_response()[0], two.expect_response()[0]
        assert a != b and 0 < a < 2**53 and 0 < b < 2**53
        assert one.expect_response()[0] == a + 1

    asyncio.run(go())
