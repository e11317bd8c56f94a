"""The usage and cost ledger (LLM-5): one row per completion, in the embedded store.

Cost comes from a ``price(model, usage)`` callable (the model registry's
``registry.price``). An unpriced model is recorded with a NULL cost and ``priced=0``,
never 0.0, and reports count such requests separately.

Daily spend checks run on the hot path, so the ledger keeps a running total per
(tenant, user, day) from yesterday (UTC) on in memory: :meth:`UsageLedger.spend`
queries the database once per key (for rows written before this store was opened)
and answers from memory after that.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolmesh.llm.types import Usage
from toolmesh.store.sqlite import Store

__all__ = ["GROUP_KEYS", "CostLike", "PriceFn", "UsageLedger", "UsageRecord", "day_of"]

log = logging.getLogger("toolmesh.ledger")

#: Columns a report can be grouped by.
GROUP_KEYS = frozenset(("model", "provider", "tenant", "user", "session", "day"))

_INSERT = ("INSERT INTO usage (at, day, tenant, user, session, model, provider, input_tokens, output_tokens,"
           " cached_input_tokens, reasoning_tokens, estimated, cost_usd, priced, latency_ms, request_id, epoch)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class CostLike(Protocol):
    """What ``price`` returns: ``usd`` is None when the model is unpriced."""

    @property
    def usd(self) -> float | None: ...

    @property
    def priced(self) -> bool: ...


PriceFn = Callable[[str, Usage], CostLike]
TimeArg = float | int | dt.datetime | dt.date | None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One recorded completion."""

    at: float
    day: str
    tenant: str
    user: str
    session: str | None
    model: str
    provider: str
    usage: Usage
    #: None when the model is unpriced (never a silent 0.0).
    cost_usd: float | None
    priced: bool
    latency_ms: float
    request_id: str | None


