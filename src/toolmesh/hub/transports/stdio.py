"""stdio transport: the server is a child process speaking newline-delimited JSON-RPC."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from typing import Any

from toolmesh.errors import ConnectionFailedError
from toolmesh.hub.transports.stream import StreamConnection
from toolmesh.hub.transports.types import LEGACY

#: Largest single message accepted from a server (a tool may return big payloads).
MAX_LINE = 64 * 1024 * 1024
#: Environment variables a server inherits by default (as desktop MCP clients do).
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TMPDIR",
                 "TOOLMESH_HOME", "PYTHONPATH", "VIRTUAL_ENV", "NODE_PATH", "SYSTEMROOT")


class StdioConnection(StreamConnection):
    """Spawns the server in its own process group and owns it until ``close``."""

    proc: asyncio.subprocess.Process | None = None
    _stderr_task: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        cfg = self.config
        assert cfg.command is not None
        env = {k: v for k in INHERITED_ENV if (v := os.environ.get(k)) is not None}
        env.update(cfg.env)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                cfg.command,
                *cfg.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cfg.cwd,
                limit=MAX_LINE,
                start_new_session=True,  # own process group: we can kill grandchildren (npx -> node)
            )
        except OSError as exc:
            raise ConnectionFailedError(f"server {cfg.name!r}: cannot start {cfg.command!r}: {exc}") from exc
        self._start_reader()
        self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr())

    def _probe_timeout(self) -> float:
        # The whole budget: the probe's answer comes once the process has started, however long
        # that takes; after half of it an initialize joins the probe (see _try_discover).
        return self.config.connect_timeout

    async def _try_discover(self, *, retried: bool = False) -> bool:
        """The ``server/discover`` probe; True once the protocol is agreed (modern by the probe,
        or legacy by an ``initialize`` sent on the same pipe while the probe was unanswered).

        A probe unanswered after half the connect budget is either ignored (a handshake-only
        server) or not read yet (a process still starting). Both requests then wait on the same
        pipe, and the server answers them in the order it read them: a slow dual-era server answers
        the probe (and refuses the initialize), a handshake-only one answers the initialize. (This
        process used to be replaced by a new one for the initialize: a start-up slower than half
        the budget then never finished, since the new process had only the other half; a stdio
        server in a crash loop under load was not reconnected for tens of seconds.)"""
        if retried:
            return await super()._try_discover(retried=True)
        probe = asyncio.ensure_future(super()._try_discover())
        init: asyncio.Future[None] | None = None
        try:
            done, _ = await asyncio.wait({probe}, timeout=self.config.connect_timeout / 2)
            if probe in done:
                return probe.result()
            init = asyncio.ensure_future(self._initialize(LEGACY))
            await asyncio.wait({probe, init}, return_when=asyncio.FIRST_COMPLETED)
            if not _agreed(probe, init):
                await asyncio.wait({probe, init})  # the first to end failed: the other decides
            if _agreed(probe, init):
                return True
            init.result()  # raises the initialize's error
            return False  # (not reached: an initialize that did not raise succeeded)
        finally:
            for task in (probe, init):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        readline = self.proc.stdout.readline
        while True:
            line = await readline()
            if not line:
                return
            if line.strip():
                await self._feed(line)

    async def _drain_stderr(self) -> None:
        # Always drained: a full stderr pipe would block the server.
        assert self.proc is not None and self.proc.stderr is not None
        with contextlib.suppress(Exception):
            while line := await self.proc.stderr.readline():
                self._stderr_tail.append(line.decode(errors="replace").rstrip())

    def _gone_message(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        tail = " | ".join(list(self._stderr_tail)[-3:])
        detail = f" (exit code {code})" if code is not None else ""
        return f"server {self.config.name!r}: process ended{detail}" + (f": {tail}" if tail else "")

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr_tail)

    async def _write(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            raise ConnectionFailedError(self._gone_message())
        try:
            proc.stdin.write(data + b"\n")
            if proc.stdin.transport.get_write_buffer_size() > 1 << 20:
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionFailedError(self._gone_message()) from exc

    async def _close(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            # Polite first (EOF), then the whole process group.
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.returncode is not None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 2.0)
            # Grandchildren left in the group after the leader exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        await self._stop_reader()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        if proc is not None:
            # Close the pipe transports now, not at GC: no leaked descriptors.
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                transport = getattr(pipe, "_transport", None) or getattr(pipe, "transport", None)
                if transport is not None:
                    with contextlib.suppress(Exception):
                        transport.close()
            with contextlib.suppress(Exception):
                proc._transport.close()  # type: ignore[attr-defined]


def _agreed(probe: asyncio.Future[bool], init: asyncio.Future[None]) -> bool:
    """Whether the initialize succeeded or the probe found the modern revision."""
    def ok(task: asyncio.Future[Any]) -> bool:
        return task.done() and not task.cancelled() and task.exception() is None
    return ok(init) or (ok(probe) and probe.result())
