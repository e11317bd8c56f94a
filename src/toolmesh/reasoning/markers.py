"""Step and answer markers, parsed incrementally from a streamed response.

The configured markers (default ``【STEP {n}】`` and ``【ANSWER】``) may appear anywhere;
the variants models commonly write (``Step 1:``, ``**Step 1**``, ``### Step 1``,
``Answer:``, ``**Final answer**``, ``### Answer``) only at the start of a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Section = Literal["pre", "step", "answer"]

# Markdown decoration around the variants: heading hashes, bold/underline.
_DECO = r"(?:\#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*"
_STEP_VARIANT = (rf"^[ \t]*{_DECO}Step[ \t]+(?P<vn>\d+)"
                 r"(?:[ \t]*(?:\*\*|__)[ \t]*[:.)]?|[ \t]*[:.)](?:[ \t]*(?:\*\*|__))?|(?=[ \t]*$))"
                 # a heading needs no punctuation: "### Step 2 Subtract"
                 r"|^[ \t]*\#{1,6}[ \t]*(?:\*\*|__)?[ \t]*Step[ \t]+(?P<hn>\d+)(?:\*\*|__)?[ \t]*[:.)]?")
_ANSWER_VARIANT = (rf"^[ \t]*{_DECO}(?:Final[ \t]+)?Answer"
                   r"(?:[ \t]*(?:\*\*|__)[ \t]*:?|[ \t]*:(?:[ \t]*(?:\*\*|__))?|(?=[ \t]*$))")
# A variant found in the buffer may still change while only these follow it ("Step 1" →
# "Step 12:", "Answer" + blanks → "Answer   is 4", no marker at all): it is settled by the
# first other character (a newline included).
_DECIDES = re.compile(r"[^ \t*_:.)0-9]")
# Longest stretch held back because it could be the beginning of a marker.
_HOLD = 32


class Markers:
    """Compiled step/answer patterns for one configuration."""

    def __init__(self, step_marker: str, answer_marker: str) -> None:
        if "{n}" not in step_marker:
            raise ValueError("step_marker must contain {n}")
        if not answer_marker.strip():
            raise ValueError("answer_marker must not be empty")
        self.step_marker = step_marker
        self.answer_marker = answer_marker
        step = re.escape(step_marker).replace(re.escape("{n}"), r"[ \t]*(?P<n>\d+)[ \t]*")
        self.pattern = re.compile(
            f"(?P<step>{step})|(?P<answer>{re.escape(answer_marker)})"
            f"|(?P<vstep>{_STEP_VARIANT})|(?P<vanswer>{_ANSWER_VARIANT})",
            re.IGNORECASE | re.MULTILINE,
        )
        self.triggers = frozenset({"\n", step_marker[0], answer_marker[0]})

    def step(self, n: int) -> str:
        """The configured marker of step ``n``."""
        return self.step_marker.replace("{n}", str(n))


@dataclass(slots=True)
class Delta:
    """A piece of text of one section of the response."""

    section: Section
    text: str


@dataclass
class ResponseParser:
    """Splits one response into: text before any marker, the first step, and the answer.

    The response ends for our purposes (``cut``) when a second step marker starts: the
    engine stops reading there and asks for the next step separately, so every step is
    generated from the committed chain only (which makes resumed runs equal to
    uninterrupted ones).
    """

    markers: Markers
    buf: str = ""
    pos: int = 0
    section: Section = "pre"
    cut: bool = False
    step_number: int | None = None
    saw_step: bool = False
    saw_answer: bool = False
    parts: dict[str, list[str]] = field(default_factory=lambda: {"pre": [], "step": [], "answer": []})

    def feed(self, text: str, *, final: bool = False) -> list[Delta]:
        """Add streamed text; returns the deltas that are now certain."""
        if self.cut:
            return []
        self.buf += text
        out: list[Delta] = []
        while not self.cut:
            m = self.markers.pattern.search(self.buf, self.pos)
            if m is not None and (final or m.group("step") or m.group("answer")
                                  or _DECIDES.search(self.buf, m.end()) is not None):
                self._emit(out, self.buf[self.pos:m.start()])
                self.pos = m.end()
                self._marker(m)
                continue
            limit = len(self.buf) if final else self._safe_end(m.start() if m is not None else None)
            if limit > self.pos:
                self._emit(out, self.buf[self.pos:limit])
                self.pos = limit
            break
        return out

    def finish(self) -> list[Delta]:
        """The stream ended: release what was held back."""
        return self.feed("", final=True)

    def text(self, section: Section) -> str:
        return "".join(self.parts[section]).strip()

    def _marker(self, m: re.Match[str]) -> None:
        is_step = bool(m.group("step") or m.group("vstep"))
        if is_step:
            if self.section == "pre":
                self.section = "step"
                self.saw_step = True
                num = m.group("n") or m.group("vn") or m.group("hn")
                self.step_number = int(num) if num else None
            else:  # a second step (or a step after the answer): this response is done
                self.cut = True
        elif self.section != "answer":
            self.section = "answer"
            self.saw_answer = True
        else:  # the answer marker repeated inside the answer: keep it as text
            self.parts["answer"].append(m.group(0))

    def _emit(self, out: list[Delta], text: str) -> None:
        if not text:
            return
        part = self.parts[self.section]
        if not part:
            text = text.lstrip()
            if not text:
                return
        part.append(text)
        out.append(Delta(self.section, text))

    def _safe_end(self, pending_marker: int | None) -> int:
        """Where the text that cannot start a marker ends."""
        end = len(self.buf) if pending_marker is None else pending_marker
        if self.section == "pre" and not self.saw_step and end <= _HOLD:
            return self.pos  # a variant may sit at the very start, without a newline before it
        # Start of the line at end (looked for from pos-1 only: a line starting before pos is not held).
        line = self.buf.rfind("\n", max(self.pos - 1, 0), end) + 1
        text = self.buf[line:end]
        if self.pos <= line < end and len(text) - text.count(" ") - text.count("\t") < _HOLD:
            # The line may still become a variant, which is matched from the line's start: blanks
            # of any length may sit inside one ("  Step 1   :"), so only the rest is counted.
            return line
        start = max(self.pos, end - _HOLD)
        for i in range(start, end):
            if self.buf[i] in self.markers.triggers:
                return i
        return end
