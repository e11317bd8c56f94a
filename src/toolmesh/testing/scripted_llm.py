"""A scripted LLM: a real HTTP server on 127.0.0.1 speaking the OpenAI chat completions API
(``POST /v1/chat/completions``, ``GET /v1/models``) and the Anthropic Messages API
(``POST /v1/messages``), streaming (SSE) and not, playing turns from a script.

Use in a test (current event loop)::

    async with ScriptedLLM({"responses": [{"text": "hi"}]}) as srv:
        OpenAIProvider(srv.base_url)          # http://127.0.0.1:PORT/v1
        AnthropicProvider(srv.anthropic_base_url)   # http://127.0.0.1:PORT
        srv.requests[0].body; srv.counts["/v1/chat/completions"]

or out of process (benchmarks)::

    python -m toolmesh.testing.scripted_llm --port 0 --rules script.json --latency-ms 50

which prints one line, the OpenAI base URL (``http://127.0.0.1:PORT/v1``), when it is ready.

Script format (a dict; a bare list is taken as ``{"responses": LIST}``)::

    {
      "responses": [RESPONSE, ...],   # queue, consumed in order by any request (either API)
      "rules": [{"when": WHEN, "respond": RESPONSE}, ...],  # first match wins, never consumed
      "default": RESPONSE,            # when the queue is empty and no rule matches
      "latency_ms": 0,                # added to every completion unless RESPONSE says otherwise
      "models": ["scripted-model"]    # listed by GET /v1/models
    }

Queue first, then rules, then ``default``; with none of them the server answers 500
"script exhausted". Rules depend only on the request, so many concurrent conversations
can share one server deterministically.

RESPONSE keys (all optional):
  ``text``, ``reasoning`` (sent as ``reasoning_content``, or ``reasoning_field``; Anthropic:
  a thinking block), ``tool_calls`` ``[{"name", "arguments": {..} | "raw json string", "id"?}]``,
  ``usage`` ``{"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}``
  (omitted → estimated from sizes; ``null`` → no usage field sent at all),
  ``finish_reason`` ("stop" | "tool_calls" | "length"), ``model`` (default: the requested one),
  ``latency_ms`` (before the response / first chunk), ``chunk_delay_ms`` (between stream chunks),
  ``chunk_chars`` (stream piece size, default 16), ``status`` (HTTP status, default 200),
  ``headers`` (extra response headers, e.g. ``retry-after``, ``x-ratelimit-remaining-requests``),
  ``error`` (for status ≥ 400: a message string or ``{"message", "code", "type"}``; the body is
  shaped like the API's own errors), ``body`` (a raw string sent verbatim, for malformed
  responses; ``content_type`` defaults to JSON, or SSE for streaming requests).

WHEN keys (all optional, all must hold): ``last_role`` ("user" | "tool" | "assistant"; an
Anthropic user turn of ``tool_result`` blocks counts as "tool"), ``user_regex`` (searched in the
last user text; named groups become template variables), ``has_tools`` (bool), ``model``,
``api`` ("openai" | "anthropic").

Templates: in ``text`` and in string values inside tool-call ``arguments``, ``{{name}}`` is
replaced by: ``user_text`` (last user message), ``digest`` (12 hex chars of sha256 over all
user messages of the conversation — echo it to detect history bleeding between users),
``tool_results`` (tool results after the last assistant turn, joined with " | "),
``n_user`` (number of user messages), ``n_tool`` (number of tool results), and regex groups.

Introspection: ``srv.requests`` (every request: path, api, parsed body, headers, stream flag),
``srv.counts`` (per path), ``srv.peers`` (client connections), ``srv.enqueue(...)``; over HTTP ``GET /_scripted/stats``,
``GET /_scripted/requests``, ``POST /_scripted/enqueue`` (a JSON list), ``POST /_scripted/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import re
import sys
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from toolmesh.testing import wire as R

_RESPONSE_KEYS = frozenset({"text", "reasoning", "tool_calls", "usage", "finish_reason", "model", "latency_ms",
                            "chunk_delay_ms", "chunk_chars", "status", "headers", "error", "body", "content_type",
                            "reasoning_field"})
_WHEN_KEYS = frozenset({"last_role", "user_regex", "has_tools", "model", "api"})
_TEMPLATE = re.compile(r"\{\{(\w+)\}\}")


@dataclass(slots=True)
class RecordedRequest:
    """One request the server received."""

    path: str
    api: str
    body: Any
    headers: dict[str, str]
    stream: bool


@dataclass(slots=True)
class _Rule:
    when: dict[str, Any]
    regex: re.Pattern[str] | None
    respond: dict[str, Any]


def _check_response(r: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise ValueError(f"script response must be an object, got {r!r}")
    bad = set(r) - _RESPONSE_KEYS
    if bad:
        raise ValueError(f"unknown script response keys {sorted(bad)}")
    return r


class _Conversation:
    """What the rules and templates need to know about one request's messages."""

    __slots__ = ("last_role", "tool_results", "user_texts")

    def __init__(self, api: str, body: dict[str, Any]) -> None:
        self.user_texts: list[str] = []
        self.tool_results: list[str] = []
        self.last_role = ""
        for m in body.get("messages") or ():
            role, content = m.get("role"), m.get("content")
            if role == "assistant":
                self.tool_results = []
                self.last_role = "assistant"
            elif role == "tool":
                self.tool_results.append(_text_of(content))
                self.last_role = "tool"
            elif role == "user":
                if api == "anthropic" and isinstance(content, list) and any(
                        isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
                    self.tool_results.extend(_text_of(b.get("content")) for b in content
                                             if isinstance(b, dict) and b.get("type") == "tool_result")
                    self.last_role = "tool"
                else:
                    self.user_texts.append(_text_of(content))
                    self.last_role = "user"

    def variables(self) -> dict[str, str]:
        digest = hashlib.sha256("\x1e".join(self.user_texts).encode()).hexdigest()[:12]
        return {"user_text": self.user_texts[-1] if self.user_texts else "", "digest": digest,
                "tool_results": " | ".join(self.tool_results), "n_user": str(len(self.user_texts)),
                "n_tool": str(len(self.tool_results))}


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(b.get("text", b.get("content")) if isinstance(b, dict) else b) for b in content)
    return str(content)


