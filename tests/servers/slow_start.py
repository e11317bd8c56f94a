"""Run an MCP server script after a delay, but only the first time (a marker file remembers).

    python slow_start.py MARKER SECONDS SCRIPT [ARGS...]

Stands in for a server process that starts slowly once (a cold interpreter on a busy machine).
"""

from __future__ import annotations

import os
import runpy
import sys
import time

marker, delay, script = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if not os.path.exists(marker):
    open(marker, "w").close()
    time.sleep(delay)
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
