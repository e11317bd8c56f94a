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
