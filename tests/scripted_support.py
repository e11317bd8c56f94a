"""A scripted OpenAI-compatible model server as a real process, for tests that run the CLI."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def scripted_llm_process(rules: dict[str, Any], workdir: Path) -> Iterator[str]:
    """``python -m toolmesh.testing.scripted_llm`` on a free loopback port, playing ``rules``;
    yields its OpenAI base URL (``http://127.0.0.1:PORT/v1``) and stops it afterwards."""
    path = workdir / "rules.json"
    path.write_text(json.dumps(rules))
    proc = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", "0", "--rules",
                             str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)
