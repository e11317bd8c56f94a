"""Checks that keep a small model's tool calls to what the conversation supports.

Two habits of a 0.5B model offered tools, measured on the demo tools (docs/local-model.md):

* it starts a call for nearly any message, chit-chat included, and appends extra calls after the
  ones a request needs; :func:`call_spans` splits the generated tokens per call so each call's
  *name* can be scored with and without the user's message (pointwise mutual information);
* it fills optional parameters with values nobody gave — the schema's example
  (``coupon: "SAVE20"``), a copy of a neighbouring argument (``warehouse: "广州"`` next to
  ``city: "广州"``). :func:`drop_invented_arguments` removes such optional arguments so the
  tool's default applies; required arguments are left to the tool to judge, except that an
  appended call whose required argument is the schema's own example (:func:`copied_from_schema`,
  ``track_shipment("SF1234567890")`` after a stock question) is dropped whole.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from toolmesh.llm.types import Message, ToolCall

#: Nats by which the user's message must raise the log-probability of the turn's best call (whole
#: call), 0.5B model: real requests +4.1 … +32, made-up calls for chit-chat −10 … +3.1
#: (docs/local-model.md).
TOOL_THRESHOLD = 3.5
#: Nats by which it must raise each further call's *name*: on the reference question the stock and
#: price calls scored +3.7 and +1.0, the unasked promotions call +0.7, habit calls −0.3 … −8.
EXTRA_CALL_THRESHOLD = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """When a turn's tool calls count as asked for: nats by which the user's message raises them.

    Each call has two scores (pointwise mutual information against the same conversation with the
    last user message emptied): *whole*, its full text, and *name*, its name scored as the turn's
    first call. A turn is kept if one of its calls reaches ``turn_whole`` or ``turn_name``; then
    each call is kept if it reaches ``whole`` or ``name``. Which score tells requests from
    chit-chat depends on the model, so each bundled model has its own (:func:`thresholds_for`).
    """

    whole: float = TOOL_THRESHOLD
    name: float = EXTRA_CALL_THRESHOLD
    turn_whole: float = TOOL_THRESHOLD
    turn_name: float = math.inf

    def keep(self, whole: Sequence[float], names: Sequence[float]) -> list[bool]:
        """For each call (scores in order), whether it is kept."""
        if len(whole) != len(names):
            raise ValueError("one whole score and one name score per call")
        pairs = list(zip(whole, names, strict=True))
        if not any(w >= self.turn_whole or n >= self.turn_name for w, n in pairs):
            return [False] * len(pairs)
        return [w >= self.whole or n >= self.name for w, n in pairs]

    def overridden(self, whole: float | None = None, name: float | None = None) -> Thresholds:
        """These thresholds with ``whole`` (the turn's and each call's) and/or ``name`` replaced."""
        out = self
        if whole is not None:
            out = dataclasses.replace(out, whole=whole, turn_whole=whole)
        if name is not None:
            out = dataclasses.replace(out, name=name)
        return out


#: The 0.5B model: a request raises its best whole call by +4 or more; chit-chat stays under +3.1.
QWEN_0_5B_THRESHOLDS = Thresholds()
#: The 1.5B model: with the customer and the product in the system prompt it predicts the stock
#: and price calls even for an empty message, and its whole-call scores for chit-chat reach +4.6,
#: so the turn is judged by the names (requests +0.93 … +3.34, chit-chat ≤ +0.27). Fitted on 8
#: questions of the ``shop`` set (docs/local-model.md § "The 1.5B model's grounding").
QWEN_1_5B_THRESHOLDS = Thresholds(whole=3.0, name=0.65, turn_whole=math.inf, turn_name=0.65)
_BY_MODEL = {"qwen2.5-coder-0.5b-instruct": QWEN_0_5B_THRESHOLDS,
             "qwen2.5-coder-1.5b-instruct": QWEN_1_5B_THRESHOLDS}


def thresholds_for(model: str | None) -> Thresholds:
    """The grounding thresholds of a bundled model by name; the 0.5B's for any other model."""
    return _BY_MODEL.get(model or "", QWEN_0_5B_THRESHOLDS)


def call_spans(ids: list[int], tool_open: int | None,
               detokenize: Callable[[list[int]], bytes]) -> list[tuple[int, int, int]]:
    """``(start, name_end, end)`` token offsets of each ``<tool_call>`` block in ``ids``.

    ``[start, name_end)`` covers the opening tag and the function name (up to ``"arguments"``):
    the tokens that say *which* tool, as opposed to the argument values.
    """
    starts = [i for i, t in enumerate(ids) if t == tool_open]
    spans = []
    ends = [*starts[1:], len(ids)] if starts else []
    for lo, hi in zip(starts, ends, strict=True):
        cut = lo + 1
        while cut < hi and b'"arguments"' not in detokenize(ids[lo:cut]):
            cut += 1
        spans.append((lo, cut, hi))
    return spans


def conversation_text(messages: list[Message]) -> str:
    """Everything the model was told (system, user and tool messages), lower-cased, for look-ups."""
    parts = [m.content or "" for m in messages if m.role in ("system", "user", "tool")]
    return "\n".join(parts).casefold()


def drop_invented_arguments(call: ToolCall, schema: dict[str, Any] | None, context: str) -> ToolCall:
    """``call`` without optional string arguments that nobody gave.

    An optional argument is dropped when its value appears nowhere in ``context`` (see
    :func:`conversation_text`) or merely repeats another argument's value of the same call.
    """
    if not isinstance(schema, dict) or not call.arguments:
        return call
    required = set(schema.get("required") or [])
    kept: dict[str, Any] = {}
    for key, value in call.arguments.items():
        if key not in required and isinstance(value, str):
            folded = value.strip().casefold()
            others = {str(v).strip().casefold() for k, v in call.arguments.items() if k != key}
            if not folded or folded not in context or folded in others:
                continue
        kept[key] = value
    if len(kept) == len(call.arguments):
        return call
    return dataclasses.replace(call, arguments=kept, raw_arguments=orjson.dumps(kept).decode())


def copied_from_schema(call: ToolCall, schema: dict[str, Any] | None, context: str) -> bool:
    """Whether a required string argument of ``call`` is the schema's own example, given by nobody.

    A habit call appended after the asked-for ones fills its required arguments from the tool's
    description (``track_shipment(tracking_number="SF1234567890")`` for a stock question): a value
    found nowhere in ``context`` (see :func:`conversation_text`) but inside the tool's schema.
    """
    if not isinstance(schema, dict) or not call.arguments:
        return False
    required = set(schema.get("required") or [])
    schema_text = orjson.dumps(schema).decode("utf-8").casefold()
    for key, value in call.arguments.items():
        if key in required and isinstance(value, str):
            folded = value.strip().casefold()
            if folded and folded not in context and folded in schema_text:
                return True
    return False


def schemas_by_name(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Function name -> its parameters schema, for OpenAI-form tools."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            out[fn["name"]] = params if isinstance(params, dict) else {}
    return out


__all__ = ["EXTRA_CALL_THRESHOLD", "QWEN_0_5B_THRESHOLDS", "QWEN_1_5B_THRESHOLDS", "TOOL_THRESHOLD", "Thresholds",
           "call_spans", "conversation_text", "copied_from_schema",
           "drop_invented_arguments", "schemas_by_name", "thresholds_for"]
