"""The gathering transport behind OneWriteHttpToolsProtocol (pure logic; the servers' and gateway's
suites exercise it for real, since both serve through it)."""

from __future__ import annotations

import asyncio
from typing import Any

from toolmesh.net.onewrite import _GatheringTransport


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


async def test_writes_of_one_iteration_leave_together_in_order() -> None:
    rec = _Recorder()
    t = _GatheringTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"body")
    assert rec.writes == [] and t.get_write_buffer_size() == 23
    await asyncio.sleep(0)
    assert rec.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    t.write(b"event-1")
    await asyncio.sleep(0)
    t.write(b"event-2")
    await asyncio.sleep(0)
    assert rec.writes[1:] == [b"event-1", b"event-2"]  # a stream still flows as produced
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # everything else delegates


async def test_close_flushes_and_abort_drops() -> None:
    rec = _Recorder()
    t = _GatheringTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"last words")
    t.close()
    assert rec.writes == [b"last words"] and rec.closed
    await asyncio.sleep(0)
    assert rec.writes == [b"last words"]  # not sent twice
    rec2 = _Recorder()
    t2 = _GatheringTransport(rec2, asyncio.get_running_loop())  # type: ignore[arg-type]
    t2.write(b"never")
    t2.abort()
    await asyncio.sleep(0)
    assert rec2.writes == [] and rec2.aborted
