"""Both providers against the scripted LLM server over real sockets, and the official SDKs
against the same server (so the server is faithful to the real wire formats)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import anthropic
import openai
import pytest

from toolmesh.errors import (
    ContextOverflowError,
    MalformedResponseError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownModelError,
)
from toolmesh.llm.anthropic_provider import AnthropicProvider, to_anthropic
from toolmesh.llm.openai_provider import OpenAIProvider, retry_after_from
from toolmesh.llm.provider import Provider
from toolmesh.llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    ReasoningDelta,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from toolmesh.testing import ScriptedLLM

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


OPENAI_TRANSPORT = {"value": "fast"}


@pytest.fixture(autouse=True, params=["fast", "sdk"])
def openai_transport(request: pytest.FixtureRequest) -> Any:
    """Every test runs on both OpenAIProvider transports: toolmesh's lean pool and the SDK's stack."""
    OPENAI_TRANSPORT["value"] = request.param
    yield request.param
    OPENAI_TRANSPORT["value"] = "fast"


def make(kind: str, srv: ScriptedLLM) -> Provider:
    if kind == "openai":
        return OpenAIProvider(srv.base_url, "k", timeout=10, transport=OPENAI_TRANSPORT["value"])  # type: ignore[arg-type]
    return AnthropicProvider(srv.anthropic_base_url, "k", timeout=10)


def req(**kw: Any) -> ChatRequest:
    return ChatRequest("scripted-model", [Message("system", "be brief"), Message("user", "weather in Paris?")], **kw)


async def run(kind: str, script: Any, request: ChatRequest, stream: bool = False) -> tuple[ChatResponse, list[Any], ScriptedLLM]:
    async with ScriptedLLM(script) as srv:
        p = make(kind, srv)
        try:
            if not stream:
                return await p.complete(request), [], srv
            events = [e async for e in p.stream(request)]
            assert isinstance(events[-1], StreamDone)
            return events[-1].response, events[:-1], srv
        finally:
            await p.aclose()


kinds = pytest.mark.parametrize("kind", ["openai", "anthropic"])
modes = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])


@kinds
@modes
async def test_text_reasoning_usage_headers(kind: str, stream: bool) -> None:
    script = [{"text": "It is sunny in Paris, 21 degrees.", "reasoning": "User wants weather.",
               "usage": {"input_tokens": 42, "output_tokens": 9, "cached_input_tokens": 5},
               "headers": {"x-ratelimit-remaining-requests": "99", "x-ratelimit-reset-tokens": "6m0s",
                           "x-unrelated": "1"}, "chunk_chars": 5}]
    resp, events, srv = await run(kind, script, req(), stream)
    assert resp.message.content == "It is sunny in Paris, 21 degrees."
    assert resp.message.reasoning == "User wants weather."
    assert resp.message.tool_calls == []
    assert resp.finish_reason == "stop" and resp.provider == kind
    assert resp.usage.output_tokens == 9 and resp.usage.cached_input_tokens == 5 and not resp.usage.estimated
    assert resp.usage.input_tokens == (42 if kind == "openai" else 47)  # Anthropic: uncached + cache reads
    assert resp.headers["x-ratelimit-remaining-requests"] == "99"
    assert resp.headers["x-ratelimit-reset-tokens"] == "6m0s"
    assert "x-unrelated" not in resp.headers
    assert resp.ttft_ms is not None and resp.latency_ms >= resp.ttft_ms
    if stream:
        text = [e.text for e in events if isinstance(e, TextDelta)]
        assert len(text) > 1 and "".join(text) == resp.message.content
        assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "User wants weather."
    sent = srv.requests[0].body
    assert sent["model"] == "scripted-model"
    if kind == "anthropic":
        assert sent["system"] == "be brief" and sent["max_tokens"] > 0
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert sent.get("stream_options") == ({"include_usage": True} if stream else None)


@kinds
@modes
async def test_parallel_tool_calls(kind: str, stream: bool) -> None:
    script = [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "c1"},
                              {"name": "get_weather", "arguments": {"city": "Rome"}, "id": "c2"},
                              {"name": "get_time", "arguments": {}, "id": "c3"}], "chunk_chars": 4}]
    resp, events, srv = await run(kind, script, req(tools=TOOLS, tool_choice="required"), stream)
    calls = resp.message.tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("c1", "get_weather", {"city": "Paris"}), ("c2", "get_weather", {"city": "Rome"}), ("c3", "get_time", {})]
    assert all(not c.recovered and c.parse_error is None for c in calls)
    assert resp.finish_reason == "tool_calls"
    if stream:
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert {d.index for d in deltas} == {0, 1, 2}
        assert "".join(d.arguments for d in deltas if d.index == 1) == json.dumps({"city": "Rome"}, separators=(",", ":"))
    sent = srv.requests[0].body
    if kind == "anthropic":
        assert sent["tools"][0] == {"name": "get_weather", "description": "Weather",
                                    "input_schema": TOOLS[0]["function"]["parameters"]}
        assert sent["tool_choice"] == {"type": "any"}
    else:
        assert sent["tools"] == TOOLS and sent["tool_choice"] == "required"


@kinds
@modes
async def test_text_form_tool_calls_recovered(kind: str, stream: bool) -> None:
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    resp, _, _ = await run(kind, [{"text": text}], req(tools=TOOLS), stream)
    [call] = resp.message.tool_calls
    assert (call.name, call.arguments, call.recovered) == ("get_weather", {"city": "Paris"}, True)
    assert resp.message.content == "Sure."
    assert resp.finish_reason == "tool_calls"
    # without tools offered the same text stays text
    resp, _, _ = await run(kind, [{"text": text}], req(), stream)
    assert resp.message.tool_calls == [] and resp.message.content == text


@kinds
@modes
async def test_connection_reused_across_calls(kind: str, stream: bool) -> None:
    async with ScriptedLLM({"default": {"text": "ok"}}) as srv:
        p = make(kind, srv)
        for _ in range(4):
            if stream:
                assert [e async for e in p.stream(req())][-1].response.message.content == "ok"  # type: ignore[union-attr]
            else:
                assert (await p.complete(req())).message.content == "ok"
        await p.aclose()
        assert srv.counts[PATH[kind]] == 4
        assert len(srv.peers) == 1  # keep-alive: streams are read to the end, not dropped


@kinds
async def test_malformed_arguments_reported(kind: str) -> None:
    script = [{"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Par'}]}]
    resp, _, _ = await run(kind, script, req(tools=TOOLS), stream=True)
    [call] = resp.message.tool_calls
    assert call.parse_error and call.arguments == {} and call.raw_arguments == '{"city": "Par'


@kinds
async def test_usage_absent_is_marked_estimated(kind: str) -> None:
    resp, _, _ = await run(kind, [{"text": "ok", "usage": None}], req(), stream=(kind == "openai"))
    assert resp.usage.estimated and resp.usage.total_tokens == 0


@kinds
@modes
async def test_rate_limited(kind: str, stream: bool) -> None:
    script = [{"status": 429, "headers": {"retry-after": "3", "x-ratelimit-remaining-requests": "0"}}]
    with pytest.raises(RateLimitedError) as ei:
        await run(kind, script, req(), stream)
    assert ei.value.retry_after == 3.0 and ei.value.status == 429
    assert ei.value.provider == kind and ei.value.model == "scripted-model"


@kinds
async def test_error_answer_to_a_stream_leaves_the_pool_sound(kind: str) -> None:
    # An error answered as plain JSON to a streaming request used to return its connection to the
    # pool twice; the next two concurrent streams then shared one connection and one hung.
    script = [{"status": 429}, {"text": "a", "latency_ms": 50}, {"text": "b", "latency_ms": 50}]
    async with ScriptedLLM(script) as srv:
        p = make(kind, srv)
        try:
            with pytest.raises(RateLimitedError):
                [e async for e in p.stream(req())]

            async def text() -> str | None:
                events = [e async for e in p.stream(req())]
                return events[-1].response.message.content  # type: ignore[union-attr]

            answers = await asyncio.wait_for(asyncio.gather(text(), text()), 5)
        finally:
            await p.aclose()
        assert sorted(a or "" for a in answers) == ["a", "b"]


async def test_a_stalled_event_stream_answer_to_a_plain_request_frees_its_pool_slot() -> None:
    # A non-streaming request answered with an event stream that stalls times out; its pool slot
    # used to stay taken, so with one connection allowed the next request waited for ever.
    if OPENAI_TRANSPORT["value"] != "fast":
        pytest.skip("the lean pool's path")
    answers = iter([
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\ndata: {\r\n",  # and then nothing
        None])
    body = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}]}).encode()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                await reader.readexactly(length)
                first = next(answers, None)
                writer.write(first if first is not None else
                             b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        p = OpenAIProvider(f"http://127.0.0.1:{port}/v1", "k", timeout=0.5, max_connections=1)
        try:
            with pytest.raises(ProviderUnavailableError, match="timed out"):
                await p.complete(req())
            answer = await asyncio.wait_for(p.complete(req()), 5)
        finally:
            await p.aclose()
        assert answer.message.content == "ok"


@kinds
async def test_rate_limited_reset_header_and_single_request(kind: str) -> None:
    script = [{"status": 429, "headers": {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s",
                                          "x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s"}}]
    async with ScriptedLLM(script) as srv:
        p = make(kind, srv)
        with pytest.raises(RateLimitedError) as ei:
            await p.complete(req())
        await p.aclose()
        assert ei.value.retry_after == 90.0
        assert srv.counts[PATH[kind]] == 1  # no SDK retry


@kinds
@modes
@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_unavailable_without_retry(kind: str, stream: bool, status: int) -> None:
    async with ScriptedLLM([{"status": status}, {"text": "never reached"}]) as srv:
        p = make(kind, srv)
        with pytest.raises(ProviderUnavailableError) as ei:
            if stream:
                [e async for e in p.stream(req())]
            else:
                await p.complete(req())
        await p.aclose()
        assert ei.value.status == status
        assert srv.counts[PATH[kind]] == 1 and srv.queue_left == 1


@kinds
async def test_connection_refused_is_unavailable(kind: str) -> None:
    async with ScriptedLLM([]) as srv:
        p = make(kind, srv)
    with pytest.raises(ProviderUnavailableError):  # server is gone now
        await p.complete(req())
    await p.aclose()


@kinds
@modes
async def test_malformed_body(kind: str, stream: bool) -> None:
    body = ("data: {not json\n\n" if kind == "openai" else "event: message_start\ndata: {not json\n\n") if stream \
        else '{"truncated": '
    with pytest.raises(MalformedResponseError) as ei:
        await run(kind, [{"body": body}], req(), stream)
    assert ei.value.provider == kind


async def test_openai_malformed_shape() -> None:
    with pytest.raises(MalformedResponseError):
        await run("openai", [{"body": '{"id": "x", "choices": []}'}], req())


async def test_anthropic_stream_without_message_start_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        await run("anthropic", [{"body": "data: {}\n\n"}], req(), stream=True)


@kinds
async def test_context_overflow(kind: str) -> None:
    error = ({"message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.",
              "code": "context_length_exceeded"} if kind == "openai"
             else {"message": "prompt is too long: 210000 tokens > 200000 maximum"})
    with pytest.raises(ContextOverflowError) as ei:
        await run(kind, [{"status": 400, "error": error}], req())
    assert ei.value.status == 400


@kinds
async def test_unknown_model(kind: str) -> None:
    error = {"message": "The model `nope` does not exist", "code": "model_not_found"}
    with pytest.raises(UnknownModelError) as ei:
        await run(kind, [{"status": 404, "error": error}], req())
    assert ei.value.status == 404


async def test_anthropic_error_event_mid_stream() -> None:
    body = ('event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n')
    with pytest.raises(ProviderUnavailableError):
        await run("anthropic", [{"body": body}], req(), stream=True)


async def test_openai_reasoning_field_variant() -> None:
    resp, _, _ = await run("openai", [{"text": "x", "reasoning": "because", "reasoning_field": "reasoning"}],
                                req(), stream=True)
    assert resp.message.reasoning == "because" and resp.message.content == "x"


def test_anthropic_message_conversion() -> None:
    calls = [ToolCall("t1", "get_weather", {"city": "Paris"}), ToolCall("t2", "get_time", {})]
    request = ChatRequest("claude", [
        Message("system", "sys A"), Message("system", "sys B"), Message("user", "hi"),
        Message("assistant", "let me look", calls),
        Message("tool", "sunny", tool_call_id="t1", name="get_weather"),
        Message("tool", "12:00", tool_call_id="t2", name="get_time"),
        Message("user", "and tomorrow?"),
    ], tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False,
        max_tokens=100, stop=["END"], temperature=0.0)
    p = to_anthropic(request)
    assert p["system"] == "sys A\n\nsys B"
    assert [m["role"] for m in p["messages"]] == ["user", "assistant", "user"]
    assert p["messages"][1]["content"] == [
        {"type": "text", "text": "let me look"},
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "t2", "name": "get_time", "input": {}}]
    assert p["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "12:00"},
        {"type": "text", "text": "and tomorrow?"}]
    assert p["tool_choice"] == {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}
    assert (p["max_tokens"], p["stop_sequences"], p["temperature"]) == (100, ["END"], 0.0)


def test_retry_after_parsing() -> None:
    assert retry_after_from({"Retry-After": "2"}) == 2.0
    assert retry_after_from({"retry-after-ms": "250"}) == 0.25
    assert retry_after_from({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_from({"x-ratelimit-reset-requests": "20ms"}) == pytest.approx(0.02)
    assert retry_after_from({"x-ratelimit-reset-requests": "1h2m3.5s"}) == pytest.approx(3723.5)
    assert retry_after_from({"retry-after": "soon"}) is None
    assert retry_after_from({}) is None


# -- the official SDKs against the scripted server --------------------------------------------


async def test_official_openai_sdk_against_scripted_server() -> None:
    script = [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
               "usage": {"input_tokens": 10, "output_tokens": 4}},
              {"text": "Sunny.", "usage": {"input_tokens": 20, "output_tokens": 2}}]
    async with ScriptedLLM(script) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
        r = await client.chat.completions.create(model="scripted-model", tools=TOOLS,  # type: ignore[arg-type]
                                                 messages=[{"role": "user", "content": "weather?"}])
        tc = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert tc.function.name == "get_weather" and json.loads(tc.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        assert r.usage is not None and r.usage.prompt_tokens == 10
        stream = await client.chat.completions.create(model="scripted-model", stream=True,
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "weather?"}])
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sunny."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        models = await client.models.list()
        assert [m.id for m in models.data] == ["scripted-model"]
        await client.close()


async def test_official_anthropic_sdk_stream_helper_against_scripted_server() -> None:
    script = [{"text": "Hello", "reasoning": "hmm", "tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}],
               "usage": {"input_tokens": 7, "output_tokens": 3}}]
    async with ScriptedLLM(script) as srv:
        client = anthropic.AsyncAnthropic(base_url=srv.anthropic_base_url, api_key="k", max_retries=0)
        async with client.messages.stream(model="claude", max_tokens=50,
                                          messages=[{"role": "user", "content": "hi"}]) as s:
            final = await s.get_final_message()
        kinds_ = [b.type for b in final.content]
        assert kinds_ == ["thinking", "text", "tool_use"]
        assert final.content[2].input == {"tz": "UTC"}  # type: ignore[union-attr]
        assert final.usage.output_tokens == 3 and final.stop_reason == "tool_use"
        await client.close()

