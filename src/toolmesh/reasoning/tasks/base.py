"""What a task is: an id, a prompt, the expected answer and how to score it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolmesh.errors import TaskSetError

#: The scorers a task may name (see :mod:`toolmesh.reasoning.eval.scorers`).
SCORERS = ("exact", "numeric", "contains", "regex", "tests")
#: Scorers that judge a run's tool calls as well as its answer (``shop``): ``toolmesh eval --mode agent``
#: only, and not for a user's task file.
TOOL_SCORERS = ("facts",)


@dataclass(frozen=True, slots=True)
class Task:
    """One evaluation sample.

    ``answer`` is what the scorer compares against: the expected text or number for
    ``exact``/``numeric``/``contains``, a pattern for ``regex``, and Python test code for
    ``tests`` (run after the model's code; a ``check(candidate)`` function in it is called with
    ``entry_point`` when that is set). For ``facts`` (the ``shop`` set) it is the JSON of the tool
    calls the question needs and the result fields the answer must state."""

    id: str
    prompt: str
    answer: str
    scorer: str = "exact"
    #: The task set the sample comes from ("math", "code", "qa", "shop" or the file's name).
    source: str = ""
    #: For ``tests``: the function the tests check.
    entry_point: str | None = None
    #: Code run before the model's code for ``tests`` (imports, helpers the prompt defines).
    setup: str = ""
    #: Free-form details kept in the log (template name, injected bug, hops ...).
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS + TOOL_SCORERS:
            known = ", ".join(SCORERS + TOOL_SCORERS)
            raise TaskSetError(f"task {self.id!r}: unknown scorer {self.scorer!r} (one of {known})")
