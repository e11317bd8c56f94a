"""What the shared-state scale tests share: the scripted model behind their gateways, API keys in a
gateway's store, and readings of a real redis-server (spend figures, command counts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import services
from services import RedisServer
from toolmesh.gateway.auth import create_key
from toolmesh.store.redis_budget import spend_keys
from toolmesh.store.sqlite import Store

__all__ = ["MODEL", "PRICES", "USAGE", "WEATHER", "commands", "figures", "make_key", "scripted_llm"]

MODEL = "gpt-4o-mini"
#: The scripted model's usage: 20 input and 50 output tokens; priced below at $1 per 1k tokens.
USAGE = {"input_tokens": 20, "output_tokens": 50}
PRICES = {"input": 1000.0, "output": 1000.0}  # USD per million tokens: $0.001 a token
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@contextlib.contextmanager
def scripted_llm(tmp: Path, latency_ms: int, usage: dict[str, int] | None = None) -> Iterator[str]:
    """The scripted LLM as a process of its own (every answer "ok" with ``usage``, default
    :data:`USAGE`, after ``latency_ms``) while the block runs; yields its OpenAI base URL."""
    rules = tmp / "rules.json"
    rules.write_text(json.dumps({"default": {"text": "ok", "usage": USAGE if usage is None else usage,
                                             "latency_ms": latency_ms}}))
    port = services.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(port),
                             "--rules", str(rules), "--no-log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        services.wait_port(port)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait(10)


def make_key(store: Path, tenant: str) -> str:
    """A new ``chat`` API key of ``tenant`` in the SQLite store at ``store`` (before a gateway opens it)."""
    async def go() -> str:
        db = Store(str(store))
        try:
            return str((await create_key(db, tenant, ["chat"]))["key"])
        finally:
            await db.aclose()

    return asyncio.run(go())


def figures(server: RedisServer, key: str) -> dict[str, float]:
    """A spend scope's figures in Redis: ``used``, ``res`` (reserved) and ``n`` (holds open)."""
    h, _ = spend_keys("tm", key)
    raw = server.cli("HMGET", h, "used", "res", "n").split("\n")
    return {"used": float(raw[0] or 0), "res": float(raw[1] or 0), "n": float(raw[2] or 0)}


def commands(server: RedisServer) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``)."""
    out = {}
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            out[name] = int(rest.split("calls=", 1)[1].split(",", 1)[0])
    return out
