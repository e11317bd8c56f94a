"""Start ``toolmesh serve`` as a real process for the gateway tests, and make API keys for it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import free_port

TOOLMESH = [sys.executable, "-m", "toolmesh.cli.main"]


def demo_server(name: str, port: int | None = None) -> dict[str, Any]:
    """Config entry for a bundled demo server (stdio, or HTTP on ``port`` started separately)."""
    if port is None:
        return {"transport": "stdio", "command": sys.executable, "args": ["-m", "toolmesh.servers.demo", name]}
    return {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}


class Gateway:
    """A gateway process: ``url``, ``key(...)`` to mint API keys, ``stop()`` (SIGTERM, graceful)."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, no_auth: bool = False, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.home = tmp / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        config = dict(config)
        config.setdefault("store", {"path": str(tmp / "toolmesh.db")})
        self.config_path = tmp / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TOOLMESH_HOME": str(self.home), **(env or {})}
        self.args = [*TOOLMESH, "serve", "--config", str(self.config_path), "--port", str(self.port),
                     "--workers", str(workers)] + (["--no-auth"] if no_auth else [])
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True, timeout: float = 60.0) -> Gateway:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        path = "/readyz" if ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"gateway not {'ready' if ready else 'up'} after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def key(self, tenant: str = "default", scopes: str = "chat,mcp,admin") -> str:
        """Create an API key with the real CLI; returns the key."""
        out = subprocess.run([*TOOLMESH, "keys", "create", "--config", str(self.config_path), "--tenant", tenant,
                              "--scopes", scopes, "--json"], env=self.env, capture_output=True, check=True)
        return str(json.loads(out.stdout)["key"])

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if graceful:
                    self.proc.send_signal(signal.SIGTERM)
                else:
                    os.killpg(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Whatever the gateway started (stdio upstreams) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*gateways: Gateway, together: bool = True) -> Iterator[tuple[Gateway, ...]]:
    """Start ``gateways`` (all at once, as replicas of a rollout; ``together=False``: one after the
    other, e.g. when they migrate one database) and stop every one when the block ends, also when
    one of them failed to start."""
    try:
        if together:
            with ThreadPoolExecutor(len(gateways)) as pool:
                list(pool.map(Gateway.start, gateways))
        else:
            for gw in gateways:
                gw.start()
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def legacy_session(url: str, capabilities: dict[str, Any] | None = None) -> dict[str, str]:
    """Open a handshake-era (2025-11-25) session at ``url``; the headers to use it with."""
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities or {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(url, headers=h, json=init)
    assert r.status_code == 200, r.text
    h["mcp-session-id"] = r.headers["mcp-session-id"]
    h["mcp-protocol-version"] = "2025-11-25"
    httpx.post(url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return h
