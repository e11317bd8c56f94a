"""``toolmesh eval`` as a library: run task sets against models, with and without the reasoning engine.

>>> from toolmesh.reasoning.eval import EvalConfig, Evaluation, build_report
>>> from toolmesh.reasoning.tasks import load_tasks
>>> cfg = EvalConfig(models=["gpt-4o-mini"], modes=["single", "reason"])
>>> ev = Evaluation(router, load_tasks("math", limit=10), cfg, run_id="r1", log_path=Path("r1/samples.jsonl"))
>>> report = build_report("r1", await ev.run(), ["gpt-4o-mini"], ["single", "reason"])
"""

from toolmesh.reasoning.eval import report
from toolmesh.reasoning.eval.agent import HubAgent, ToolAgent
from toolmesh.reasoning.eval.report import build_report
from toolmesh.reasoning.eval.runner import MODES, EvalConfig, Evaluation, read_log
from toolmesh.reasoning.eval.scorers import Score, extract_answer, extract_code, parse_number, score, score_text
from toolmesh.reasoning.eval.stats import Summary, percentile, summarize, wilson

__all__ = [
    "MODES", "EvalConfig", "Evaluation", "HubAgent", "Score", "Summary", "ToolAgent", "build_report",
    "extract_answer", "extract_code", "parse_number", "percentile", "read_log", "report", "score", "score_text",
    "summarize", "wilson",
]
