"""``LocalProvider``: the embedded offline default model (llama.cpp), behind the Provider interface.

Nothing is loaded at import time. The model loads on first use on the provider's single worker
thread; every llama.cpp call runs there, one at a time, so the event loop never blocks and the
(not thread-safe) llama.cpp context is only ever touched by one thread. Requests queue in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from toolmesh.errors import (
    ConfigError,
    ContextOverflowError,
    MalformedResponseError,
    ProviderUnavailableError,
)
from toolmesh.llm.local import chat_format, grammar, weights
from toolmesh.llm.provider import Provider
from toolmesh.llm.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from toolmesh.llm.local.engine import Decoded, Engine

T = TypeVar("T")
BUNDLED_MODEL = "qwen2.5-coder-0.5b-instruct"
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
_END = object()
#: Most tool calls decoded in one turn: past that a 0.5B model mostly invents more calls.
MAX_CALLS = 2
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Result:
    content: str | None
    calls: list[ToolCall]
    finish: FinishReason
    usage: Usage


class LocalProvider(Provider):
    """A GGUF model run in-process by llama.cpp (default: the bundled Qwen2.5-Coder-0.5B-Instruct Q4).

    ``path``: another GGUF to use instead of the bundled weights (verified against ``sha256``
    when given). Decoding is greedy (temperature 0) unless the request sets a temperature.
    With tools offered and ``tool_choice`` not ``"none"``, tool calls are decoded under a grammar
    built from the tools' JSON Schemas; in ``"auto"`` the model first decides between answering
    and calling (``tool_threshold`` on the first-token probability of ``<tool_call>``).
    ``tool_choice="none"`` answers in plain text (the tool-call token is banned).
    """

    def __init__(self, path: str | Path | None = None, *, sha256: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int = 0, name: str = "local",
                 tool_threshold: float | None = None) -> None:
        self.name = name
        self._path = Path(path).expanduser() if path is not None else None
        self._sha256 = sha256
        self.n_ctx = n_ctx
        self._n_threads = n_threads
        self._seed = seed
        self._threshold = tool_threshold
        self.model = self._path.stem if self._path is not None else BUNDLED_MODEL
        self._executor: ThreadPoolExecutor | None = None
        self._engine: Engine | None = None
        self._ids = itertools.count(1)
        self._guard = threading.Lock()
        #: Seconds the last model load took (verification included); ``None`` until loaded.
        self.load_seconds: float | None = None

    # -- worker plumbing --------------------------------------------------------------------

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._guard:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"toolmesh-{self.name}")
            return self._executor.submit(fn)

    async def _run(self, fn: Callable[[], T], cancel: threading.Event, timeout: float | None) -> T:
        fut = asyncio.wrap_future(self._submit(fn))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            cancel.set()
            raise ProviderUnavailableError(f"local model did not finish within {timeout}s",
                                           provider=self.name, model=self.model) from None
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _load(self) -> Engine:
        if self._engine is None:
            start = time.perf_counter()
            if self._path is None:
                path = weights.model_path()
            else:
                if not self._path.is_file():
                    raise ConfigError(f"GGUF model file {self._path} does not exist", key="llm.local.path")
                if self._sha256:
                    weights.verify(self._path, self._sha256)
                path = self._path
            try:
                from toolmesh.llm.local.engine import Engine
            except ImportError as exc:
                raise ConfigError(f"the local model needs llama-cpp-python: {weights.INSTALL_HINT}",
                                  key="llm.local") from exc
            self._engine = Engine(str(path), n_ctx=self.n_ctx, n_threads=self._n_threads, seed=self._seed)
            self.load_seconds = time.perf_counter() - start
        return self._engine

    async def load(self) -> None:
        """Load (and verify) the model now instead of on the first request."""
        await self._run(self._load, threading.Event(), None)

    # -- requests ---------------------------------------------------------------------------

    def _tokens(self, engine: Engine, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        tokens = engine.tokenize(chat_format.render(messages, tools))
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(f"prompt is {len(tokens)} tokens; the context window is {self.n_ctx}",
                                       provider=self.name, model=self.model)
        return tokens

    def _decode(self, request: ChatRequest, cancel: threading.Event,
                on_text: Callable[[str], None] | None) -> _Result:
        from toolmesh.llm.local.engine import DEFAULT_TOOL_THRESHOLD

        engine = self._load()
        tools = request.tools or None
        choice = request.tool_choice
        usage = Usage()
        if tools is not None and choice != "none":
            only = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            parallel = request.parallel_tool_calls is not False and only is None  # a named choice: one call
            gbnf = grammar.tool_call_grammar(tools, only=only, parallel=parallel)
            tokens = self._tokens(engine, request.messages, tools)
            room = self.n_ctx - len(tokens)
            d = engine.decode(tokens, mode="tools", grammar=gbnf, max_tokens=min(request.max_tokens or room, room),
                              temperature=request.temperature, max_calls=MAX_CALLS if parallel else 1,
                              cancel=cancel, collect=choice == "auto")
            usage = usage + Usage(d.prompt_tokens, d.tokens, cached_input_tokens=d.cached_tokens)
            calls = _unique(self._parse_calls(d.text), [])
            if choice != "auto":
                if not calls:
                    raise MalformedResponseError(f"tool call cut off at max_tokens={request.max_tokens}",
                                                 provider=self.name, model=self.model)
                return _Result(None, calls, "tool_calls", usage)
            threshold = DEFAULT_TOOL_THRESHOLD if self._threshold is None else self._threshold
            calls = self._grounded(engine, request.messages, tools, d, calls, threshold, usage)
            if calls:
                return _Result(None, calls, "tool_calls", usage)
        # A plain answer: rendered without the tools block (the model then chats instead of
        # writing JSON), and with the tool-call tokens banned.
        tokens = self._tokens(engine, request.messages, None)
        room = self.n_ctx - len(tokens)
        d = engine.decode(tokens, mode="answer", grammar=None, max_tokens=min(request.max_tokens or room, room),
                          temperature=request.temperature, stop=request.stop, on_text=on_text, cancel=cancel)
        usage = usage + Usage(d.prompt_tokens, d.tokens, cached_input_tokens=d.cached_tokens)
        return _Result(d.text, [], "length" if d.finish == "length" else "stop", usage)

    def _grounded(self, engine: Engine, messages: list[Message], tools: list[dict[str, Any]], d: Decoded,
                  calls: list[ToolCall], threshold: float, usage: Usage) -> list[ToolCall]:
        """Keep the calls the user's last message supports.

        A 0.5B model offered tools emits a call for nearly anything ("thanks!", "你好"), so in
        "auto" every call is scored against a baseline: the same conversation with the last user
        message emptied. A call whose log-probability the message does not raise by
        ``threshold`` nats (pointwise mutual information) is the model's habit, not the user's
        request, and is dropped. Calls identical to ones already made are dropped too.
        """
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is not None:
            base_msgs = list(messages)
            base_msgs[last] = Message("user", "")
            base_tokens = self._tokens(engine, base_msgs, tools)
            base = engine.score(base_tokens, d.ids)
            usage.input_tokens += len(base_tokens) + len(d.ids)
            starts = [i for i, t in enumerate(d.ids) if t == engine.tool_open] + [len(d.ids)]
            kept = []
            for call, lo, hi in zip(calls, starts, starts[1:], strict=False):
                pmi = sum(d.logprobs[lo:hi]) - sum(base[lo:hi])
                log.debug("local tool call %s pmi=%.2f", call.name, pmi)
                if pmi >= threshold:
                    kept.append(call)
            calls = kept
        return _unique(calls, [c for m in messages if m.role == "assistant" for c in m.tool_calls])

    def _response(self, result: _Result, started: float, ttft_ms: float | None) -> ChatResponse:
        message = Message("assistant", content=result.content, tool_calls=result.calls)
        return ChatResponse(message, result.usage, self.model, self.name, result.finish,
                            latency_ms=(time.perf_counter() - started) * 1000, ttft_ms=ttft_ms)

    def _parse_calls(self, text: str) -> list[ToolCall]:
        calls = []
        for m in _CALL.finditer(text):
            try:
                obj = orjson.loads(m.group(1))
            except orjson.JSONDecodeError:
                continue  # the grammar makes this unreachable for complete blocks
            args = obj.get("arguments") if isinstance(obj, dict) else None
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(args, dict):
                continue
            calls.append(ToolCall(f"call_{next(self._ids)}", obj["name"], args, orjson.dumps(args).decode()))
        return calls

    async def complete(self, request: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        """One completion (greedy, grammar-constrained tool calls)."""
        started = time.perf_counter()
        cancel = threading.Event()
        result = await self._run(lambda: self._decode(request, cancel, None), cancel, timeout)
        return self._response(result, started, None)

    async def stream(self, request: ChatRequest, *, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """Text deltas token by token; tool calls arrive whole at the end; then ``StreamDone``."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        deadline = None if timeout is None else loop.time() + timeout

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def job() -> _Result:
            try:
                return self._decode(request, cancel, on_text)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        fut = asyncio.wrap_future(self._submit(job))
        ttft_ms: float | None = None
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    raise ProviderUnavailableError(f"local model did not finish within {timeout}s",
                                                   provider=self.name, model=self.model) from None
                if item is _END:
                    break
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
                yield TextDelta(item)
            result = await fut
        finally:
            cancel.set()  # no-op when finished; stops decoding if the consumer went away
            if not fut.done():
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        response = self._response(result, started, ttft_ms)
        for i, call in enumerate(response.message.tool_calls):
            yield ToolCallDelta(i, call.id, call.name, call.raw_arguments)
        yield StreamDone(response)

    async def count_tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int:
        """Exact prompt tokens for ``messages`` (+ ``tools``) with the model's own tokenizer."""
        prompt = chat_format.render(messages, tools)
        return await self._run(lambda: len(self._load().tokenize(prompt)), threading.Event(), None)

    async def aclose(self) -> None:
        """Free the model and stop the worker thread (after queued requests finish)."""
        with self._guard:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        engine = self._engine

        def close() -> None:
            if engine is not None:
                engine.close()

        await asyncio.wrap_future(executor.submit(close))
        self._engine = None
        executor.shutdown(wait=False)


def _unique(calls: list[ToolCall], earlier: list[ToolCall]) -> list[ToolCall]:
    """``calls`` without repeats of each other or of ``earlier`` (same name and arguments)."""
    seen = {(c.name, orjson.dumps(c.arguments, option=orjson.OPT_SORT_KEYS)) for c in earlier}
    out = []
    for c in calls:
        key = (c.name, orjson.dumps(c.arguments, option=orjson.OPT_SORT_KEYS))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


__all__ = ["BUNDLED_MODEL", "LocalProvider"]