def _fill(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _TEMPLATE.sub(lambda m: env.get(m.group(1), m.group(0)), value) if "{{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    return value


class ScriptedLLM:
    """The scripted server. ``async with ScriptedLLM(script) as srv`` starts it on 127.0.0.1."""

    def __init__(self, script: dict[str, Any] | list[Any] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 latency_ms: float | None = None, log_requests: bool = True) -> None:
        if isinstance(script, list):
            script = {"responses": script}
        script = dict(script or {})
        self._queue: deque[dict[str, Any]] = deque(_check_response(r) for r in script.get("responses", ()))
        self._rules: list[_Rule] = []
        for rule in script.get("rules", ()):
            when = dict(rule.get("when") or {})
            if set(when) - _WHEN_KEYS:
                raise ValueError(f"unknown rule condition keys {sorted(set(when) - _WHEN_KEYS)}")
            rx = re.compile(when["user_regex"], re.S) if "user_regex" in when else None
            self._rules.append(_Rule(when, rx, _check_response(rule.get("respond") or {})))
        self._default = _check_response(script["default"]) if script.get("default") else None
        self.latency_ms = float(latency_ms if latency_ms is not None else script.get("latency_ms", 0.0))
        self.models: list[str] = list(script.get("models") or ["scripted-model"])
        self.host, self.port = host, port
        self.log_requests = log_requests
        #: Every request received (when ``log_requests``), in arrival order.
        self.requests: list[RecordedRequest] = []
        #: Requests per path.
        self.counts: Counter[str] = Counter()
        #: Client (host, port) pairs seen: one per TCP connection (keep-alive reuse shows here).
        self.peers: set[tuple[str, int]] = set()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic SDK's base URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_scripted/stats", self._stats)
        app.router.add_get("/_scripted/requests", self._log)
        app.router.add_post("/_scripted/enqueue", self._enqueue)
        app.router.add_post("/_scripted/reset", self._reset)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ScriptedLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- script ------------------------------------------------------------------------------

    def enqueue(self, *responses: dict[str, Any]) -> None:
        """Append canned responses to the queue."""
        self._queue.extend(_check_response(r) for r in responses)

    @property
    def queue_left(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        """Forget the request log and counters (the script stays)."""
        self.requests.clear()
        self.counts.clear()
        self.peers.clear()

    def _pick(self, api: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
        if self._queue:
            spec = self._queue.popleft()
            return spec, (_Conversation(api, body).variables() if _needs_env(spec) else {})
        if self._rules:
            conv = _Conversation(api, body)
            last_user = conv.user_texts[-1] if conv.user_texts else ""
            base = conv.variables()
            for rule in self._rules:
                w = rule.when
                if "last_role" in w and w["last_role"] != conv.last_role:
                    continue
                if "has_tools" in w and bool(w["has_tools"]) != bool(body.get("tools")):
                    continue
                if "model" in w and w["model"] != body.get("model"):
                    continue
                if "api" in w and w["api"] != api:
                    continue
                if rule.regex is not None:
                    m = rule.regex.search(last_user)
                    if m is None:
                        continue
                    return rule.respond, {**base, **{k: v or "" for k, v in m.groupdict().items()}}
                return rule.respond, base
        if self._default is not None:
            return self._default, (_Conversation(api, body).variables() if _needs_env(self._default) else {})
        return None, {}

    def _turn(self, spec: dict[str, Any], env: dict[str, str], body: dict[str, Any], size: int) -> R.Turn:
        calls = [R.TurnCall(str(c.get("id") or f"call_s{next(self._ids)}"), str(c["name"]),
                            _fill(c.get("arguments", {}), env)) for c in spec.get("tool_calls") or ()]
        turn = R.Turn(model=str(spec.get("model") or body.get("model") or self.models[0]),
                      text=_fill(spec.get("text") or "", env), reasoning=_fill(spec.get("reasoning") or "", env),
                      tool_calls=calls, finish_reason=spec.get("finish_reason"),
                      chunk_chars=int(spec.get("chunk_chars", 16)),
                      reasoning_field=spec.get("reasoning_field", "reasoning_content"))
        if "usage" not in spec:
            out = len(turn.text) + len(turn.reasoning) + sum(len(turn.args_json(c)) + len(c.name) for c in calls)
            turn.usage = {"input_tokens": max(1, size // 4), "output_tokens": max(1, out // 4)}
        elif spec["usage"] is not None:
            turn.usage = dict(spec["usage"])
        return turn

    # -- handlers ----------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "anthropic")

    async def _complete(self, request: web.Request, api: str) -> web.StreamResponse:
        raw = await request.read()
        self.counts[request.path] += 1
        if request.transport is not None:
            peer = request.transport.get_extra_info("peername")
            if peer:
                self.peers.add((str(peer[0]), int(peer[1])))
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as e:
            if self.log_requests:
                self.requests.append(RecordedRequest(request.path, api, None, dict(request.headers), False))
            return self._error(api, 400, f"invalid JSON body: {e}", None, None, {})
        stream = bool(body.get("stream"))
        if self.log_requests:
            self.requests.append(RecordedRequest(request.path, api, body, dict(request.headers), stream))
        spec, env = self._pick(api, body)
        if spec is None:
            return self._error(api, 500, "script exhausted: no queued response, rule or default", None, None, {})
        latency = float(spec.get("latency_ms", self.latency_ms))
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        status = int(spec.get("status", 200))
        headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
        if "body" in spec:
            ctype = spec.get("content_type") or ("text/event-stream" if stream else "application/json")
            headers["Content-Type"] = ctype
            return web.Response(status=status, body=str(spec["body"]).encode(), headers=headers)
        if status >= 400:
            err = spec.get("error") or {}
            if isinstance(err, str):
                err = {"message": err}
            message = err.get("message") or f"scripted error {status}"
            return self._error(api, status, message, err.get("code"), err.get("type"), headers)
        turn = self._turn(spec, env, body, len(raw))
        rid = f"{'chatcmpl' if api == 'openai' else 'msg'}-{next(self._ids)}"
        if not stream:
            payload = R.openai_completion(turn, rid) if api == "openai" else R.anthropic_message(turn, rid)
            headers["Content-Type"] = "application/json"
            return web.Response(status=status, body=payload, headers=headers)
        headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if api == "openai":
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = R.openai_chunks(turn, rid, include)
        else:
            frames = R.anthropic_events(turn, rid)
        delay = float(spec.get("chunk_delay_ms", 0)) / 1000
        if delay > 0:
            for f in frames:
                await resp.write(f)
                await asyncio.sleep(delay)
        else:
            await resp.write(b"".join(frames))
        await resp.write_eof()
        return resp

    def _error(self, api: str, status: int, message: str, code: str | None, etype: str | None,
               headers: dict[str, str]) -> web.Response:
        body = R.openai_error(status, message, code, etype) if api == "openai" else R.anthropic_error(
            status, message, etype)
        headers = {**headers, "Content-Type": "application/json"}
        return web.Response(status=status, body=body, headers=headers)

    async def _models(self, request: web.Request) -> web.Response:
        self.counts[request.path] += 1
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": sum(self.counts.values()), "by_path": dict(self.counts),
                                  "queue_left": len(self._queue)})

    async def _log(self, request: web.Request) -> web.Response:
        log = [{"path": r.path, "api": r.api, "body": r.body, "stream": r.stream} for r in self.requests]
        return web.Response(body=orjson.dumps(log), content_type="application/json")

    async def _enqueue(self, request: web.Request) -> web.Response:
        items = orjson.loads(await request.read())
        self.enqueue(*(items if isinstance(items, list) else [items]))
        return web.json_response({"queue_left": len(self._queue)})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def _needs_env(spec: dict[str, Any]) -> bool:
    return "{{" in orjson.dumps({"t": spec.get("text"), "c": spec.get("tool_calls")}).decode()


def main(argv: list[str] | None = None) -> None:
    """``python -m toolmesh.testing.scripted_llm``: serve a script file until killed."""
    ap = argparse.ArgumentParser(prog="python -m toolmesh.testing.scripted_llm", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rules", type=Path, help="JSON script file (see the module docstring)")
    ap.add_argument("--latency-ms", type=float, default=None)
    ap.add_argument("--no-log", action="store_true", help="keep counters only, not every request body")
    args = ap.parse_args(argv)
    script = orjson.loads(args.rules.read_bytes()) if args.rules else {}

    async def serve() -> None:
        srv = ScriptedLLM(script, host=args.host, port=args.port, latency_ms=args.latency_ms,
                          log_requests=not args.no_log)
        await srv.start()
        sys.stdout.write(srv.base_url + "\n")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await srv.stop()

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.run
    try:
        runner(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
