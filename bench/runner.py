"""What every benchmark's ``main`` shares: stop the servers on a signal, run, print the result."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_guarded(work: Callable[[], dict[str, Any]], stop: Callable[[], None]) -> dict[str, Any]:
    """``work()`` with SIGINT/SIGTERM stopping every benchmark process; ``stop()`` runs afterwards anyway.

    A signal does not raise KeyboardInterrupt: cancelling clients mid-call can hang their close,
    so the handler stops the servers right there and leaves.
    """

    def on_signal(signum: int, frame: Any) -> None:
        _log(f"interrupted by signal {signum}: stopping servers")
        stop()
        os._exit(128 + signum)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, on_signal)
        except ValueError:  # not the main thread: the caller handles signals
            break
    try:
        return work()
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_loop(coro: Coroutine[Any, Any, dict[str, Any]], loop: str) -> dict[str, Any]:
    """Run the client side on uvloop (falling back to asyncio's loop) or on asyncio's loop."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            _log("uvloop not installed: using asyncio's loop")
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> int:
    """Print the result (one JSON object, or tables); exit status 1 if any call failed."""
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(result)
    return 1 if result["errors"] else 0


# -- processes the benchmarks start ------------------------------------------------------------
def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:  # pragma: no cover - runs in the child (preexec_fn)
    """Linux: the child gets SIGTERM if the benchmark process dies without cleaning up."""
    import contextlib

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_processes(procs: list[Any], grace: float = 3.0) -> None:
    """SIGTERM every process still running, SIGKILL what is left after ``grace`` s; empties ``procs``."""
    import contextlib
    import subprocess
    import time

    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()
