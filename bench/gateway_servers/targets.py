"""The targets of the gateway benchmark: which processes run, where wrk sends its requests.

:func:`start_all` starts the upstream MCP server, the scripted LLM, three gateway processes
(API key on with 2 workers, API key on with 1 worker, ``--no-auth`` with 1 worker), FastMCP's
proxy, mcp-proxy (its default stateful mode and ``--stateless``) and ContextForge
(``contextforge.py``), waits for every one of them, probes each endpoint once and returns the
:class:`Target` list. A peer that cannot run here (not installed) is left out with its reason in
``Setup.skipped``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml

from gateway_servers import contextforge, procs
from gateway_servers.procs import PY, Proc

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
UPSTREAM_SCRIPT = BENCH / "servers" / "toolmesh_server.py"
FASTMCP_PROXY_SCRIPT = Path(__file__).resolve().parent / "fastmcp_proxy.py"
#: mcp-proxy needs the mcp 1.x SDK, which cannot share a virtualenv with toolmesh's mcp 2.x:
#: `make bench` installs it into its own virtualenv here.
MCP_PROXY_VENV = ROOT / ".cache" / "mcp-proxy"
MODEL = "scripted-model"
#: The scripted LLM answers every request that carries tools with a call to add(19, 23).
LLM_RULES = {"rules": [{"when": {"has_tools": True},
                        "respond": {"tool_calls": [{"name": "add", "arguments": {"a": 19, "b": 23}}]}}],
             "models": [MODEL]}
CHAT_PATH = "/v1/chat/completions"
#: (name, API keys on, workers) of the gateway processes.
GATEWAYS = (("toolmesh", True, 2), ("toolmesh_1_worker", True, 1), ("toolmesh_no_auth_1_worker", False, 1))


class Target:
    """One place wrk sends requests to, and the processes whose CPU it costs."""

    def __init__(self, name: str, url: str, wrk_env: dict[str, str], describe: str,
                 own: Callable[[], list[int]], upstream: Callable[[], list[int]] | None = None,
                 proc: Proc | None = None, min_seconds: int = 1) -> None:
        self.name = name
        self.min_seconds = min_seconds  # a slow peer gets longer wrk runs, or its calls would not finish
        self.proc = proc
        self.url = url
        self.wrk_env = wrk_env
        self.describe = describe
        self._own = own
        self._upstream = upstream

    def pids(self) -> list[int]:
        return self._own()

    def log_tail(self) -> str:
        return self.proc.tail() if self.proc is not None else ""

    def upstream_pids(self) -> list[int]:
        return self._upstream() if self._upstream is not None else []


class Setup:
    def __init__(self) -> None:
        self.mcp: list[Target] = []
        self.chat: list[Target] = []
        self.skipped: dict[str, str] = {}


def mcp_proxy_exe() -> str | None:
    """``$TOOLMESH_BENCH_MCP_PROXY``, else ``.cache/mcp-proxy/bin/mcp-proxy``, else ``mcp-proxy`` on PATH."""
    env = os.environ.get("TOOLMESH_BENCH_MCP_PROXY")
    if env:
        return env if Path(env).exists() else None
    local = MCP_PROXY_VENV / "bin" / "mcp-proxy"
    return str(local) if local.exists() else shutil.which("mcp-proxy")


def fastmcp_missing() -> str | None:
    try:
        from fastmcp import Client  # noqa: F401
        from fastmcp.server import create_proxy  # noqa: F401
    except ImportError as exc:
        return f"fastmcp not installed ({exc}); install the 'bench' extra"
    return None


def _gateway_config(tmp: Path, upstream_port: int, llm_port: int) -> Path:
    config = {
        "servers": {"b": {"url": f"http://127.0.0.1:{upstream_port}/mcp", "protocol": "2026-07-28"}},
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "model": MODEL, "api_key": "unused",
                                 "base_url": f"http://127.0.0.1:{llm_port}/v1"}]},
        # One benchmark user sends every request: lift the per-user run limits (defaults: 4 runs
        # at once, 60 requests/min), which would otherwise answer 429 by design.
        "agent": {"user_limits": {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}},
        "store": {"path": str(tmp / "toolmesh.db")},
        "gateway": {"host": "127.0.0.1"},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path



def _modern_env(tool: str, token: str | None = None) -> dict[str, str]:
    env = {"BENCH_KIND": "mcp", "BENCH_ERA": "2026-07-28", "BENCH_TOOL": tool}
    if token:
        env["BENCH_AUTH"] = token
    return env


def start_all(tmp: Path, *, log: Callable[[str], None]) -> Setup:
    """Start every process, wait until each answers, and describe the targets."""
    setup = Setup()
    home = tmp / "home"
    home.mkdir()
    env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}

    up_port, llm_port = procs.free_port(), procs.free_port()
    upstream = Proc("upstream", [PY, str(UPSTREAM_SCRIPT), "http", str(up_port)], port=up_port).start()
    # ContextForge runs its database migrations at start-up (about a minute): start it first.
    cf_base = contextforge.venv()
    cf = contextforge.start(cf_base, tmp) if cf_base is not None else None
    if cf_base is None:
        setup.skipped["contextforge"] = contextforge.missing_reason()
    rules = tmp / "llm_rules.json"
    rules.write_bytes(orjson.dumps(LLM_RULES))
    llm = Proc("scripted_llm", [PY, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port), "--rules",
                                str(rules), "--latency-ms", "0", "--no-log"], port=llm_port).start()
    config = _gateway_config(tmp, up_port, llm_port)
    log("creating an API key with `toolmesh keys create`")
    key = procs.create_key(config, env, "chat,mcp")

    gateways: dict[str, tuple[Proc, bool, int]] = {}
    # "toolmesh" is what a user deploys on this 2-core machine: API keys on, one worker per core.
    for name, auth, workers in GATEWAYS:
        port = procs.free_port()
        argv = [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port", str(port),
                "--workers", str(workers)] + ([] if auth else ["--no-auth"])
        gateways[name] = (Proc(name, argv, port=port, env=env, ready_path="/readyz"), auth, workers)

    upstream.wait_ready()
    llm.wait_ready()
    for gw, _, _ in gateways.values():
        gw.start()

    fastmcp: Proc | None = None
    if (why := fastmcp_missing()) is None:
        port = procs.free_port()
        fastmcp = Proc("fastmcp_proxy", [PY, str(FASTMCP_PROXY_SCRIPT), f"http://127.0.0.1:{up_port}/mcp", str(port)],
                       port=port).start()
    else:
        setup.skipped["fastmcp_proxy"] = why
    mcp_proxies: dict[str, Proc] = {}
    exe = mcp_proxy_exe()
    if exe is None:
        setup.skipped["mcp_proxy"] = "mcp-proxy not installed (`make bench` puts it in .cache/mcp-proxy)"
    else:
        for name, extra in (("mcp_proxy", []), ("mcp_proxy_stateless", ["--stateless"])):
            port = procs.free_port()
            argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING", *extra, "--",
                    PY, str(UPSTREAM_SCRIPT), "stdio"]
            mcp_proxies[name] = Proc(name, argv, port=port, ready_path="/status").start()

    def tree_of(p: Proc) -> Callable[[], list[int]]:
        return p.pids

    direct_url = f"http://127.0.0.1:{up_port}/mcp"
    setup.mcp.append(Target("direct", direct_url, _modern_env("add"), "toolmesh ToolServer (bench/servers/"
                            "toolmesh_server.py) over Streamable HTTP, called directly", tree_of(upstream)))
    for name, (gw, auth, workers) in gateways.items():
        gw.wait_ready()
        token = key if auth else None
        tools = procs.list_tools(gw.port, "/mcp", token)
        tool = next((t for t in tools if t == "add" or t.endswith("__add")), None)
        if tool is None:
            raise RuntimeError(f"{name}: no add tool at /mcp (tools: {tools})")
        setup.mcp.append(Target(
            name, f"http://127.0.0.1:{gw.port}/mcp", _modern_env(tool, token),
            f"toolmesh serve /mcp ({'API key' if auth else '--no-auth'}, {workers} worker{'s' * (workers > 1)}), "
            f"upstream over Streamable HTTP 2026-07-28; tool {tool!r}",
            tree_of(gw), tree_of(upstream), gw))
    if fastmcp is not None:
        fastmcp.wait_ready()
        setup.mcp.append(Target("fastmcp_proxy", f"http://127.0.0.1:{fastmcp.port}/mcp", _modern_env("add"),
                                "FastMCP create_proxy(connected Client, 2026-07-28) on uvicorn, stateless JSON",
                                tree_of(fastmcp), tree_of(upstream), fastmcp))
    for name, proxy in mcp_proxies.items():
        proxy.wait_ready()
        own, kids = _split(proxy)
        wrk_env = {"BENCH_KIND": "mcp", "BENCH_ERA": "2025-11-25", "BENCH_TOOL": "add"}
        if name == "mcp_proxy":
            wrk_env["BENCH_SESSION"] = procs.handshake_session(proxy.port)
            how = "one 2025-11-25 session opened first, shared by every connection"
        else:
            how = "--stateless, 2025-11-25 requests without a session"
        setup.mcp.append(Target(name, f"http://127.0.0.1:{proxy.port}/mcp", wrk_env,
                                f"mcp-proxy in front of the same server script as its stdio child; {how}", own, kids,
                                proxy))

    if cf is not None and cf_base is not None:
        log("waiting for ContextForge (database migrations first)")
        try:
            cf_url, cf_env = contextforge.finish(cf, cf_base, direct_url, log)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:  # recorded, not hidden: the note says why
            setup.skipped["contextforge"] = f"installed but could not be used: {exc}"[:1500]
            cf.stop()  # it must not take CPU from the measured targets
            log(f"ContextForge left out: {setup.skipped['contextforge']}")
        else:
            setup.mcp.append(Target("contextforge", cf_url, cf_env, contextforge.describe(), tree_of(cf),
                                    tree_of(upstream), cf, min_seconds=contextforge.MIN_SECONDS))

    setup.chat.append(Target("direct", f"http://127.0.0.1:{llm_port}{CHAT_PATH}", {"BENCH_KIND": "chat",
                             "BENCH_MODEL": MODEL}, "scripted LLM (aiohttp), 0 ms latency, called directly",
                             tree_of(llm)))
    gw, _, workers = gateways["toolmesh"]
    chat_env = {"BENCH_KIND": "chat", "BENCH_MODEL": MODEL, "BENCH_AUTH": key}
    status, _, raw = procs.post(gw.port, CHAT_PATH, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                                     "tools": [{"type": "function", "function": {"name": "add"}}]},
                                {"Authorization": f"Bearer {key}"})
    if status == 200:
        setup.chat.append(Target("toolmesh", f"http://127.0.0.1:{gw.port}{CHAT_PATH}", chat_env,
                                 f"toolmesh serve /v1/chat/completions (API key, {workers} workers), request carries "
                                 "tools "
                                 "(passthrough to the scripted LLM)", tree_of(gw), tree_of(llm), gw))
    else:
        setup.skipped["openai_toolmesh"] = f"gateway answered {status}: {raw[:200].decode(errors='replace')}"
        log(f"the gateway's {CHAT_PATH} is not usable yet: {setup.skipped['openai_toolmesh']}")
    return setup


def _split(proxy: Proc) -> tuple[Callable[[], list[int]], Callable[[], list[int]]]:
    """mcp-proxy's own process, and its stdio child (the upstream) for CPU accounting."""
    def own() -> list[int]:
        return [proxy.proc.pid] if proxy.proc is not None else []

    def kids() -> list[int]:
        return [p for p in proxy.pids() if proxy.proc is None or p != proxy.proc.pid]

    return own, kids


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("toolmesh", "mcp", "fastmcp-slim", "uvicorn", "uvloop", "httptools"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    exe = mcp_proxy_exe()
    out["mcp-proxy"] = None
    if exe is not None:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False, timeout=30)
        out["mcp-proxy"] = (done.stdout or done.stderr).strip().split()[-1] if done.returncode == 0 else None
    out["mcp-contextforge-gateway"] = contextforge.version(contextforge.venv())
    wrk = procs.wrk_path()
    out["wrk"] = None
    if wrk is not None:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False, timeout=30)
        out["wrk"] = (done.stdout or done.stderr).split()[1] if (done.stdout or done.stderr) else None
    return out
