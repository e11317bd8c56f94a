"""The reasoning benchmark (``toolmesh bench reason``): the engine's own cost, checkpoints, batch, LangGraph.

One run, one process tree: the scripted LLM server (``toolmesh.testing.scripted_llm``) in a
subprocess with a fixed latency per completion and per streamed chunk (``CHUNK_CHARS``
characters every ``CHUNK_MS``), always answering with the same ``STEPS``-step chain (one step
per completion, the last with the answer); the clients in this process on one event loop.

Measured:

* ``overhead_per_step``: sequential runs with checkpoints on SQLite; per run, the wall time minus
  the time spent waiting for the model (inside the model stream's ``anext``), the verifier's time
  (the arithmetic verifier, timed) and the checkpoint writes (their own figure below), divided by
  the steps — what the engine itself costs (prompt building, marker parsing, events, accounting,
  state machine). ``..._with_checkpoints`` adds the writes back; ``in_step_overhead`` is the
  window THINKING → COMMITTED of each step alone;
* ``checkpoint_write``: every checkpoint INSERT of those runs (one row of new steps), timed at
  the store;
* ``batch``: ``BATCH`` prompts at concurrency ``CONCURRENCY`` through the engine, against the
  throughput the model's latency allows: the same requests (each prompt's ``STEPS`` completions,
  in order) sent straight through the router at the same concurrency, no engine (``floor``);
  the ratio is engine/floor. The configured completion time is reported beside it;
* ``langgraph``: the same step loop (same router, same request builder, parser and verifier) as a
  LangGraph ``StateGraph`` with its ``AsyncSqliteSaver`` checkpointer, the same sequential runs;
  per-step overhead computed the same way, and checkpoint bytes per run on both sides.

    .venv/bin/python bench/reason.py [--json] [--quick] [--runs N] [--batch N] [--concurrency K]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.llm.router import Deployment, Router
from toolmesh.llm.types import ChatRequest, StreamEvent
from toolmesh.reasoning import Reasoner, ReasoningConfig, Step, StepState, Verdict
from toolmesh.reasoning.verifiers import arithmetic
from toolmesh.store.sqlite import Store

MODEL = "scripted-model"
STEPS = 6
LATENCY_MS = 100.0
CHUNK_CHARS = 8
CHUNK_MS = 2.0
CONCURRENCY = 20
BATCH = 200
TARGETS = {"overhead_p50_ms": 1.0, "checkpoint_p50_ms": 2.0, "batch_ratio": 0.95}


def _log(msg: str) -> None:
    print(f"[bench reason] {msg}", file=sys.stderr, flush=True)


def chain() -> list[str]:
    return [f"{k} * {k + 1} = {k * (k + 1)}, carried forward." for k in range(1, STEPS + 1)]


def script() -> dict[str, Any]:
    steps = chain()
    rules: list[dict[str, Any]] = []
    for k in range(2, STEPS + 1):
        text = f"【STEP {k}】 {steps[k - 1]}" + ("\n【ANSWER】 done" if k == STEPS else "")
        rules.append({"when": {"user_regex": f"Continue with 【STEP {k}】"}, "respond": {"text": text}})
    rules.append({"when": {}, "respond": {"text": f"【STEP 1】 {steps[0]}"}})
    for r in rules:
        r["respond"].update(latency_ms=LATENCY_MS, chunk_chars=CHUNK_CHARS, chunk_delay_ms=CHUNK_MS)
    return {"rules": rules}


def configured_call_ms() -> list[float]:
    """The completion time the server is told to take, per step's call."""
    out = []
    for k, text in enumerate(chain(), 1):
        full = f"【STEP {k}】 {text}" + ("\n【ANSWER】 done" if k == STEPS else "")
        chunks = math.ceil(len(full) / CHUNK_CHARS)
        out.append(LATENCY_MS + (chunks - 1) * CHUNK_MS)
    return out


