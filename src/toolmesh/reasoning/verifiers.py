"""Step verifiers: ``async (step, chain) -> Verdict``, chosen per run and combinable.

Built in: ``arithmetic`` (exact), ``python`` (sandboxed code blocks), ``judge`` (a model
returning JSON), ``tool:NAME`` (an MCP tool through the Hub), ``none``. Any async callable
with the same signature can be added. A verdict with ``ok=None`` is "unknown": it never
sends a step back, and the verifier's own trouble is a warning, never a crash.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolmesh.errors import LLMError, ToolmeshError
from toolmesh.llm.types import ChatRequest
from toolmesh.reasoning import arith, prompts
from toolmesh.reasoning.adapter import Meter
from toolmesh.reasoning.sandbox import run_python
from toolmesh.reasoning.types import ReasoningConfig, Step, Verdict, Verifier

log = logging.getLogger("toolmesh.reasoning")

_CODE = re.compile(r"```(?:python|py|python3)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OUTPUT_BLOCK = re.compile(r"```(?:output|text|console)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OUTPUT_LINE = re.compile(r"^[ \t]*(?:\*\*)?(?:output|prints|result)(?:\*\*)?[ \t]*:[ \t]*(.+)$",
                          re.IGNORECASE | re.MULTILINE)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_YES = frozenset({"true", "ok", "pass", "passed", "valid", "correct", "yes"})
_NO = frozenset({"false", "fail", "failed", "invalid", "incorrect", "no", "wrong"})


class ToolResultLike(Protocol):
    ok: bool
    is_error: bool
    structured: Any
    error: str | None

    @property
    def text(self) -> str: ...


class ToolCaller(Protocol):
    """The Hub, as far as the ``tool`` verifier needs it."""

    async def call(self, exposed: str, arguments: dict[str, Any] | None = None, *, tenant: str = ...,
                   user: str | None = None, timeout: float | None = None) -> Any: ...


@dataclass
class VerifyContext:
    """What the built-in verifiers of one run need."""

    prompt: str
    config: ReasoningConfig
    meter: Meter
    hub: ToolCaller | None
    model: str


def unknown(reason: str, verifier: str, warning: str | None = None) -> Verdict:
    return Verdict(None, None, reason, verifier, [warning] if warning else [])


# -- arithmetic --------------------------------------------------------------------------------------------


async def arithmetic(step: Step, chain: list[Step]) -> Verdict:
    """Every ``expr = value`` claim must hold exactly; no claims → unknown."""
    found = arith.claims(step.text)
    if not found:
        return unknown("no arithmetic claims", "arithmetic")
    wrong = [c for c in found if not c.ok]
    if wrong:
        return Verdict(0.0, False, "; ".join(c.describe() for c in wrong), "arithmetic")
    return Verdict(1.0, True, f"{len(found)} arithmetic claim(s) hold", "arithmetic")


# -- python ------------------------------------------------------------------------------------------------


def python(timeout: float = 5.0, memory_mb: int = 256) -> Verifier:
    """Run the step's ```python blocks; pass when they exit 0 and print any output the step claims."""

    async def check(step: Step, chain: list[Step]) -> Verdict:
        blocks = _CODE.findall(step.text)
        if not blocks:
            return unknown("no python code block", "python")
        res = await run_python("\n".join(blocks), timeout=timeout, memory_mb=memory_mb)
        if res.timed_out:
            return Verdict(0.0, False, f"the code did not finish within {timeout:g}s", "python")
        if not res.ok:
            tail = res.stderr.strip().splitlines()[-3:]
            return Verdict(0.0, False, f"the code failed (exit {res.exit_code}): {' '.join(tail)}", "python")
        after = step.text[step.text.rfind("```") + 3:]
        claimed = _OUTPUT_BLOCK.search(step.text) or _OUTPUT_LINE.search(after)
        if claimed is not None:
            want, got = _norm(claimed.group(1)), _norm(res.stdout)
            if want != got:
                return Verdict(0.0, False, f"the step claims output {want!r} but the code prints {got!r}", "python")
            return Verdict(1.0, True, "the code runs and prints the claimed output", "python")
        return Verdict(1.0, True, "the code runs without error", "python")

    return check


def _norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines()).strip("` \n")


# -- judge -------------------------------------------------------------------------------------------------


