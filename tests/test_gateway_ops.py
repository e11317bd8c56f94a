"""Operations (GW-5) of a real ``toolmesh serve`` process: health, readiness, Prometheus metrics,
JSON logs, OpenTelemetry export to a real OTLP/HTTP receiver, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from conftest import ServerProcess, free_port
from gateway_support import Gateway
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.types import Usage
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sqlite import Store

ADD = str(Path(__file__).parent / "servers" / "tm_add_server.py")
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}
LLM = {"deployments": [{"name": "d", "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x",
                        "model": "gpt-4o-mini"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess([sys.executable, ADD, "http", str(port)], port).start()
    yield proc
    proc.stop()


def config_for(upstream: ServerProcess, **gateway: Any) -> dict[str, Any]:
    return {"servers": {"add": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"}},
            "llm": LLM, "gateway": gateway}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("ops"), config_for(upstream, log={"format": "json", "level": "info"})).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.key("default", "chat,mcp,admin")


def call_tool(url: str, key: str, name: str, arguments: dict[str, Any], timeout: float = 60) -> httpx.Response:
    """One stateless 2026-07-28 ``tools/call`` through the gateway's ``/mcp``."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": name,
               "authorization": f"Bearer {key}"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": ENV}}
    return httpx.post(url + "/mcp", headers=headers, json=body, timeout=timeout)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample (labels matched as a subset), or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part) if rest else {}
        if all(found.get(k) == json.dumps(v) for k, v in labels.items()):
            return float(value)
    return None


