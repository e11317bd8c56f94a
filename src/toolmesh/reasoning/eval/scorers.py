"""Scoring a model's output against a task: ``exact``, ``numeric``, ``contains``, ``regex``, ``tests``.

The first four compare the *answer*: the text after the last answer marker (``ANSWER:``,
``【ANSWER】``, ``Final answer:``), or the last non-empty line when there is none. ``tests`` runs
the code the output contains (the last fenced block defining the entry point, else the last
fenced block, else the whole text) with the task's tests in the sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from toolmesh.reasoning.sandbox import run_python
from toolmesh.reasoning.tasks import Task

_MARKER = re.compile(r"(?:【\s*ANSWER\s*】|\bfinal answer\s*[:：]|\banswer\s*[:：])", re.I)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)


@dataclass(frozen=True, slots=True)
class Score:
    """The verdict on one output: ``correct`` and, when useful, why not."""

    correct: bool
    answer: str
    detail: str = ""


def extract_answer(output: str) -> str:
    """The final answer in a model's output (see the module docstring)."""
    text = output.strip()
    boxed = _BOXED.findall(text)
    if boxed:
        return str(boxed[-1]).strip()
    marks = list(_MARKER.finditer(text))
    if marks:
        rest = text[marks[-1].end():].strip()
        lines = [ln for ln in rest.splitlines() if ln.strip()]
        return lines[0].strip() if lines else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def normalize(text: str) -> str:
    """Case-folded, markdown emphasis and quotes and a trailing full stop removed, spaces collapsed."""
    t = re.sub(r"\*\*|__|`", "", text)  # markdown bold and code marks (both sides lose them alike)
    prev = None
    while prev != t:
        prev = t
        t = t.strip().strip("*\"'“”‘’").rstrip(".。").strip()
    return " ".join(t.casefold().split())


def parse_number(text: str) -> Fraction | None:
    """The last number in ``text`` (``1,234.5``, ``-3``, ``3/4``, ``$12.50``, ``15%``) exactly."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "").replace(" ", "")
    try:
        if "/" in raw:
            num, den = raw.split("/")
            return Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def build_test_program(setup: str, solution: str, tests: str, entry_point: str | None) -> str:
    """The script that checks ``solution``: setup (imports, helpers), the solution, the tests, and
    ``check(entry_point)`` when the tests define ``check`` and an entry point is named."""
    parts = [setup, solution, tests]
    if entry_point:
        parts.append(f"if 'check' in globals():\n    check({entry_point})\n")
    return "\n\n".join(p for p in parts if p)


def extract_code(output: str, entry_point: str | None = None) -> str:
    """The code to test: the last fenced block defining ``entry_point``, else the last fenced block,
    else the whole output."""
    blocks = _FENCE.findall(output)
    if entry_point:
        defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
        if defining:
            return str(defining[-1])
    if blocks:
        return str(blocks[-1])
    return output


def score_text(task: Task, output: str, *, tolerance: float = 1e-6) -> Score:
    """Score with ``exact``, ``numeric``, ``contains`` or ``regex`` (no subprocess needed)."""
    answer = extract_answer(output)
    if task.scorer == "exact":
        ok = normalize(answer) == normalize(task.answer)
        return Score(ok, answer, "" if ok else f"expected {task.answer!r}")
    if task.scorer == "numeric":
        got, want = parse_number(answer), parse_number(task.answer)
        if want is None:
            raise ValueError(f"task {task.id!r}: expected answer {task.answer!r} is not a number")
        if got is None:
            return Score(False, answer, "no number in the answer")
        ok = got == want or abs(float(got - want)) <= tolerance * max(1.0, abs(float(want)))
        return Score(ok, answer, "" if ok else f"expected {task.answer}")
    if task.scorer == "contains":
        ok = normalize(task.answer) in normalize(answer)
        return Score(ok, answer, "" if ok else f"{task.answer!r} not in the answer")
    if task.scorer == "regex":
        try:
            ok = re.search(task.answer, answer) is not None
        except re.error as exc:
            raise ValueError(f"task {task.id!r}: bad regex {task.answer!r}: {exc}") from None
        return Score(ok, answer, "" if ok else f"no match for /{task.answer}/")
    raise ValueError(f"scorer {task.scorer!r} needs score()")


async def score(task: Task, output: str, *, timeout: float = 10.0, memory_mb: int = 512) -> Score:
    """Score ``output`` for ``task`` with the task's scorer (``tests`` runs in the sandbox)."""
    if task.scorer != "tests":
        return score_text(task, output)
    code = extract_code(output, task.entry_point)
    if not code.strip():
        return Score(False, "", "no code in the output")
    result = await run_python(build_test_program(task.setup, code, task.answer, task.entry_point),
                              timeout=timeout, memory_mb=memory_mb)
    if result.ok:
        return Score(True, code)
    why = "timed out" if result.timed_out else "\n".join(result.stderr.strip().splitlines()[-4:])[-500:]
    return Score(False, code, f"tests failed: {why or f'exit status {result.exit_code}'}")
