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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from toolmesh.errors import LLMError

#: Minimum pointwise mutual information (nats) between a generated tool call and the user's last
#: message for "auto" to keep the call. Measured on the demo tools (docs/local-model.md): calls
#: for real requests scored +4.1 to +32, calls the model made up for chit-chat -10 to +3.1.
DEFAULT_TOOL_THRESHOLD = 3.5


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

    def __init__(self, path: str, *, n_ctx: int, n_threads: int | None, seed: int) -> None:
        # llama-cpp-python defaults to half the cores; a 0.5B model decodes fastest on all of them.
        threads = n_threads or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   seed=seed, n_batch=512, verbose=False)
        self.n_ctx = n_ctx
        self.seed = seed
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.tool_open = self._special_token("<tool_call>")
        self.tool_close = self._special_token("</tool_call>")
        self._snapshot: Any = None

    def _special_token(self, text: str) -> int | None:
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    def tokenize(self, text: str) -> list[int]:
        """Prompt tokens (special tokens such as ``<|im_start|>`` recognised)."""
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def close(self) -> None:
        self.llm.close()

    # -- decoding ---------------------------------------------------------------------------

    def _common(self, cached: Any, n_past: int, tokens: list[int]) -> int:
        limit = min(n_past, len(tokens) - 1)  # always re-evaluate >= 1 token for fresh logits
        if limit <= 0:
            return 0
        diff = np.flatnonzero(cached[:limit] != np.asarray(tokens[:limit], dtype=np.intc))
        return int(diff[0]) if diff.size else limit

    def _prefill(self, tokens: list[int], *, keep: bool = False) -> int:
        """Evaluate ``tokens``, reusing the KV cache's common prefix; returns the reused length.

        ``keep`` snapshots the KV state afterwards (one slot): tool prompts carry ~2k tokens of
        tool definitions, and a plain answer (rendered without them) would otherwise evict them.
        """
        llm = self.llm
        common = self._common(llm.input_ids, llm.n_tokens, tokens)
        snap = self._snapshot
        if snap is not None:
            snap_ids, snap_kv = snap
            from_snap = self._common(snap_ids, len(snap_ids), tokens)
            if from_snap > common + 256:
                llm._ctx.kv_cache_seq_rm(-1, 0, -1)
                if llama_cpp.llama_state_seq_set_data(llm.ctx, snap_kv, len(snap_kv), 0) == len(snap_kv):
                    llm.input_ids[:len(snap_ids)] = snap_ids
                    common = from_snap
                else:
                    common = 0
        llm.n_tokens = common
        llm.eval(tokens[common:])
        if keep and common < len(tokens) - 1:
            size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
            kv = (ctypes.c_uint8 * size)()
            llama_cpp.llama_state_seq_get_data(llm.ctx, kv, size, 0)
            self._snapshot = (np.asarray(tokens, dtype=np.intc), kv)
        return common

    def _logprobs(self) -> Any:
        """Log-softmax of the logits after the last evaluated token."""
        logits = self._logits()
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def score(self, tokens: list[int], cont: list[int]) -> list[float]:
        """Log-probabilities of ``cont`` following ``tokens`` (one batched pass over ``cont``)."""
        if not cont:
            return []
        llm = self.llm
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
               on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
               collect: bool = False) -> Decoded:
        """Prefill ``tokens`` and generate.

        ``mode``: ``"answer"`` (tool-call tokens banned) or ``"tools"`` (decoded under ``grammar``;
        stops after ``max_calls`` complete calls when > 0). ``on_text`` receives text deltas
        (answers only); ``collect`` records each token's raw log-probability.
        """
        cached = self._prefill(tokens, keep=mode == "tools")
        if mode == "tools" and grammar is not None and not temperature:
            fast = _GreedyGrammar(self.vocab, self.n_vocab, grammar)
            try:
                return self._loop(lambda: fast.sample(self._logits()), mode, len(tokens), cached, max_tokens,
                                  stop, max_calls, on_text, cancel or threading.Event(), collect)
            finally:
                fast.free()
        chain = self._chain(mode, grammar, temperature)
        ctx = self.llm.ctx
        try:
            return self._loop(lambda: int(llama_cpp.llama_sampler_sample(chain, ctx, -1)), mode, len(tokens),
                              cached, max_tokens, stop, max_calls, on_text, cancel or threading.Event(), collect)
        finally:
            llama_cpp.llama_sampler_free(chain)

    def _logits(self) -> Any:
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _chain(self, mode: str, grammar: str | None, temperature: float | None) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if mode == "answer":
            banned = [t for t in (self.tool_open, self.tool_close) if t is not None]
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

    def _loop(self, sample: Callable[[], int], mode: str, n_prompt: int, cached: int, max_tokens: int,
              stop: list[str] | None, max_calls: int, on_text: Callable[[str], None] | None,
              cancel: threading.Event, collect: bool) -> Decoded:
        llm = self.llm
        special = mode == "tools"  # tool mode needs the <tool_call> tags in the text
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        buf = (ctypes.c_char * 256)()
        text: list[str] = []
        emitted = 0  # chars of the answer already passed to on_text
        held = max((len(s) for s in stop), default=1) - 1 if stop else 0
        finish = "length"
        n = calls = 0
        ids: list[int] = []
        logprobs: list[float] = []
        while n < max_tokens:
            if cancel.is_set():
                raise Cancelled
            tok = sample()
            if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                finish = "stop"
                break
            if collect:
                logprobs.append(float(self._logprobs()[tok]))
            ids.append(tok)
            n += 1
            if tok == self.tool_close:
                calls += 1
                if calls == max_calls:
                    text.append("</tool_call>")
                    finish = "stop"
                    break
            size = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
            if size < 0:  # piece longer than the buffer: llama.cpp returns -needed
                buf = (ctypes.c_char * -size)()
                size = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
            piece = utf8.decode(buf.raw[:size]) if size > 0 else ""
            if piece:
                text.append(piece)
                if stop:
                    joined = "".join(text)
                    cut = min((i for i in (joined.find(s) for s in stop) if i >= 0), default=-1)
                    if cut >= 0:
                        text = [joined[:cut]]
                        finish = "stop"
                        break
                if on_text is not None and mode == "answer":
                    joined = "".join(text)
                    safe = len(joined) - held
                    if safe > emitted:
                        on_text(joined[emitted:safe])
                        emitted = safe
            if llm.n_tokens >= self.n_ctx:
                break  # the context is full: finish as "length"
            llm.eval([tok])
        out = "".join(text) + utf8.decode(b"", final=True)
        if on_text is not None and mode == "answer" and len(out) > emitted:
            on_text(out[emitted:])
        if mode == "tools" and finish == "stop":
            finish = "tool_calls"
        return Decoded(out, n, n_prompt, cached, finish, ids, logprobs)


__all__ = ["DEFAULT_TOOL_THRESHOLD", "Cancelled", "Decoded", "Engine"]
