"""The gateway's Prometheus families (GW-5): requests, latency, readiness, circuits, LLM usage.

Recording is done by :class:`RequestStats` with plain dict and list operations (it runs
once per HTTP request); the ``prometheus_client`` families are built only at scrape time
by :class:`GatewayCollector`, next to the Hub's :class:`ToolmeshCollector`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from toolmesh.gateway.state import HANDSHAKE_TENANT_SUFFIX, Gateway
from toolmesh.observability.health import HealthStatus
from toolmesh.store.redis_budget import SharedSpend
from toolmesh.store.sqlite import Store

__all__ = ["BUCKETS", "LEDGER_FAMILIES", "GatewayCollector", "RequestStats", "UsageTotals"]

log = logging.getLogger("toolmesh.gateway")

#: Request latency histogram bounds, seconds (the gateway's own work is sub-millisecond;
#: chat completions take seconds).
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                              10.0, 30.0, 60.0)
_CIRCUIT_STATES = ("closed", "open", "half-open")
#: Families summed from the shared usage ledger: every worker already shows the whole host's totals.
LEDGER_FAMILIES = ("llm_requests", "llm_tokens", "llm_cost_usd", "llm_unpriced_requests")
_TOKEN_KINDS = ("input", "output", "cached_input", "reasoning")


class RequestStats:
    """Counts and latency buckets per (route, status, tenant); ``observe`` costs well under 1 µs."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        #: (route, status, tenant) -> [count, sum_seconds, bucket_0, ..., bucket_inf] (not cumulative)
        self.series: dict[tuple[str, int, str], list[float]] = {}

    def observe(self, route: str, status: int, seconds: float, tenant: str) -> None:
        key = (route, status, tenant)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0.0] * (len(BUCKETS) + 3)
        s[0] += 1
        s[1] += seconds
        s[2 + bisect_left(BUCKETS, seconds)] += 1


_SUMS = ("SELECT tenant, model, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens),"
         " SUM(reasoning_tokens), SUM(cost_usd), SUM(1 - priced) FROM usage WHERE id > ? AND id <= ?"
         " GROUP BY tenant, model")