class TimedModel:
    """The router, with the time spent waiting on each call's stream recorded (model time)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.calls: list[float] = []

    async def complete(self, request: ChatRequest, **kw: Any) -> Any:
        return await self.router.complete(request, **kw)

    async def stream(self, request: ChatRequest, **kw: Any) -> AsyncIterator[StreamEvent]:
        waited = 0.0
        agen = self.router.stream(request, **kw)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    ev = await anext(agen)
                except StopAsyncIteration:
                    waited += time.perf_counter() - t0
                    break
                waited += time.perf_counter() - t0
                yield ev
        finally:
            await agen.aclose()
            self.calls.append(waited * 1000.0)


class TimedStore:
    """The SQLite store with every checkpoint INSERT timed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[float] = []

    async def execute(self, sql: str, params: Any = ()) -> int:
        t0 = time.perf_counter()
        n = await self.store.execute(sql, params)
        if sql.startswith("INSERT INTO run_checkpoints"):
            self.writes.append((time.perf_counter() - t0) * 1000.0)
        return n

    async def fetchall(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return await self.store.fetchall(sql, params)


class TimedVerifier:
    def __init__(self) -> None:
        self.times: list[float] = []

    async def __call__(self, step: Step, chain: list[Step]) -> Verdict:
        t0 = time.perf_counter()
        v = await arithmetic(step, chain)
        self.times.append((time.perf_counter() - t0) * 1000.0)
        return v


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 4)


async def toolmesh_runs(router: Router, runs: int, db: Path) -> dict[str, Any]:
    model = TimedModel(router)
    verifier = TimedVerifier()
    async with Store(db) as store:
        timed = TimedStore(store)
        reasoner = Reasoner(model, ReasoningConfig(model=MODEL, verifiers=["none"], checkpoint_retention_days=None),
                            store=timed, verifiers=[verifier])  # type: ignore[arg-type]
        overheads: list[float] = []
        in_step: list[float] = []
        latencies: list[float] = []
        errors = 0
        with_ckpt: list[float] = []
        for i in range(runs):
            model.calls.clear()
            verifier.times.clear()
            writes = len(timed.writes)
            t0 = time.perf_counter()
            res = await reasoner.run("Multiply along the chain.", run_id=f"tm-{i}")
            total = (time.perf_counter() - t0) * 1000.0
            latencies.append(total)
            if res.status != "ok" or len(res.steps) != STEPS or res.answer != "done":
                errors += 1
                continue
            outside = total - sum(model.calls) - sum(verifier.times)
            with_ckpt.append(outside / STEPS)
            overheads.append((outside - sum(timed.writes[writes:])) / STEPS)
            for step, model_ms, verify_ms in zip(res.steps, model.calls, verifier.times, strict=True):
                at = {tr.state: tr.at_ms for tr in step.transitions}
                in_step.append(at[StepState.COMMITTED] - at[StepState.THINKING] - model_ms - verify_ms)
        row = await store.fetchall("SELECT COUNT(*), SUM(LENGTH(data)) FROM run_checkpoints")
    return {"overheads": overheads, "in_step": in_step, "with_ckpt": with_ckpt, "latencies": latencies,
            "writes": timed.writes,
            "errors": errors,
            "bytes_per_run": (row[0][1] or 0) / max(1, runs), "rows_per_run": row[0][0] / max(1, runs)}


async def floor_batch(router: Router, n: int, concurrency: int) -> float:
    """Prompts per second with the engine's requests sent straight through the router."""
    from toolmesh.reasoning import prompts
    from toolmesh.reasoning.markers import Markers

    markers = Markers("【STEP {n}】", "【ANSWER】")
    system = prompts.system_prompt(markers, None)
    texts = chain()

    def requests(i: int) -> list[ChatRequest]:
        done = [Step(k, texts[k - 1]) for k in range(1, STEPS + 1)]
        return [ChatRequest(model=MODEL, messages=prompts.step_request(markers, system, f"Q{i}", done[:k]),
                            tool_choice="none", temperature=0.0, max_tokens=1024) for k in range(STEPS)]

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            for req in requests(i):
                async for _ in router.stream(req):
                    pass

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def batch_run(router: Router, n: int, concurrency: int) -> dict[str, Any]:
    reasoner = Reasoner(router, ReasoningConfig(model=MODEL))
    floor = await floor_batch(router, n, concurrency)
    t0 = time.perf_counter()
    results = await reasoner.batch([f"Q{i}" for i in range(n)], concurrency=concurrency)
    elapsed = time.perf_counter() - t0
    ok = sum(r.status == "ok" and r.answer == "done" for r in results)
    configured = n / (math.ceil(n / concurrency) * sum(configured_call_ms()) / 1000.0)
    measured = n / elapsed
    return {"prompts": n, "concurrency": concurrency, "ok": ok, "errors": n - ok, "elapsed_s": round(elapsed, 3),
            "prompts_per_s": round(measured, 2), "allowed_prompts_per_s": round(floor, 2),
            "ratio": round(measured / floor, 4), "configured_prompts_per_s": round(configured, 2)}


