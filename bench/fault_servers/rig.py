"""The processes of the fault campaign and how to read their resources.

Upstreams, each its own process: ``tm`` (toolmesh's ``ToolServer``, bench/servers/toolmesh_server.py)
and ``sdk`` (the official SDK's server, bench/servers/sdk_server.py), both over Streamable HTTP,
each behind its own :class:`~toolmesh.testing.faultproxy.FaultProxy`; ``crash``
(fault_servers/crashloop_server.py over stdio, crash-looping while its flag file exists); the
scripted LLM (``python -m toolmesh.testing.scripted_llm``) behind a proxy too. In front of them:
``toolmesh serve`` (1 worker, API keys on) and a Hub in this process, both with the servers'
default settings except a 2 s call timeout (3 s for the model).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from gateway_servers import procs
from gateway_servers.procs import PY, Proc
from toolmesh.hub import Hub, ServerConfig
from toolmesh.testing.faultproxy import FaultProxy

BENCH = Path(__file__).resolve().parents[1]
SCRIPTS = {"tm": BENCH / "servers" / "toolmesh_server.py", "sdk": BENCH / "servers" / "sdk_server.py"}
CRASHLOOP = Path(__file__).resolve().parent / "crashloop_server.py"
MCP_TIMEOUT = 2.0
LLM_TIMEOUT = 3.0
MODEL = "scripted-model"
#: The scripted model's answer: long enough that a stream has many chunks to cut between.
ANSWER = "FAULTLESS " + "lorem ipsum " * 40


@dataclass
class Rig:
    """Everything a scenario touches."""

    tmp: Path
    upstreams: dict[str, Proc] = field(default_factory=dict)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)  # tm, sdk, llm
    llm: Proc | None = None
    gateway: Proc | None = None
    key: str = ""
    hub: Hub | None = None
    session: aiohttp.ClientSession | None = None
    crash_flag: Path = Path()

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.port}"


async def start(tmp: Path, log: Any) -> Rig:
    """Start every process and proxy; returns when the gateway is ready and the Hub registered."""
    rig = Rig(tmp=tmp, crash_flag=tmp / "crash.flag")
    for name, script in SCRIPTS.items():
        port = procs.free_port()
        rig.upstreams[name] = Proc(name, [PY, str(script), "http", str(port)], port=port).start()
    rules = tmp / "llm.json"
    rules.write_bytes(orjson.dumps({"default": {"text": ANSWER, "usage": {"input_tokens": 5, "output_tokens": 40},
                                                "chunk_chars": 8}}))
    llm_port = procs.free_port()
    rig.llm = Proc("scripted_llm", [PY, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port),
                                    "--rules", str(rules), "--no-log"], port=llm_port).start()
    for name, up in rig.upstreams.items():
        up.wait_ready()
        rig.proxies[name] = FaultProxy("127.0.0.1", up.port)
    rig.llm.wait_ready()
    rig.proxies["llm"] = FaultProxy("127.0.0.1", llm_port)
    for proxy in rig.proxies.values():
        await proxy.start()

    home = tmp / "home"
    home.mkdir()
    env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(rig, tmp)))
    log("creating an API key with `toolmesh keys create`")
    argv = [PY, "-m", "toolmesh.cli.main", "keys", "create", "--config", str(config), "--tenant", "default",
            "--scopes", "chat,mcp,admin", "--json"]  # admin: /metrics (the task gauge)
    out = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"toolmesh keys create failed: {out.stderr.decode()[-1000:]}")
    rig.key = str(orjson.loads(out.stdout)["key"])
    port = procs.free_port()
    rig.gateway = Proc("gateway", [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port",
                                   str(port), "--workers", "1"], port=port, env=env, ready_path="/readyz").start()
    rig.gateway.wait_ready()

    rig.hub = Hub()
    await rig.hub.__aenter__()
    for name in ("tm", "sdk"):
        await rig.hub.register(ServerConfig(name=name, url=f"http://127.0.0.1:{rig.proxies[name].port}/mcp",
                                            timeout=MCP_TIMEOUT))
    await rig.hub.register(ServerConfig(name="crash", transport="stdio", command=PY,
                                        args=[str(CRASHLOOP), str(rig.crash_flag)], timeout=MCP_TIMEOUT))
    rig.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    return rig


def gateway_config(rig: Rig, tmp: Path) -> dict[str, Any]:
    servers: dict[str, Any] = {
        name: {"url": f"http://127.0.0.1:{rig.proxies[name].port}/mcp", "timeout": MCP_TIMEOUT}
        for name in ("tm", "sdk")
    }
    servers["crash"] = {"transport": "stdio", "command": PY, "args": [str(CRASHLOOP), str(rig.crash_flag)],
                        "timeout": MCP_TIMEOUT}
    return {
        "servers": servers,
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "model": MODEL, "api_key": "unused",
                                 "base_url": f"http://127.0.0.1:{rig.proxies['llm'].port}/v1",
                                 "timeout": LLM_TIMEOUT}]},
        # One benchmark user sends every request: lift the per-user run limits (429 by design otherwise).
        "agent": {"llm_timeout": LLM_TIMEOUT,
                  "user_limits": {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}},
        "store": {"path": str(tmp / "toolmesh.db")},
        "gateway": {"host": "127.0.0.1"},
    }


async def stop(rig: Rig) -> None:
    """Stop everything this rig started (idempotent)."""
    if rig.session is not None:
        await rig.session.close()
        rig.session = None
    if rig.hub is not None:
        await rig.hub.__aexit__(None, None, None)
        rig.hub = None
    for proxy in rig.proxies.values():
        await proxy.stop()
    rig.crash_flag.unlink(missing_ok=True)
    procs.stop_all()


# -- resources -----------------------------------------------------------------------------------


async def gateway_tasks(rig: Rig) -> int | None:
    """The gateway's asyncio tasks: its ``toolmesh_gateway_asyncio_tasks`` gauge (``/metrics``), if it has one."""
    headers = {"Authorization": f"Bearer {rig.key}", "Connection": "close"}
    try:
        async with aiohttp.ClientSession() as session, session.get(rig.gateway_url + "/metrics",
                                                                   headers=headers) as r:
            raw = await r.read() if r.status == 200 else b""
    except aiohttp.ClientError:
        return None
    found = [float(line.rsplit(b" ", 1)[1]) for line in raw.splitlines()
             if line.startswith(b"toolmesh_gateway_asyncio_tasks")]
    return int(sum(found)) if found else None


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    return [int(c) for c in os.listdir("/proc") if c.isdigit() and _ppid(int(c)) == pid]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[-1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def snapshot(root: int, tasks: int | None, *, workers: bool) -> dict[str, float | int | None]:
    """fds and RSS of ``root`` (and, with ``workers``, of its other descendants: the gateway's
    worker processes), how many crash-loop upstream processes hang below it (zombies included:
    an unreaped child is a leak too), and asyncio tasks if known."""
    # The Hub's stdio upstreams are this process's own children; the gateway's hang below its workers.
    pids = procs.tree(root) if workers else [root, *_children(root)]
    upstream = [p for p in pids if p != root and "crashloop_server" in _cmdline(p)]
    own = [p for p in pids if p not in upstream and p != root] if workers else []
    own.append(root)
    return {"fds": sum(_fds(p) for p in own), "rss_mb": round(sum(_rss_mb(p) for p in own), 1),
            "upstream_procs": len(upstream), "tasks": tasks}