class UsageTotals:
    """LLM requests, tokens and cost per (tenant, model), summed from the usage ledger's rows.

    Reads only rows added since the previous scrape (``id`` cursor: the table is append-only),
    so a scrape stays cheap however long the ledger grows; totals cover every worker, because
    they all write the same store. SQLite hands out ids in commit order. PostgreSQL does not
    (several processes write at once): a missing id below the newest may be a transaction not
    committed yet, so the cursor stops before it for up to ``gap_wait`` seconds (after that the
    id is taken as rolled back and skipped).
    """

    def __init__(self, *, gap_wait: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cursor = 0
        #: (tenant, model) -> [requests, input, output, cached_input, reasoning, cost_usd, unpriced]
        self.totals: dict[tuple[str, str], list[float]] = {}
        self.gap_wait = gap_wait
        self._clock = clock
        self._gaps: dict[int, float] = {}  # missing id -> when first seen missing

    async def refresh(self, store: Store) -> None:
        try:
            if store.engine == "postgresql":
                top = await self._settled(store)
            else:
                row = await store.fetchone("SELECT MAX(id) FROM usage")
                top = int(row[0] or 0) if row else 0
            if top <= self.cursor:
                return
            rows = await store.fetchall(_SUMS, (self.cursor, top))
        except Exception:  # a busy or closed store must not fail the scrape
            log.warning("reading LLM usage for /metrics failed", exc_info=True)
            return
        for tenant, model, *values in rows:
            acc = self.totals.setdefault((tenant, model), [0.0] * 7)
            for i, v in enumerate(values):
                acc[i] += float(v or 0.0)
        self.cursor = top
        self._gaps = {i: t for i, t in self._gaps.items() if i > top}

    async def _settled(self, store: Store) -> int:
        """The highest id up to which every id is committed, or was missing for ``gap_wait`` s."""
        row = await store.fetchone("SELECT MAX(id), COUNT(*) FROM usage WHERE id > ?", (self.cursor,))
        top, n = (int(row[0] or 0), int(row[1])) if row else (0, 0)
        if n == top - self.cursor:  # no missing id in the range: all committed
            return top
        now, pos = self._clock(), self.cursor
        for _ in range(64):  # bounded work per scrape; the next scrape goes on from here
            if await store.fetchone("SELECT 1 FROM usage WHERE id = ?", (pos + 1,)) is None:
                gap = pos + 1
            else:
                found = await store.fetchone(
                    "SELECT MIN(u.id) + 1 FROM usage u WHERE u.id > ? AND u.id < ? AND NOT EXISTS"
                    " (SELECT 1 FROM usage v WHERE v.id = u.id + 1)", (pos, top))
                if found is None or found[0] is None:
                    return top
                gap = int(found[0])
            if now - self._gaps.setdefault(gap, now) < self.gap_wait:
                return gap - 1  # maybe still being committed: wait for it
            pos = gap  # missing for long: rolled back
        return pos


class GatewayCollector:
    """Builds the gateway families from live state at scrape time (``gw`` is the worker's Gateway)."""

    def __init__(self, gw: Gateway, requests: RequestStats, usage: UsageTotals, prefix: str = "toolmesh") -> None:
        self.gw = gw
        self.requests = requests
        self.usage = usage
        self.prefix = prefix

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._state()
        yield from self._servers()
        yield from self._llm()

    def _requests(self) -> Iterator[Metric]:
        p = self.prefix
        total = CounterMetricFamily(f"{p}_gateway_requests", "HTTP requests answered by the gateway.",
                                    labels=("route", "status", "tenant"))
        hist = HistogramMetricFamily(f"{p}_gateway_request_duration_seconds",
                                     "Time from routing to the end of the response, per route.",
                                     labels=("route", "tenant"))
        merged: dict[tuple[str, str], list[float]] = {}
        for (route, status, tenant), s in list(self.requests.series.items()):
            total.add_metric((route, str(status), tenant), s[0])
            acc = merged.get((route, tenant))
            if acc is None:
                merged[(route, tenant)] = list(s)
            else:
                for i, v in enumerate(s):
                    acc[i] += v
        for (route, tenant), s in merged.items():
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, n in zip((*BUCKETS, float("inf")), s[2:], strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            hist.add_metric((route, tenant), buckets, s[1])
        yield total
        yield hist

    def _state(self) -> Iterator[Metric]:
        p, gw = self.prefix, self.gw
        yield GaugeMetricFamily(f"{p}_gateway_in_flight", "Requests being served now.", value=gw.in_flight)
        yield GaugeMetricFamily(f"{p}_gateway_ready", "1 when /readyz answers 200.",
                                value=1.0 if gw.ready and not gw.draining else 0.0)
        yield GaugeMetricFamily(f"{p}_gateway_start_time_seconds", "Unix time this worker started.",
                                value=gw.started_at)
        # Leak watch (the soak benchmark reads it): flat over time when nothing piles up.
        yield GaugeMetricFamily(f"{p}_gateway_asyncio_tasks", "Asyncio tasks alive in this worker's event loop.",
                                value=_task_count())
        up = GaugeMetricFamily(f"{p}_gateway_upstream_reachable",
                               "1 if the configured upstream answered when the gateway started.",
                               labels=("tenant", "server"))
        for key, entry in list(gw.upstreams_tried.items()):
            tenant, _, server = key.partition("/")
            up.add_metric((tenant, server), 1.0 if entry.get("ok") else 0.0)
        yield up
        store = gw.store  # the durable records: rows wait in a bounded buffer while PostgreSQL is down
        yield GaugeMetricFamily(f"{p}_store_up", "1 while this worker reaches its store's database.",
                                value=1.0 if store.available else 0.0)
        yield GaugeMetricFamily(f"{p}_store_buffered_rows", "Ledger/audit rows acknowledged, not yet written.",
                                value=store.buffered_rows)
        yield CounterMetricFamily(f"{p}_store_dropped_rows", "Ledger/audit rows dropped: buffer full while the "
                                  "database was unreachable.", value=store.dropped_rows)
        yield CounterMetricFamily(f"{p}_store_outages", "Times this worker found its database unreachable.",
                                  value=store.outages)
        state, limiter = gw.shared_state, gw.shared_limiter
        if state is not None and limiter is not None:
            yield GaugeMetricFamily(f"{p}_shared_state_up", "1 while this worker reaches the shared state (Redis).",
                                    value=1.0 if state.available else 0.0)
            yield CounterMetricFamily(f"{p}_shared_state_outages", "Times this worker found Redis unreachable.",
                                      value=state.outages)
            yield CounterMetricFamily(f"{p}_shared_limits_local_decisions",
                                      "Admissions decided with this worker's share of the limits (Redis down).",
                                      value=limiter.local_decisions)
            yield CounterMetricFamily(f"{p}_shared_limits_denied_locally",
                                      "Requests refused without a Redis round trip (a refused key, until retry-at).",
                                      value=limiter.denied_locally)
            yield CounterMetricFamily(f"{p}_shared_limits_round_trips",
                                      "Admission scripts sent to Redis (one per request not decided locally).",
                                      value=limiter.round_trips)
        spend = gw.shared_spend
        if spend is not None:
            yield from _spend_families(p, spend)

    def _servers(self) -> Iterator[Metric]:
        p, hub = self.prefix, self.gw.hub
        circuit = GaugeMetricFamily(f"{p}_gateway_circuit_state", "1 for each upstream server's circuit state.",
                                    labels=("tenant", "server", "state"))
        opens = CounterMetricFamily(f"{p}_gateway_circuit_opens", "Times an upstream server's circuit opened.",
                                    labels=("tenant", "server"))
        health = GaugeMetricFamily(f"{p}_gateway_server_health", "1 for each upstream server's health status.",
                                   labels=("tenant", "server", "status"))
        in_flight = GaugeMetricFamily(f"{p}_gateway_server_in_flight", "Tool calls in flight per upstream server.",
                                      labels=("tenant", "server"))
        for tenant in hub.tenants():
            if HANDSHAKE_TENANT_SUFFIX in tenant:
                continue  # the MCP endpoint's handshake-era twin connections, not servers of their own
            for name, h in hub.servers(tenant=tenant).items():
                state = h.circuit.state.value
                for st in _CIRCUIT_STATES:
                    circuit.add_metric((tenant, name, st), 1.0 if st == state else 0.0)
                opens.add_metric((tenant, name), h.circuit.opens)
                for hs in HealthStatus:
                    health.add_metric((tenant, name, hs.value), 1.0 if h.health.status is hs else 0.0)
                in_flight.add_metric((tenant, name), h.limiter.in_flight)
        yield from (circuit, opens, health, in_flight)

    def _llm(self) -> Iterator[Metric]:
        p = self.prefix
        reqs = CounterMetricFamily(f"{p}_llm_requests", "LLM completions recorded in the usage ledger.",
                                   labels=("tenant", "model"))
        tokens = CounterMetricFamily(f"{p}_llm_tokens", "LLM tokens recorded in the usage ledger.",
                                     labels=("tenant", "model", "type"))
        cost = CounterMetricFamily(f"{p}_llm_cost_usd", "LLM cost in USD (priced models only).",
                                   labels=("tenant", "model"))
        unpriced = CounterMetricFamily(f"{p}_llm_unpriced_requests", "LLM completions of models without a price.",
                                       labels=("tenant", "model"))
        for (tenant, model), t in list(self.usage.totals.items()):
            reqs.add_metric((tenant, model), t[0])
            for kind, v in zip(_TOKEN_KINDS, t[1:5], strict=True):
                tokens.add_metric((tenant, model, kind), v)
            cost.add_metric((tenant, model), t[5])
            unpriced.add_metric((tenant, model), t[6])
        yield from (reqs, tokens, cost, unpriced)
        snap = getattr(self.gw.llm, "snapshot", None)
        if snap is None:
            return
        try:
            deployments = snap().get("deployments", {})
        except Exception:
            log.debug("router snapshot failed", exc_info=True)
            return
        ok = CounterMetricFamily(f"{p}_llm_deployment_successes", "Successful completions per deployment.",
                                 labels=("deployment", "model"))
        bad = CounterMetricFamily(f"{p}_llm_deployment_failures", "Failed attempts per deployment.",
                                  labels=("deployment", "model"))
        cool = GaugeMetricFamily(f"{p}_llm_deployment_cooldown_seconds", "Seconds left in a deployment's cooldown.",
                                 labels=("deployment", "model"))
        for name, d in deployments.items():
            ok.add_metric((name, d["model"]), d.get("successes", 0))
            bad.add_metric((name, d["model"]), d.get("failures", 0))
            cool.add_metric((name, d["model"]), d.get("cooldown_s", 0.0))
        yield from (ok, bad, cool)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the event loop (tests): no loop, no tasks
        return 0.0


def _spend_families(p: str, spend: SharedSpend) -> Iterator[Metric]:
    """The daily spend holds kept in Redis by this worker (``state.url`` with a spend budget)."""
    holds = CounterMetricFamily(f"{p}_spend_holds", "Daily spend holds Redis decided for this worker's model calls "
                                "(joined: taken inside the request's admission script).", labels=("outcome",))
    holds.add_metric(("held",), spend.holds)
    holds.add_metric(("refused",), spend.refused_holds)
    holds.add_metric(("joined",), spend.joined_holds)
    yield holds
    yield CounterMetricFamily(f"{p}_spend_settlements", "Spend settlements (actual cost) written to Redis.",
                              value=spend.settlements)
    yield CounterMetricFamily(f"{p}_spend_lost_settlements", "Spend settlements given up (Redis down longer than "
                              "the retry window): their holds lapse unsettled.", value=spend.lost_settlements)
    trips = CounterMetricFamily(f"{p}_spend_round_trips", "Spend scripts this worker sent to Redis on their own, "
                                "by op (holds riding on an admission script are not counted here).", labels=("op",))
    for op, n in spend.scripts.items():
        trips.add_metric((op,), n)
    yield trips
