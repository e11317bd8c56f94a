"""The messages the engine sends: one request per step, built from the committed chain only.

Because a step's request depends on nothing but the prompt, the configuration and the
steps committed before it, a resumed run sends exactly the requests an uninterrupted run
sends — with a deterministic model it commits exactly the same steps.
"""

from __future__ import annotations

from toolmesh.llm.types import Message
from toolmesh.reasoning.markers import Markers
from toolmesh.reasoning.types import Step

SUMMARY_HEADER = "Summary of steps 1-{k}:"


def system_prompt(markers: Markers, extra: str | None) -> str:
    rules = (
        "Solve the problem step by step. Start every step on a new line with its marker "
        f"({markers.step(1)}, {markers.step(2)}, ...), keep each step short and self-contained, and write "
        f"exact arithmetic as `expression = value`. When the steps are complete, write {markers.answer_marker} "
        "on a new line followed by the final answer only."
    )
    return f"{extra.strip()}\n\n{rules}" if extra else rules


def chain_text(markers: Markers, steps: list[Step], summary: str | None = None, summary_upto: int = 0) -> str:
    parts = []
    if summary:
        parts.append(f"{SUMMARY_HEADER.format(k=summary_upto)} {summary}")
    parts.extend(f"{markers.step(s.n)} {s.text}" for s in steps if s.n > summary_upto)
    return "\n".join(parts)


def step_request(markers: Markers, system: str, prompt: str, steps: list[Step], *,
                 summary: str | None = None, summary_upto: int = 0) -> list[Message]:
    """Messages asking for the next step (or the answer)."""
    msgs = [Message("system", system), Message("user", prompt)]
    if not steps:
        return msgs
    n = steps[-1].n + 1
    msgs.append(Message("assistant", chain_text(markers, steps, summary, summary_upto)))
    if not steps[-1].marked:
        # The model ignores the step format: ask for the answer rather than loop.
        msgs.append(Message("user", f"Now write {markers.answer_marker} followed by the final answer only."))
    else:
        msgs.append(Message("user", f"Continue with {markers.step(n)}, or, if the steps are complete, write "
                                    f"{markers.answer_marker} followed by the final answer."))
    return msgs


def revision_request(markers: Markers, system: str, prompt: str, steps: list[Step], n: int, rejected: str,
                     reason: str, *, summary: str | None = None, summary_upto: int = 0) -> list[Message]:
    """Messages asking to rewrite step ``n``, given why it was rejected."""
    msgs = [Message("system", system), Message("user", prompt)]
    before = chain_text(markers, steps, summary, summary_upto)
    draft = f"{markers.step(n)} {rejected}"
    msgs.append(Message("assistant", f"{before}\n{draft}" if before else draft))
    msgs.append(Message("user", f"{markers.step(n)} was checked and rejected: {reason}\n"
                                f"Rewrite {markers.step(n)} only, starting with its marker."))
    return msgs


JUDGE_STEP = (
    "You check one step of a step-by-step solution. Reply with JSON only: "
    '{"score": <number from 0 to 1, how sure you are the step is correct and useful>, "reason": "<one sentence>"}'
)
JUDGE_COHERENCE = (
    "You check a finished step-by-step solution. Does the final answer follow from the steps and answer the "
    'problem? Reply with JSON only: {"score": <number from 0 to 1>, "reason": "<one sentence>"}'
)


def judge_step_request(prompt: str, chain: list[Step], step: Step) -> list[Message]:
    earlier = "\n".join(f"Step {s.n}: {s.text}" for s in chain) or "(none)"
    return [Message("system", JUDGE_STEP),
            Message("user", f"Problem:\n{prompt}\n\nEarlier steps:\n{earlier}\n\nStep to check (step {step.n}):\n"
                            f"{step.text}")]


def judge_coherence_request(prompt: str, chain: list[Step], answer: str) -> list[Message]:
    steps = "\n".join(f"Step {s.n}: {s.text}" for s in chain) or "(none)"
    return [Message("system", JUDGE_COHERENCE),
            Message("user", f"Problem:\n{prompt}\n\nSteps:\n{steps}\n\nFinal answer: {answer}")]
