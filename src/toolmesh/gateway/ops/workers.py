"""One scrape, every worker: ``/metrics`` of a ``toolmesh serve --workers N`` host shows their totals.

The gateway's families are built at scrape time from each worker's own counters (recording stays
a few additions per request), so ``prometheus_client``'s multiprocess mode, which only knows its
own metric objects, does not fit. Instead ``toolmesh serve --workers N`` makes a fresh private
directory (mode 0700, under ``$TOOLMESH_HOME/run/`` when the path is short enough for a Unix
socket, else under the system's temporary directory) and names it in ``TOOLMESH_WORKERS_DIR``.
Each worker listens on ``<dir>/<pid>.sock`` and answers a connection with a snapshot of its
families. The worker that answers a scrape asks every sibling for a fresh snapshot and merges:

* counters, histograms and summaries' ``_count`` / ``_sum``: summed over the workers;
* gauges and summary quantiles (which cannot be summed): one series per worker, labelled
  ``worker="<pid>"``;
* families that already count every worker (the LLM usage read from the shared ledger): this
  worker's only.

A worker that stops cleanly leaves its final counters in ``<pid>.final.json``, which later scrapes
add in (so totals do not drop when uvicorn replaces a worker); one killed with ``SIGKILL`` takes its
counts with it (a counter reset, which Prometheus's ``rate()`` handles). The directory is removed
when ``toolmesh serve`` exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

__all__ = ["WORKERS_DIR_ENV", "WorkerPeers", "make_workers_dir", "merge", "remove_workers_dir", "snapshot"]

log = logging.getLogger("toolmesh.gateway")

WORKERS_DIR_ENV = "TOOLMESH_WORKERS_DIR"
_SUMMED = ("counter", "histogram")
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
#: One family in a snapshot: name, help, type, samples as [name, labels, value].
Family = dict[str, Any]


class Collecting(Protocol):
    """What a snapshot is taken of (a ``prometheus_client`` registry)."""

    def collect(self) -> Iterable[Metric]: ...


def make_workers_dir(home: Path) -> Path:
    """A fresh private directory for the workers of one ``toolmesh serve`` run."""
    base = home / "run"
    if len(str(base)) + 40 <= _MAX_SOCKET_PATH:
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="workers-", dir=base))
    return Path(tempfile.mkdtemp(prefix="toolmesh-workers-"))  # mkdtemp: mode 0700


def remove_workers_dir(path: Path) -> None:
    """Remove a directory made by :func:`make_workers_dir` (when ``serve`` exits)."""
    shutil.rmtree(path, ignore_errors=True)


def snapshot(registry: Collecting) -> list[Family]:
    """The registry's families as plain data."""
    return [{"n": m.name, "d": m.documentation, "t": m.type,
             "s": [[s.name, dict(s.labels), float(s.value)] for s in m.samples]} for m in registry.collect()]


def _summed(family: Family, sample_name: str) -> bool:
    kind = family["t"]
    if kind in _SUMMED:
        return True
    return kind == "summary" and sample_name.endswith(("_count", "_sum"))


def merge(workers: list[tuple[str, list[Family]]], *, own: str, local_only: frozenset[str] = frozenset(),
          finals: Iterable[list[Family]] = ()) -> list[Metric]:
    """Merge the snapshots of ``workers`` (worker id, families); ``own`` is this worker's id, whose
    families named in ``local_only`` are taken as they are. ``finals``: exited workers' counters."""
    out: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    def add(family: Family, worker: str | None) -> None:
        name = family["n"]
        if name not in out:
            out[name] = Metric(name, family["d"], family["t"])
            values[name] = {}
        acc = values[name]
        for sample_name, labels, value in family["s"]:
            if worker is not None and not _summed(family, sample_name):
                labels = {**labels, "worker": worker}
            key = (sample_name, tuple(sorted(labels.items())))
            acc[key] = acc.get(key, 0.0) + value

    for worker, families in workers:
        for family in families:
            if family["n"] in local_only:
                if worker == own:
                    add(family, None)
            else:
                add(family, worker)
    for families in finals:
        for family in families:
            if family["n"] in out and family["n"] not in local_only:
                add(family, "exited")
    for name, metric in out.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
    return list(out.values())


class _Merged:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class WorkerPeers:
    """This worker's place among the workers of one host (see the module's docstring)."""

    def __init__(self, directory: Path, registry: Collecting, *, local_only: Iterable[str] = (),
                 timeout: float = 2.0) -> None:
        self.directory = directory
        self.registry = registry
        self.local_only = frozenset(local_only)
        self.timeout = timeout
        self.id = str(os.getpid())
        self.socket = directory / f"{self.id}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Answer the siblings' requests for a snapshot."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a previous process with the same pid
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.socket))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(snapshot(self.registry)))
            await writer.drain()
        except Exception:
            log.debug("sending a metrics snapshot failed", exc_info=True)
        finally:
            writer.close()

    async def _ask(self, path: Path) -> tuple[str, list[Family]] | None:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    data = await reader.read()
                finally:
                    writer.close()
            return path.stem, orjson.loads(data)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                os.unlink(path)  # its worker is gone (killed: a clean exit removes its socket)
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("worker %s did not send its metrics: %s", path.stem, exc)
        return None

    async def render(self) -> bytes:
        """The exposition text with every worker's families merged."""
        own = (self.id, snapshot(self.registry))
        peers = [p for p in self.directory.glob("*.sock") if p != self.socket]
        answers = await asyncio.gather(*(self._ask(p) for p in peers))
        finals = []
        for path in self.directory.glob("*.final.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                finals.append(orjson.loads(path.read_bytes()))
        workers = [own, *(a for a in answers if a is not None)]
        merged = merge(workers, own=self.id, local_only=self.local_only, finals=finals)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merged))
        return generate_latest(registry)

    async def aclose(self) -> None:
        """Stop answering and leave this worker's final counters for later scrapes."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        counters = [{**f, "s": [s for s in f["s"] if _summed(f, s[0])]} for f in snapshot(self.registry)
                    if f["n"] not in self.local_only]
        tmp = self.directory / f"{self.id}.final.tmp"
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps([f for f in counters if f["s"]]))
            tmp.rename(self.directory / f"{self.id}.final.json")
