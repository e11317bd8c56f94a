"""The ``shop`` task set: questions of the demo's kind, answered by an agent with the demo's tools.

Each task is one line of ``toolmesh/servers/demo/questions.jsonl``: the reference question and its
variants (other SKUs, cities, member levels, coupons; Chinese and English), one-, two- and
three-tool questions, and chit-chat that needs no tool. A line names the tool calls the question
needs and which fields of their results the answer must state. The expected *values* are not in
the file: :func:`expected_facts` makes those calls on the demo servers, so they follow the data.

Scored by :func:`score_answer`: right tools (every expected tool called, and none for chit-chat),
exact tools (nothing else called), right facts (every expected value in the answer: numbers in any
formatting, to the cent; text in either language). A sample is correct when tools and facts are
both right. ``toolmesh eval --tasks shop`` runs them in ``agent`` mode; ``bench/demo_quality.py``
runs them with per-phase timings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from toolmesh.errors import TaskSetError
from toolmesh.reasoning.tasks.base import Task

#: The task set's name (``Task.source``) and the scorer its tasks name.
SOURCE = "shop"
SCORER = "facts"
#: The question kinds, by how many tool calls a question needs.
KINDS = ("chit-chat", "one tool", "two tools", "three tools")

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

#: ``(tool, arguments) -> the call's structured result``; raises when the call fails.
CallFn = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Fact:
    """One value the answer must state, and the spellings of it that count (text facts only)."""

    value: Any
    variants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ShopScore:
    """How one answer did."""

    right_tools: bool
    exact_tools: bool
    found: tuple[bool, ...]

    @property
    def right_facts(self) -> bool:
        return all(self.found)

    @property
    def correct(self) -> bool:
        return self.right_tools and self.right_facts

    def detail(self, called: Sequence[str], facts: Sequence[Fact]) -> str:
        """Why it is wrong ('' when correct)."""
        why = []
        if not self.right_tools:
            why.append(f"tools called: {', '.join(called) or 'none'}")
        missing = [str(f.value) for f, ok in zip(facts, self.found, strict=True) if not ok]
        if missing:
            why.append(f"not in the answer: {', '.join(missing)}")
        return "; ".join(why)


def questions() -> list[dict[str, Any]]:
    """The shipped questions, as written in the file."""
    text = resources.files("toolmesh.servers.demo").joinpath("questions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def kind(n_calls: int) -> str:
    return KINDS[min(n_calls, len(KINDS) - 1)]


def generate(limit: int | None = None) -> list[Task]:
    """The set in file order (the reference variants first); ``limit`` takes the first ones."""
    out: list[Task] = []
    for q in questions()[:limit]:
        spec = {"calls": q["calls"], "facts": q["facts"]}
        out.append(Task(id=q["id"], prompt=q["question"], answer=json.dumps(spec, ensure_ascii=False),
                        scorer=SCORER, source=SOURCE,
                        meta={"customer": q["customer"], "viewing": q.get("viewing"), "lang": q["lang"],
                              "kind": kind(len(q["calls"]))}))
    return out


def _spec(task: Task) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    try:
        spec = json.loads(task.answer)
        return list(spec["calls"]), list(spec["facts"])
    except (ValueError, KeyError, TypeError):
        raise TaskSetError(f"task {task.id!r}: not a {SOURCE} task (its answer names no calls and facts)") from None


def lookup(data: Any, path: str) -> Any:
    """``data`` at a dotted path (``campaigns.0.name``)."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def text_variants(value: str, sibling: str | None) -> tuple[str, ...]:
    """Spellings of a text fact an answer may use: the value, its first two words, its Chinese twin,
    and for a date (YYYY-MM-DD) the usual Chinese and English forms."""
    out = [value, " ".join(value.split()[:2])]
    if sibling:
        out += [sibling, " ".join(sibling.split()[:2])]
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", value)
    if m:
        month, day = int(m.group(2)), int(m.group(3))
        out += [f"{month}月{day}日", f"{m.group(2)}-{m.group(3)}", f"{_MONTHS[month - 1]} {day}",
                f"{_MONTHS[month - 1][:3]} {day}"]
    return tuple(v for v in out if v)


def fact_found(answer: str, fact: Fact) -> bool:
    """Whether ``answer`` states ``fact`` (numbers: any formatting, to the cent)."""
    value = fact.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        folded = answer.casefold().replace(" ", "")
        return any(v.casefold().replace(" ", "") in folded for v in fact.variants)
    plain = re.sub(r"(?<=\d)[,，](?=\d{3})", "", answer)
    return any(abs(float(n) - float(value)) < 0.006 for n in _NUMBER.findall(plain))


async def expected_facts(task: Task, call: CallFn) -> list[Fact]:
    """The facts ``task``'s answer must state, read off the results of its calls."""
    calls, specs = _spec(task)
    results = [await call(c["tool"], c["arguments"]) for c in calls]
    out: list[Fact] = []
    for spec in specs:
        data = results[spec["call"]]
        value = lookup(data, spec["path"])
        if not spec.get("text"):
            out.append(Fact(value))
            continue
        try:
            sibling: str | None = str(lookup(data, spec["path"] + "_zh"))
        except (KeyError, IndexError, TypeError):
            sibling = None
        out.append(Fact(value, text_variants(str(value), sibling)))
    return out


def score_answer(task: Task, facts: Sequence[Fact], called: Sequence[str], answer: str) -> ShopScore:
    """Score one answer to ``task`` given the tools the agent called (in order, repeats kept)."""
    calls, _ = _spec(task)
    want = {c["tool"] for c in calls}
    right_tools = want <= set(called) and (bool(want) or not called)
    exact = set(called) == want and len(called) == len(want)
    return ShopScore(right_tools, exact, tuple(fact_found(answer, f) for f in facts))


__all__ = ["KINDS", "SCORER", "SOURCE", "CallFn", "Fact", "ShopScore", "expected_facts", "fact_found", "generate",
           "kind", "lookup", "questions", "score_answer", "text_variants"]
