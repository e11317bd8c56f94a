"""The MCP Inspector's CLI (``@modelcontextprotocol/inspector --cli``, Node 22) against the gateway (GW-2)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from conformance_support import NODE, NPM
from gateway_support import Gateway, demo_server

INSPECTOR = NPM / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if not (NODE.is_file() and INSPECTOR.is_file()):
        pytest.skip("the MCP Inspector is not installed (.cache/npm): run `make npm`")
    g = Gateway(tmp_path_factory.mktemp("gw-inspector"),
                {"servers": {"catalog": demo_server("catalog"), "pricing": demo_server("pricing")}}).start()
    yield g
    g.stop()


def inspect(gw: Gateway, key: str, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}", "HOME": str(gw.home)}
    cmd = [str(NODE), str(INSPECTOR), "--cli", gw.url + path, "--transport", "http",
           "--header", f"Authorization: Bearer {key}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_inspector_lists_and_calls_tools(gw: Gateway) -> None:
    key = gw.key("default", "mcp")
    listed = inspect(gw, key, "/mcp", "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert {"catalog__search_products", "pricing__calculate_discount"} <= names
    called = inspect(gw, key, "/servers/catalog/mcp", "--method", "tools/call",
                     "--tool-name", "get_product_info", "--tool-arg", "sku=SKU-1001")
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert not result.get("isError") and "Lumina" in result["content"][0]["text"]


def test_inspector_without_a_key_is_refused(gw: Gateway) -> None:
    refused = inspect(gw, "tm_wrong", "/mcp", "--method", "tools/list")
    assert refused.returncode != 0
    # A 401 makes the Inspector want OAuth, which it cannot do without a terminal.
    assert "auth_required" in refused.stderr + refused.stdout
