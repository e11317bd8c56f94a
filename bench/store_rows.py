"""CPU per batched store row (audit log): on the caller's thread and in the store's writer thread.

The gateway writes one audit row per forwarded tool call through ``Store.enqueue_trusted``
(``Store.audit`` is the validating public spelling). This script queues rows the way a busy
gateway does — small bursts from an asyncio loop, with pauses, so the writer sees batches
of a few dozen rows — and reports, per row:

* ``loop``: CPU µs spent inside the enqueue calls on the event-loop thread;
* ``writer``: CPU µs of the store's writer thread (its own CPU clock) until every row is written.

With ``--agent`` the rows are what agent requests queue: a ledger row, an audit row, a ledger
row per request (``UsageLedger.record`` and ``Store.audit``), interleaved in the batch.

With ``--busy`` the loop thread also spins 1 ms between bursts, holding the GIL as a loaded
gateway does, so the writer thread pays for waiting on it.

SQLite always (a file in a temporary directory); PostgreSQL too when ``--pg`` is given and
its Debian programs are installed (a throwaway cluster, as ``bench/scale_servers`` starts it).

    .venv/bin/python bench/store_rows.py [--rows N] [--burst K] [--repeat R] [--pg] [--busy] [--agent]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path

from toolmesh.llm.types import Usage
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sqlite import AUDIT_SQL, Store


class Cost:
    """A flat price for the ledger rows of ``--agent``."""

    usd = 0.001
    priced = True


def price(model: str, usage: Usage) -> Cost:
    return Cost()


def writer_cpu() -> float:
    """Seconds of CPU used so far by the store's writer thread (one store open at a time)."""
    ident = next(t.ident for t in threading.enumerate() if t.name == "toolmesh-store")
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def measure(location: str, rows: int, burst: int, api: str, busy: bool) -> tuple[float, float]:
    """(loop µs/row, writer µs/row) for ``rows`` audit rows queued in bursts of ``burst``
    (``api`` "agent": ledger, audit, ledger rows per request, ``rows`` in all)."""
    async with Store(location) as store:
        ledger = UsageLedger(store, price)
        usage = Usage(120, 30)
        await store.flush()
        writer0 = writer_cpu()
        loop_cpu = 0.0
        for i in range(0, rows, burst):
            t0 = time.thread_time()
            for j in range(i, min(i + burst, rows)):
                if api == "agent":
                    if j % 3 == 1:
                        store.audit(tenant="acme", user="alice", server="calc", tool="add",
                                    arguments_hash="0" * 64, status="ok", latency_ms=1.25, request_id=str(j // 3))
                    else:
                        ledger.record(tenant="acme", user="alice", session=None, model="m", provider="p",
                                      usage=usage, latency_ms=2.5, request_id=str(j // 3))
                elif api == "audit":
                    store.audit(tenant="acme", user="alice", server="calc", tool="add",
                                arguments_hash="0" * 64, status="ok", latency_ms=1.25, request_id=str(j))
                else:
                    store.enqueue_trusted(AUDIT_SQL, (time.time(), "acme", "alice", "calc", "add", "0" * 64,
                                                      "ok", 1.25, str(j), None))
            loop_cpu += time.thread_time() - t0
            if busy:  # a loaded gateway: the loop thread holds the GIL between calls
                until = time.perf_counter() + 0.001
                while time.perf_counter() < until:
                    pass
            await asyncio.sleep(0.001)  # a gateway at a few thousand calls/s: batches of tens of rows
        await store.flush()
        writer = writer_cpu() - writer0
        n = await store.fetchone("SELECT (SELECT COUNT(*) FROM audit) + (SELECT COUNT(*) FROM usage)")
        assert n is not None and n[0] >= rows, n
    return loop_cpu / rows * 1e6, writer / rows * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--burst", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pg", action="store_true", help="also PostgreSQL (starts a throwaway cluster)")
    ap.add_argument("--agent", action="store_true", help="agent requests' rows: ledger, audit, ledger")
    ap.add_argument("--busy", action="store_true", help="keep the loop thread busy between bursts (GIL held)")
    args = ap.parse_args()
    engines: list[tuple[str, str]] = []
    tmp = tempfile.TemporaryDirectory(prefix="tm-store-rows-")
    pg = None
    if args.pg:
        from scale_servers.services import Postgres, stop_all

        pg = Postgres().start()
    try:
        for api in ("agent",) if args.agent else ("enqueue_trusted", "audit"):
            for r in range(args.repeat):
                engines.append((f"sqlite {api}", str(Path(tmp.name) / f"{api}-{r}.db")))
                if pg is not None:
                    engines.append((f"postgresql {api}", pg.create_database(f"rows_{api}_{r}")))
        results: dict[str, list[tuple[float, float]]] = {}
        for name, location in engines:
            results.setdefault(name, []).append(asyncio.run(measure(location, args.rows, args.burst,
                                                                    name.split()[1], args.busy)))
        kind = "agent (ledger, audit, ledger)" if args.agent else "audit"
        print(f"{args.rows} {kind} rows, bursts of {args.burst}{', loop busy' if args.busy else ''},"
              f" median of {args.repeat} runs (CPU µs per row)")
        print(f"{'engine / call':<30}{'loop':>8}{'writer':>8}")
        for name, runs in results.items():
            loop = statistics.median(r[0] for r in runs)
            writer = statistics.median(r[1] for r in runs)
            print(f"{name:<30}{loop:>8.2f}{writer:>8.2f}")
    finally:
        if pg is not None:
            stop_all()
        tmp.cleanup()


if __name__ == "__main__":
    main()
