"""The seed of the HTTP fuzzing campaign (issue 11, part 2; docs/fuzzing.md): ``bench/fuzz.py``
with 150 messages per surface against a real ``toolmesh serve`` process (scripted LLM, stdio demo
server): /mcp in both eras, /servers/catalog/mcp, WebSocket, legacy SSE, and /v1 and /admin from
/openapi.json through schemathesis. ``toolmesh bench fuzz`` runs 10,000 per surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = int(os.environ.get("TOOLMESH_FUZZ_HTTP_MESSAGES", "150"))


def test_every_surface_survives_fuzzing_with_its_records() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--json", "--messages", str(MESSAGES)],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert out.stdout, out.stderr[-3000:]
    result = json.loads(out.stdout)
    surfaces = result["surfaces"]
    assert set(surfaces) == {"/mcp 2025-11-25", "/mcp 2026-07-28", "/servers/catalog/mcp", "/ws",
                             "/sse + /messages/", "/v1/*", "/admin/*"}
    for name, s in surfaces.items():
        assert s["messages"] >= MESSAGES, (name, s)
        assert s["unexplained"] == 0, (name, s["unexplained_examples"])
        assert not s["check_failures"], (name, s["check_failures"])
        if name not in ("/ws",):
            assert all(int(status) < 500 for status in s["statuses"]), (name, s["statuses"])
    # Bodies that are not JSON were answered, with -32700, on the JSON-RPC surfaces.
    assert surfaces["/mcp 2025-11-25"]["jsonrpc_codes"].get("-32700", 0) > 0
    assert result["gateway_alive"] is True
    assert result["tracebacks_in_log"] == 0
    # Seeded before the fuzzing: 4 keys, usage of 3 users, 3 sessions, 3 audited tool calls; none lost.
    assert result["records_before"] == {"keys": 4, "usage": 3, "audit": 3, "sessions": 3}
    assert result["records_lost"] == []
    assert out.returncode == 0


def test_a_routing_rule_with_a_non_string_strategy_is_a_400_not_a_500() -> None:
    """Found by the campaign: ``POST /admin/routing`` with ``"strategy": [...]`` answered 500 (TypeError:
    a list looked up in the strategy set); ``"models": {...}`` was taken as the dict's keys."""
    from toolmesh.errors import ConfigError
    from toolmesh.llm.routing import Rule

    for value, key in (({"strategy": ["cost"]}, "rule.strategy"), ({"strategy": {}}, "rule.strategy"),
                       ({"models": 5}, "rule.models"), ({"models": {"gpt-4o-mini": 1}}, "rule.models")):
        with pytest.raises(ConfigError, match="unknown strategy|expected a list") as info:
            Rule.parse(value)
        assert info.value.key == key
    assert Rule.parse({"strategy": "cost", "models": ["a"]}).models == ("a",)


async def test_a_session_id_of_unicode_digits_or_beyond_64_bits_is_a_404(tmp_path: Path) -> None:
    """Found by the campaign (seed 1): ``GET /admin/sessions/²`` answered 500 (``"²".isdigit()`` is true,
    ``int("²")`` raises); a 20-digit id overflowed SQLite's integer."""
    import httpx

    from toolmesh.gateway.app import GatewayApp
    from toolmesh.gateway.auth import create_key
    from toolmesh.hub.configfile import parse_config

    app = GatewayApp(parse_config({"gateway": {"host": "127.0.0.1"}}), store_path=str(tmp_path / "g.db"))
    gw = await app.startup()
    try:
        key = (await create_key(gw.store, "default", ["admin"]))["key"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            for sid in ("²", "١٢", "9" * 20, "12"):
                for method in ("GET", "DELETE"):
                    r = await client.request(method, f"/admin/sessions/{sid}")
                    assert r.status_code == 404, (sid, method, r.text)
    finally:
        await app.shutdown()