# -- health and readiness ------------------------------------------------------------------------
def test_health_and_ready_need_no_key(gw: Gateway) -> None:
    h = httpx.get(gw.url + "/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    r = httpx.get(gw.url + "/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["upstreams_tried"]["default/add"]["ok"] is True
    assert httpx.post(gw.url + "/healthz").status_code == 405


def test_not_ready_until_every_upstream_was_tried(tmp_path: Path, upstream: ServerProcess) -> None:
    # An upstream that accepts TCP connections and never answers: the start-up probe waits
    # for its connect timeout, and /readyz says 503 until then.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    config = config_for(upstream)
    config["servers"]["silent"] = {"transport": "http", "url": f"http://127.0.0.1:{hole.getsockname()[1]}/mcp",
                                   "connect_timeout": 4, "retries": 0}
    g = Gateway(tmp_path, config).start(ready=False)
    try:
        r = httpx.get(g.url + "/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "starting" and "default/silent" not in body["upstreams_tried"]
        assert body["upstreams_configured"] == 2
        assert httpx.get(g.url + "/healthz").status_code == 200
        deadline = time.monotonic() + 60
        while httpx.get(g.url + "/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        tried = httpx.get(g.url + "/readyz").json()["upstreams_tried"]
        assert tried["default/silent"]["ok"] is False and tried["default/add"]["ok"] is True
    finally:
        g.stop()
        hole.close()


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_need_admin_scope(gw: Gateway) -> None:
    assert httpx.get(gw.url + "/metrics").status_code == 401
    chat = gw.key("default", "chat,mcp")
    assert httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {chat}"}).status_code == 403


def test_metrics_cover_requests_tools_circuits_and_llm_usage(gw: Gateway, key: str) -> None:
    h = {"Authorization": f"Bearer {key}"}
    r = call_tool(gw.url, key, "add__add", {"a": 2, "b": 3})
    assert r.status_code == 200 and "5" in r.text, r.text
    assert httpx.get(gw.url + "/admin/nothing", headers=h).status_code == 404
    asyncio.run(_record_usage(str(gw.tmp / "toolmesh.db")))

    m = httpx.get(gw.url + "/metrics", headers=h)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert sample(text, "toolmesh_gateway_requests_total", route="mcp", status="200", tenant="default") == 1
    assert sample(text, "toolmesh_gateway_requests_total", route="admin", status="404", tenant="default") == 1
    assert sample(text, "toolmesh_gateway_request_duration_seconds_count", route="mcp", tenant="default") == 1
    assert sample(text, "toolmesh_gateway_request_duration_seconds_bucket", route="mcp", tenant="default",
                  le="+Inf") == 1
    assert sample(text, "toolmesh_tool_calls_total", server="add", tool="add") == 1
    assert sample(text, "toolmesh_gateway_circuit_state", tenant="default", server="add", state="closed") == 1
    assert sample(text, "toolmesh_gateway_circuit_state", tenant="default", server="add", state="open") == 0
    assert sample(text, "toolmesh_gateway_ready") == 1
    assert sample(text, "toolmesh_gateway_in_flight") == 1  # this scrape
    assert sample(text, "toolmesh_gateway_upstream_reachable", tenant="default", server="add") == 1
    assert sample(text, "toolmesh_llm_tokens_total", tenant="default", model="gpt-4o-mini", type="input") == 1500
    assert sample(text, "toolmesh_llm_tokens_total", tenant="acme", model="gpt-4o-mini", type="output") == 7
    assert sample(text, "toolmesh_llm_requests_total", tenant="default", model="gpt-4o-mini") == 2
    cost = sample(text, "toolmesh_llm_cost_usd_total", tenant="default", model="gpt-4o-mini")
    assert cost is not None and cost > 0
    assert sample(text, "toolmesh_llm_deployment_successes_total", deployment="d", model="gpt-4o-mini") == 0

    # Counters only grow: rows added later are added to the totals, earlier ones not twice.
    asyncio.run(_record_usage(str(gw.tmp / "toolmesh.db")))
    again = httpx.get(gw.url + "/metrics", headers=h).text
    assert sample(again, "toolmesh_llm_tokens_total", tenant="default", model="gpt-4o-mini", type="input") == 3000
    assert sample(again, "toolmesh_gateway_requests_total", route="metrics", status="200", tenant="default") == 1


async def _record_usage(db: str) -> None:
    async with Store(db) as store:
        ledger = UsageLedger(store, ModelRegistry.load().price)
        at = calendar.timegm((2026, 3, 1, 12, 0, 0, 0, 0, 0))
        for tenant, n_in, n_out in (("default", 1000, 100), ("default", 500, 50), ("acme", 3, 7)):
            ledger.record(tenant=tenant, user="u", session=None, model="gpt-4o-mini", provider="openai",
                          usage=Usage(n_in, n_out), latency_ms=5.0, at=at)


def test_logs_are_json_lines(gw: Gateway, key: str) -> None:
    lines = [ln for ln in gw.log.read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert records, "the gateway logged nothing"
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    loggers = {r["logger"] for r in records}
    assert "uvicorn.error" in loggers and any(name.startswith("toolmesh") for name in loggers)


# -- tracing -----------------------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_otel_spans_reach_an_otlp_http_receiver(tmp_path: Path, upstream: ServerProcess) -> None:
    trace_pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    config = config_for(upstream, otel={"endpoint": endpoint, "service_name": "tm-test"},
                        log={"format": "text", "level": "info"})
    # A model that asks for add__add once, then answers: the agent-mode run's tool call gets a span too.
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"when": {"last_role": "user", "has_tools": True},
         "respond": {"tool_calls": [{"name": "add__add", "arguments": {"a": 2, "b": 3}}]}},
        {"when": {"last_role": "tool"}, "respond": {"text": "it is {{tool_results}}"}}]}))
    llm_port = free_port()
    llm = ServerProcess([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port),
                         "--rules", str(rules)], llm_port).start()
    config["llm"] = {"deployments": [{"name": "scripted", "provider": "openai", "api_key": "k",
                                      "base_url": f"http://127.0.0.1:{llm_port}/v1", "model": "deepseek-chat"}]}
    g = Gateway(tmp_path, config).start()
    try:
        key = g.key("default", "mcp,admin,chat")
        # The caller's trace (W3C traceparent) is joined: the gateway's span is its child.
        caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        traced = httpx.post(g.url + "/mcp", timeout=60, headers={
            "accept": "application/json, text/event-stream", "content-type": "application/json",
            "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": "add__add",
            "authorization": f"Bearer {key}", "traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                  "params": {"name": "add__add", "arguments": {"a": 1, "b": 1}, "_meta": ENV}})
        assert traced.status_code == 200
        assert httpx.get(g.url + "/admin/servers", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        chat = httpx.post(g.url + "/v1/chat/completions", timeout=60, headers={"authorization": f"Bearer {key}"},
                          json={"model": "deepseek-chat", "messages": [{"role": "user", "content": "2 + 3?"}]})
        assert chat.status_code == 200 and "5" in chat.json()["choices"][0]["message"]["content"], chat.text
        spans: dict[str, Any] = {}
        tool_spans: list[Any] = []
        deadline = time.monotonic() + 30
        wanted = {"gateway mcp", "gateway admin", "gateway openai", "tools/call add/add"}
        while not (wanted <= set(spans) and len(tool_spans) >= 2) and time.monotonic() < deadline:
            tool_spans = []
            for path, body in list(_Receiver.bodies):
                assert path == "/v1/traces"
                req = trace_pb.ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            spans[span.name] = (service, span)
                            if span.name == "tools/call add/add":
                                tool_spans.append(span)
            time.sleep(0.2)
        _, run = spans["gateway openai"]  # the agent run's tool call: a child of the /v1 request's span
        [agent_call] = [t for t in tool_spans if t.parent_span_id == run.span_id]
        assert agent_call.trace_id == run.trace_id
        assert {a.key: a.value.string_value for a in agent_call.attributes}["mcp.status"] == "ok"
        service, span = spans["gateway mcp"]
        attrs = {a.key: a.value for a in span.attributes}
        assert service == "tm-test"
        assert attrs["http.route"].string_value == "mcp"
        assert attrs["http.response.status_code"].int_value == 200
        assert attrs["toolmesh.tenant"].string_value == "default"
        assert span.end_time_unix_nano > span.start_time_unix_nano
        assert span.trace_id.hex() == caller_trace and span.parent_span_id.hex() == "00f067aa0ba902b7"
        assert "gateway admin" in spans
        # the forwarded call: a child of the request's span
        [tool] = [t for t in tool_spans if t.parent_span_id == span.span_id]
        assert tool.trace_id == span.trace_id
        tool_attrs = {a.key: a.value.string_value for a in tool.attributes}
        assert tool_attrs["mcp.server"] == "add" and tool_attrs["mcp.status"] == "ok"
        # log.format text: plain lines, not JSON.
        text = g.log.read_text()
        assert " INFO uvicorn.error: " in text and not text.lstrip().startswith("{")
    finally:
        g.stop()
        llm.stop()
        receiver.shutdown()


# -- graceful shutdown ---------------------------------------------------------------------------
@pytest.fixture
def slow_llm(tmp_path: Path) -> Iterator[str]:
    """A scripted LLM answering every completion after 2.5 s."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": {"text": "a slow answer", "latency_ms": 2500,
                                              "usage": {"input_tokens": 100, "output_tokens": 10}}}))
    port = free_port()
    proc = ServerProcess([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(port),
                          "--rules", str(script)], port).start()
    yield f"http://127.0.0.1:{port}/v1"
    proc.stop()


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": "deepseek-chat", "messages": [{"role": "user", "content": "take your time"}]})


def test_sigterm_finishes_in_flight_calls_and_serves_nothing_new(tmp_path: Path, upstream: ServerProcess,
                                                                 slow_llm: str) -> None:
    config = config_for(upstream)
    config["llm"] = {"deployments": [{"name": "scripted", "provider": "openai", "base_url": slow_llm,
                                      "api_key": "k", "model": "deepseek-chat"}]}
    g = Gateway(tmp_path, config).start()
    try:
        key = g.key("default", "chat,mcp,admin")
        h = {"Authorization": f"Bearer {key}"}
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(call_tool, g.url, key, "add__slow", {"steps": 25, "delay": 0.1})
            answer = pool.submit(chat, g.url, key)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until both are in flight (+ this scrape)
                text = httpx.get(g.url + "/metrics", headers=h).text
                if (sample(text, "toolmesh_gateway_server_in_flight", tenant="default", server="add") == 1
                        and sample(text, "toolmesh_gateway_in_flight") == 3):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the slow call and the chat request never were in flight together")
            assert g.proc is not None
            g.proc.send_signal(signal.SIGTERM)
            # A new request while they are still running is not served: uvicorn has stopped
            # accepting connections (a request on a connection still open would get 503).
            refused: int | str | None = None
            deadline = time.monotonic() + 10
            while refused is None and time.monotonic() < deadline:
                try:
                    r = httpx.get(g.url + "/admin/servers", headers=h, timeout=5)
                except httpx.TransportError as exc:
                    refused = type(exc).__name__
                else:
                    if r.status_code == 503:
                        refused = 503
                    time.sleep(0.02)
            assert refused is not None
            assert not slow.done() and not answer.done(), "the in-flight requests ended before the new one was tried"
            result = slow.result(timeout=60)
            completion = answer.result(timeout=60)
        assert result.status_code == 200
        assert "done 25" in result.text and '"isError":true' not in result.text.replace(" ", "")
        assert completion.status_code == 200, completion.text
        assert completion.json()["choices"][0]["message"]["content"] == "a slow answer"
        # uvicorn re-raises the signal once shut down, so the exit status says "ended by SIGTERM".
        assert g.proc.wait(60) in (0, -signal.SIGTERM)
        log = g.log.read_text()
        assert "Waiting for application shutdown" in log and "Finished server process" in log, log[-2000:]
        assert "Traceback" not in log, log[-3000:]
        # What they recorded was written before the process ended.
        with sqlite3.connect(tmp_path / "toolmesh.db") as con:
            assert con.execute("SELECT COUNT(*) FROM usage WHERE model = 'deepseek-chat'").fetchone()[0] == 1
            assert con.execute("SELECT COUNT(*) FROM audit WHERE tool = 'slow'").fetchone()[0] == 1
    finally:
        with contextlib.suppress(Exception):
            g.stop()

def test_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    import io
    import logging

    from toolmesh.gateway.config import LogSettings
    from toolmesh.gateway.ops import configure_logging

    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(LogSettings(format="json", level="debug"), stream=out)
        lg = logging.getLogger("toolmesh.test")
        lg.info("call %s done", "add", extra={"tenant": "acme", "latency_ms": 1.5, "path": Path("/x")})
        try:
            raise ValueError("bad")
        except ValueError:
            lg.exception("failed")
        first, second = (json.loads(ln) for ln in out.getvalue().splitlines())
        assert first["message"] == "call add done" and first["level"] == "info" and first["logger"] == "toolmesh.test"
        assert first["tenant"] == "acme" and first["latency_ms"] == 1.5 and first["path"] == "/x"
        assert first["ts"].endswith("Z")
        assert second["level"] == "error" and "ValueError: bad" in second["exc_info"]
        with pytest.raises(ValueError, match="log level"):
            configure_logging(LogSettings(format="json", level="loud"), stream=out)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
