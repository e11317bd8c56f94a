"""The gateway's worker processes tune their garbage collector (gateway/gctune.py).

Checked in a fresh interpreter: the settings are process-wide, and the test process must keep
CPython's defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from toolmesh.gateway.gctune import GC_THRESHOLDS

PROBE = """
import gc, json
defaults = gc.get_threshold()
from toolmesh.gateway.run import create_app
app = create_app()
print(json.dumps({"defaults": defaults, "thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "app": type(app).__name__}))
"""


def test_worker_factory_freezes_the_startup_heap_and_raises_thresholds(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"servers": {}, "store": {"path": str(tmp_path / "tm.db")}}))
    env = {**os.environ, "TOOLMESH_HOME": str(tmp_path / "home"), "TOOLMESH_GATEWAY_CONFIG": str(cfg),
           "TOOLMESH_GATEWAY_OVERRIDES": json.dumps({"host": "127.0.0.1", "port": 0})}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["app"] == "GatewayApp"
    assert tuple(seen["defaults"]) != GC_THRESHOLDS  # the interpreter started with other settings
    assert tuple(seen["thresholds"]) == GC_THRESHOLDS
    # Everything the imports and the app built is frozen: tens of thousands of objects, never scanned again.
    assert seen["frozen"] > 10_000
