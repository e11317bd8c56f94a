"""Token-sequence heuristics of the decode loop: the loop guard and prompt-lookup drafts.

Pure functions of token ids, kept apart from :mod:`toolmesh.llm.local.engine` (which calls them
every step) so they can be read and tested without llama.cpp.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DRAFT_TOKENS", "propose_draft", "repeating_tail"]

#: Most tokens guessed ahead per step by prompt-lookup decoding.
DRAFT_TOKENS = 8


def repeating_tail(ids: list[int], min_span: int = 12, longest: int = 32) -> int:
    """The period p when ``ids`` ends with the same p tokens repeated over at least ``min_span``
    tokens and at least 3 times (else 0).

    A 0.5B model decoding greedily can fall into "236, 236, 236, …" until max_tokens, or into a
    cycle of a few items ("优惠 300.00, 优惠 200.00, 优惠 100.00, 优惠 50.00, …": ~24 tokens, hence
    ``longest``); short legit repeats (the digits of "9,999") are shorter than ``min_span``.
    """
    for period in range(1, longest + 1):
        times = max(3, -(-min_span // period))
        if len(ids) < period * times:
            continue
        tail = ids[-period:]
        if all(ids[len(ids) - (k + 1) * period:len(ids) - k * period] == tail for k in range(1, times)):
            return period
    return 0


def propose_draft(history: list[int], limit: int) -> list[int]:
    """Up to ``limit`` tokens that followed the latest earlier occurrence of ``history``'s last
    3 (else 2) tokens — a guess of what comes next when the output copies from the prompt."""
    arr = np.asarray(history, dtype=np.int32)
    for n in (3, 2):
        if len(arr) <= n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
        hits = np.flatnonzero((windows == arr[-n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return [int(t) for t in arr[start:start + limit]]
    return []
