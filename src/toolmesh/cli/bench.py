"""``toolmesh bench``: runs the benchmark scripts of a source checkout (``bench/``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import typer


def bench_dir() -> Path | None:
    """``$TOOLMESH_BENCH_DIR``, else ``bench/`` beside ``src/`` in a source checkout."""
    env = os.environ.get("TOOLMESH_BENCH_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "bench")
    return next((c for c in candidates if (c / "hub.py").exists()), None)


def run_bench(name: str, argv: list[str]) -> int:
    where = bench_dir()
    if where is None:
        typer.echo("error: benchmarks ship with the source checkout (bench/); set TOOLMESH_BENCH_DIR", err=True)
        return 2
    path = where / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"toolmesh_bench_{name}", path) if path.exists() else None
    if spec is None or spec.loader is None:
        typer.echo(f"error: no benchmark {name!r} in {where}", err=True)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return int(module.main(argv))
