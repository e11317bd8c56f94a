"""Evaluation task sets shipped with toolmesh, and the loader of a user's own JSONL tasks.

``load_tasks("math,code,qa", seed=0, limit=20)`` (``shop``, questions for an agent with the demo's
tools, runs in ``toolmesh eval --mode agent``); or a path to a ``.jsonl`` file whose lines are
``{"id", "prompt", "answer", "scorer"?, "entry_point"?, "setup"?}`` (scorer ``exact`` by default;
``exact``, ``numeric``, ``contains``, ``regex`` or ``tests``).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from toolmesh.errors import TaskSetError
from toolmesh.reasoning.tasks.base import SCORERS, TOOL_SCORERS, Task

__all__ = ["BUILTIN_SETS", "SCORERS", "TOOL_SCORERS", "Task", "TaskSetError", "load_jsonl", "load_tasks"]

#: Built-in sets and how many samples each has at most.
BUILTIN_SETS = {"math": 100, "code": 151, "qa": 60, "shop": 36}


def _builtin(name: str, seed: int, limit: int | None) -> list[Task]:
    if name == "math":
        from toolmesh.reasoning.tasks import arithmetic

        return arithmetic.generate(min(limit or BUILTIN_SETS["math"], BUILTIN_SETS["math"]), seed)
    if name == "qa":
        from toolmesh.reasoning.tasks import qa

        return qa.generate(min(limit or BUILTIN_SETS["qa"], BUILTIN_SETS["qa"]), seed)
    if name == "shop":
        from toolmesh.reasoning.tasks import shop

        return shop.generate(limit)  # file order: the reference variants first
    from toolmesh.reasoning.tasks import code

    tasks = code.generate()
    random.Random(f"code:{seed}").shuffle(tasks)  # --limit takes a seed-dependent subset
    return tasks[:limit] if limit else tasks


def load_jsonl(path: str | Path, *, limit: int | None = None) -> list[Task]:
    """A user's task file; :class:`TaskSetError` names the line of the first bad record."""
    p = Path(path)
    if not p.is_file():
        raise TaskSetError(f"task file {str(p)!r} does not exist")
    tasks: list[Task] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p.name}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskSetError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise TaskSetError(f"{where}: each line must be a JSON object")
            missing = [k for k in ("id", "prompt", "answer") if k not in row]
            if missing:
                raise TaskSetError(f"{where}: missing {', '.join(missing)}")
            scorer = row.get("scorer") or "exact"
            if scorer not in SCORERS:
                raise TaskSetError(f"{where}: unknown scorer {scorer!r} (one of {', '.join(SCORERS)})")
            if not isinstance(row["prompt"], str) or not row["prompt"].strip():
                raise TaskSetError(f"{where}: prompt must be a non-empty string")
            answer = row["answer"]
            if isinstance(answer, bool) or not isinstance(answer, str | int | float):
                raise TaskSetError(f"{where}: answer must be a string or a number")
            _check_answer(where, scorer, str(answer))
            tasks.append(Task(id=str(row["id"]), prompt=row["prompt"], answer=str(answer), scorer=scorer,
                              source=p.stem, entry_point=row.get("entry_point"), setup=str(row.get("setup") or "")))
            if limit and len(tasks) >= limit:
                break
    if not tasks:
        raise TaskSetError(f"task file {str(p)!r} has no tasks")
    return tasks


def _check_answer(where: str, scorer: str, answer: str) -> None:
    """Refuse keys that could never score (caught at load time, not once per sample)."""
    if scorer == "numeric" and not re.search(r"\d", answer):
        raise TaskSetError(f"{where}: a numeric answer must contain a number, not {answer!r}")
    if scorer == "regex":
        try:
            re.compile(answer)
        except re.error as exc:
            raise TaskSetError(f"{where}: answer is not a valid regex: {exc}") from None
    if scorer == "tests":
        try:
            compile(answer, where, "exec")
        except SyntaxError as exc:
            raise TaskSetError(f"{where}: the tests are not valid Python: {exc.msg} (line {exc.lineno})") from None


def load_tasks(spec: str, *, seed: int = 0, limit: int | None = None) -> list[Task]:
    """The tasks named by ``spec``: comma-separated built-in set names, or one ``.jsonl`` path.

    ``limit`` applies per set. Ids are unique across the result (:class:`TaskSetError` if not)."""
    if limit is not None and limit < 1:
        raise TaskSetError("limit must be at least 1")
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise TaskSetError("no task set given")
    tasks: list[Task] = []
    for name in names:
        if name in BUILTIN_SETS:
            tasks += _builtin(name, seed, limit)
        elif name.endswith(".jsonl") or Path(name).is_file():
            tasks += load_jsonl(name, limit=limit)
        else:
            raise TaskSetError(f"unknown task set {name!r}: use {', '.join(BUILTIN_SETS)} or a .jsonl file")
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise TaskSetError(f"duplicate task id {t.id!r}")
        seen.add(t.id)
    return tasks
