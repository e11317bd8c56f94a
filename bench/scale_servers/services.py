"""The processes `bench scale` starts besides the gateways: redis-server, PostgreSQL, haproxy,
the upstream toolmesh server and the scripted LLM; plus the gateway's config and API key.

PostgreSQL is started the way ``tests/services.py`` (``PostgresServer``) does it, duplicated
minimally here because that module belongs to the test suite (it skips with pytest when a
package is missing): ``initdb`` into a temporary directory, trust authentication on 127.0.0.1
on a free port, fsync off; as root it runs as the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway_servers import procs
from gateway_servers.procs import PY, Proc
from gateway_servers.targets import UPSTREAM_SCRIPT

MODEL = "scripted-model"
#: Limits that admit everything: the cost of deciding, not of refusing.
RATE_LIMITS = {"tenant": {"requests_per_minute": 1e9, "burst": 1_000_000},
               "key": {"requests_per_minute": 1e9, "burst": 1_000_000}}
#: One benchmark user sends every agent request: per-user limits high enough to admit all of
#: them (still decided, in Redis with the shared state on).
USER_LIMITS = {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}

_PG: list[Postgres] = []


def need(binary: str) -> str:
    """The path of a Debian-packaged program, or exit saying it is missing."""
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{binary}"), reverse=True))
         if os.path.exists(p)), None)
    if found is None:
        raise SystemExit(f"{binary} is not installed (Debian package; `make test` installs it)")
    return found


class Postgres:
    """A throwaway PostgreSQL cluster (see the module doc); :meth:`pids` includes its backends."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tm-bench-pg-"))
        self.port = procs.free_port()
        self.user: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
                    self.user = name
                    break
            else:
                raise SystemExit("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://toolmesh:unused@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        subprocess.run([need("initdb"), "-D", str(self.workdir / "data"), "-U", "toolmesh", "--auth=trust",
                        "-E", "UTF8", "--no-sync", "--no-instructions"], user=self.user, check=True,
                       capture_output=True, timeout=120, cwd=self.workdir)
        log = open(self.workdir / "postgres.log", "ab")  # the child keeps its own copy
        self.proc = subprocess.Popen(
            [need("postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.workdir), "-F", "-c", "max_connections=200"],
            user=self.user, stdout=log, stderr=log, cwd=self.workdir, start_new_session=True)
        log.close()
        _PG.append(self)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self._log()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new empty database (one per configuration, so each starts from a fresh schema)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def pids(self) -> list[int]:
        return procs.tree(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def stop_all() -> None:
    """Stop every process of the benchmark (idempotent; also used by the signal handler)."""
    procs.stop_all()
    while _PG:
        _PG.pop().stop()


def redis(tmp: Path) -> Proc:
    port = procs.free_port()
    return Proc("redis", [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(tmp)], port=port).start()


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
    port = procs.free_port()
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    cfg = tmp / f"haproxy-{port}.cfg"
    cfg.write_text("global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 5s\n"
                   "    timeout client 60s\n    timeout server 60s\n\n"
                   f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\n"
                   f"backend be\n    balance roundrobin\n{servers}\n")
    return Proc("haproxy", [need("haproxy"), "-f", str(cfg), "-db"], port=port).start()


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


def create_key(config: Path, env: dict[str, str]) -> str:
    out = subprocess.run([PY, "-m", "toolmesh.cli.main", "keys", "create", "--config", str(config), "--tenant",
                          "default", "--scopes", "chat,mcp", "--json"], env=env, capture_output=True, check=False,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"toolmesh keys create failed: {out.stderr.decode()[-1000:]}")
    return str(orjson.loads(out.stdout)["key"])


def gateway(config: Path, env: dict[str, str]) -> Proc:
    """One ``toolmesh serve`` process with one worker (one uvicorn process per container)."""
    port = procs.free_port()
    argv = [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    return Proc("gateway", argv, port=port, env=env, ready_path="/readyz").start()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
