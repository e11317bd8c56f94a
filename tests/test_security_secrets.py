"""Seeded secrets never leave the gateway (issue 11, part 4; docs/security.md): an upstream's
header value, a stdio server's environment, the LLM provider key, the gateway's session secret
and the API keys themselves are planted in a real ``toolmesh serve`` run that logs at debug
level and exports traces; then everything the run wrote (its log, /metrics, the exported spans,
every response body, and the API key in the database) is searched for them."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from conftest import SERVERS, ServerProcess, free_port
from gateway_support import Gateway

PV = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}
# Distinctive values: any of them found anywhere the run wrote is a leak.
HEADER_SECRET = "hdr-5e3d1f0c9a7b4c2e8f6a"
ADMIN_HEADER_SECRET = "adm-7c1b9e2d4f6a8b0c3e5d"
ENV_SECRET = "env-2b4d6f8a0c1e3g5i7k9m"
LLM_SECRET = "sk-llm-9f8e7d6c5b4a3f2e1d0c"
SESSION_SECRET = "sess-0a1b2c3d4e5f6a7b8c9d0e1f"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps every body it is sent."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        type(self).bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def post_mcp(g: Gateway, key: str, method: str, params: dict[str, Any], path: str = "/mcp") -> httpx.Response:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": method, "authorization": f"Bearer {key}"}
    if method == "tools/call":
        headers["mcp-name"] = params["name"]
    return httpx.post(g.url + path, headers=headers, timeout=60,
                      json={"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}})


def test_seeded_secrets_never_appear_in_logs_metrics_traces_or_errors(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    up_port = free_port()
    upstream = ServerProcess([sys.executable, str(SERVERS / "tm_add_server.py"), "http", str(up_port)], up_port).start()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"when": {"last_role": "user", "has_tools": True},
         "respond": {"tool_calls": [{"name": "add__add", "arguments": {"a": 2, "b": 3}}]}},
        {"when": {"last_role": "tool"}, "respond": {"text": "it is {{tool_results}}"}}]}))
    llm_port = free_port()
    llm = ServerProcess([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port),
                         "--rules", str(rules)], llm_port).start()
    config = {
        "servers": {
            "add": {"transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp",
                    "headers": {"Authorization": f"Bearer {HEADER_SECRET}"}},
            "env": {"transport": "stdio", "command": sys.executable, "args": ["-m", "toolmesh.servers.demo", "catalog"],
                    "env": {"CATALOG_API_TOKEN": ENV_SECRET}},
        },
        "llm": {"deployments": [
            {"name": "scripted", "provider": "openai", "api_key": LLM_SECRET,
             "base_url": f"http://127.0.0.1:{llm_port}/v1", "model": "deepseek-chat"},
            {"name": "dead", "provider": "openai", "api_key": LLM_SECRET, "base_url": "http://127.0.0.1:9/v1",
             "model": "gpt-4o-mini"},
        ]},
        "gateway": {"log": {"format": "json", "level": "debug"}, "session_secret": SESSION_SECRET,
                    "otel": {"endpoint": f"http://127.0.0.1:{receiver.server_address[1]}"}},
    }
    g = Gateway(tmp_path, config)
    bodies: list[str] = []
    try:
        g.start()
        key = g.key("default", "chat,mcp,admin")
        api_keys = [key]
        auth = {"Authorization": f"Bearer {key}"}

        def keep(r: httpx.Response) -> httpx.Response:
            bodies.append(r.text)
            return r

        # Tool calls through both servers, and errors of every kind on the way.
        assert keep(post_mcp(g, key, "tools/call", {"name": "add__add", "arguments": {"a": 1, "b": 2}})).status_code == 200
        keep(post_mcp(g, key, "tools/list", {}))
        keep(post_mcp(g, key, "tools/call", {"name": "add__add", "arguments": {"a": "x"}}))
        keep(post_mcp(g, key, "tools/call", {"name": "nope__nope", "arguments": {}}))
        # Handshake-era session (ids are sealed with the session secret).
        init = keep(httpx.post(g.url + "/mcp", headers={**auth, "accept": "application/json, text/event-stream"},
                               json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                                   "protocolVersion": "2025-11-25", "capabilities": {},
                                   "clientInfo": {"name": "t", "version": "1"}}}, timeout=30))
        assert init.status_code == 200
        # Chat through the LLM (agent mode, a tool call) and with the dead deployment.
        chat = keep(httpx.post(g.url + "/v1/chat/completions", headers=auth, timeout=60, json={
            "model": "deepseek-chat", "messages": [{"role": "user", "content": "2 + 3?"}]}))
        assert chat.status_code == 200, chat.text
        keep(httpx.post(g.url + "/v1/chat/completions", headers=auth, timeout=60, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        # Bad keys: the refusal does not echo them.
        for bad in (key[:-2] + "zz", "tm_" + "Q" * 43):
            api_keys.append(bad)
            assert keep(httpx.get(g.url + "/admin/servers", headers={"Authorization": f"Bearer {bad}"})).status_code == 401
        # Admin: keys minted, a server registered with a secret header and called while it is down.
        made = keep(httpx.post(g.url + "/admin/keys", headers=auth, json={"scopes": ["mcp"]}))
        api_keys.append(made.json()["key"])
        bodies.pop()  # the one answer that must show a key: the minting of it
        keep(httpx.post(g.url + "/admin/servers", headers=auth, json={
            "name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp",
            "headers": {"X-Api-Key": ADMIN_HEADER_SECRET}}))
        keep(post_mcp(g, key, "tools/list", {}, path="/servers/down/mcp"))
        keep(httpx.post(g.url + "/admin/servers/down/test", headers=auth, timeout=60))
        keep(httpx.post(g.url + "/admin/servers/add/test", headers=auth, timeout=60))
        listing = keep(httpx.get(g.url + "/admin/servers", headers=auth))
        assert "***" in listing.text  # shown masked
        metrics = keep(httpx.get(g.url + "/metrics", headers=auth))
        assert metrics.status_code == 200
        # Spans are exported in batches (1 s): wait for the MCP and chat ones.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(Collector.bodies) < 2:
            time.sleep(0.2)
    finally:
        g.stop()
        upstream.stop()
        llm.stop()
        receiver.shutdown()
    assert Collector.bodies, "no spans were exported"
    written = {
        "log": g.log.read_bytes(),
        "traces": b"".join(Collector.bodies),
        "responses": "\n".join(bodies).encode(),
    }
    # The haystacks are real: the run's own traffic is in them.
    assert len(written["log"]) > 1000 and b"down" in written["log"]
    assert b"tools/call" in written["traces"] and b"gateway openai" in written["traces"]
    assert b"toolmesh_" in written["responses"]  # the /metrics exposition
    secrets = [HEADER_SECRET, ADMIN_HEADER_SECRET, ENV_SECRET, LLM_SECRET, SESSION_SECRET, *api_keys]
    leaks = [(where, s[:12]) for where, data in written.items() for s in secrets if s.encode() in data]
    assert leaks == []
    # The database keeps API keys as SHA-256 only (server configs it must keep to reconnect).
    db = b"".join(p.read_bytes() for p in g.tmp.glob("toolmesh.db*"))
    assert [k[:12] for k in api_keys if k.encode() in db] == []
