"""The synchronous llama.cpp decode loop behind :class:`LocalProvider` (runs in its worker thread).

It drives llama.cpp's C API directly (sampler chains, logits, EOG check) rather than
``Llama.create_completion``: that gives exact token counts, KV-cache prefix reuse across turns,
a grammar and a logit bias in one greedy chain, a first-token decision between answering and
calling a tool, and per-token cancellation.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from toolmesh.errors import LLMError
from toolmesh.llm.local.drafts import DRAFT_TOKENS, propose_draft, repeating_tail
from toolmesh.llm.local.prefix_cache import PrefixStore
from toolmesh.llm.local.prose import first_token_masked, not_prose_ids


@dataclass(slots=True)
class Decoded:
    """What one decode produced."""

    text: str
    tokens: int
    prompt_tokens: int
    cached_tokens: int
    finish: str  # "stop" | "length" | "tool_calls"
    #: Generated token ids and, when requested, their log-probabilities under the raw model.
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def usable_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_now(cores: int) -> int:
    """Threads for llama.cpp now: the cores not taken by other runnable processes (at least one).

    llama.cpp's threads busy-wait for each other at every layer, so one preempted thread stalls
    them all: on 2 shared cores with other work running, decoding with 2 threads measured 1-2
    tokens/s against 16 with 1 thread. ``/proc/loadavg``'s runnable count (sampled a few times,
    minus this reading thread) says how many cores others use right now.
    """
    samples: list[int] = []
    for _ in range(5):
        try:
            with open("/proc/loadavg") as f:
                samples.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return cores
        time.sleep(0.001)
    busy = sorted(samples)[len(samples) // 2]
    return max(1, min(cores, cores - busy))


class Cancelled(Exception):
    """The caller gave up (timeout or cancellation); decoding stopped between tokens."""


class _GreedyGrammar:
    """Greedy sampling under a grammar, checking the argmax first.

    llama.cpp's grammar sampler filters all ~150k candidates every token; under greedy decoding
    the model's own top token is nearly always allowed, so test that one token and fall back to
    the full filter only when it is rejected (what llama.cpp's own server does).
    """

    def __init__(self, vocab: Any, n_vocab: int, grammar: str) -> None:
        self.sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self.sampler:
            raise LLMError("llama.cpp rejected the tool-call grammar", provider="local")
        self.one = (llama_cpp.llama_token_data * 1)()
        self.one_arr = llama_cpp.llama_token_data_array(self.one, 1, -1, False)
        self.n_vocab = n_vocab
        self.full: Any = None

    def sample(self, logits: Any) -> int:
        tok = int(np.argmax(logits))
        self.one[0] = llama_cpp.llama_token_data(tok, float(logits[tok]), 0.0)
        self.one_arr.size, self.one_arr.selected = 1, -1
        llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(self.one_arr))
        if not math.isfinite(self.one[0].logit):
            if self.full is None:
                self.full = np.zeros(self.n_vocab, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
                self.full["id"] = np.arange(self.n_vocab, dtype=np.int32)
            self.full["logit"] = logits
            data = self.full.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
            arr = llama_cpp.llama_token_data_array(data, self.n_vocab, -1, False)
            llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(arr))
            tok = int(np.argmax(self.full["logit"]))
        llama_cpp.llama_sampler_accept(self.sampler, tok)
        return tok

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.sampler)


class Engine:
    """One loaded model; not thread-safe (the provider serialises calls on one worker thread)."""

    def __init__(self, path: str, *, n_ctx: int, n_threads: int | None, seed: int,
                 prefix_store: PrefixStore | None = None) -> None:
        self._cores = usable_cores()
        self._fixed_threads = n_threads
        self._threads = n_threads or threads_now(self._cores)
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=self._threads,
                                   n_threads_batch=self._threads, seed=seed, n_batch=512, verbose=False)
        self.n_ctx = n_ctx
        self.seed = seed
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.tool_open = self._special_token("<tool_call>")
        self.tool_close = self._special_token("</tool_call>")
        #: Tags that never belong in an answer: the model echoed "<tool_response>" and a result.
        self.answer_banned = [t for t in (self.tool_open, self.tool_close, self._special_token("<tool_response>"),
                                          self._special_token("</tool_response>")) if t is not None]
        self.prefix_store = prefix_store
        self._prefix_state: tuple[Any, bytes] | None = None
        #: Requests whose fixed prefix was restored from a saved state instead of evaluated.
        self.prefix_hits = 0
        #: Prompt-lookup decoding (greedy only; see ``_loop``) and its counters.
        self.speculate = True
        self.draft_tokens = 0
        self.draft_kept = 0
        self._not_prose: Any = None

    def _special_token(self, text: str) -> int | None:
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    def tokenize(self, text: str) -> list[int]:
        """Prompt tokens (special tokens such as ``<|im_start|>`` recognised)."""
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def detokenize(self, ids: list[int]) -> bytes:
        """The text of ``ids``, special tokens included."""
        return bytes(self.llm.detokenize(ids, special=True))

    def close(self) -> None:
        self.llm.close()

    # -- decoding ---------------------------------------------------------------------------

    def _common(self, cached: Any, n_past: int, tokens: list[int]) -> int:
        limit = min(n_past, len(tokens) - 1)  # always re-evaluate >= 1 token for fresh logits
        if limit <= 0:
            return 0
        diff = np.flatnonzero(cached[:limit] != np.asarray(tokens[:limit], dtype=np.intc))
        return int(diff[0]) if diff.size else limit

    def _prefill(self, tokens: list[int], *, prefix: int = 0) -> int:
        """Evaluate ``tokens``, reusing what is already computed; returns the reused length.

        Reused: the KV cache's common prefix, else the saved state of the first ``prefix`` tokens
        (the system turn with the tools; in memory, else on disk). When neither holds that
        prefix it is evaluated on its own first and its state saved for the next request.
        """
        llm = self.llm
        common = self._common(llm.input_ids, llm.n_tokens, tokens)
        reused = common
        if 0 < prefix < len(tokens) and common < prefix:
            head = tokens[:prefix]
            if self._restore_prefix(head):
                common = reused = prefix
            else:
                common = min(common, llm.n_tokens)
                llm.n_tokens = common
                llm.eval(head[common:])
                self._save_prefix(head)
                common = prefix
        llm.n_tokens = common
        llm.eval(tokens[common:])
        return reused

    def _restore_prefix(self, head: list[int]) -> bool:
        ids = np.asarray(head, dtype=np.intc)
        mem = self._prefix_state
        state: bytes | None = None
        if mem is not None and np.array_equal(mem[0], ids):
            state = mem[1]
        elif self.prefix_store is not None:
            state = self.prefix_store.load(head)
            if state is not None:
                self._prefix_state = (ids, state)
        if state is None:
            return False
        llm = self.llm
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(llm.ctx, buf, len(state), 0) != len(state):
            llm.n_tokens = 0  # the cache was cleared; evaluate from the start
            self._prefix_state = None
            return False
        llm.input_ids[:len(head)] = ids
        llm.n_tokens = len(head)
        self.prefix_hits += 1
        return True

    def _save_prefix(self, head: list[int]) -> None:
        llm = self.llm
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm.ctx, buf, size, 0)
        state = bytes(buf[:written])
        self._prefix_state = (np.asarray(head, dtype=np.intc), state)
        if self.prefix_store is not None:
            self.prefix_store.save(head, state)

    def set_threads(self) -> int:
        """Apply the thread count for the next request (see :func:`threads_now`); returns it."""
        n = self._fixed_threads or threads_now(self._cores)
        if n != self._threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
            self._threads = n
        return n

    def _logprobs(self, idx: int = -1) -> Any:
        """Log-softmax of the logits at batch position ``idx`` (default: the last evaluated token)."""
        logits = self._logits(idx)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def score(self, tokens: list[int], cont: list[int]) -> list[float]:
        """Log-probabilities of ``cont`` following ``tokens`` (one batched pass over ``cont``)."""
        if not cont:
            return []
        llm = self.llm
        self.set_threads()
        self._prefill(tokens)
        out = [float(self._logprobs()[cont[0]])]
        if len(tokens) + len(cont) > self.n_ctx:
            raise ValueError("continuation does not fit the context")
        for start in range(0, len(cont) - 1, llm.n_batch):
            chunk = cont[start:start + llm.n_batch]
            n_past = llm.n_tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past:n_past + len(chunk)] = chunk
            llm.n_tokens += len(chunk)
            for i in range(len(chunk)):
                j = start + i + 1
                if j >= len(cont):
                    break
                ptr = llama_cpp.llama_get_logits_ith(llm.ctx, i)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                top = logits.max()
                out.append(float(logits[cont[j]] - top - np.log(np.exp(logits - top).sum())))
        return out

    def decode(self, tokens: list[int], *, mode: str, grammar: str | None, max_tokens: int,
               temperature: float | None = None, stop: list[str] | None = None, max_calls: int = 0,
               prefix: int = 0,
               on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
               collect: bool = False, prose: bool = False, not_first: list[int] | None = None) -> Decoded:
        """Prefill ``tokens`` and generate.

        ``mode``: ``"answer"`` (tool-call tokens banned) or ``"tools"`` (decoded under ``grammar``;
        stops after ``max_calls`` complete calls when > 0). ``on_text`` receives text deltas
        (answers only); ``collect`` records each token's raw log-probability; ``prefix``: length of
        the fixed system turn whose state is saved and reused (see :meth:`_prefill`); ``prose``
        (answers): the first token may not open JSON, a list or a code fence, nor be one of
        ``not_first`` (see :mod:`toolmesh.llm.local.prose`).
        """
        self.set_threads()
        cached = self._prefill(tokens, prefix=prefix)
        if mode == "tools" and grammar is not None and not temperature:
            fast = _GreedyGrammar(self.vocab, self.n_vocab, grammar)
            try:
                return self._loop(lambda i: fast.sample(self._logits(i)), mode, tokens, cached, max_tokens,
                                  stop, max_calls, on_text, cancel or threading.Event(), collect, self.speculate)
            finally:
                fast.free()
        chain = self._chain(mode, grammar, temperature)
        ctx = self.llm.ctx

        def chained(i: int) -> int:
            return int(llama_cpp.llama_sampler_sample(chain, ctx, i))

        pick: Callable[[int], int] = chained
        if prose and mode == "answer":
            pick = first_token_masked(chained, self._logits, [self.not_prose(), not_first or []])
        try:
            return self._loop(pick, mode, tokens, cached, max_tokens, stop, max_calls, on_text,
                              cancel or threading.Event(), collect, self.speculate and not temperature)
        finally:
            llama_cpp.llama_sampler_free(chain)

    def not_prose(self) -> Any:
        """Token ids an answer from tool results may not start with (see :func:`prose.not_prose_ids`)."""
        if self._not_prose is None:
            self._not_prose = not_prose_ids(self.vocab, self.n_vocab)
        return self._not_prose

    def _logits(self, idx: int = -1) -> Any:
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _chain(self, mode: str, grammar: str | None, temperature: float | None) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if mode == "answer":
            banned = self.answer_banned
            if banned:
                bias = (llama_cpp.llama_logit_bias * len(banned))()
                for i, tok in enumerate(banned):
                    bias[i] = llama_cpp.llama_logit_bias(tok, -math.inf)
                llama_cpp.llama_sampler_chain_add(
                    chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(banned), bias))
        elif grammar is not None:
            sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
                raise LLMError("llama.cpp rejected the tool-call grammar", provider="local")
            llama_cpp.llama_sampler_chain_add(chain, sampler)
        if temperature:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(self.seed))
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain

    def _loop(self, sample: Callable[[int], int], mode: str, tokens: list[int], cached: int, max_tokens: int,
              stop: list[str] | None, max_calls: int, on_text: Callable[[str], None] | None,
              cancel: threading.Event, collect: bool, speculate: bool) -> Decoded:
        """Generate token by token; with ``speculate``, guess ahead from the prompt and verify in batches.

        Prompt-lookup decoding: tool calls and answers mostly copy runs of tokens from the prompt
        (tool names, SKUs, cities, prices), so the tokens that followed the last few generated
        ones where they occurred before are proposed as a draft and evaluated with the current
        token in one batch. Each draft token is kept only while it equals what ``sample`` picks
        at its position, so greedy output is exactly that of one-by-one decoding, in fewer steps.
        """
        llm = self.llm
        special = mode == "tools"  # tool mode needs the <tool_call> tags in the text
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        buf = (ctypes.c_char * 256)()
        text: list[str] = []
        held = max((len(s) for s in stop), default=1) - 1 if stop else 0
        finish = "length"
        calls = emitted = 0
        ids: list[int] = []
        logprobs: list[float] = []
        history = list(tokens)
        marks: list[int] = []  # text length after each generated token
        chars = 0

        def take(tok: int, idx: int) -> bool:
            """Record one sampled token (its logits at batch index ``idx``); True when generation ends."""
            nonlocal buf, text, finish, calls, emitted, chars
            if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                finish = "stop"
                return True
            if collect:
                logprobs.append(float(self._logprobs(idx)[tok]))
            ids.append(tok)
            history.append(tok)
            if tok == self.tool_close:
                calls += 1
                if calls == max_calls:
                    text.append("</tool_call>")
                    finish = "stop"
                    return True
            size = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
            if size < 0:  # piece longer than the buffer: llama.cpp returns -needed
                buf = (ctypes.c_char * -size)()
                size = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
            piece = utf8.decode(buf.raw[:size]) if size > 0 else ""
            chars += len(piece)
            marks.append(chars)
            if mode == "answer":
                period = repeating_tail(ids)
                if period:  # greedy decoding caught in a loop: keep what came before it, stop
                    span = period * max(3, -(-12 // period)) - period  # all copies but the first
                    keep = marks[-span - 1]
                    text = ["".join(text)[:keep]]
                    del ids[-span:]
                    finish = "stop"
                    return True
            if piece:
                text.append(piece)
                if stop:
                    joined = "".join(text)
                    cut = min((i for i in (joined.find(s) for s in stop) if i >= 0), default=-1)
                    if cut >= 0:
                        text = [joined[:cut]]
                        finish = "stop"
                        return True
                if on_text is not None and mode == "answer":
                    joined = "".join(text)
                    safe = len(joined) - held
                    if safe > emitted:
                        on_text(joined[emitted:safe])
                        emitted = safe
            return len(ids) >= max_tokens

        idx = -1
        pending: tuple[int, int] | None = None  # a token sampled while verifying, not yet evaluated
        while len(ids) < max_tokens:
            if cancel.is_set():
                raise Cancelled
            if pending is None:
                tok = sample(idx)
                if take(tok, idx):
                    break
            else:
                tok = pending[0]
                pending = None
            if llm.n_tokens + 1 >= self.n_ctx:
                break  # the context is full: finish as "length"
            room = min(max_tokens - len(ids), self.n_ctx - llm.n_tokens - 2, DRAFT_TOKENS)
            draft = propose_draft(history, room) if speculate and room > 0 else []
            if not draft:
                llm.eval([tok])
                idx = -1
                continue
            n_past = llm.n_tokens
            batch = [tok, *draft]
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past:n_past + len(batch)] = batch
            kept, done = 0, False
            for i, guess in enumerate(draft):
                got = sample(i)
                if got != guess:
                    done = take(got, i)
                    pending = None if done else (got, i)
                    break
                kept += 1
                if take(got, i):
                    done = True
                    break
            else:
                idx = len(draft)  # every guess held: the next token comes from the last position
            llm.n_tokens = n_past + 1 + kept
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            self.draft_tokens += len(draft)
            self.draft_kept += kept
            if done:
                break
        out = "".join(text) + utf8.decode(b"", final=True)
        if on_text is not None and mode == "answer" and len(out) > emitted:
            on_text(out[emitted:])
        if mode == "tools" and finish == "stop":
            finish = "tool_calls"
        return Decoded(out, len(ids), len(tokens), cached, finish, ids, logprobs)


__all__ = ["Cancelled", "Decoded", "Engine", "threads_now", "usable_cores"]
