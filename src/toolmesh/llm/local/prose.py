"""Which tokens an answer written from tool results may not start with.

Given tool results, the 0.5B model often answered by echoing one (JSON, a markdown list, the
``<tool_response>`` tag); an answer that starts with a word reads as an answer (docs/local-model.md).
Only the first token is constrained (:func:`first_token_masked`), so a list later in an answer is fine.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
import numpy as np

#: First characters an answer from tool results may not start with: JSON, a code fence, a tag, a
#: markdown list, heading or table.
NOT_PROSE_START = (b"{", b"[", b"`", b"<", b"-", b"*", b"#", b"|")


def not_prose_ids(vocab: Any, n_vocab: int) -> Any:
    """Token ids whose text starts (after whitespace) with one of :data:`NOT_PROSE_START`, or is only
    whitespace or empty (special tokens, the end of the turn): ~1,300 of Qwen's 151,936, ~0.2 s."""
    buf = (ctypes.c_char * 256)()
    banned = []
    for tok in range(n_vocab):
        size = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, False)
        head = buf.raw[:size].lstrip() if size > 0 else b""
        if not head or head[:1] in NOT_PROSE_START:
            banned.append(tok)
    return np.asarray(banned, dtype=np.int64)


def first_token_masked(sample: Callable[[int], int], logits: Callable[[int], Any],
                       banned: Sequence[Any]) -> Callable[[int], int]:
    """``sample`` (batch index -> token) with the ids in ``banned`` ruled out for its first call.

    ``logits(i)`` must be the writable logits row the sampler then reads (llama.cpp's own buffer).
    """
    first = True

    def pick(i: int) -> int:
        nonlocal first
        if first:
            first = False
            row = logits(i)
            for ids in banned:
                if len(ids):
                    row[ids] = -math.inf
        return sample(i)

    return pick


__all__ = ["NOT_PROSE_START", "first_token_masked", "not_prose_ids"]
