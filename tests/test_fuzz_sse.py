"""Fuzzing the SSE parser: any body cut into any chunks → the same events as the body in one chunk.

Malformed input (stray CRs, invalid UTF-8, fields without colons, no final blank line) never
raises, and well-formed events come back exactly as written.
"""

from __future__ import annotations

import asyncio

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import fuzz
from toolmesh.net.sse import SseEvent, iter_sse

LINES = [b"data: x", b"data:y", b"data", b"event: ping", b"event:", b"id: 7", b"id", b"retry: 3000", b"retry: x",
         b"retry: \xd9\xa3", b": comment", b":", b"", b"\r", b"\n", b"\r\n", b"field: v", b"data: \xff\xfe",
         b"data: \xe2\x82", b"\xac", b"data:  two spaces", b"DATA: caps", b"\x00", "data: é".encode()]
bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(LINES), max_size=40).map(b"\n".join),
    st.lists(st.sampled_from(LINES), max_size=40).map(b"\r\n".join),
)


def parse(chunks: list[bytes]) -> list[SseEvent]:
    """Every event of a body delivered as ``chunks``."""
    pending = list(chunks)

    async def read() -> bytes:
        return pending.pop(0) if pending else b""

    async def run() -> list[SseEvent]:
        return [e async for e in iter_sse(read)]

    return asyncio.run(run())


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    out, start = [], 0
    for p in points:
        if p > start:
            out.append(body[start:p])
            start = p
    out.append(body[start:])
    return [c for c in out if c]


@fuzz(400)
@given(bodies, st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
@example(b"data: \xe2\x82\xac\n\n", [8])  # a UTF-8 character cut between chunks
@example(b"data: a\r\n\r\n", [8])  # CRLF cut between chunks
@example(b"data: a", [3])  # no final blank line
def test_any_chunking_gives_the_same_events(body: bytes, cuts: list[int]) -> None:
    whole = parse([body])
    assert parse(split(body, cuts)) == whole
    assert parse([body[i:i + 1] for i in range(len(body))]) == whole


texts = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)
events = st.tuples(
    st.text(alphabet="abcdefgh-_", min_size=1, max_size=8),
    st.lists(texts, min_size=1, max_size=3),
    st.none() | st.text(alphabet="0123456789abc", max_size=6),
)


@fuzz(300)
@given(st.lists(events, min_size=1, max_size=5), st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
       st.sampled_from([b"\n", b"\r\n"]))
def test_written_events_come_back_exactly(items: list[tuple[str, list[str], str | None]], cuts: list[int],
                                          eol: bytes) -> None:
    body = b""
    expected = []
    last_id = None
    for name, lines, eid in items:
        block = [f"event: {name}".encode()] + [f"data: {line}".encode() for line in lines]
        if eid is not None:
            block.append(f"id: {eid}".encode())
            last_id = eid
        body += eol.join(block) + eol + eol
        expected.append(SseEvent(name, "\n".join(lines), last_id))
    assert parse(split(body, cuts)) == expected
