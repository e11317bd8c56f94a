"""A handshake-era session used through two replicas at once (``state.url``, no stickiness).

Two ``toolmesh serve`` processes stand for two hosts (separate SQLite stores; Redis and
``gateway.session_secret`` shared), in front of real upstreams (a slow ``progress`` tool, a
``sleep`` tool, a tool that asks the user for input).

* SSE resumption (SEP-1699): a client starts a call on one replica, reads two progress
  notifications, leaves, and resumes with ``Last-Event-ID`` on the other: it gets every
  notification it missed, once, and the result. A stream delivered whole leaves nothing in
  Redis; another session's id finds nothing; a stream whose replica was killed mid-call is
  refused with 410 once the replica's mark expires.
* ``notifications/cancelled`` sent to the other replica cancels the call (and its upstream call).
* The answer to an elicitation, POSTed to the other replica, reaches the tool that asked.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from conftest import ServerProcess, free_port
from gateway_support import Gateway, legacy_session, running
from services import RedisServer

pytestmark = pytest.mark.timeout(120)

FIXTURE = str(Path(__file__).parent / "servers" / "hub_fixture_server.py")
FORWARD = str(Path(__file__).parent / "servers" / "hub_forward_server.py")


@dataclass
class Pair:
    redis: RedisServer
    one: Gateway
    two: Gateway


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("resume-replicas")
    port, asks = free_port(), free_port()
    upstream = ServerProcess([sys.executable, FIXTURE, "http", str(port)], port).start()
    asking = ServerProcess([sys.executable, FORWARD, "toolmesh", str(asks)], asks).start()
    with services.redis_server() as redis:
        cfg = {"servers": {"fx": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp"},
                           "fw": {"transport": "http", "url": f"http://127.0.0.1:{asks}/mcp",
                                  "protocol": "2025-11-25"}},
               "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0, "max_backoff": 0.5},
               "gateway": {"session_secret": "s3cret-shared-by-both-replicas-0123456789"}}
        one, two = Gateway(tmp / "one", cfg, no_auth=True), Gateway(tmp / "two", cfg, no_auth=True)
        try:
            with running(one, two, together=False):
                yield Pair(redis, one, two)
        finally:
            upstream.stop()
            asking.stop()


def _call(steps: int, interval: float) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": steps, "interval": interval},
                       "_meta": {"progressToken": "p"}}}


def _events(lines: Iterator[str], count: int) -> list[tuple[str, str]]:
    """The next ``count`` message events (id, data) of an SSE stream (the priming event skipped)."""
    out: list[tuple[str, str]] = []
    event_id, data = "", ""
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and event_id:
            if data.strip():
                out.append((event_id, data))
                if len(out) == count:
                    break
            event_id, data = "", ""
    return out


def _leave_after(url: str, h: dict[str, str], steps: int, interval: float, seen: int) -> list[tuple[str, str]]:
    """Start a call, read ``seen`` progress events, then close the connection mid-stream."""
    with httpx.stream("POST", url, headers=h, json=_call(steps, interval), timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return _events(r.iter_lines(), seen)


def _resume(url: str, h: dict[str, str], last: str) -> tuple[int, list[tuple[str, str]], str]:
    headers = {**h, "accept": "text/event-stream", "last-event-id": last}
    with httpx.stream("GET", url, headers=headers, timeout=30) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [], r.text
        events = _events(r.iter_lines(), 10_000)  # until the server ends the stream
        return 200, events, ""


def _copies(redis: RedisServer) -> list[str]:
    return [k for k in redis.cli("--scan", "--pattern", "tm:sse:*").split() if ":alive:" not in k]


def test_a_stream_left_on_one_replica_resumes_on_the_other(pair: Pair) -> None:
    url_one, url_two = f"{pair.one.url}/servers/fx/mcp", f"{pair.two.url}/servers/fx/mcp"
    h = legacy_session(url_one)
    # Delivered whole: nothing is copied to Redis.
    whole = httpx.post(url_one, headers=h, json=_call(2, 0.01), timeout=30)
    assert whole.status_code == 200 and '"result"' in whole.text
    assert _copies(pair.redis) == []

    first = _leave_after(url_one, h, steps=6, interval=0.4, seen=2)
    assert [('"progress":1' in d.replace(" ", ""), '"progress":2' in d.replace(" ", "")) for _, d in first] == [
        (True, False), (False, True)]
    status, rest, _ = _resume(url_two, h, first[-1][0])
    assert status == 200
    progress = [d for _, d in rest if "notifications/progress" in d]
    assert [f'"progress":{n}' in d.replace(" ", "") for n, d in zip(range(3, 7), progress, strict=True)] == [True] * 4
    assert '"result"' in rest[-1][1] and "done 6" in rest[-1][1]
    ids = [i for i, _ in first + rest]
    assert len(ids) == len(set(ids)) == 7  # every event once: 6 progress notifications and the result
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == list(range(1, 8))
    assert len(_copies(pair.redis)) == 1  # the stream that was left, and only it

    # Resuming again on the first replica (its own memory) or the second (the copy) replays the same end.
    for url in (url_one, url_two):
        status, again, _ = _resume(url, h, ids[4])
        assert status == 200 and [i for i, _ in again] == ids[5:]

    # Another session never reaches this stream's copy.
    other = legacy_session(url_two)
    status, _, text = _resume(url_two, other, ids[2])
    assert status == 410 and "unknown" in text


def test_a_stream_whose_replica_died_is_refused_clearly(pair: Pair, tmp_path: Path) -> None:
    # A third replica of its own, killed mid-call: its stream can never end.
    doomed = Gateway(tmp_path / "doomed", _config_of(pair.one), no_auth=True).start()
    try:
        url = f"{doomed.url}/servers/fx/mcp"
        h = legacy_session(url)
        first = _leave_after(url, h, steps=20, interval=0.5, seen=1)
        time.sleep(0.3)  # the copy is written
        doomed.stop(graceful=False)  # SIGKILL to the whole process group
        # Until its mark expires the stream looks alive; after, a resume is refused with 410.
        deadline = time.monotonic() + 20
        while True:
            status, events, text = _resume(f"{pair.two.url}/servers/fx/mcp", h, first[-1][0])
            if status == 410:
                assert "stopped" in text
                break
            assert status == 200 and not any('"result"' in d for _, d in events)
            assert time.monotonic() < deadline, "the dead replica's stream was never refused"
    finally:
        doomed.stop()


def _config_of(gw: Gateway) -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = yaml.safe_load(gw.config_path.read_text())
    config.pop("store", None)
    return config


def test_a_cancellation_sent_to_the_other_replica_cancels_the_call(pair: Pair, tmp_path: Path) -> None:
    url_one, url_two = f"{pair.one.url}/servers/fx/mcp", f"{pair.two.url}/servers/fx/mcp"
    h = {**legacy_session(url_one), "accept": "application/json"}
    marker = str(tmp_path / "m")
    call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 60, "marker": marker}}}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url_one, headers=h, json=call, timeout=50)
        _wait_for(Path(marker + ".started"))
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 11}}
        assert httpx.post(url_two, headers=h, json=cancel).status_code == 202
        answer = pending.result(timeout=30)
    assert answer.json()["error"]["message"] == "Request cancelled"
    _wait_for(Path(marker + ".cancelled"))  # the upstream's call was cancelled too


def test_an_answer_sent_to_the_other_replica_reaches_the_tool_that_asked(pair: Pair) -> None:
    url_one, url_two = f"{pair.one.url}/servers/fw/mcp", f"{pair.two.url}/servers/fw/mcp"
    h = legacy_session(url_one, {"elicitation": {}})
    call = {"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": "ask_user", "arguments": {}}}
    with httpx.stream("POST", url_one, headers=h, json=call, timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        asked = json.loads(_events(lines, 1)[0][1])
        assert asked["method"] == "elicitation/create"
        reply = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"name": "Ada"}}}
        assert httpx.post(url_two, headers=h, json=reply).status_code == 202
        result = json.loads(_events(lines, 1)[0][1])
    assert result["id"] == 12 and result["result"]["content"][0]["text"] == "hello Ada"


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_with_redis_down_a_resume_elsewhere_is_refused_clearly_and_nothing_breaks(pair: Pair) -> None:
    url_one, url_two = f"{pair.one.url}/servers/fx/mcp", f"{pair.two.url}/servers/fx/mcp"
    h = legacy_session(url_one)
    first = _leave_after(url_one, h, steps=8, interval=0.3, seen=1)
    time.sleep(0.5)  # the copy is written
    pair.redis.stop()
    try:
        status, _, text = _resume(url_two, h, first[-1][0])
        assert status == 503 and "cannot be read now" in text
        # A cancellation for the other process cannot travel: accepted, dropped with a log line.
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
        assert httpx.post(url_two, headers=h, json=cancel).status_code == 202
        # The stream is still whole where it started: resumed there, it ends with the result.
        status, rest, _ = _resume(url_one, h, first[-1][0])
        assert status == 200 and "done 8" in rest[-1][1]
    finally:
        pair.redis.start()  # empty, same port
    # Redis back (empty): the copy is gone, which is said as such.
    deadline = time.monotonic() + 20
    while True:
        status, _, text = _resume(url_two, h, first[-1][0])
        if status == 410:
            break
        assert status == 503 and time.monotonic() < deadline, (status, text)
        time.sleep(0.2)
