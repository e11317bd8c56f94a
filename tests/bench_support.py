"""Shared by the benchmark smoke tests: every process a benchmark run started is gone after it."""

from __future__ import annotations

import time

import psutil

#: The environment variable each smoke test sets to a fresh marker; the benchmark's children inherit it.
MARKER_ENV = "TOOLMESH_BENCH_RUN"


def leftovers(marker: str) -> list[psutil.Process]:
    """Processes still alive that carry ``marker`` in their environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def assert_none_left(marker: str, timeout: float = 10.0) -> None:
    """Fail unless every process carrying ``marker`` exits within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = leftovers(marker)
    assert not left, [p.cmdline() for p in left]
