"""OpenAI-compatible chat completions (LLM-1): OpenAI, DeepSeek, vLLM, llama.cpp server,
Ollama, aggregators — any base URL — over the official ``openai`` SDK with its retries off.

The SDK does the transport, auth and status errors; bodies are read raw and decoded with
orjson, which keeps provider extras (``reasoning_content`` / ``reasoning``) and the rate-limit
headers at hand and skips building SDK models on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Literal, cast

import httpx2
import openai
import orjson

from toolmesh.errors import (
    ContextOverflowError,
    LLMError,
    MalformedResponseError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownModelError,
)
from toolmesh.llm.provider import Provider
from toolmesh.llm.ratelimit import parse_retry_after
from toolmesh.llm.recover import recover_tool_calls
from toolmesh.llm.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    ReasoningDelta,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from toolmesh.net.fasthttp import FastHttpPool, HttpError, Response

__all__ = ["OpenAIProvider", "error_for_status", "keep_headers", "parse_wait", "retry_after_from", "with_recovery"]

_FINISH: dict[str, FinishReason] = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls",
                                    "length": "length", "content_filter": "content_filter"}
_OVERFLOW_WORDS = ("context_length_exceeded", "maximum context length", "context length", "context window",
                   "prompt is too long", "too many tokens", "exceeds the model's", "string_above_max_length")


# -- helpers shared with the Anthropic provider --------------------------------------------

def parse_wait(value: str, now: float) -> float | None:
    """Seconds until a ``retry-after`` / ``*-reset-*`` moment (see :func:`ratelimit.parse_retry_after`)."""
    return parse_retry_after(value, now)


def keep_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers worth keeping: rate-limit state, ``retry-after``, request ids."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        k = k.lower()
        if "ratelimit" in k or k.startswith("retry-after") or k in ("x-request-id", "request-id"):
            out[k] = v
    return out


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait after a 429: ``retry-after-ms``, ``retry-after`` (seconds or HTTP date),
    else the ``*-reset-*`` headers of the exhausted limits (all of them if none says 0 left)."""
    h = {k.lower(): v for k, v in headers.items()}
    now = time.time()
    if "retry-after-ms" in h:
        try:
            return max(0.0, float(h["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    if "retry-after" in h:
        secs = parse_wait(h["retry-after"], now)
        if secs is not None:
            return secs
    exhausted: list[float] = []
    every: list[float] = []
    for k, v in h.items():
        if "ratelimit" not in k or "reset" not in k:
            continue
        secs = parse_wait(v, now)
        if secs is None:
            continue
        every.append(secs)
        if h.get(k.replace("reset", "remaining")) == "0":
            exhausted.append(secs)
    chosen = exhausted or every
    return max(chosen) if chosen else None


def error_for_status(status: int, message: str, *, provider: str, model: str, code: str | None = None,
                     headers: Mapping[str, str] | None = None) -> LLMError:
    """The toolmesh error for an HTTP error status from a model API."""
    text = f"{provider} {model}: HTTP {status}: {message}"
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status}
    lowered = f"{code or ''} {message}".lower()
    if status == 429:
        return RateLimitedError(text, retry_after=retry_after_from(headers or {}), **kw)
    if status >= 500 or status == 408:
        return ProviderUnavailableError(text, **kw)
    if status in (400, 413, 422) and any(w in lowered for w in _OVERFLOW_WORDS):
        return ContextOverflowError(text, **kw)
    if status == 404 and ("model" in lowered or code == "model_not_found"):
        return UnknownModelError(text, **kw)
    return LLMError(text, **kw)


def with_recovery(request: ChatRequest, message: Message) -> bool:
    """Recover text-form tool calls into ``message`` when tools were offered and none came
    back structured. True when calls were recovered."""
    if message.tool_calls or not request.tools or not message.content or request.tool_choice == "none":
        return False
    calls, rest = recover_tool_calls(message.content, request.tools)
    if not calls:
        return False
    message.tool_calls = calls
    message.content = rest or None
    return True


def parse_arguments(call_id: str, name: str, raw: str) -> ToolCall:
    """A ToolCall from the model's raw argument string (``parse_error`` when not a JSON object)."""
    if not raw.strip():
        return ToolCall(call_id, name, {}, raw)
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return ToolCall(call_id, name, {}, raw, parse_error=f"arguments are not valid JSON: {e}")
    if not isinstance(args, dict):
        return ToolCall(call_id, name, {}, raw, parse_error="arguments are not a JSON object")
    return ToolCall(call_id, name, args, raw)


# -- the provider ----------------------------------------------------------------------------


class OpenAIProvider(Provider):
    """Chat completions against any OpenAI-compatible base URL.

    ``api_key`` defaults to ``$OPENAI_API_KEY`` and then to a placeholder (local servers
    need none). ``timeout`` is the default per-call timeout in seconds."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, name: str = "openai",
                 default_headers: dict[str, str] | None = None, timeout: float = 60.0,
                 transport: Literal["fast", "sdk"] = "fast", max_connections: int = 256) -> None:
        self.name = name
        self.timeout = timeout
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=key, max_retries=0, timeout=timeout, default_headers=default_headers)
        self._create = cast(Any, self._client.chat.completions.with_streaming_response).create
        # The fast transport: toolmesh's keep-alive HTTP/1.1 pool. The SDK's HTTP stack measured at
        # ~5 ms of client CPU per agent run here (docs/benchmarks.md); the wire format is identical.
        self._pool: FastHttpPool | None = None
        if transport == "fast":
            url = str(self._client.base_url).rstrip("/") + "/chat/completions"
            self._pool = FastHttpPool(url, limit=max_connections, connect_timeout=min(timeout, 10.0))
            lines = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "User-Agent": "toolmesh", **(default_headers or {})}
            self._head = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode()

    def _params(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if req.tools:
            body["tools"] = req.tools
            body["tool_choice"] = req.tool_choice
            if req.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = req.parallel_tool_calls
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = req.stop
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(req.extra)
        body["messages"] = [m.to_openai() for m in req.messages]
        if self._pool is not None:
            return {"model": req.model, "stream": stream, **body}
        # The body rides in extra_body (merged over the SDK's own JSON): the SDK's per-field
        # TypedDict transform of the messages costs ~1 ms per call and changes nothing here.
        return {"model": req.model, "messages": (), "stream": stream, "extra_body": body}

    def _fail(self, e: Exception, model: str) -> LLMError:
        if isinstance(e, openai.APIStatusError):
            body = e.body if isinstance(e.body, dict) else {}
            code = body.get("code")
            return error_for_status(e.status_code, str(body.get("message") or e.message), provider=self.name,
                                    model=model, code=code if isinstance(code, str) else None,
                                    headers=e.response.headers)
        if isinstance(e, openai.APIResponseValidationError):
            return MalformedResponseError(f"{self.name} {model}: {e}", provider=self.name, model=model,
                                          status=e.status_code)
        what = "timed out" if isinstance(e, (openai.APITimeoutError, httpx2.TimeoutException)) else "unreachable"
        return ProviderUnavailableError(f"{self.name} {model}: {what}: {e}", provider=self.name, model=model)

    def _malformed(self, model: str, why: str, status: int = 200) -> MalformedResponseError:
        return MalformedResponseError(f"{self.name} {model}: malformed response: {why}", provider=self.name,
                                      model=model, status=status)

    def _body_error(self, data: dict[str, Any], model: str) -> LLMError:
        """A 200 whose body is an error object (some aggregators do this, also mid-stream)."""
        err = data.get("error")
        err = err if isinstance(err, dict) else {"message": str(err)}
        status = err.get("code") if isinstance(err.get("code"), int) else err.get("status", 500)
        code = err.get("code") if isinstance(err.get("code"), str) else err.get("type")
        return error_for_status(int(status) if isinstance(status, int) else 500, str(err.get("message", "")),
                                provider=self.name, model=model, code=code, headers={})

    async def complete(self, request: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        model = request.model
        t0 = time.perf_counter()
        if self._pool is not None:
            status, raw_headers, body = await self._fast(self._params(request, False), model, timeout)
            ttft = (time.perf_counter() - t0) * 1000
            headers = keep_headers(raw_headers)
        else:
            try:
                async with self._create(**self._params(request, False), timeout=timeout or self.timeout) as raw:
                    ttft = (time.perf_counter() - t0) * 1000
                    headers = keep_headers(raw.headers)
                    status = raw.status_code
                    body = await raw.read()
            except (openai.APIError, httpx2.HTTPError) as e:
                raise self._fail(e, model) from e
        latency = (time.perf_counter() - t0) * 1000
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise self._malformed(model, f"not JSON ({e})", status) from e
        if not isinstance(data, dict):
            raise self._malformed(model, "not a JSON object", status)
        if "error" in data and not data.get("choices"):
            raise self._body_error(data, model)
        try:
            choice = data["choices"][0]
            msg = choice["message"]
            calls = [parse_arguments(str(tc.get("id") or f"call_{i}"), tc["function"]["name"],
                                     tc["function"].get("arguments") or "")
                     for i, tc in enumerate(msg.get("tool_calls") or ())]
            message = Message("assistant", msg.get("content"), calls,
                              reasoning=msg.get("reasoning_content") or msg.get("reasoning"))
            finish = _FINISH.get(choice.get("finish_reason") or "stop", "stop")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise self._malformed(model, f"missing {e}", status) from e
        if with_recovery(request, message):
            finish = "tool_calls"
        return ChatResponse(message, _usage(data.get("usage")), str(data.get("model") or model), self.name,
                            finish, latency, ttft, headers)

    async def stream(self, request: ChatRequest, *, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        model = request.model
        t0 = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        usage: Usage | None = None
        finish: FinishReason = "stop"
        served_model = model
        headers: dict[str, str] = {}
        source = self._fast_lines(request, model, timeout) if self._pool is not None else self._sdk_lines(
            request, model, timeout)
        async with contextlib.aclosing(source):  # returns the pooled connection even on an early error
            async for line in source:
                if isinstance(line, dict):
                    headers = keep_headers(line)
                    continue
                if not line.startswith("data:"):
                    continue  # blank separators, "event:" lines, ": keep-alive" comments
                payload = line[5:].strip()
                if payload == "[DONE]":
                    continue  # read to the end so the connection goes back to the pool
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError as e:
                    raise self._malformed(model, f"stream chunk is not JSON ({e})") from e
                if not isinstance(chunk, dict):
                    raise self._malformed(model, "stream chunk is not an object")
                if "error" in chunk:
                    raise self._body_error(chunk, model)
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                served_model = chunk.get("model") or served_model
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    r = delta.get("reasoning_content") or delta.get("reasoning")
                    if r:
                        ttft = ttft or (time.perf_counter() - t0) * 1000
                        reasoning.append(r)
                        yield ReasoningDelta(r)
                    c = delta.get("content")
                    if c:
                        ttft = ttft or (time.perf_counter() - t0) * 1000
                        text.append(c)
                        yield TextDelta(c)
                    for pos, tc in enumerate(delta.get("tool_calls") or ()):
                        ttft = ttft or (time.perf_counter() - t0) * 1000
                        idx = tc.get("index", pos)
                        fn = tc.get("function") or {}
                        slot = calls.setdefault(idx, ["", ""])
                        if tc.get("id") and not slot[0]:
                            slot[0] = tc["id"]
                        if fn.get("name") and not slot[1]:
                            slot[1] = fn["name"]
                        if fn.get("arguments"):
                            slot.append(fn["arguments"])
                        yield ToolCallDelta(idx, tc.get("id"), fn.get("name"), fn.get("arguments") or "")
                    if choice.get("finish_reason"):
                        finish = _FINISH.get(choice["finish_reason"], "stop")
        tool_calls = [parse_arguments(s[0] or f"call_{i}", s[1], "".join(s[2:]))
                      for i, s in sorted(calls.items())]
        message = Message("assistant", "".join(text) or None, tool_calls, reasoning="".join(reasoning) or None)
        if with_recovery(request, message):
            finish = "tool_calls"
            for i, call in enumerate(message.tool_calls):
                yield ToolCallDelta(i, call.id, call.name, call.raw_arguments)
        response = ChatResponse(message, usage or Usage(estimated=True), served_model, self.name, finish,
                                (time.perf_counter() - t0) * 1000, ttft, headers)
        yield StreamDone(response)

    async def _fast(self, body: dict[str, Any], model: str, timeout: float | None) -> tuple[int, dict[str, str], bytes]:
        """POST on the lean pool; returns (status, headers, body) of a complete 2xx response."""
        assert self._pool is not None
        try:
            async with asyncio.timeout(timeout or self.timeout):
                resp, conn = await self._pool.post(orjson.dumps(body), self._head)
                if resp.streaming:  # an SSE answer to a non-streaming request: read it whole
                    try:
                        resp.body = b"".join([c async for c in _chunks(resp)])
                    finally:  # a timeout or a broken stream must not keep the pool's slot
                        await self._pool.done(conn, resp)
        except TimeoutError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: timed out", provider=self.name, model=model) from e
        except HttpError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: unreachable: {e}", provider=self.name,
                                           model=model) from e
        if resp.status >= 400:
            raise self._status_error(resp.status, resp.body, resp.headers, model)
        return resp.status, resp.headers, resp.body

    def _status_error(self, status: int, body: bytes, headers: dict[str, str], model: str) -> LLMError:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            err = {"message": err if isinstance(err, str) else body[:300].decode("utf-8", "replace")}
        code = err.get("code")
        return error_for_status(status, str(err.get("message") or ""), provider=self.name, model=model,
                                code=code if isinstance(code, str) else None, headers=headers)

    async def _fast_lines(self, request: ChatRequest, model: str,
                          timeout: float | None) -> AsyncGenerator[str | dict[str, str], None]:
        """Response headers (one dict) then the SSE body's lines, over the lean pool."""
        assert self._pool is not None
        deadline = asyncio.get_running_loop().time() + (timeout or self.timeout)
        try:
            async with asyncio.timeout_at(deadline):
                resp, conn = await self._pool.post(orjson.dumps(self._params(request, True)), self._head)
        except TimeoutError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: timed out", provider=self.name, model=model) from e
        except HttpError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: unreachable: {e}", provider=self.name,
                                           model=model) from e
        try:
            if not resp.streaming:
                if resp.status >= 400:
                    raise self._status_error(resp.status, resp.body, resp.headers, model)
                yield resp.headers
                for text_line in resp.body.decode("utf-8", "replace").splitlines():
                    yield text_line
                return
            if resp.status >= 400:
                body = b"".join([c async for c in _chunks(resp)])
                raise self._status_error(resp.status, body, resp.headers, model)
            yield resp.headers
            buf = b""
            # the deadline bounds each read, never a yield (a timeout must not fire in the consumer)
            async for chunk in _chunks(resp, deadline):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw_line in lines:
                    yield raw_line.decode("utf-8", "replace").rstrip("\r")
            if buf:
                yield buf.decode("utf-8", "replace")
        except TimeoutError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: timed out", provider=self.name, model=model) from e
        except HttpError as e:
            raise ProviderUnavailableError(f"{self.name} {model}: connection broke: {e}", provider=self.name,
                                           model=model) from e
        finally:
            await self._pool.done(conn, resp)  # a no-op for a buffered answer (post released it)

    async def _sdk_lines(self, request: ChatRequest, model: str,
                         timeout: float | None) -> AsyncGenerator[str | dict[str, str], None]:
        try:
            async with self._create(**self._params(request, True), timeout=timeout or self.timeout) as raw:
                yield dict(raw.headers)
                async for line in raw.iter_lines():
                    yield line
        except (openai.APIError, httpx2.HTTPError) as e:
            raise self._fail(e, model) from e

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await self._client.close()


def _usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage(estimated=True)
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0),
                 int(pd.get("cached_tokens") or 0), int(cd.get("reasoning_tokens") or 0))


async def _chunks(resp: Response, deadline: float | None = None) -> AsyncIterator[bytes]:
    while True:
        if deadline is None:
            chunk = await resp.read_chunk()
        else:
            async with asyncio.timeout_at(deadline):
                chunk = await resp.read_chunk()
        if not chunk:
            return
        yield chunk
