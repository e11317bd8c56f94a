"""Ended handshake-era sessions do not pile up in a gateway's memory (found by the soak run).

Each DELETE used to add the full session id to two sets kept for the life of the process. The
in-memory record is now a cache kept ``remember`` seconds; the durable tombstone answers after.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from toolmesh.gateway.mcp.endpoints import SealedSessions
from toolmesh.store.sqlite import Store

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}


async def test_ended_sessions_are_forgotten_in_memory_but_stay_refused(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with Store(tmp_path / "s.db") as store:
        codec = SealedSessions(b"k" * 32, "default", max_age=3600.0, store=store, remember=100.0)
        sids = [codec.seal(INIT, {}) for _ in range(200)]
        for sid in sids:
            assert await codec.open(sid, {}) is not None
            await codec.end(sid)
        assert codec.remembered == 200
        assert await codec.open(sids[0], {}) is None

        later = time.monotonic() + 1000.0
        monkeypatch.setattr(time, "monotonic", lambda: later)
        fresh = codec.seal(INIT, {})
        await codec.end(fresh)
        assert codec.remembered == 1  # only the one ended just now is still in memory
        # ...and every earlier one is still refused, by its stored tombstone.
        assert all([await codec.open(sid, {}) is None for sid in sids[:20]])


async def test_without_a_store_the_memory_is_the_only_record_and_is_still_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    codec = SealedSessions(b"k" * 32, "default", max_age=3600.0, remember=100.0)
    sid = codec.seal(INIT, {})
    await codec.end(sid)
    assert await codec.open(sid, {}) is None
    later = time.monotonic() + 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: later)
    await codec.end(codec.seal(INIT, {}))
    assert codec.remembered == 1
