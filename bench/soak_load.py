"""The soak benchmark's load: MCP sessions and streaming chats against one gateway, cheaply.

One asyncio process drives every client, so each request must cost little CPU: HTTP POSTs go
through toolmesh's own keep-alive client (:class:`toolmesh.net.fasthttp.FastHttpPool`, the
Hub's hot path), WebSocket sessions through aiohttp (one socket each). Every answer is checked
(``add(a, b)`` must return ``a + b``; a chat must stream the tool's result and end with
``[DONE]``); anything else counts as an error, and the first few are kept verbatim.

Session kinds (the MCP sessions are spread evenly over them):

* ``http-2025``: ``initialize`` → ``Mcp-Session-Id``, ``notifications/initialized``, calls in the
  session, ``DELETE`` at the end (the handshake era, 2025-11-25);
* ``http-2026``: stateless 2026-07-28 calls (``_meta`` envelope, ``Mcp-Method``/``Mcp-Name``);
* ``ws-2025`` / ``ws-2026``: one WebSocket (``/ws``, subprotocol ``mcp``) per session, the same
  two eras.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from toolmesh.net.fasthttp import FastHttpPool

KINDS = ("http-2025", "http-2026", "ws-2025", "ws-2026")
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
CHAT_PROMPT = "please add 19 and 23"
#: What the scripted LLM's final answer carries (the tool's result): see soak.LLM_RULES.
CHAT_EXPECT = "42"
_KEEP_ERRORS = 5
_CALL_TIMEOUT = 30.0


@dataclass
class Stats:
    """Latencies of the current window and error counts, per kind of work (``mcp`` / ``chat``)."""

    window: dict[str, list[float]] = field(default_factory=lambda: {"mcp": [], "chat": []})
    done: dict[str, int] = field(default_factory=lambda: {"mcp": 0, "chat": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"mcp": 0, "chat": 0})
    first_errors: list[str] = field(default_factory=list)
    #: The slowest request of the current window per kind of work: (seconds, session kind).
    slowest: dict[str, tuple[float, str]] = field(default_factory=dict)

    def ok(self, what: str, seconds: float, kind: str = "chat") -> None:
        self.window[what].append(seconds)
        self.done[what] += 1
        if seconds > self.slowest.get(what, (0.0, ""))[0]:
            self.slowest[what] = (seconds, kind)

    def fail(self, what: str, why: str) -> None:
        self.errors[what] += 1
        if len(self.first_errors) < _KEEP_ERRORS:
            self.first_errors.append(f"{what}: {why}"[:500])

    def take_window(self) -> dict[str, list[float]]:
        out, self.window = self.window, {"mcp": [], "chat": []}
        self.slowest = {}
        return out


def _json_of(raw: bytes) -> Any:
    """A JSON body, or the last ``data:`` line of an SSE body."""
    text = raw.strip()
    if text.startswith(b"{"):
        return orjson.loads(text)
    last = b""
    for line in text.splitlines():
        if line.startswith(b"data:"):
            last = line[5:].strip()
    return orjson.loads(last)


def _check_sum(msg: Any, expect: int) -> str | None:
    """``None`` if ``msg`` is a successful ``add`` result equal to ``expect``, else why not."""
    if not isinstance(msg, dict) or "result" not in msg:
        return f"no result: {str(msg)[:300]}"
    result = msg["result"]
    if result.get("isError"):
        return f"tool error: {str(result)[:300]}"
    structured = result.get("structuredContent")
    if isinstance(structured, dict) and structured.get("result") == expect:
        return None
    texts = [c.get("text") for c in result.get("content") or [] if isinstance(c, dict)]
    return None if str(expect) in texts else f"wrong sum (want {expect}): {str(result)[:300]}"


class Load:
    """Runs the sessions and chats against ``base`` (``http://127.0.0.1:PORT``) until :meth:`stop`."""

    def __init__(self, base: str, key: str, tool: str, *, pause: float, chat_pause: float, model: str,
                 seed: int = 1, pool_limit: int = 256, session_calls: int = 0) -> None:
        self.base = base
        self.key = key
        self.tool = tool
        self.pause = pause
        self.chat_pause = chat_pause
        self.model = model
        self.stats = Stats()
        self.rng = random.Random(seed)
        self.stopping = asyncio.Event()
        self.mcp_pool = FastHttpPool(base + "/mcp", limit=pool_limit)
        self.chat_pool = FastHttpPool(base + "/v1/chat/completions", limit=pool_limit)
        self.http: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.open_sessions = 0
        #: Calls per session before the client ends it and opens a new one (0: one session throughout).
        self.session_calls = session_calls
        self.sessions_opened = 0
        self._auth = f"Authorization: Bearer {key}\r\n".encode()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, sessions: int, chats: int, ramp_s: float) -> None:
        """Open ``sessions`` MCP sessions (evenly over :data:`KINDS`) and ``chats`` chat loops over ``ramp_s``."""
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        work = [(KINDS[i % len(KINDS)], i) for i in range(sessions)] + [("chat", i) for i in range(chats)]
        self.rng.shuffle(work)
        step = ramp_s / max(len(work), 1)
        for kind, i in work:
            coro = self._chat(i) if kind == "chat" else self._session(kind, i)
            self.tasks.append(asyncio.create_task(coro))
            if step:
                await asyncio.sleep(step)

    async def stop(self) -> None:
        """Let every client finish its current request, close its session, then close the pools."""
        self.stopping.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.mcp_pool.aclose()
        await self.chat_pool.aclose()
        if self.http is not None:
            await self.http.close()

    async def _rest(self, seconds: float) -> None:
        # Jittered so the sessions do not march in step.
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds * (0.5 + self.rng.random()))
        except TimeoutError:
            pass

    def _call(self, rid: int, a: int, b: int, modern: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"name": self.tool, "arguments": {"a": a, "b": b}}
        if modern:
            params["_meta"] = MODERN_META
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}

    # -- MCP sessions --------------------------------------------------------------------------
    async def _session(self, kind: str, i: int) -> None:
        """One client: a session after another (churn exercises set-up and tear-down), until stopped."""
        while not self.stopping.is_set():
            try:
                if kind.startswith("http"):
                    await self._http_session(kind == "http-2026")
                else:
                    await self._ws_session(kind == "ws-2026")
            except Exception as exc:  # a session that broke counts once and ends
                self.stats.fail("mcp", f"{kind} session {i}: {type(exc).__name__}: {exc}")
                return

    def _more(self, calls: int) -> bool:
        return not self.stopping.is_set() and (not self.session_calls or calls < self.session_calls)

    async def _post(self, body: Any, headers: bytes) -> tuple[int, dict[str, str], bytes]:
        head = (b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                + self._auth + headers)
        async with asyncio.timeout(_CALL_TIMEOUT):
            resp, conn = await self.mcp_pool.post(orjson.dumps(body), head)
            if resp.streaming:  # an SSE answer: read it to the end
                chunks = []
                while chunk := await resp.read_chunk():
                    chunks.append(chunk)
                await self.mcp_pool.done(conn, resp)
                return resp.status, resp.headers, b"".join(chunks)
        return resp.status, resp.headers, resp.body

    async def _http_session(self, modern: bool) -> None:
        if modern:
            headers = (f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\n"
                       f"Mcp-Name: {self.tool}\r\n").encode()
            sid = None
        else:
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": HANDSHAKE, "capabilities": {},
                               "clientInfo": {"name": "toolmesh-soak", "version": "1"}}}
            status, got, raw = await self._post(init, b"")
            sid = got.get("mcp-session-id")
            if status != 200 or not sid:
                raise RuntimeError(f"initialize answered {status}: {raw[:200]!r}")
            headers = f"Mcp-Session-Id: {sid}\r\nMcp-Protocol-Version: {HANDSHAKE}\r\n".encode()
            status, _, raw = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
            if status not in (200, 202):
                raise RuntimeError(f"notifications/initialized answered {status}: {raw[:200]!r}")
        self.open_sessions += 1
        self.sessions_opened += 1
        try:
            rid = 0
            while self._more(rid):
                rid += 1
                a, b = self.rng.randrange(1000), self.rng.randrange(1000)
                started = time.perf_counter()
                try:
                    status, _, raw = await self._post(self._call(rid, a, b, modern), headers)
                    why = f"HTTP {status}: {raw[:200]!r}" if status != 200 else _check_sum(_json_of(raw), a + b)
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"
                kind = "http-2026" if modern else "http-2025"
                if why is None:
                    self.stats.ok("mcp", time.perf_counter() - started, kind)
                else:
                    self.stats.fail("mcp", f"{kind}: {why}")
                await self._rest(self.pause)
        finally:
            self.open_sessions -= 1
            if sid is not None:
                assert self.http is not None
                async with self.http.delete(self.base + "/mcp", headers={
                        "Authorization": f"Bearer {self.key}", "Mcp-Session-Id": sid,
                        "Mcp-Protocol-Version": HANDSHAKE}) as resp:
                    if resp.status != 200:
                        self.stats.fail("mcp", f"DELETE of a session answered {resp.status}")

    async def _ws_session(self, modern: bool) -> None:
        assert self.http is not None
        async with self.http.ws_connect(self.base + "/ws", protocols=("mcp",), autoping=True,
                                        headers={"Authorization": f"Bearer {self.key}"}) as ws:

            async def answer(rid: int) -> Any:
                async with asyncio.timeout(_CALL_TIMEOUT):
                    while True:  # skip server notifications (list_changed and the like)
                        msg = await ws.receive()
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            raise ConnectionError(f"websocket ended: {msg.type.name} {msg.data!r}")
                        data = orjson.loads(msg.data)
                        if isinstance(data, dict) and data.get("id") == rid:
                            return data

            if not modern:
                await ws.send_str(orjson.dumps({
                    "jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": HANDSHAKE, "capabilities": {},
                               "clientInfo": {"name": "toolmesh-soak", "version": "1"}}}).decode())
                init = await answer(0)
                if "result" not in init:
                    raise RuntimeError(f"initialize failed: {init}")
                await ws.send_str('{"jsonrpc":"2.0","method":"notifications/initialized"}')
            self.open_sessions += 1
            self.sessions_opened += 1
            try:
                rid = 0
                while self._more(rid):
                    rid += 1
                    a, b = self.rng.randrange(1000), self.rng.randrange(1000)
                    started = time.perf_counter()
                    try:
                        await ws.send_str(orjson.dumps(self._call(rid, a, b, modern)).decode())
                        why = _check_sum(await answer(rid), a + b)
                    except Exception as exc:
                        why = f"{type(exc).__name__}: {exc}"
                    kind = "ws-2026" if modern else "ws-2025"
                    if why is None:
                        self.stats.ok("mcp", time.perf_counter() - started, kind)
                    else:
                        self.stats.fail("mcp", f"{kind}: {why}")
                        if ws.closed:
                            return
                    await self._rest(self.pause)
            finally:
                self.open_sessions -= 1

    # -- chats ---------------------------------------------------------------------------------
    async def _chat(self, i: int) -> None:
        body = orjson.dumps({"model": self.model, "stream": True, "user": f"soak-{i}",
                             "messages": [{"role": "user", "content": CHAT_PROMPT}]})
        head = b"Content-Type: application/json\r\nAccept: text/event-stream\r\n" + self._auth
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                async with asyncio.timeout(_CALL_TIMEOUT):
                    why = await self._one_chat(body, head)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                self.stats.ok("chat", time.perf_counter() - started)
            else:
                self.stats.fail("chat", why)
            await self._rest(self.chat_pause)

    async def _one_chat(self, body: bytes, head: bytes) -> str | None:
        resp, conn = await self.chat_pool.post(body, head)
        if not resp.streaming:
            return f"HTTP {resp.status}, not a stream: {resp.body[:200]!r}"
        chunks = []
        while chunk := await resp.read_chunk():
            chunks.append(chunk)
        await self.chat_pool.done(conn, resp)
        text, done = [], False
        for line in b"".join(chunks).splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue
            frame = orjson.loads(data)
            if "error" in frame:
                return f"error frame: {str(frame)[:300]}"
            for choice in frame.get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        answer = "".join(text)
        if resp.status != 200 or not done or CHAT_EXPECT not in answer:
            return f"HTTP {resp.status}, [DONE] {done}, answer {answer[:200]!r}"
        return None
