"""Append-only checkpoints of reasoning runs (RSN-2).

A run writes a ``start`` row (prompt and settings), then one ``steps`` row per checkpoint
holding only the steps committed since the previous one, and an ``end`` row. Nothing is
ever rewritten, so a checkpoint costs one small INSERT however long the chain grows (a
store that saves the whole state per step grows quadratically). Every row carries the
format version it was written with; retention deletes whole runs, never part of one.

The SQL is plain (one table, positional parameters) so another backend can run it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["CHECKPOINT_VERSION", "CheckpointRow", "Kind", "RunCheckpoints", "RunExistsError", "SqlStore"]

#: Format version of the rows this code writes; rows of a newer version are refused.
CHECKPOINT_VERSION = 1

Kind = Literal["start", "steps", "end"]
_KINDS = frozenset(("start", "steps", "end"))


class SqlStore(Protocol):
    """The store methods used here (``toolmesh.store.sqlite.Store`` has them)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class RunExistsError(ValueError):
    """A run with this id already has checkpoints (resume it, or pick another id)."""


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One stored row."""

    run_id: str
    seq: int
    kind: Kind
    version: int
    at: float
    data: dict[str, Any]


class RunCheckpoints:
    """Checkpoint rows of reasoning runs in a store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    async def start(self, run_id: str, data: dict[str, Any]) -> None:
        """Write the first row of a new run; :class:`RunExistsError` if the id is taken."""
        _check_id(run_id)
        existing = await self.store.fetchall("SELECT 1 FROM run_checkpoints WHERE run_id = ? LIMIT 1", (run_id,))
        if existing:
            raise RunExistsError(f"run {run_id!r} already exists: resume it or choose another run id")
        await self.append(run_id, 0, "start", data)

    async def append(self, run_id: str, seq: int, kind: Kind, data: dict[str, Any]) -> None:
        """Append row ``seq`` (0, 1, 2, ... per run); a seq written twice is an error, never an overwrite."""
        _check_id(run_id)
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
        if type(seq) is not int or seq < 0:
            raise ValueError("seq must be a non-negative int")
        await self.store.execute(
            "INSERT INTO run_checkpoints (run_id, seq, kind, version, at, data) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, kind, CHECKPOINT_VERSION, time.time(), json.dumps(data, ensure_ascii=False)))

    async def load(self, run_id: str) -> list[CheckpointRow]:
        """The rows of a run in order (empty if unknown). Raises ``ValueError`` for rows of a newer format."""
        _check_id(run_id)
        rows = await self.store.fetchall(
            "SELECT run_id, seq, kind, version, at, data FROM run_checkpoints WHERE run_id = ? ORDER BY seq",
            (run_id,))
        out = []
        for rid, seq, kind, version, at, data in rows:
            if version > CHECKPOINT_VERSION:
                raise ValueError(f"run {run_id!r} was checkpointed by a newer toolmesh (format {version}, "
                                 f"this one reads up to {CHECKPOINT_VERSION})")
            out.append(CheckpointRow(rid, int(seq), kind, int(version), float(at), json.loads(data)))
        return out

    async def delete(self, run_id: str) -> int:
        """Delete a run's rows; returns how many there were."""
        _check_id(run_id)
        return await self.store.execute("DELETE FROM run_checkpoints WHERE run_id = ?", (run_id,))

    async def prune(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete every run whose newest row is older than ``older_than_s`` seconds; returns rows deleted."""
        if not older_than_s > 0:
            raise ValueError("older_than_s must be > 0")
        cutoff = (time.time() if now is None else now) - older_than_s
        return await self.store.execute(
            "DELETE FROM run_checkpoints WHERE run_id IN (SELECT run_id FROM run_checkpoints"
            " GROUP BY run_id HAVING MAX(at) < ?)", (cutoff,))

    async def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recently active runs: ``{run_id, rows, last_at, finished}``."""
        rows = await self.store.fetchall(
            "SELECT run_id, COUNT(*), MAX(at), SUM(CASE WHEN kind = 'end' THEN 1 ELSE 0 END) FROM run_checkpoints"
            " GROUP BY run_id ORDER BY MAX(at) DESC LIMIT ?", (int(limit),))
        return [{"run_id": r[0], "rows": int(r[1]), "last_at": float(r[2]), "finished": bool(r[3])} for r in rows]


def _check_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 200:
        raise ValueError("run_id must be a non-empty string of at most 200 characters")
