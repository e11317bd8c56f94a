"""The resume logic over a stream mirror, with an in-memory mirror (pure logic: what is shared, when,
and how a copy that is trimmed, unreachable or orphaned is refused). The real one, in Redis
between two gateway processes, is tested in ``test_sse_resume_replicas.py``."""

from __future__ import annotations

import asyncio

import pytest

from toolmesh.servers.resume import ReplayBuffer, ReplayRefused, StreamLog


class MemoryMirror:
    def __init__(self) -> None:
        self.streams: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        self.done: set[tuple[str, str]] = set()
        self.alive = True
        self.down = False
        self.writes = 0

    def opened(self, stream: str, session: str) -> None:
        self.writes += 1
        self.streams[(stream, session)] = []

    def append(self, stream: str, session: str, seq: int, data: bytes) -> None:
        self.writes += 1
        self.streams[(stream, session)].append((seq, data))

    def ended(self, stream: str, session: str) -> None:
        self.writes += 1
        self.done.add((stream, session))

    async def read(self, stream: str, session: str, after: int) -> tuple[list[tuple[int, bytes]], bool, bool] | None:
        if self.down:
            raise ConnectionError("Redis is down")
        events = self.streams.get((stream, session))
        if events is None:
            return None
        return [e for e in events if e[0] > after], (stream, session) in self.done, self.alive


def _msg(n: int) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": n}}


def _shared(events: int) -> tuple[MemoryMirror, ReplayBuffer, ReplayBuffer, StreamLog]:
    """A mirror, the buffer of the process that wrote a stream of ``events`` events and shared it,
    the buffer of another process, and the stream."""
    mirror = MemoryMirror()
    origin, here = ReplayBuffer(mirror), ReplayBuffer(mirror)
    log = origin.open("s1")
    for n in range(1, events + 1):
        log.add(_msg(n))
    origin.share(log)
    return mirror, origin, here, log


def test_only_a_left_stream_is_shared_and_from_its_start() -> None:
    mirror = MemoryMirror()
    origin = ReplayBuffer(mirror)
    whole = origin.open("s1")
    whole.add(_msg(1))
    whole.finish(delivered=True)
    assert mirror.writes == 0  # delivered whole: the mirror never hears of it
    left = origin.open("s1")
    left.add(_msg(1))
    left.add(_msg(2))
    origin.share(left)
    left.add(_msg(3))
    origin.share(left)  # (twice is once)
    left.finish()
    stream = left.prefix[:-1]
    assert [seq for seq, _ in mirror.streams[(stream, "s1")]] == [1, 2, 3]
    assert (stream, "s1") in mirror.done
    get_stream = origin.open("s1", standalone=True)
    origin.share(get_stream)
    assert get_stream.mirror is None  # a GET stream opens afresh elsewhere instead


@pytest.mark.anyio
async def test_another_process_resumes_from_the_copy_and_follows_it() -> None:
    _, _, here, log = _shared(3)
    copy, seq, follower = await here.resume(log.event_id(1), "s1")
    assert follower is not None and seq == 1
    assert [s for s, _ in copy.after(seq)] == [2, 3]
    log.add(_msg(4))
    log.finish()
    await asyncio.wait_for(follower, 5)
    assert copy.done and [s for s, _ in copy.after(3)] == [4]
    with pytest.raises(ReplayRefused) as refused:
        await here.resume(log.event_id(1), "s2")  # another session: nothing
    assert refused.value.status == 410


@pytest.mark.anyio
async def test_trimmed_unreachable_and_orphaned_copies_are_refused() -> None:
    mirror, _, here, log = _shared(5)
    stream = log.prefix[:-1]
    del mirror.streams[(stream, "s1")][:2]  # trimmed: events 1 and 2 are gone
    copy, seq, follower = await here.resume(log.event_id(1), "s1")
    assert follower is not None
    with pytest.raises(ReplayRefused) as refused:
        copy.after(seq)
    assert refused.value.status == 410
    follower.cancel()
    mirror.down = True
    with pytest.raises(ReplayRefused) as refused:
        await here.resume(log.event_id(3), "s1")
    assert refused.value.status == 503 and "cannot be read now" in refused.value.message
    mirror.down, mirror.alive = False, False  # the writing process died before the end
    with pytest.raises(ReplayRefused) as refused:
        await here.resume(log.event_id(3), "s1")
    assert refused.value.status == 410 and "stopped" in refused.value.message
    with pytest.raises(ReplayRefused) as refused:
        await ReplayBuffer().resume(log.event_id(3), "s1")  # no mirror: where it started only
    assert refused.value.status == 409


@pytest.mark.anyio
async def test_a_follower_the_copy_was_trimmed_past_ends_its_stream() -> None:
    mirror, _, here, log = _shared(1)
    copy, seq, follower = await here.resume(log.event_id(1), "s1")
    assert follower is not None and copy.after(seq) == []
    for n in range(2, 6):
        log.add(_msg(n))
    del mirror.streams[(log.prefix[:-1], "s1")][:2]  # events 2 and 3 trimmed before the reader saw them
    await asyncio.wait_for(follower, 5)
    assert copy.done and copy.after(1) == []  # nothing skipped silently: the stream just ends
    with pytest.raises(ReplayRefused) as refused:
        copy_again, seq_again, _ = await here.resume(log.event_id(1), "s1")
        copy_again.after(seq_again)
    assert refused.value.status == 410