def day_of(at: float) -> str:
    """The UTC day (``YYYY-MM-DD``) of a Unix time."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class UsageLedger:
    """Records usage and cost per request and answers reports, spend and savings questions."""

    def __init__(self, store: Store, price: PriceFn, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(store, Store):
            raise TypeError("store must be a toolmesh.store.Store")
        if not callable(price):
            raise TypeError("price must be callable: price(model, usage) -> Cost")
        self._store = store
        self._price = price
        self._clock = clock
        # This store epoch's spend per (tenant, user or None, day), from yesterday on.
        self._mine: dict[tuple[str, str | None, str], float] = {}
        # Spend by rows of earlier epochs, loaded once per key.
        self._base: dict[tuple[str, str | None, str], float] = {}
        self._days: tuple[str, str] = ("", "")
        self._today_start = 0.0  # Unix time of today's 00:00 UTC

    def _recent_days(self, now: float | None = None) -> tuple[str, str]:
        now = self._clock() if now is None else now
        if not 0.0 <= now - self._today_start < 86400.0:
            self._today_start = now - now % 86400.0
            self._days = (day_of(now), day_of(now - 86400.0))
            oldest = self._days[1]  # day rolled over: forget older running totals
            self._mine = {k: v for k, v in self._mine.items() if k[2] >= oldest}
            self._base = {k: v for k, v in self._base.items() if k[2] >= oldest}
        return self._days

    def record(self, *, tenant: str, user: str, session: str | None, model: str, provider: str, usage: Usage,
               latency_ms: float, request_id: str | None = None, at: TimeArg = None) -> UsageRecord:
        """Record one completion (batched write; durable after ``store.flush()``/``aclose()``)."""
        if not (type(tenant) is str and type(user) is str and type(model) is str and type(provider) is str
                and (session is None or type(session) is str) and (request_id is None or type(request_id) is str)
                and type(usage) is Usage and type(latency_ms) is float and 0.0 <= latency_ms < math.inf
                and type(usage.input_tokens) is int and usage.input_tokens >= 0
                and type(usage.output_tokens) is int and usage.output_tokens >= 0
                and type(usage.cached_input_tokens) is int and usage.cached_input_tokens >= 0
                and type(usage.reasoning_tokens) is int and usage.reasoning_tokens >= 0):
            _check_record(tenant, user, session, model, provider, usage, latency_ms, request_id)  # slow path
        now = self._clock()
        ts = now if at is None else _ts(at)
        days = self._recent_days(now)
        since = ts - self._today_start
        day = days[0] if 0.0 <= since < 86400.0 else days[1] if -86400.0 <= since < 0.0 else day_of(ts)
        cost = self._cost(model, usage)
        lat = float(latency_ms)
        self._store.enqueue_trusted(_INSERT, (ts, day, tenant, user, session, model, provider, usage.input_tokens,
                                              usage.output_tokens, usage.cached_input_tokens,
                                              usage.reasoning_tokens, int(usage.estimated), cost,
                                              int(cost is not None), lat, request_id, self._store.epoch))
        if cost and day >= days[1]:  # ISO days compare as strings
            mine = self._mine
            k1, k2 = (tenant, user, day), (tenant, None, day)
            mine[k1] = mine.get(k1, 0.0) + cost
            mine[k2] = mine.get(k2, 0.0) + cost
        return UsageRecord(ts, day, tenant, user, session, model, provider, usage, cost, cost is not None, lat,
                           request_id)

    def _cost(self, model: str, usage: Usage) -> float | None:
        try:
            c = self._price(model, usage)
        except Exception:  # a pricing bug must not lose the usage row
            log.exception("pricing %s failed; recorded as unpriced", model)
            return None
        usd = c.usd if c.priced else None
        if usd is None:
            return None
        if type(usd) is float and 0.0 <= usd < math.inf:
            return usd
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
            log.error("price(%s) returned an invalid cost %r; recorded as unpriced", model, usd)
            return None
        return float(usd)

    async def spend(self, tenant: str, user: str | None = None, day: str | None = None) -> float:
        """Priced spend in USD of a tenant (or one of its users) on a UTC day (default today).

        Days from yesterday on are answered from memory after the first query per key.
        """
        today, yesterday = self._recent_days()
        day = day or today
        key = (tenant, user, day)
        if day < yesterday:
            row = await self._store.fetchone(
                "SELECT SUM(cost_usd) FROM usage WHERE tenant = ? AND day = ? AND (? IS NULL OR user = ?)",
                (tenant, day, user, user))
            return float(row[0] or 0.0) if row else 0.0
        if key not in self._base:
            row = await self._store.fetchone(
                "SELECT SUM(cost_usd) FROM usage WHERE tenant = ? AND day = ? AND (? IS NULL OR user = ?)"
                " AND epoch != ?", (tenant, day, user, user, self._store.epoch))
            self._base[key] = float(row[0] or 0.0) if row else 0.0
        return self._base[key] + self._mine.get(key, 0.0)

    def cached_spend(self, tenant: str, user: str | None = None, day: str | None = None) -> float | None:
        """:meth:`spend` without I/O: None when the key was never loaded (call ``spend`` once)."""
        today, _ = self._recent_days()
        key = (tenant, user, day or today)
        base = self._base.get(key)
        return None if base is None else base + self._mine.get(key, 0.0)

    async def report(self, group_by: Sequence[str] = ("model",), *, tenant: str | None = None,
                     user: str | None = None, session: str | None = None, model: str | None = None,
                     since: TimeArg = None, until: TimeArg = None) -> list[dict[str, Any]]:
        """Usage grouped by ``group_by`` (any of :data:`GROUP_KEYS`), filtered; ``since`` ≤ at < ``until``.

        Each row: the group keys, ``requests``, ``input_tokens``, ``output_tokens``,
        ``cached_input_tokens``, ``reasoning_tokens``, ``cost_usd`` (priced requests only; None
        when none was priced), ``unpriced_requests``, ``avg_latency_ms``.
        """
        if isinstance(group_by, str):
            group_by = (group_by,)
        bad = [g for g in group_by if g not in GROUP_KEYS]
        if bad:
            raise ValueError(f"cannot group by {bad}; choose from {sorted(GROUP_KEYS)}")
        cols = ", ".join(group_by)
        where, params = _where(tenant, user, session, model, since, until)
        sql = (f"SELECT {cols + ', ' if cols else ''}COUNT(*), SUM(input_tokens), SUM(output_tokens),"
               " SUM(cached_input_tokens), SUM(reasoning_tokens), SUM(cost_usd), SUM(1 - priced), AVG(latency_ms)"
               f" FROM usage WHERE {where}{' GROUP BY ' + cols + ' ORDER BY ' + cols if cols else ''}")
        rows = await self._store.fetchall(sql, params)
        out = []
        names = (*group_by, "requests", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                 "cost_usd", "unpriced_requests", "avg_latency_ms")
        for r in rows:
            if r[len(group_by)] == 0:
                continue  # aggregate over no rows
            out.append(dict(zip(names, r, strict=True)))
        return out

    async def savings(self, reference_model: str, *, tenant: str | None = None, user: str | None = None,
                      session: str | None = None, since: TimeArg = None,
                      until: TimeArg = None) -> dict[str, Any]:
        """What the priced requests would have cost on ``reference_model``, minus what they cost.

        Returns ``{reference_model, requests, actual_usd, reference_usd, savings_usd,
        unpriced_requests}``; ``reference_usd``/``savings_usd`` are None if the reference is unpriced.
        Unpriced requests are left out of both sides.
        """
        where, params = _where(tenant, user, session, None, since, until)
        rows = await self._store.fetchall(
            "SELECT model, priced, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens),"
            f" SUM(reasoning_tokens), SUM(cost_usd) FROM usage WHERE {where} GROUP BY model, priced", params)
        actual, reference, requests, unpriced = 0.0, 0.0, 0, 0
        ref_priced = True
        for _model, priced, n, inp, outp, cached, reasoning, cost in rows:
            if not priced:
                unpriced += n
                continue
            requests += n
            actual += cost or 0.0
            ref = self._price(reference_model, Usage(inp, outp, cached, reasoning))
            if not ref.priced or ref.usd is None:
                ref_priced = False
            else:
                reference += ref.usd
        if not requests:
            ref_priced = bool(self._price(reference_model, Usage()).priced)
        return {"reference_model": reference_model, "requests": requests, "actual_usd": actual,
                "reference_usd": reference if ref_priced else None,
                "savings_usd": reference - actual if ref_priced else None, "unpriced_requests": unpriced}


def _check_record(tenant: object, user: object, session: object, model: object, provider: object, usage: object,
                  latency_ms: object, request_id: object) -> None:
    for name, value in (("tenant", tenant), ("user", user), ("model", model), ("provider", provider)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
    for name, opt in (("session", session), ("request_id", request_id)):
        if opt is not None and not isinstance(opt, str):
            raise TypeError(f"{name} must be str or None, not {type(opt).__name__}")
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be toolmesh.llm.types.Usage, not {type(usage).__name__}")
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        n = getattr(usage, name)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"usage.{name} must be a non-negative int, not {n!r}")
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not (
            math.isfinite(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency_ms must be a non-negative number, not {latency_ms!r}")


def _ts(t: float | int | dt.datetime | dt.date) -> float:
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(t, dt.date):
        return dt.datetime(t.year, t.month, t.day, tzinfo=dt.UTC).timestamp()
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise TypeError(f"time must be a Unix timestamp, datetime or date, not {t!r}")
    return float(t)


def _where(tenant: str | None, user: str | None, session: str | None, model: str | None,
           since: TimeArg, until: TimeArg) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    for col, val in (("tenant", tenant), ("user", user), ("session", session), ("model", model)):
        if val is not None:
            if not isinstance(val, str):
                raise TypeError(f"{col} must be str or None, not {type(val).__name__}")
            clauses.append(f"{col} = ?")
            params.append(val)
    if since is not None:
        clauses.append("at >= ?")
        params.append(_ts(since))
    if until is not None:
        clauses.append("at < ?")
        params.append(_ts(until))
    return " AND ".join(clauses), tuple(params)
