"""The processes `bench scale` starts besides the gateways: redis-server, PostgreSQL, haproxy,
the upstream toolmesh server and the scripted LLM; plus the gateway's config and API key.

Redis, PostgreSQL and haproxy are started as the scale-out tests start them
(:mod:`toolmesh.testing.services`), here in sessions of their own and counted for the CPU
measurements; a missing program stops the benchmark, naming its Debian package.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway_servers import procs
from gateway_servers.procs import PY, Proc
from gateway_servers.targets import UPSTREAM_SCRIPT
from toolmesh.testing.services import HAProxy, MissingProgramError, PostgresServer, RedisServer, find_program

MODEL = "scripted-model"
#: Limits that admit everything: the cost of deciding, not of refusing.
RATE_LIMITS = {"tenant": {"requests_per_minute": 1e9, "burst": 1_000_000},
               "key": {"requests_per_minute": 1e9, "burst": 1_000_000}}
#: One benchmark user sends every agent request: per-user limits high enough to admit all of
#: them (still decided, in Redis with the shared state on).
USER_LIMITS = {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}

_PG: list[Postgres] = []


#: The Debian package of each program the benchmark runs.
PACKAGES = {"wrk": "wrk", "redis-server": "redis-server", "redis-cli": "redis-tools", "haproxy": "haproxy",
            "initdb": "postgresql", "postgres": "postgresql"}


def need(binary: str) -> str:
    """The path of a Debian-packaged program, or exit saying it is missing."""
    try:
        return find_program(binary, PACKAGES.get(binary, binary))
    except MissingProgramError as exc:
        raise SystemExit(str(exc)) from None


class Postgres:
    """A throwaway PostgreSQL cluster in a directory of its own, stopped by :func:`stop_all`;
    :meth:`pids` includes its backends."""

    def __init__(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="tm-bench-pg-"))
        try:
            self.server = PostgresServer(workdir, new_session=True)
        except MissingProgramError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise SystemExit(str(exc)) from None
        self.port = self.server.port

    def url(self, database: str = "postgres") -> str:
        return self.server.url(database)

    def start(self) -> Postgres:
        _PG.append(self)  # stopped (and removed) by stop_all even if it does not come up
        self.server.init()
        self.server.start(timeout=60.0)
        return self

    def create_database(self, name: str) -> str:
        """A new empty database (one per configuration, so each starts from a fresh schema)."""
        return self.server.create_database(name)

    def pids(self) -> list[int]:
        proc = self.server.proc
        return procs.tree(proc.pid) if proc is not None and proc.poll() is None else []

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster."""
        self.server.stop()
        shutil.rmtree(self.server.workdir, ignore_errors=True)


def stop_all() -> None:
    """Stop every process of the benchmark (idempotent; also used by the signal handler)."""
    procs.stop_all()
    while _PG:
        _PG.pop().stop()


def redis(tmp: Path) -> Proc:
    """redis-server without persistence (its log in ``tmp``)."""
    need("redis-server")
    server = RedisServer(tmp)
    return Proc("redis", server.command(), port=server.port).start()


def upstream() -> Proc:
    port = procs.free_port()
    return Proc("upstream", [PY, str(UPSTREAM_SCRIPT), "http", str(port)], port=port).start()


def scripted_llm(tmp: Path, port: int, tool: str) -> Proc:
    """The scripted LLM (a real HTTP process): a user turn gets a call to ``tool`` (add 19 + 23),
    a turn ending in the tool's result gets the final answer quoting it."""
    rules = {"rules": [{"when": {"last_role": "user", "has_tools": True},
                        "respond": {"tool_calls": [{"name": tool, "arguments": {"a": 19, "b": 23}}]}},
                       {"when": {"last_role": "tool"}, "respond": {"text": "19 + 23 = {{tool_results}}"}}],
             "models": [MODEL]}
    path = tmp / "llm-rules.json"
    path.write_bytes(orjson.dumps(rules))
    return Proc("scripted_llm", [PY, "-m", "toolmesh.testing.scripted_llm", "--port", str(port), "--rules",
                                 str(path), "--no-log"], port=port, ready_path="/v1/models").start()


def haproxy(tmp: Path, backends: list[int]) -> Proc:
    """haproxy round-robin over the gateways, no stickiness (as in the scale-out tests)."""
    need("haproxy")
    proxy = HAProxy(tmp, backends)
    return Proc("haproxy", proxy.command(), port=proxy.port).start()


def gateway_config(tmp: Path, name: str, upstream_port: int, llm_port: int, *, redis_url: str | None,
                   store_url: str | None) -> Path:
    """The gateways' config: shared state on = ``state.url`` (Redis) and ``store.url`` (PostgreSQL)."""
    config: dict[str, Any] = {
        "servers": {"b": {"url": f"http://127.0.0.1:{upstream_port}/mcp", "protocol": "2026-07-28"}},
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "model": MODEL, "api_key": "unused",
                                 "base_url": f"http://127.0.0.1:{llm_port}/v1"}]},
        "agent": {"user_limits": USER_LIMITS},
        "store": {"url": store_url} if store_url else {"path": str(tmp / f"{name}.db")},
        "gateway": {"host": "127.0.0.1", "rate_limits": RATE_LIMITS},
    }
    if redis_url:
        config["state"] = {"url": redis_url}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path



def gateway(config: Path, env: dict[str, str]) -> Proc:
    """One ``toolmesh serve`` process with one worker (one uvicorn process per container)."""
    port = procs.free_port()
    argv = [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    return Proc("gateway", argv, port=port, env=env, ready_path="/readyz").start()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
