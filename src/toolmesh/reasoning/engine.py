"""The reasoning engine: :class:`Reasoner` (RSN-1, RSN-2)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from toolmesh.agent.budget import BudgetScope
from toolmesh.llm.provider import Provider
from toolmesh.reasoning import adapter
from toolmesh.reasoning.run import Run, RunParts
from toolmesh.reasoning.types import (
    CoherenceCheck,
    ReasoningConfig,
    ReasoningEvent,
    ReasoningResult,
    Verifier,
)
from toolmesh.reasoning.verifiers import ToolCaller
from toolmesh.store.checkpoints import RunCheckpoints, RunExistsError, SqlStore

log = logging.getLogger("toolmesh.reasoning")

#: Seconds between two retention passes over one store.
PRUNE_EVERY_S = 3600.0
_PRUNED: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

#: Settings a resuming Reasoner's config overrides in the stored one (limits, not the requests).
RESUME_OVERRIDES = ("max_seconds", "step_seconds", "llm_timeout", "rate_limit_retries", "checkpoint_every")

#: ``progress(done, total, result)`` after each prompt of a batch.
Progress = Callable[[int, int, ReasoningResult], None]


class Reasoner:
    """Verified multi-step reasoning over ``llm`` (a Router, any ChatModel, or a bare Provider).

    ``store`` (a :class:`~toolmesh.store.sqlite.Store`) enables checkpoints and
    :meth:`resume`; ``ledger`` records every model call like agent runs; ``hub`` serves the
    ``tool:NAME`` verifier. ``verifiers`` adds Python callables to the configured ones,
    ``coherence`` replaces the final check. ``price(model, usage)`` defaults to the router's
    model registry (unpriced → ``cost_usd`` None). ``budgets`` are extra budget scopes
    (e.g. a user's daily spend) charged with the run's own.
    """

    def __init__(self, llm: adapter.ChatModel | Provider, config: ReasoningConfig | None = None, *,
                 store: SqlStore | None = None, ledger: adapter.Ledger | None = None, hub: ToolCaller | None = None,
                 verifiers: Sequence[Verifier] = (), coherence: CoherenceCheck | None = None,
                 price: adapter.PriceFn | None = None, budgets: Sequence[BudgetScope] = ()) -> None:
        if config is not None and not isinstance(config, ReasoningConfig):
            raise TypeError(f"config must be a ReasoningConfig, not {type(config).__name__}")
        for fn in verifiers:
            if not callable(fn):
                raise TypeError(f"verifiers must be async callables (step, chain) -> Verdict, got {fn!r}")
        if coherence is not None and not callable(coherence):
            raise TypeError("coherence must be an async callable (prompt, chain, answer) -> Verdict")
        self.llm = adapter.chat_model(llm)
        self.config = config or ReasoningConfig()
        self.store = store
        self.checkpoints = RunCheckpoints(store) if store is not None else None
        self.ledger = ledger
        self.hub = hub
        self.verifiers = tuple(verifiers)
        self.coherence = coherence
        self.price = price if price is not None else adapter.default_price(self.llm)
        self.budgets = list(budgets)
        self._pruned = False

    def _parts(self, cfg: ReasoningConfig) -> RunParts:
        return RunParts(self.llm, self.checkpoints, self.ledger, self.hub, self.price, self.verifiers,
                        self.coherence, list(self.budgets), adapter.context_window(self.llm, cfg.model))

    async def _prune(self) -> None:
        """Retention: at most once an hour per store (a gateway makes a Reasoner per request)."""
        days = self.config.checkpoint_retention_days
        if self.checkpoints is None or days is None:
            return
        now = time.monotonic()
        try:
            last = _PRUNED.get(self.store)
            if last is not None and now - last < PRUNE_EVERY_S:
                return
            _PRUNED[self.store] = now
        except TypeError:  # a store that cannot be weakly referenced: once per Reasoner
            if self._pruned:
                return
        self._pruned = True
        try:
            await self.checkpoints.prune(days * 86400.0)
        except Exception:
            log.exception("pruning old reasoning checkpoints failed")

    async def _new(self, prompt: str, run_id: str | None) -> Run:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError("run_id must be a non-empty string")
        await self._prune()
        run = Run(self._parts(self.config), self.config, prompt, run_id or uuid.uuid4().hex)
        if run_id is not None:
            await self._ensure_new(run_id)
        return run

    async def _ensure_new(self, run_id: str) -> None:
        if self.checkpoints is not None and await self.checkpoints.load(run_id):
            raise RunExistsError(f"run {run_id!r} already exists: resume it or choose another run id")

    async def _restored(self, run_id: str) -> tuple[Run, ReasoningResult | None]:
        if self.checkpoints is None:
            raise ValueError("resume needs a store: Reasoner(..., store=Store(path))")
        rows = await self.checkpoints.load(run_id)
        if not rows or rows[0].kind != "start":
            raise LookupError(f"no checkpoints for run {run_id!r}")
        start = rows[0].data
        cfg = ReasoningConfig.model_validate(start["config"])
        # What shapes the requests comes from the run itself (so it resumes identically); how long
        # the resumer is willing to wait is its own choice, when its config sets it.
        mine = {k: getattr(self.config, k) for k in RESUME_OVERRIDES if k in self.config.model_fields_set}
        if mine:
            cfg = cfg.model_copy(update=mine)
        run = Run(self._parts(cfg), cfg, str(start["prompt"]), run_id)
        return run, run.restore(rows)

    # -- public API ----------------------------------------------------------------------------------

    async def run(self, prompt: str, run_id: str | None = None) -> ReasoningResult:
        """Reason about ``prompt`` to the end. ``run_id`` names the run (for :meth:`resume`).

        Never raises for the model's or the run's failures: they are the result's ``status``
        (``error``/``timeout``/``budget``) and ``error``. Raises ``ValueError`` for bad input."""
        return await (await self._new(prompt, run_id)).execute()

    async def stream(self, prompt: str, run_id: str | None = None) -> AsyncGenerator[ReasoningEvent, None]:
        """Reason about ``prompt``, yielding :class:`ReasoningEvent` s; the last is ``final``."""
        run = await self._new(prompt, run_id)
        async for ev in _pump(run):
            yield ev

    async def resume(self, run_id: str) -> ReasoningResult:
        """Continue a checkpointed run after its last committed step (a finished run's result
        is returned as stored). The run's own settings are used, except the limits in
        :data:`RESUME_OVERRIDES` that this Reasoner's config sets explicitly. Raises
        ``LookupError`` for an unknown run."""
        run, done = await self._restored(run_id)
        return done if done is not None else await run.execute()

    async def resume_stream(self, run_id: str) -> AsyncGenerator[ReasoningEvent, None]:
        """:meth:`resume` as events."""
        run, done = await self._restored(run_id)
        if done is not None:
            yield ReasoningEvent("run_started", run_id, text=run.prompt)
            yield ReasoningEvent("final", run_id, result=done)
            return
        async for ev in _pump(run):
            yield ev

    async def batch(self, prompts: Sequence[str], *, concurrency: int = 8, progress: Progress | None = None,
                    run_ids: Sequence[str] | None = None) -> list[ReasoningResult]:
        """Run many prompts, at most ``concurrency`` at a time; results in input order, one per
        prompt (a prompt that fails is an ``error`` result with the reason, never dropped)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive int")
        if run_ids is not None and len(run_ids) != len(prompts):
            raise ValueError("run_ids must have one id per prompt")
        total = len(prompts)
        results: list[ReasoningResult | None] = [None] * total
        sem = asyncio.Semaphore(concurrency)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            rid = run_ids[i] if run_ids is not None else uuid.uuid4().hex
            async with sem:
                t0 = time.perf_counter()
                try:
                    res = await self.run(prompts[i], rid)
                except Exception as exc:  # bad prompt, taken run id, store failure: reported, not dropped
                    if not isinstance(exc, (ValueError, TypeError, LookupError)):
                        log.exception("batch prompt %d failed", i)
                    res = ReasoningResult(rid, "error", None, error=f"{type(exc).__name__}: {exc}",
                                          elapsed_ms=(time.perf_counter() - t0) * 1000.0)
            results[i] = res
            done += 1
            if progress is not None:
                try:
                    progress(done, total, res)
                except Exception:
                    log.exception("batch progress callback failed")

        await asyncio.gather(*(one(i) for i in range(total)))
        return [r for r in results if r is not None]


async def _pump(run: Run) -> AsyncGenerator[ReasoningEvent, None]:
    """Run in its own task (so limits cancel the run, never the consumer) and relay its events."""
    queue: asyncio.Queue[ReasoningEvent | BaseException] = asyncio.Queue()

    async def drive() -> None:
        try:
            await run.execute(queue.put_nowait)
        except BaseException as exc:  # relayed to the consumer
            queue.put_nowait(exc)

    task = asyncio.create_task(drive())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.kind == "final":
                return
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

