"""Fuzzing the step-marker parser: feeding a response in any chunks equals parsing it in one piece.

Compared: the text of every section, the deltas joined per section, and the parser's verdict
(section reached, cut, step number, markers seen).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import fuzz
from toolmesh.reasoning.markers import Markers, ResponseParser

MARKERS = Markers("【STEP {n}】", "【ANSWER】")
# Pieces of the configured markers and of the variants models write, plus ordinary text.
FRAGMENTS = [
    "【STEP ", "1", "12", "】", "【ANSWER】", "【", "Step", "step", " ", "  ", "\t", "\n", "\n\n", "**", "__", "#", "### ",
    ":", ".", ")", "Answer", "Final ", "answer", "x", "The sum is 4.", "Step 2:", "**Step 3**", "### Step 4 Sub",
    "Answer:", "**Final answer**:", "【STEP 2】", "a" * 40, " " * 40,
]
responses = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join), st.text(max_size=120))


def run(chunks: list[str]) -> dict[str, Any]:
    p = ResponseParser(MARKERS)
    deltas = []
    for c in chunks:
        deltas.extend(p.feed(c))
    deltas.extend(p.finish())
    joined = {s: "".join(d.text for d in deltas if d.section == s) for s in ("pre", "step", "answer")}
    return {
        "text": {s: p.text(s) for s in ("pre", "step", "answer")},  # type: ignore[arg-type]
        "deltas": joined,
        "verdict": (p.section, p.cut, p.step_number, p.saw_step, p.saw_answer),
    }


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@fuzz(500)
@given(responses, st.lists(st.integers(min_value=0, max_value=10_000), max_size=15))
@example("【STEP 1】 add 2 and 2\n【ANSWER】 4", [3, 9])
@example("Step 1: think\nStep 2: more", [7])
# Found by this fuzzer: a variant after more than 32 characters of indentation was missed when streamed.
@example(" " * 40 + "Step 2:", [36])
# Found by this fuzzer: "Answer" + 3 blanks was taken for a marker before the line went on.
@example("Answer   【STEP ", [9])
@example("**Step 1**    : go", [12])
@example("Answer" + " " * 40 + "**", [])
@example("intro\n" + "\t" * 20 + "#### " + " " * 20 + "**Final answer**: 4", [9, 30, 50])
def test_any_chunking_equals_one_shot(text: str, cuts: list[int]) -> None:
    one_shot = run([text])
    assert run(split(text, cuts)) == one_shot
    assert run(list(text)) == one_shot
