"""ContextForge (IBM's MCP gateway, PyPI ``mcp-contextforge-gateway``) as a gateway benchmark peer.

It needs the mcp 1.x SDK and pins of its own, so `make bench` installs it into its own
virtualenv (``.cache/contextforge``, version pinned in the Makefile). Configuration, after its
tuning guide (https://ibm.github.io/mcp-context-forge/manage/tuning/) and ``run-gunicorn.sh``:

* gunicorn with uvicorn workers, ``2 × cores + 1`` of them (the script's default), ``--preload``;
* ``AUTH_REQUIRED=true`` with an HS256 JWT bearer token (its default auth, the peer of toolmesh's
  API key; the guide's lighter option, auth off, would not match the "toolmesh" target);
* ``CACHE_TYPE=memory``, no Redis: one node, stateless Streamable HTTP (its default
  ``USE_STATEFUL_SESSIONS=false``, ``JSON_RESPONSE_ENABLED=true``), so nothing has to be shared
  between workers; SQLite as its database (PostgreSQL is recommended for multi-node setups);
* admin UI off, log level ERROR, SSRF protection on with loopback allowed (the upstream is on
  127.0.0.1), its rate limiter on but with the MCP tier lifted (default 100 requests/min would
  answer 429 to a load test by design, like toolmesh's per-user limits, which are lifted too).

The upstream is registered as a federated gateway (``POST /gateways``, Streamable HTTP), its
``add`` tool put in a virtual server (``POST /servers``), and wrk calls ``/servers/{id}/mcp``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from gateway_servers import procs
from gateway_servers.procs import Proc

ROOT = Path(__file__).resolve().parent.parent.parent
VENV = ROOT / ".cache" / "contextforge"
#: Set to a virtualenv holding mcp-contextforge-gateway, or to "off" to leave the peer out.
ENV_VAR = "TOOLMESH_BENCH_CONTEXTFORGE"
SECRET = "toolmesh-bench-jwt-secret-0123456789abcdef0123456789"
ADMIN = "admin@example.com"
#: Its MCP era: it speaks the 2025-11-25 handshake era (stateless requests need no session).
ERA = "2025-11-25"
#: Seconds per wrk run at least: at 64 connections a call takes seconds on a busy 2-core box, so
#: shorter runs would end before most calls do.
MIN_SECONDS = 10
#: Start-up runs its database migrations first (about a minute on a loaded 2-core machine).
READY_TIMEOUT = 300.0


def venv() -> Path | None:
    """The virtualenv to run it from, or None when it is not installed or turned off."""
    env = os.environ.get(ENV_VAR)
    if env == "off":
        return None
    base = Path(env) if env else VENV
    return base if (base / "bin" / "gunicorn").exists() and (base / "bin" / "mcpgateway").exists() else None


def missing_reason() -> str:
    if os.environ.get(ENV_VAR) == "off":
        return f"turned off (${ENV_VAR}=off)"
    return "mcp-contextforge-gateway not installed (`make bench` puts it in .cache/contextforge)"


def workers() -> int:
    return 2 * (os.cpu_count() or 1) + 1


def _env(base: Path, tmp: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ENVIRONMENT": "production",
        "DATABASE_URL": f"sqlite:///{tmp / 'contextforge.db'}",
        "CACHE_TYPE": "memory",
        "AUTH_REQUIRED": "true",
        "JWT_SECRET_KEY": SECRET,
        "PLATFORM_ADMIN_EMAIL": ADMIN,
        "PLATFORM_ADMIN_PASSWORD": "Bench-Passw0rd-not-default",
        "BASIC_AUTH_PASSWORD": "Bench-Passw0rd-not-default",
        "AUTH_ENCRYPTION_SECRET": "toolmesh-bench-encryption-secret-0123456789",
        "SECURE_COOKIES": "false",  # plain HTTP on loopback
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "false",
        "LOG_LEVEL": "ERROR",
        "SSRF_ALLOW_LOCALHOST": "true",
        "RATE_LIMITING_REDIS_ENABLED": "false",
        "RATE_LIMIT_MEDIUM_RPM": "1000000000",
        "RATE_LIMIT_MEDIUM_BURST": "1000000",
        "PATH": f"{base / 'bin'}:{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(base),
    }


def start(base: Path, tmp: Path) -> Proc:
    """Start gunicorn (not waited for: migrations take a while; see :func:`finish`)."""
    port = procs.free_port()
    home = tmp / "contextforge"
    home.mkdir()
    argv = [str(base / "bin" / "gunicorn"), "mcpgateway.main:app", "-k", "uvicorn.workers.UvicornWorker",
            "--workers", str(workers()), "--preload", "--bind", f"127.0.0.1:{port}", "--timeout", "600",
            "--chdir", str(home)]
    return Proc("contextforge", argv, port=port, env=_env(base, home, port), ready_path="/health").start()


def _token(base: Path, env: dict[str, str]) -> str:
    # Its own tool, with the server's settings: the token carries the environment it must match.
    out = subprocess.run([str(base / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username",
                          ADMIN, "--exp", "240", "--secret", SECRET], capture_output=True, text=True, timeout=120,
                         check=False, env=env)
    token = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or token.count(".") != 2:
        raise RuntimeError(f"create_jwt_token failed ({out.returncode}): {out.stderr[-800:]}")
    return token


def _rest(port: int, method: str, path: str, token: str, body: object | None = None) -> object:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status not in (200, 201):
        raise RuntimeError(f"ContextForge {method} {path} answered {resp.status}: {raw[:500]!r}")
    return json.loads(raw)


def finish(proc: Proc, base: Path, upstream_url: str, log: Callable[[str], None]) -> tuple[str, dict[str, str]]:
    """Wait until it is up, register the upstream, make a virtual server; returns (url, wrk env)."""
    proc.wait_ready(timeout=READY_TIMEOUT)
    token = _token(base, proc.env)
    log("ContextForge: registering the upstream (POST /gateways) and a virtual server")
    _rest(proc.port, "POST", "/gateways", token, {"name": "bench", "url": upstream_url, "transport": "STREAMABLEHTTP"})
    tools = _rest(proc.port, "GET", "/tools", token)
    assert isinstance(tools, list)
    tool = next((t for t in tools if t.get("originalName") == "add"), None)
    if tool is None:
        raise RuntimeError(f"ContextForge did not discover the add tool: {tools!r:.500}")
    server = _rest(proc.port, "POST", "/servers", token,
                   {"server": {"name": "bench", "associated_tools": [tool["id"]]}})
    assert isinstance(server, dict)
    path = f"/servers/{server['id']}/mcp"
    names = procs.list_tools(proc.port, path, token, era=ERA)
    if tool["name"] not in names:
        raise RuntimeError(f"ContextForge {path} lists {names}, not {tool['name']!r}")
    env = {"BENCH_KIND": "mcp", "BENCH_ERA": ERA, "BENCH_TOOL": str(tool["name"]), "BENCH_AUTH": token}
    return f"http://127.0.0.1:{proc.port}{path}", env


def version(base: Path | None) -> str | None:
    if base is None:
        return None
    done = subprocess.run([str(base / "bin" / "python"), "-c", "from importlib.metadata import version; "
                           "print(version('mcp-contextforge-gateway'))"], capture_output=True, text=True,
                          timeout=60, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def describe() -> str:
    return (f"ContextForge (gunicorn + uvicorn workers ×{workers()}, JWT auth, memory cache, SQLite, no Redis) "
            f"/servers/{{id}}/mcp, {ERA} stateless, upstream registered over Streamable HTTP")