async def langgraph_runs(router: Router, runs: int, db: Path) -> dict[str, Any]:
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return {"skipped": f"langgraph not installed ({exc}); pip install -e '.[bench]'"}
    from typing import TypedDict

    from toolmesh.reasoning import prompts
    from toolmesh.reasoning.markers import Markers, ResponseParser

    model = TimedModel(router)
    markers = Markers("【STEP {n}】", "【ANSWER】")
    system = prompts.system_prompt(markers, None)
    step_times: list[tuple[float, float]] = []  # (node time, verifier time) per step

    class State(TypedDict):
        prompt: str
        steps: list[dict[str, Any]]
        answer: str | None

    async def step_node(state: State) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = len(state["steps"]) + 1
        chain = [Step(s["n"], s["text"]) for s in state["steps"]]
        request = ChatRequest(model=MODEL, messages=prompts.step_request(markers, system, state["prompt"], chain),
                              tool_choice="none", temperature=0.0, max_tokens=1024)
        parser = ResponseParser(markers)
        async with contextlib.aclosing(model.stream(request)) as events:
            async for ev in events:
                text = getattr(ev, "text", None)
                if isinstance(text, str) and type(ev).__name__ == "TextDelta":
                    parser.feed(text)
                    if parser.cut:
                        break
        parser.finish()
        step = Step(n, parser.text("step"))
        v0 = time.perf_counter()
        verdict = await arithmetic(step, chain)
        verify_ms = (time.perf_counter() - v0) * 1000.0
        step_times.append(((time.perf_counter() - t0) * 1000.0, verify_ms))
        out: dict[str, Any] = {"steps": [*state["steps"], {"n": n, "text": step.text, "ok": verdict.ok}]}
        if parser.saw_answer:
            out["answer"] = parser.text("answer")
        return out

    graph = StateGraph(State)
    graph.add_node("step", step_node)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: END if s.get("answer") else "step")
    overheads: list[float] = []
    latencies: list[float] = []
    errors = 0
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        app = graph.compile(checkpointer=saver)
        for i in range(runs):
            model.calls.clear()
            step_times.clear()
            t0 = time.perf_counter()
            final = await app.ainvoke({"prompt": "Multiply along the chain.", "steps": [], "answer": None},
                                      {"configurable": {"thread_id": f"lg-{i}"}, "recursion_limit": 100})
            total = (time.perf_counter() - t0) * 1000.0
            latencies.append(total)
            if final.get("answer") != "done" or len(final["steps"]) != STEPS:
                errors += 1
                continue
            # the same definition as for the engine: the run's time outside model and verifier, per step
            overheads.append((total - sum(model.calls) - sum(v for _, v in step_times)) / STEPS)
        async with saver.conn.execute("SELECT COUNT(*), SUM(LENGTH(checkpoint)) + COALESCE(SUM(LENGTH(metadata)), 0)"
                                      " FROM checkpoints") as cur:
            n_ckpt, ckpt_bytes = await cur.fetchone()
        async with saver.conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes") as cur:
            (write_bytes,) = await cur.fetchone()
    return {"overheads": overheads, "latencies": latencies, "errors": errors,
            "bytes_per_run": ((ckpt_bytes or 0) + (write_bytes or 0)) / max(1, runs),
            "rows_per_run": (n_ckpt or 0) / max(1, runs)}


async def run(quick: bool = False, *, runs: int | None = None, batch: int | None = None,
              concurrency: int | None = None) -> dict[str, Any]:
    runs = runs or (10 if quick else 60)
    batch = batch or (40 if quick else BATCH)
    concurrency = concurrency or CONCURRENCY
    tmp = Path(tempfile.mkdtemp(prefix="toolmesh-bench-reason-"))
    rules = tmp / "script.json"
    rules.write_text(json.dumps(script()))
    proc = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", "0",  # noqa: ASYNC220
                             "--no-log", "--rules", str(rules)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=runner.die_with_parent)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        router = Router([Deployment("scripted", MODEL, OpenAIProvider(url, "k"))], ModelRegistry.load())
        try:
            _log(f"warm-up, then {runs} sequential toolmesh runs of {STEPS} steps")
            await toolmesh_runs(router, 3, tmp / "warm.db")
            tm = await toolmesh_runs(router, runs, tmp / "toolmesh.db")
            _log(f"same loop on LangGraph with AsyncSqliteSaver ({runs} runs)")
            lg = await langgraph_runs(router, 3, tmp / "lg-warm.db")
            if "skipped" not in lg:
                lg = await langgraph_runs(router, runs, tmp / "langgraph.db")
            _log(f"batch of {batch} prompts at concurrency {concurrency}")
            bt = await batch_run(router, batch, concurrency)
        finally:
            await router.aclose()
    finally:
        runner.stop_processes([proc])
    return _result(tm, lg, bt, runs, quick)


