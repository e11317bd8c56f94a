"""The evaluation's report: one object per run (``--format json``) and its table, Markdown and HTML forms."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from toolmesh.reasoning.eval.stats import summarize

COLUMNS = ("model", "mode", "n", "accuracy", "95% CI", "errors", "timeouts", "p50 ms", "p95 ms", "tokens",
           "cost", "avg steps", "avg revisions", "revised right→wrong", "vs single −/+")


def build_report(run_id: str, records: Sequence[dict[str, Any]], models: Sequence[str],
                 modes: Sequence[str]) -> dict[str, Any]:
    """``{"run_id", "models": {MODEL: {MODE: summary}}}`` (see :class:`~toolmesh.reasoning.eval.stats.Summary`).

    A ``reason`` summary has ``vs_single`` when the same samples also ran in ``single`` mode:
    how many the reasoning got wrong that the single call got right, and the reverse."""
    out: dict[str, Any] = {"run_id": run_id, "models": {}}
    for model in models:
        per_mode: dict[str, Any] = {}
        by_mode = {mode: [r for r in records if r["model"] == model and r["mode"] == mode] for mode in modes}
        for mode, rows in by_mode.items():
            flips = None
            if mode == "reason":
                flips = sum(int(r.get("right_to_wrong") or 0) for r in rows)
            summary = summarize(rows, right_to_wrong=flips).to_dict()
            if mode == "reason" and "single" in by_mode:
                single = {r["task_id"]: bool(r.get("correct")) for r in by_mode["single"]}
                pairs = [(single[r["task_id"]], bool(r.get("correct"))) for r in rows if r["task_id"] in single]
                summary["vs_single"] = {"compared": len(pairs),
                                        "right_to_wrong": sum(1 for s, c in pairs if s and not c),
                                        "wrong_to_right": sum(1 for s, c in pairs if c and not s)}
            tools = tool_figures(rows)
            if tools is not None:
                summary["tools"] = tools
            per_mode[mode] = summary
        out["models"][model] = per_mode
    return out


def tool_figures(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """For samples scored on their tool calls (the ``shop`` set): how many called the right tools,
    exactly those, and stated the right facts with the right tools; overall and per kind of question."""
    scored = [r for r in records if "right_tools" in r]
    if not scored:
        return None

    def block(part: list[dict[str, Any]]) -> dict[str, int]:
        return {"n": len(part), "right_tools": sum(bool(r["right_tools"]) for r in part),
                "exact_tools": sum(bool(r.get("exact_tools")) for r in part),
                "right_facts": sum(bool(r.get("right_facts")) and bool(r["right_tools"]) for r in part)}

    kinds = sorted({str(r["kind"]) for r in scored if r.get("kind")})
    return {**block(scored), "by_kind": {k: block([r for r in scored if r.get("kind") == k]) for k in kinds}}


def tool_lines(report: dict[str, Any]) -> list[str]:
    """One line per model × mode that has tool figures (shown under the table)."""
    out = []
    for model, modes in report["models"].items():
        for mode, s in modes.items():
            t = s.get("tools")
            if t:
                kinds = "; ".join(f"{k} {v['right_facts']}/{v['n']}" for k, v in t["by_kind"].items())
                out.append(f"{model}/{mode}: right tools {t['right_tools']}/{t['n']}, exact tools "
                           f"{t['exact_tools']}/{t['n']}, right facts {t['right_facts']}/{t['n']}"
                           + (f" (right facts by kind: {kinds})" if kinds else ""))
    return out


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def rows(report: dict[str, Any]) -> list[list[str]]:
    """The table's cells, one row per model × mode (cost ``n/a`` when unpriced, never $0)."""
    out: list[list[str]] = []
    for model, modes in report["models"].items():
        for mode, s in modes.items():
            lo, hi = s["ci95"]
            vs = s.get("vs_single")
            out.append([
                model, mode, str(s["n"]), "–" if s["accuracy"] is None else f"{s['accuracy'] * 100:.1f}%",
                f"{lo * 100:.1f}–{hi * 100:.1f}%", str(s["errors"]), str(s["timeouts"]), _num(s["p50_ms"]),
                _num(s["p95_ms"]), str(s["tokens"]),
                "n/a" if s["cost_usd"] is None else f"${s['cost_usd']:.4f}",
                _num(s["avg_steps"], "{:.2f}"), _num(s["avg_revisions"], "{:.2f}"),
                "–" if s["right_to_wrong"] is None else str(s["right_to_wrong"]),
                f"{vs['right_to_wrong']}/{vs['wrong_to_right']}" if vs else "–",
            ])
    return out


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"## toolmesh eval {report['run_id']}", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(report)]
    lines += ["", *(f"- {line}" for line in tool_lines(report)), "", NOTE]
    return "\n".join(lines) + "\n"


NOTE = ("Accuracy counts failed samples as wrong (they are in n and errors). Latency percentiles are over "
        "samples that did not fail. \"revised right→wrong\": samples where an answer written with a step the "
        "verifier sent back was right and the final answer is wrong. \"vs single −/+\": samples the reasoning "
        "got wrong that the single call got right / the reverse.")


def to_html(report: dict[str, Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """A standalone page: the summary table and, below it, every sample (failed ones included)."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows(report))
    sample_rows = "".join(
        f"<tr class=\"{'ok' if r.get('correct') else 'bad'}\"><td>{esc(str(r.get('model')))}</td>"
        f"<td>{esc(str(r.get('mode')))}</td><td>{esc(str(r.get('task_id')))}</td>"
        f"<td>{esc(str(r.get('status')))}</td><td>{'yes' if r.get('correct') else 'no'}</td>"
        f"<td>{esc(str(r.get('latency_ms', '')))}</td>"
        f"<td><code>{esc(str(r.get('answer', ''))[:200])}</code></td>"
        f"<td><code>{esc(str(r.get('expected', ''))[:200])}</code></td>"
        f"<td>{esc(str(r.get('error') or r.get('detail') or ''))[:300]}</td></tr>"
        for r in records)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toolmesh eval {esc(report['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td:nth-child(-n+3) {{ text-align: left; }}
tr.bad td {{ background: #fff3f3; }}
code {{ white-space: pre-wrap; }}
</style></head><body>
<h1>toolmesh eval <code>{esc(report['run_id'])}</code></h1>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"".join(f"<p>{esc(line)}</p>" for line in tool_lines(report))}
<p>{esc(NOTE)}</p>
<h2>Samples</h2>
<table id="samples"><thead><tr><th>model</th><th>mode</th><th>task</th><th>status</th><th>correct</th>
<th>latency ms</th><th>answer</th><th>expected</th><th>error / detail</th></tr></thead>
<tbody>{sample_rows}</tbody></table>
</body></html>
"""