def parse_judge(text: str) -> tuple[float, str] | str:
    """``(score, reason)`` from a judge reply, or why it is malformed."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    m = _JSON_OBJECT.search(body)
    if m is None:
        return f"no JSON object in the judge's reply: {text[:120]!r}"
    try:
        data = json.loads(m.group(0))
    except ValueError as exc:
        return f"malformed JSON from the judge ({exc}): {text[:120]!r}"
    if not isinstance(data, dict):
        return "the judge's JSON is not an object"
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        return f"the judge's score must be a number from 0 to 1, got {score!r}"
    reason = data.get("reason")
    return float(score), reason if isinstance(reason, str) else ""


async def ask_judge(ctx: VerifyContext, messages: list[Any], name: str) -> Verdict:
    model = ctx.config.judge_model or ctx.model
    request = ChatRequest(model=model, messages=messages, tool_choice="none", temperature=0, max_tokens=300)
    try:
        response = await ctx.meter.complete(request)
    except LLMError as exc:
        return unknown("the judge did not answer", name, f"judge call failed: {exc}")
    parsed = parse_judge(response.message.content or "")
    if isinstance(parsed, str):
        return unknown("the judge's verdict was unreadable", name, parsed)
    score, reason = parsed
    return Verdict(score, score >= ctx.config.threshold, reason, name)


def judge(ctx: VerifyContext) -> Verifier:
    """A model scores the step (opt-in: self-judging often hurts, see docs/reasoning.md)."""

    async def check(step: Step, chain: list[Step]) -> Verdict:
        return await ask_judge(ctx, prompts.judge_step_request(ctx.prompt, chain, step), "judge")

    return check


# -- tool --------------------------------------------------------------------------------------------------


def tool(ctx: VerifyContext, name: str) -> Verifier:
    """The MCP tool ``name`` checks the step; arguments from ``config.tool_arguments``."""

    async def check(step: Step, chain: list[Step]) -> Verdict:
        label = f"tool:{name}"
        if ctx.hub is None:
            return unknown("no hub to call the tool", label, f"{label}: the Reasoner was given no hub")
        values = {"{step}": step.text, "{n}": str(step.n), "{prompt}": ctx.prompt,
                  "{chain}": "\n".join(s.text for s in chain)}
        args = {k: _fill(v, values) for k, v in ctx.config.tool_arguments.items()}
        try:
            res: ToolResultLike = await ctx.hub.call(name, args, tenant=ctx.config.tenant, user=ctx.config.user,
                                                     timeout=ctx.config.tool_timeout)
        except (ToolmeshError, OSError, TimeoutError) as exc:
            return unknown("the checking tool failed", label, f"{label}: {exc}")
        if res.is_error:
            return Verdict(0.0, False, res.error or res.text or "the tool rejected the step", label)
        if not res.ok:
            return unknown("the checking tool failed", label, f"{label}: {res.error}")
        return _tool_verdict(res, label, ctx.config.threshold)

    return check


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def _tool_verdict(res: ToolResultLike, label: str, threshold: float) -> Verdict:
    data = res.structured
    if not isinstance(data, dict):
        try:
            data = json.loads(res.text)
        except ValueError:
            data = res.text.strip()
    if isinstance(data, bool):
        return Verdict(1.0 if data else 0.0, data, "", label)
    if isinstance(data, str):
        word = data.lower().strip(".! ")
        if word in _YES or word in _NO:
            return Verdict(1.0 if word in _YES else 0.0, word in _YES, data, label)
        return unknown("the tool's answer was not understood", label, f"{label}: unreadable result {data[:80]!r}")
    if isinstance(data, dict):
        reason = str(data.get("reason") or data.get("message") or "")
        ok = data.get("ok", data.get("valid", data.get("correct")))
        score = data.get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 1:
            return Verdict(float(score), bool(ok) if isinstance(ok, bool) else score >= threshold, reason, label)
        if isinstance(ok, bool):
            return Verdict(1.0 if ok else 0.0, ok, reason, label)
    return unknown("the tool's answer was not understood", label, f"{label}: unreadable result")


# -- none, building and combining -------------------------------------------------------------------------


async def none(step: Step, chain: list[Step]) -> Verdict:
    """No verification: every step passes as unknown."""
    return unknown("not verified", "none")


def build(ctx: VerifyContext, extra: Sequence[Verifier] = ()) -> list[tuple[str, Verifier]]:
    """The verifiers named in the config (``none`` drops out) plus the caller's callables."""
    out: list[tuple[str, Verifier]] = []
    for name in ctx.config.verifiers:
        base, _, arg = name.partition(":")
        if base == "arithmetic":
            out.append((name, arithmetic))
        elif base == "python":
            out.append((name, python(ctx.config.python_timeout, ctx.config.python_memory_mb)))
        elif base == "judge":
            out.append((name, judge(ctx)))
        elif base == "tool":
            out.append((name, tool(ctx, arg)))
    for fn in extra:
        out.append((getattr(fn, "__name__", "callable"), fn))
    return out


async def check(verifiers: list[tuple[str, Verifier]], step: Step, chain: list[Step], threshold: float,
                combine: str) -> Verdict:
    """Run every verifier and combine: any ``ok=False`` or a combined score below the threshold rejects."""
    if not verifiers:
        return unknown("not verified", "none")
    verdicts: list[Verdict] = []
    for name, fn in verifiers:
        try:
            v = await fn(step, list(chain))
        except Exception as exc:  # a user callable's bug is reported, not fatal
            log.warning("verifier %s raised", name, exc_info=True)
            v = unknown(f"verifier {name} failed", name, f"verifier {name} raised {type(exc).__name__}: {exc}")
        if not isinstance(v, Verdict):
            v = unknown(f"verifier {name} returned {type(v).__name__}", name,
                        f"verifier {name} must return a Verdict, not {type(v).__name__}")
        v.verifier = v.verifier or name
        verdicts.append(v)
    return combine_verdicts(verdicts, threshold, combine)


def combine_verdicts(verdicts: list[Verdict], threshold: float, combine: str) -> Verdict:
    warnings = [w for v in verdicts for w in v.warnings]
    names = "+".join(v.verifier for v in verdicts)
    known = [v for v in verdicts if v.ok is not None or v.score is not None]
    if not known:
        return Verdict(None, None, "; ".join(v.reason for v in verdicts if v.reason), names, warnings)
    scores = [v.score if v.score is not None else (1.0 if v.ok else 0.0) for v in known]
    score = sum(scores) / len(scores) if combine == "mean" else min(scores)
    failed = [v for v in known if v.ok is False]
    ok = not failed and score >= threshold
    reasons = failed if failed else known
    reason = "; ".join(f"{v.verifier}: {v.reason}" if len(verdicts) > 1 else v.reason for v in reasons if v.reason)
    if not ok and not failed:
        reason = reason or f"score {score:.2f} is below the threshold {threshold:.2f}"
    return Verdict(score, ok, reason, names, warnings)
