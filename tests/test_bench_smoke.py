"""Smoke test of the Hub benchmark (``bench/hub.py``): shape of its JSON, never its timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "hub.py"
LEAF_KEYS = {"calls_per_s", "p50_ms", "p99_ms", "calls", "errors"}
SEQ_SECTIONS = ("http_seq", "http_seq_sdk_server", "stdio_seq")
CALLS = 20


def _leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("TOOLMESH_BENCH_RUN") == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _check_leaf(leaf: dict[str, object], where: str) -> None:
    assert LEAF_KEYS <= leaf.keys(), where
    assert leaf["errors"] == 0, (where, leaf)
    for key in ("calls_per_s", "p50_ms", "p99_ms"):
        value = leaf[key]
        assert isinstance(value, int | float) and value > 0, (where, key, value)
    assert isinstance(leaf["p99_ms"], float) and isinstance(leaf["p50_ms"], float)
    assert leaf["p99_ms"] >= leaf["p50_ms"], where


@pytest.mark.timeout(240)
def test_quick_bench_prints_one_complete_json_object() -> None:
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
    result = json.loads(proc.stdout)  # the whole of stdout is the one object

    for section in SEQ_SECTIONS:
        block = result[section]
        assert {"toolmesh", "sdk", "fastmcp", "ratio_vs_sdk", "ratio_vs_fastmcp"} <= block.keys(), section
        for lib in ("toolmesh", "sdk"):
            _check_leaf(block[lib], f"{section}.{lib}")
            assert block[lib]["calls"] == CALLS, (section, lib)
        assert block["ratio_vs_sdk"] > 0
        if block["fastmcp"] is None:  # FastMCP not installed here: a reason, no ratio
            assert block["fastmcp_skipped"]
            assert block["ratio_vs_fastmcp"] is None
        else:
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
    assert set(result["targets"]) == {"http_seq_ratio_vs_sdk", "stdio_seq_ratio_vs_sdk", "concurrent_calls_per_s"}
    assert result["meta"]["client_event_loop"] in ("uvloop", "asyncio")

    # Every server process (HTTP servers and stdio children) is gone once the bench exits.
    deadline = time.monotonic() + 10
    while _leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _leftovers(marker), [p.cmdline() for p in _leftovers(marker)]
