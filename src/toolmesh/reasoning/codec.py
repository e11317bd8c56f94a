"""Steps and verdicts to and from checkpoint JSON (every field, unlike the ``--json`` view)."""

from __future__ import annotations

from typing import Any

from toolmesh.reasoning.types import Step, StepState, Transition, Verdict


def verdict_to_dict(v: Verdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"score": v.score, "ok": v.ok, "reason": v.reason, "verifier": v.verifier, "warnings": list(v.warnings)}


def verdict_from_dict(d: dict[str, Any] | None) -> Verdict | None:
    if d is None:
        return None
    return Verdict(d.get("score"), d.get("ok"), str(d.get("reason", "")), str(d.get("verifier", "")),
                   list(d.get("warnings") or []))


def step_to_dict(s: Step) -> dict[str, Any]:
    return {"n": s.n, "text": s.text, "state": s.state.value, "verdict": verdict_to_dict(s.verdict),
            "revisions": s.revisions, "forced": s.forced, "latency_ms": s.latency_ms,
            "transitions": [[tr.state.value, tr.at_ms] for tr in s.transitions], "rejected": list(s.rejected),
            "marked": s.marked, "usage": dict(s.usage), "cost_usd": s.cost_usd}


def step_from_dict(d: dict[str, Any]) -> Step:
    return Step(
        n=int(d["n"]), text=str(d["text"]), state=StepState(d["state"]), verdict=verdict_from_dict(d.get("verdict")),
        revisions=int(d.get("revisions", 0)), forced=bool(d.get("forced", False)),
        latency_ms=float(d.get("latency_ms", 0.0)),
        transitions=[Transition(StepState(st), float(at)) for st, at in d.get("transitions") or []],
        rejected=[str(x) for x in d.get("rejected") or []], marked=bool(d.get("marked", True)),
        usage={k: int(v) for k, v in (d.get("usage") or {}).items()}, cost_usd=d.get("cost_usd"),
    )
