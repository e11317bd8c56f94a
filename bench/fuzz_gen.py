"""Message generation of ``bench/fuzz.py``: JSON-RPC strategies (hypothesis), mutations of valid
messages, and the per-surface counts."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

LEGACY, MODERN = "2025-11-25", "2026-07-28"
PV_KEY = "io.modelcontextprotocol/protocolVersion"
CAPS_KEY = "io.modelcontextprotocol/clientCapabilities"
TOOLS = ["get_product_info", "search_products", "nope"]
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
           "resources/templates/list", "prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
           "notifications/initialized", "notifications/cancelled", "server/discover", "nope/nope"]


# -- results ---------------------------------------------------------------------------------------
class Surface:
    """Counts of one surface: messages, HTTP statuses, JSON-RPC codes, unexplained answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[int] = Counter()
        self.unexplained: list[str] = []
        self.check_failures: Counter[str] = Counter()

    def http(self, status: int, what: str) -> None:
        self.sent += 1
        self.statuses[status] += 1
        if status >= 500:
            self.unexplained.append(f"HTTP {status}: {what[:300]}")

    def rpc(self, answer: Any, what: str) -> None:
        for msg in answer if isinstance(answer, list) else [answer]:
            err = msg.get("error") if isinstance(msg, dict) else None
            if isinstance(err, dict) and isinstance(err.get("code"), int):
                self.codes[err["code"]] += 1
                if err["code"] == -32603:
                    self.unexplained.append(f"-32603: {what[:200]} -> {str(err)[:200]}")

    def report(self) -> dict[str, Any]:
        return {"messages": self.sent, "statuses": dict(sorted(self.statuses.items())),
                "jsonrpc_codes": dict(sorted(self.codes.items())), "unexplained": len(self.unexplained),
                "unexplained_examples": self.unexplained[:5], "check_failures": dict(self.check_failures)}

# -- generation ---------------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "arguments", "uri", "sku", "query", "_meta", ""]) | st.text(max_size=4), inner,
    max_size=3), max_leaves=10)
params = values | st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(TOOLS) | values, "arguments": values | st.fixed_dictionaries(
        {}, optional={"sku": st.sampled_from(["SKU-1001", "x"]) | values, "query": values, "limit": values}),
    "uri": st.sampled_from(["demo://catalog/categories", "demo://none"]) | values, "cursor": values,
    "protocolVersion": st.sampled_from([LEGACY, MODERN, "1999-01-01"]) | values, "capabilities": values,
    "level": st.sampled_from(["debug", "loud"]) | values, "_meta": values})
requests = st.fixed_dictionaries({"jsonrpc": st.just("2.0") | scalars, "method": st.sampled_from(METHODS) | scalars},
                                 optional={"id": st.integers(0, 10**6) | st.text(max_size=4) | values,
                                           "params": params})
raw_bodies = st.binary(max_size=64) | st.text(max_size=64).map(str.encode)
messages = st.one_of(requests.map(lambda m: json.dumps(m).encode()),
                     st.lists(requests, max_size=3).map(lambda m: json.dumps(m).encode()), raw_bodies)


def mutate(valid: dict[str, Any], rng: random.Random) -> bytes:
    """A valid message broken in one of a few ways."""
    msg = json.loads(json.dumps(valid))
    kind = rng.randrange(8)
    if kind == 0 and msg:
        msg.pop(rng.choice(sorted(msg)))
    elif kind == 1:
        key = rng.choice(sorted(msg) or ["x"])
        msg[key] = rng.choice([None, 0, -1, "", [], {}, True, "x" * 300, 2**70, 1.5])
    elif kind == 2 and isinstance(msg.get("params"), dict) and msg["params"]:
        p = msg["params"]
        key = rng.choice(sorted(p))
        p[key] = rng.choice([None, 7, "", [], {"a": []}, "\u0000", "../../etc/passwd"])
    elif kind == 3:
        raw = bytearray(json.dumps(msg).encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    elif kind == 4:
        raw = json.dumps(msg).encode()
        return raw[: rng.randrange(max(1, len(raw)))]
    elif kind == 5:
        return json.dumps([msg, msg]).encode()
    elif kind == 6:
        msg["id"] = rng.choice([None, [], {}, 1.5, "a" * 1000])
    else:
        msg["method"] = rng.choice(METHODS) if rng.random() < 0.5 else "x/" + str(rng.random())
    return json.dumps(msg).encode()


def run_property(n: int, seed: int, send: Callable[[bytes], None]) -> None:
    """``send`` ``n`` property-based messages (hypothesis; no example database, fixed seed)."""
    if n <= 0:
        return

    @settings(max_examples=n, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(messages)
    def case(body: bytes) -> None:
        send(body)

    hseed(seed)(case)()

def answer_of(r: httpx.Response) -> Any:
    """The JSON-RPC answer of a response (JSON or one SSE event), or None."""
    text = r.text
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = datas[-1] if datas else ""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None

VALID = [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
     "params": {"name": "get_product_info", "arguments": {"sku": "SKU-1001"}}},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
     "params": {"name": "search_products", "arguments": {"query": "phone", "limit": 2}}},
    {"jsonrpc": "2.0", "id": 4, "method": "resources/list", "params": {}},
    {"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": "demo://catalog/categories"}},
    {"jsonrpc": "2.0", "id": 6, "method": "prompts/list", "params": {}},
    {"jsonrpc": "2.0", "id": 7, "method": "ping"},
]
