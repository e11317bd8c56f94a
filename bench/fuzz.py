"""``toolmesh bench fuzz``: every HTTP surface of a real ``toolmesh serve`` process, fuzzed.

Surfaces (issue 11, part 2): ``/v1/*`` and ``/admin/*`` from ``/openapi.json`` with schemathesis
(positive and negative cases), ``/mcp`` in the handshake era (2025-11-25, a session) and in
2026-07-28 (per-request envelope and headers), ``/servers/catalog/mcp``, WebSocket ``/ws`` and
legacy SSE (``/sse`` + ``/messages/``). Each surface gets ``--messages`` messages (default
10,000): half property-based (hypothesis strategies), half mutation-based (valid messages captured
first, then broken: members dropped, types swapped, bytes flipped, bodies cut).

Checked: no 5xx and no JSON-RPC ``-32603`` ("unexplained"); a body that is not JSON gets ``-32700``;
schemathesis' response checks (status codes and content types documented, bodies match the
schemas); the gateway process alive and ready afterwards with no traceback in its log; and every
record stored before the run (API keys, usage rows, sessions, audit entries) still there, unchanged.
Real processes: the scripted LLM, the gateway (with a stdio demo server), all on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.sync.client import connect as ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path

from fuzz_gen import CAPS_KEY, LEGACY, MODERN, PV_KEY, VALID, Surface, answer_of, mutate, run_property

TOOLMESH = [sys.executable, "-m", "toolmesh.cli.main"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Hosts a fuzzed server registration may name: literals and localhost (no DNS lookups leave the box).
URLS = ["http://127.0.0.1:9/mcp", "http://169.254.169.254/latest", "http://[::1]:9/mcp", "ws://127.0.0.1:9/ws",
        "http://localhost:9/sse", "http://0.0.0.0/", "not a url", ""]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise TimeoutError(url)


# -- the gateway under test ------------------------------------------------------------------------------
class Stack:
    """The scripted LLM and a gateway with the catalog demo server, in a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "TOOLMESH_HOME": str(tmp / "home")}
        self.log = tmp / "gateway.log"

    def start(self) -> Stack:
        rules = self.tmp / "rules.json"
        rules.write_text(json.dumps({"default": {"text": "ok"}}))
        llm_port = free_port()
        self.procs.append(subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port",
                                            str(llm_port), "--rules", str(rules), "--no-log"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{llm_port}/v1/models", self.procs[-1])
        config = {
            "servers": {"catalog": {"transport": "stdio", "command": sys.executable,
                                    "args": ["-m", "toolmesh.servers.demo", "catalog"]}},
            "llm": {"deployments": [{"name": "scripted", "provider": "openai", "api_key": "x",
                                     "base_url": f"http://127.0.0.1:{llm_port}/v1", "model": "gpt-4o-mini"}]},
            "gateway": {"host": "127.0.0.1", "max_body": 65536},
            "store": {"path": str(self.tmp / "toolmesh.db")},
        }
        self.config = self.tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self.log.open("ab") as out:
            self.gateway = subprocess.Popen([*TOOLMESH, "serve", "--config", str(self.config), "--port",
                                             str(self.port)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.procs.append(self.gateway)
        wait_http(self.url + "/readyz", self.gateway)
        out_key = subprocess.run([*TOOLMESH, "keys", "create", "--config", str(self.config), "--tenant", "default",
                                  "--scopes", "chat,mcp,admin", "--json"], env=self.env, capture_output=True,
                                 check=True)
        self.key = str(json.loads(out_key.stdout)["key"])
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.gateway.pid, 9)


def records(client: httpx.Client) -> dict[str, Any]:
    """What the store holds for the tenant, as the admin API shows it."""
    keys = client.get("/admin/keys").json()["keys"]
    usage = client.get("/admin/usage", params={"group_by": "user,model"}).json()["rows"]
    audit = client.get("/admin/audit", params={"limit": 10_000}).json()["entries"]
    sessions = client.get("/admin/sessions", params={"limit": 10_000}).json()["sessions"]
    return {"keys": keys, "usage": usage, "audit": audit, "sessions": sessions}


def seed_records(stack: Stack, client: httpx.Client) -> None:
    """Keys, usage rows, sessions and audit entries made before the fuzzing starts."""
    for i in range(3):
        assert client.post("/admin/keys", json={"scopes": ["chat"], "name": f"seed-{i}"}).status_code == 201
        r = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "user": f"seed-user-{i}",
                                                      "metadata": {"session_id": f"seed-session-{i}"},
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
    mcp = McpHttp(client, "/mcp", LEGACY)
    for sku in ("SKU-1001", "SKU-1002", "nope"):
        mcp.call({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                  "params": {"name": mcp.tool("get_product_info"), "arguments": {"sku": sku}}})
    deadline = time.monotonic() + 15  # audit rows are written in batches
    while len(records(client)["audit"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)


def still_there(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Records of ``before`` missing or changed in ``after`` (new records are fine)."""
    lost = []
    ids = {"keys": "key_id", "sessions": "id"}
    for kind, rows in before.items():
        if kind == "usage":
            now = {(r["user"], r["model"]): r for r in after["usage"]}
            for r in rows:  # usage only grows: the fuzzing chats add to it
                later = now.get((r["user"], r["model"]))
                if later is None or later["requests"] < r["requests"]:
                    lost.append(f"usage {r['user']}/{r['model']}")
            continue
        if kind == "audit":  # rows without an id: each earlier row must still be there exactly
            now_audit = {json.dumps(r, sort_keys=True) for r in after["audit"]}
            lost += [f"audit {r}" for r in rows if json.dumps(r, sort_keys=True) not in now_audit]
            continue
        key = ids[kind]
        now_rows = {r.get(key): r for r in after[kind]}
        for r in rows:
            later = now_rows.get(r.get(key))
            if later is None or (kind != "sessions" and later != r):
                lost.append(f"{kind} {r.get(key)}")
    return lost


# -- MCP over HTTP --------------------------------------------------------------------------------------
class McpHttp:
    """A JSON-RPC client of one MCP endpoint in one protocol era."""

    def __init__(self, client: httpx.Client, path: str, era: str) -> None:
        self.client, self.path, self.era = client, path, era
        self.headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                        "mcp-protocol-version": era}
        if era == LEGACY:
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}
            r = client.post(path, json=init, headers=self.headers)
            assert r.status_code == 200, r.text
            self.headers["mcp-session-id"] = r.headers["mcp-session-id"]
            client.post(path, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers)
        listed = self.call({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}})
        self.tools = [t["name"] for t in listed["result"]["tools"]]

    def tool(self, suffix: str) -> str:
        """The exposed name of a catalog tool (``/mcp`` may prefix it with the server's name)."""
        return next(t for t in self.tools if t.endswith(suffix))

    def valid(self) -> list[dict[str, Any]]:
        """Valid requests of this endpoint (the mutation seeds)."""
        return [{**m, "params": {**m["params"], "name": self.tool(m["params"]["name"])}}
                if m["method"] == "tools/call" else m for m in VALID]

    def envelope(self, msg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        if self.era == LEGACY:
            return msg, self.headers
        p = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        msg = {**msg, "params": {**p, "_meta": {PV_KEY: MODERN, CAPS_KEY: {}}}}
        method = msg.get("method")
        # header values are ASCII without control characters (a mismatch is answered -32020)
        safe = isinstance(method, str) and method.isascii() and method.isprintable()
        headers = {**self.headers, "mcp-method": method if safe else "x"}
        name = msg["params"].get("uri" if msg.get("method") == "resources/read" else "name")
        if isinstance(name, str) and name.isascii() and name.isprintable():
            headers["mcp-name"] = name
        return msg, headers

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(self.path, content=body, headers=headers)

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        msg, headers = self.envelope(msg)
        r = self.post(json.dumps(msg).encode(), headers)
        assert r.status_code == 200, r.text
        return dict(answer_of(r))


def fuzz_mcp_http(client: httpx.Client, path: str, era: str, n: int, seed: int, surface: Surface) -> None:
    mcp = McpHttp(client, path, era)
    rng = random.Random(seed)

    def send(body: bytes, base: dict[str, Any] | None = None) -> None:
        headers = mcp.headers
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            _, headers = mcp.envelope(decoded if base is None else base)
            if era == MODERN:
                body = json.dumps(mcp.envelope(decoded)[0]).encode()
        r = mcp.post(body, headers)
        surface.http(r.status_code, body.decode("utf-8", "replace"))
        answer = answer_of(r)
        surface.rpc(answer, body.decode("utf-8", "replace"))
        if decoded is None and body.strip() and r.status_code == 400:
            code = answer.get("error", {}).get("code") if isinstance(answer, dict) else None
            if code != -32700:
                surface.unexplained.append(f"not JSON but code {code}: {body[:80]!r}")

    run_property(n // 2, seed, send)
    valid = mcp.valid()
    for _ in range(n - n // 2):
        base = rng.choice(valid)
        send(mutate(base, rng), base)


# -- WebSocket and legacy SSE ----------------------------------------------------------------------------
def fuzz_websocket(stack: Stack, n: int, seed: int, surface: Surface) -> None:
    rng = random.Random(seed)
    url = stack.url.replace("http://", "ws://") + "/ws"
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}})
    bodies: list[bytes] = []
    run_property(n // 2, seed, bodies.append)
    bodies += [mutate(rng.choice(VALID), rng) for _ in range(n - n // 2)]
    ws = None
    for body in bodies:
        if ws is None:
            ws = ws_connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {stack.key}"},
                            open_timeout=10)
            ws.send(init)
            ws.recv(timeout=10)
            ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        try:
            ws.send(body.decode("utf-8", "replace"))
            surface.sent += 1
            # a ping after each message: its answer proves the connection is still served
            ws.send(json.dumps({"jsonrpc": "2.0", "id": "probe", "method": "ping"}))
            while True:
                answer = json.loads(ws.recv(timeout=10))
                surface.rpc(answer, body.decode("utf-8", "replace"))
                if isinstance(answer, dict) and answer.get("id") == "probe":
                    break
        except Exception as exc:  # a closed connection must be a deliberate close, never a crash
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            if code is None or code == 1011:
                surface.unexplained.append(f"WebSocket {type(exc).__name__} {code}: {body[:80]!r}")
            with contextlib.suppress(Exception):
                ws.close()
            ws = None
    if ws is not None:
        ws.close()


def fuzz_sse(stack: Stack, n: int, seed: int, surface: Surface) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {stack.key}"}
    answers: list[Any] = []
    endpoint: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=stack.url, headers=headers, timeout=None) as c, c.stream("GET", "/sse") as r:
            event = None
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                    if event == "endpoint":
                        endpoint.append(data)
                        ready.set()
                    else:
                        with contextlib.suppress(ValueError):
                            answers.append(json.loads(data))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if not ready.wait(20):
        surface.unexplained.append("no endpoint event on /sse")
        return
    bodies: list[bytes] = [json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}).encode()]
    run_property(n // 2, seed, bodies.append)
    bodies += [mutate(rng.choice(VALID), rng) for _ in range(n - n // 2)]
    with httpx.Client(base_url=stack.url, headers={**headers, "content-type": "application/json"},
                      timeout=30) as client:
        for body in bodies:
            r = client.post(endpoint[0], content=body)
            surface.http(r.status_code, body.decode("utf-8", "replace"))
    time.sleep(1.0)
    stop.set()
    for answer in answers:
        surface.rpc(answer, "(sse)")


# -- /v1 and /admin through schemathesis -----------------------------------------------------------------
def fuzz_openapi(stack: Stack, client: httpx.Client, prefix: str, n: int, seed: int, surface: Surface) -> None:
    doc = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    ops = [op.ok() for op in schema.get_all_operations()]
    ops = [op for op in ops if op.path.startswith(prefix)]
    rng = random.Random(seed)
    captured: list[tuple[str, str, Any]] = []
    per_op = max(1, (n // 2) // (2 * len(ops)))

    def send(case: Any) -> None:
        body = case.body
        if isinstance(body, dict) and "url" in body and case.path.startswith("/admin/servers"):
            body["url"] = rng.choice(URLS)  # no DNS lookups of generated names
        kwargs: dict[str, Any] = {"params": case.query or None, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes | str):
            kwargs["content"] = body.encode() if isinstance(body, str) else body
        elif not isinstance(body, schemathesis.core.NotSet):
            try:
                kwargs["content"] = json.dumps(body).encode()
            except (TypeError, ValueError):
                return  # not expressible as JSON
        r = client.request(case.method, case.formatted_path, **kwargs)
        surface.http(r.status_code, f"{case.method} {case.formatted_path} {str(body)[:200]}")
        try:
            case.validate_response(r, checks=CHECKS)
        except BaseExceptionGroup as group:  # schemathesis' FailureGroup: one per failed check
            for failure in group.exceptions:
                surface.check_failures[getattr(failure, "title", type(failure).__name__)] += 1
        except Exception as exc:
            surface.check_failures[getattr(exc, "title", type(exc).__name__)] += 1
        if r.status_code < 300 and case.method in ("POST", "PUT", "PATCH") and isinstance(body, dict):
            captured.append((case.method, case.formatted_path, body))

    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=per_op, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(mode))
            def case(c: Any) -> None:
                send(c)

            case()
    if not captured:
        captured = [("POST", "/v1/chat/completions" if prefix == "/v1" else "/admin/keys",
                     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                     if prefix == "/v1" else {"scopes": ["chat"]})]
    while surface.sent < n:
        method, path, body = rng.choice(captured)
        raw = mutate(body, rng)
        r = client.request(method, path, content=raw, headers={"content-type": "application/json"})
        surface.http(r.status_code, f"{method} {path} {raw[:200]!r}")


# -- the campaign ---------------------------------------------------------------------------------------
def run(n: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="toolmesh-fuzz-") as tmp:
        stack = Stack(Path(tmp)).start()
        try:
            with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"},
                              timeout=60) as client:
                seed_records(stack, client)
                before = records(client)
                surfaces: dict[str, Surface] = {}
                started = time.monotonic()
                plan: list[tuple[str, Callable[[Surface], None]]] = [
                    ("/mcp 2025-11-25", lambda s: fuzz_mcp_http(client, "/mcp", LEGACY, n, seed, s)),
                    ("/mcp 2026-07-28", lambda s: fuzz_mcp_http(client, "/mcp", MODERN, n, seed + 1, s)),
                    ("/servers/catalog/mcp", lambda s: fuzz_mcp_http(
                        client, "/servers/catalog/mcp", LEGACY if seed % 2 else MODERN, n, seed + 2, s)),
                    ("/ws", lambda s: fuzz_websocket(stack, n, seed + 3, s)),
                    ("/sse + /messages/", lambda s: fuzz_sse(stack, n, seed + 4, s)),
                    ("/v1/*", lambda s: fuzz_openapi(stack, client, "/v1", n, seed + 5, s)),
                    ("/admin/*", lambda s: fuzz_openapi(stack, client, "/admin", n, seed + 6, s)),
                ]
                timings = {}
                for name, fn in plan:
                    t0 = time.monotonic()
                    surfaces[name] = Surface(name)
                    fn(surfaces[name])
                    timings[name] = round(time.monotonic() - t0, 1)
                    print(json.dumps({name: {**surfaces[name].report(), "seconds": timings[name]}}),
                          file=sys.stderr, flush=True)  # progress: a long campaign shows each surface's figures
                alive = stack.gateway.poll() is None and httpx.get(stack.url + "/readyz", timeout=10).status_code == 200
                after = records(client)
            log = stack.log.read_text(errors="replace")
        finally:
            stack.stop()
    return {
        "messages_per_surface": n, "seed": seed, "seconds": round(time.monotonic() - started, 1),
        "gateway_alive": alive, "tracebacks_in_log": log.count("Traceback"),
        "records_before": {k: len(v) for k, v in before.items()},
        "records_lost": still_there(before, after),
        "surfaces": {name: {**s.report(), "seconds": timings[name]} for name, s in surfaces.items()},
    }


def ok(result: dict[str, Any]) -> bool:
    return (result["gateway_alive"] and not result["tracebacks_in_log"] and not result["records_lost"]
            and all(s["unexplained"] == 0 for s in result["surfaces"].values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="toolmesh bench fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    ap.add_argument("--quick", action="store_true", help="a short run (200 messages per surface)")
    ap.add_argument("--messages", type=int, default=None, help="messages per surface (default 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.messages or (200 if args.quick else 10_000)
    result = run(n, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'surface':24} {'messages':>9} {'5xx/-32603':>11} {'check fails':>12} {'s':>7}  statuses")
        for name, s in result["surfaces"].items():
            print(f"{name:24} {s['messages']:>9} {s['unexplained']:>11} {sum(s['check_failures'].values()):>12} "
                  f"{s['seconds']:>7}  {s['statuses']}")
        print(f"gateway alive: {result['gateway_alive']}, tracebacks: {result['tracebacks_in_log']}, "
              f"records lost: {len(result['records_lost'])} of {result['records_before']}")
    return 0 if ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
