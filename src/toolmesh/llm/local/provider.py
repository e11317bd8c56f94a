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
from toolmesh.llm.local.compact import compact_messages, compact_tools, results_as_text
from toolmesh.llm.local.grounding import (
    Thresholds,
    call_spans,
    conversation_text,
    copied_from_schema,
    drop_invented_arguments,
    schemas_by_name,
    thresholds_for,
)
from toolmesh.llm.local.prefix_cache import PrefixStore
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
#: Most tool calls decoded in one turn (the reference question needs three).
MAX_CALLS = 4
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
    built from the tools' JSON Schemas, up to ``max_calls`` per turn; in ``"auto"`` the calls the
    user's message does not support are dropped (the model's ``grounding.Thresholds``, with
    ``tool_threshold`` / ``extra_call_threshold`` as overrides; see ``_grounded``).
    ``tool_choice="none"`` answers in plain text (the tool-call token is banned). ``bundled`` names
    the bundled weights to use when no ``path`` is given.
    """

    def __init__(self, path: str | Path | None = None, *, sha256: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int = 0, name: str = "local",
                 tool_threshold: float | None = None, compact: bool = True, compact_tools: bool = False,
                 prefix_cache: bool = True,
                 bundled: str | None = None, extra_call_threshold: float | None = None,
                 max_calls: int = MAX_CALLS) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.name = name
        #: Most tool calls decoded in one turn (each costs ~2 s of generation on two cores).
        self.max_calls = max_calls
        #: Which bundled weights to use when no ``path`` is given (see ``weights.bundled``).
        self._bundled = weights.bundled(bundled) if path is None else None
        self._path = Path(path).expanduser() if path is not None else None
        self._sha256 = sha256
        self.n_ctx = n_ctx
        self._n_threads = n_threads
        self._seed = seed
        #: When the turn's calls count as asked for (see ``_grounded``): the bundled model's own,
        #: with ``tool_threshold`` (whole call) and ``extra_call_threshold`` (name) as overrides.
        self.thresholds: Thresholds = thresholds_for(self._bundled.name if self._bundled else None).overridden(
            tool_threshold, extra_call_threshold)
        self._compact = compact
        # Off by default: without the schemas' examples the 0.5B model wrote "这款手机" as the SKU and
        # the province as the city (docs/local-model.md).
        self._compact_tools = compact_tools
        self._prefix_cache = prefix_cache
        self.model = self._bundled.name if self._bundled is not None else Path(path or "").stem
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
            if self._bundled is not None:
                path = weights.model_path(model=self._bundled)
            else:
                assert self._path is not None  # exactly one of path / bundled is set
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
            self._engine = Engine(str(path), n_ctx=self.n_ctx, n_threads=self._n_threads, seed=self._seed,
                                  prefix_store=self._prefix_store(path))
            self.load_seconds = time.perf_counter() - start
        return self._engine

    def _prefix_store(self, path: Path) -> PrefixStore | None:
        """Where the state after the system turn is saved (``None`` when ``prefix_cache`` is off)."""
        if not self._prefix_cache:
            return None
        import llama_cpp

        if self._bundled is not None:
            key = self._bundled.sha256
        elif self._sha256:
            key = self._sha256.lower()
        else:  # an unverified file: its identity is its place, size and modification time
            st = path.stat()
            key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        directory = weights.toolmesh_home() / "cache" / "llm-prefix"
        return PrefixStore(directory, f"{key}:{self.n_ctx}", str(llama_cpp.__version__))

    async def load(self) -> None:
        """Load (and verify) the model now instead of on the first request."""
        await self._run(self._load, threading.Event(), None)

    # -- requests ---------------------------------------------------------------------------

    def _tokens(self, engine: Engine, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        tokens = engine.tokenize(self._render(messages, tools))
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(f"prompt is {len(tokens)} tokens; the context window is {self.n_ctx}",
                                       provider=self.name, model=self.model)
        return tokens

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text: Qwen's template over the compacted tools and tool results."""
        return chat_format.render(compact_messages(messages) if self._compact else messages, self._prompt_tools(tools))

    def _prompt_tools(self, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return compact_tools(tools) if tools and self._compact_tools else tools

    def _prefix_len(self, engine: Engine, messages: list[Message], tools: list[dict[str, Any]] | None,
                    tokens: list[int]) -> int:
        """Tokens of the system turn (with the tools) at the start of ``tokens``; 0 if it is not a prefix."""
        system = messages[:1] if messages and messages[0].role == "system" else []
        head = engine.tokenize(chat_format.render(system, self._prompt_tools(tools), generation_prompt=False))
        return len(head) if len(head) < len(tokens) and tokens[:len(head)] == head else 0

    def _decode(self, request: ChatRequest, cancel: threading.Event,
                on_text: Callable[[str], None] | None) -> _Result:
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
                              temperature=request.temperature, max_calls=self.max_calls if parallel else 1,
                              cancel=cancel, collect=choice == "auto",
                              prefix=self._prefix_len(engine, request.messages, tools, tokens))
            usage = usage + Usage(d.prompt_tokens, d.tokens, cached_input_tokens=d.cached_tokens)
            log.debug("local tool-call text %r", d.text)
            calls = self._parse_calls(d.text)
            if choice != "auto":
                if not calls:
                    raise MalformedResponseError(f"tool call cut off at max_tokens={request.max_tokens}",
                                                 provider=self.name, model=self.model)
                return _Result(None, self._clean(request.messages, tools, calls), "tool_calls", usage)
            calls = self._grounded(engine, request.messages, tools, tokens, d, calls, usage)
            if calls:
                return _Result(None, calls, "tool_calls", usage)
        # A plain answer: rendered without the tools block (the model then chats instead of
        # writing JSON), and with the tool-call tokens banned. Asked for the answer after tool
        # results (a user message after them, as the agent's answer step sends), the results are
        # shown as text lines and the answer may not start as JSON: shown JSON, the 0.5B model
        # answered by echoing a result (docs/local-model.md).
        msgs = request.messages
        from_results = (self._compact and bool(msgs) and msgs[-1].role == "user"
                        and any(m.role == "tool" for m in msgs))
        messages = results_as_text(request.messages) if from_results else request.messages
        tokens = self._tokens(engine, messages, None)
        room = self.n_ctx - len(tokens)
        d = engine.decode(tokens, mode="answer", grammar=None, max_tokens=min(request.max_tokens or room, room),
                          temperature=request.temperature, stop=request.stop, on_text=on_text, cancel=cancel,
                          prose=from_results, not_first=self._echo_start(engine, messages) if from_results else None)
        usage = usage + Usage(d.prompt_tokens, d.tokens, cached_input_tokens=d.cached_tokens)
        return _Result(d.text, [], "length" if d.finish == "length" else "stop", usage)

    @staticmethod
    def _echo_start(engine: Engine, messages: list[Message]) -> list[int]:
        """The first token of the last user message: an answer that starts with it was, with the 0.5B
        model, that message echoed back ("The customer asked: …") rather than an answer."""
        last = next((m.content for m in reversed(messages) if m.role == "user" and m.content), "")
        ids = engine.tokenize(last.strip())
        return ids[:1]

    def _grounded(self, engine: Engine, messages: list[Message], tools: list[dict[str, Any]], tokens: list[int],
                  d: Decoded, calls: list[ToolCall], usage: Usage) -> list[ToolCall]:
        """Keep the calls the user's last message asks for, without invented optional arguments.

        A 0.5B model offered tools emits a call for nearly anything ("thanks!", "你好") and
        appends extra calls, so in "auto" each call's *name* is scored a second time against a
        baseline: the same conversation with the last user message emptied. Which calls are kept
        by how much the message raises their log-probability (pointwise mutual information, in
        nats) is ``self.thresholds``' decision (``grounding.Thresholds``): the whole call's score,
        and its name's scored *as the turn's first call* — scored where it stands, a further call's baseline is
        whatever habitually follows the calls before it (the next tool in the prompt's list), which
        let the message "raise" appended habit calls and sank the price call the question asked for
        (name score −6.3 after a stock call; docs/local-model.md). Calls identical to ones already
        made are dropped too.
        """
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is not None and calls:
            base_msgs = list(messages)
            base_msgs[last] = Message("user", "")
            base_tokens = self._tokens(engine, base_msgs, tools)
            base = engine.score(base_tokens, d.ids)
            usage.input_tokens += len(base_tokens) + len(d.ids)
            spans = call_spans(d.ids, engine.tool_open, engine.detokenize)[:len(calls)]
            whole = [sum(d.logprobs[lo:hi]) - sum(base[lo:hi]) for lo, _, hi in spans]
            names = [sum(d.logprobs[lo:cut]) - sum(base[lo:cut]) for lo, cut, _ in spans]
            heads = [d.ids[lo:cut] for lo, cut, _ in spans[1:]]
            # All "with message" scores first, then the baselines: each pass re-reads only the tail
            # after the cached common prefix. The opening <tool_call> token is left out: any request
            # raises "a call starts" over an empty message, by the same amount for every tool.
            asked = [sum(engine.score(tokens, h)[1:]) for h in heads]
            unasked = [sum(engine.score(base_tokens, h)[1:]) for h in heads]
            usage.input_tokens += 2 * sum(len(h) for h in heads)  # the prompts themselves are counted above
            names[1:] = [a - b for a, b in zip(asked, unasked, strict=True)]
            for call, w, nm in zip(calls, whole, names, strict=False):
                log.debug("local tool call %s pmi=%.2f name-pmi=%.2f", call.name, w, nm)
            # each call on its own merit, or (further calls of a supported turn) by its name
            kept = self.thresholds.keep(whole, names)  # one score pair per call span (spans ≤ calls)
            calls = [c for c, keep in zip(calls, kept, strict=False) if keep]
            if not calls:
                return []
            # a call whose required argument is the schema's example was not asked for either
            # (a lone call is left to the tool to judge)
            if len(calls) > 1:
                schemas, context = schemas_by_name(tools), conversation_text(messages)
                calls = [c for c in calls if not copied_from_schema(c, schemas.get(c.name), context)]
        return self._clean(messages, tools, calls)

    def _clean(self, messages: list[Message], tools: list[dict[str, Any]], calls: list[ToolCall]) -> list[ToolCall]:
        context = conversation_text(messages)
        schemas = schemas_by_name(tools)
        calls = [drop_invented_arguments(c, schemas.get(c.name), context) for c in calls]
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
        prompt = self._render(messages, tools)
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
