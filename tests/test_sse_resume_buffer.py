"""The replay buffer's bounds (pure logic): events per stream, keep times, bytes kept, sessions."""

from __future__ import annotations

import pytest

from toolmesh.servers import resume
from toolmesh.servers.resume import MAX_EVENTS, ReplayBuffer, ReplayRefused


def test_resume_after_dropped_events_is_refused_not_gapped() -> None:
    buf = ReplayBuffer()
    log = buf.open("s1")
    for i in range(MAX_EVENTS + 10):
        log.add({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": i}})
    # The first 10 events are gone: resuming before them would skip events silently.
    with pytest.raises(ReplayRefused, match="no longer kept") as err:
        log.after(5)
    assert err.value.status == 410
    found, seq = buf.find(log.event_id(10), "s1")
    assert found is log and [s for s, _ in found.after(seq)] == list(range(11, MAX_EVENTS + 11))
    with pytest.raises(ReplayRefused, match="never sent"):
        log.after(MAX_EVENTS + 11)
    assert log.size == sum(len(d) for _, d in log.events)


def test_ids_are_scoped_to_buffer_and_session() -> None:
    a, b = ReplayBuffer(), ReplayBuffer()
    log = a.open("s1")
    log.add({"jsonrpc": "2.0", "id": 1, "result": {}})
    with pytest.raises(ReplayRefused) as err:
        b.find(log.event_id(0), "s1")  # issued by another worker
    assert err.value.status == 409
    with pytest.raises(ReplayRefused) as err:
        a.find(log.event_id(0), "s2")  # another session
    assert err.value.status == 410
    with pytest.raises(ReplayRefused) as err:
        a.find("garbage", "s1")
    assert err.value.status == 400


def test_sweep_drops_expired_then_oldest_past_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = ReplayBuffer()
    big = "x" * 1000
    logs = []
    for _ in range(4):
        log = buf.open("s")
        log.add({"jsonrpc": "2.0", "id": 1, "result": {"text": big}})
        log.finish(delivered=False)
        logs.append(log)
    running = buf.open("s")  # not finished: never dropped for bytes
    running.add({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"text": big}})
    monkeypatch.setattr(resume, "MAX_KEPT_BYTES", 2 * logs[0].size)
    now = logs[-1].finished_at + 1.0
    buf.sweep(now)
    assert set(buf.streams.values()) == {logs[2], logs[3], running}  # the two oldest went first
    buf.sweep(now + resume.KEEP_DONE + 1)
    assert set(buf.streams.values()) == {running}
    delivered = buf.open("s")
    delivered.finish(delivered=True)
    buf.sweep(delivered.finished_at + resume.KEEP_DELIVERED + 0.5)
    assert delivered not in buf.streams.values()