def _leaf(side: dict[str, Any]) -> dict[str, Any]:
    return {"overhead_per_step_p50_ms": pct(side["overheads"], 0.5), "overhead_per_step_p99_ms":
            pct(side["overheads"], 0.99), "run_p50_ms": pct(side["latencies"], 0.5), "errors": side["errors"],
            "checkpoint_bytes_per_run": round(side["bytes_per_run"]), "checkpoint_rows_per_run": side["rows_per_run"]}


def _result(tm: dict[str, Any], lg: dict[str, Any], bt: dict[str, Any], runs: int, quick: bool) -> dict[str, Any]:
    toolmesh = _leaf(tm)
    toolmesh["in_step_overhead_p50_ms"] = pct(tm["in_step"], 0.5)
    toolmesh["overhead_per_step_with_checkpoints_p50_ms"] = pct(tm["with_ckpt"], 0.5)
    toolmesh["checkpoint_write_p50_ms"] = pct(tm["writes"], 0.5)
    toolmesh["checkpoint_write_p99_ms"] = pct(tm["writes"], 0.99)
    langgraph: dict[str, Any] = {"skipped": lg["skipped"]} if "skipped" in lg else _leaf(lg)
    ratios: dict[str, Any] = {}
    if "skipped" not in lg:
        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 2) if a and b else None

        ratios = {"overhead_per_step_langgraph_over_toolmesh": ratio(langgraph["overhead_per_step_p50_ms"],
                                                                     toolmesh["overhead_per_step_p50_ms"]),
                  "checkpoint_bytes_langgraph_over_toolmesh": ratio(langgraph["checkpoint_bytes_per_run"],
                                                                    toolmesh["checkpoint_bytes_per_run"]),
                  "run_p50_langgraph_over_toolmesh": ratio(langgraph["run_p50_ms"], toolmesh["run_p50_ms"])}
    overhead = toolmesh["overhead_per_step_p50_ms"]
    write = toolmesh["checkpoint_write_p50_ms"]
    targets = {
        "overhead_per_step_p50_le_1ms": overhead is not None and overhead <= TARGETS["overhead_p50_ms"],
        "checkpoint_write_p50_le_2ms": write is not None and write <= TARGETS["checkpoint_p50_ms"],
        "batch_ratio_ge_0_95": bt["ratio"] >= TARGETS["batch_ratio"],
    }
    return {
        "benchmark": "reason", "quick": quick, "runs": runs, "steps_per_run": STEPS,
        "model": {"latency_ms": LATENCY_MS, "chunk_chars": CHUNK_CHARS, "chunk_delay_ms": CHUNK_MS,
                  "call_ms": configured_call_ms()},
        "toolmesh": toolmesh, "langgraph": langgraph, "ratios": ratios, "batch": bt, "targets": targets,
        "errors": tm["errors"] + (lg.get("errors") or 0) + bt["errors"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    }


def _render(result: dict[str, Any]) -> None:
    tm, lg, bt = result["toolmesh"], result["langgraph"], result["batch"]
    print(f"reasoning engine, {result['runs']} runs × {result['steps_per_run']} steps")
    print(f"  toolmesh   overhead/step p50 {tm['overhead_per_step_p50_ms']} ms  p99 {tm['overhead_per_step_p99_ms']} ms"
          f"  checkpoint write p50 {tm['checkpoint_write_p50_ms']} ms  {tm['checkpoint_bytes_per_run']} B/run")
    if "skipped" in lg:
        print(f"  langgraph  skipped: {lg['skipped']}")
    else:
        print(f"  langgraph  overhead/step p50 {lg['overhead_per_step_p50_ms']} ms"
              f"  {lg['checkpoint_bytes_per_run']} B/run  ratios {result['ratios']}")
    print(f"  batch {bt['prompts']} @ {bt['concurrency']}: {bt['prompts_per_s']}/s of {bt['allowed_prompts_per_s']}/s"
          f" the model allows (router alone) = {bt['ratio']:.1%}, errors {bt['errors']}"
          f" (configured latency would allow {bt['configured_prompts_per_s']}/s)")
    print(f"  targets {result['targets']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="toolmesh reasoning engine benchmark")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    args = ap.parse_args(argv)
    result = runner.run_loop(run(args.quick, runs=args.runs, batch=args.batch, concurrency=args.concurrency),
                             args.loop)
    return runner.emit(result, args.json, _render)


if __name__ == "__main__":
    sys.exit(main())
