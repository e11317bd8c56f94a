"""Run a snippet of Python in a subprocess: timeout, memory cap, no network.

Layers, strongest available first: a fresh network namespace (``unshare -rn``, only
loopback, down) when the kernel allows it; always a ``socket`` module that refuses to
create sockets; ``RLIMIT_AS`` for memory, ``RLIMIT_CPU``/``RLIMIT_FSIZE`` as backstops; a
new session so a timeout kills the whole process group; an empty temp directory as cwd
and ``python -I`` (no user site, no ``PYTHON*`` variables).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_PRELUDE = """\
import socket as _s
class _NoNetwork(_s.socket):
    def __init__(self, *a, **k):
        raise OSError("network access is disabled in the toolmesh sandbox")
_s.socket = _NoNetwork
def _refuse(*a, **k):
    raise OSError("network access is disabled in the toolmesh sandbox")
_s.create_connection = _refuse
_s.socketpair = _refuse
del _s, _NoNetwork, _refuse
import sys as _sys
_path = _sys.argv[1]
_code = compile(open(_path, encoding="utf-8").read(), "<step>", "exec")
del _sys
exec(_code, {"__name__": "__main__"})
"""
_OUTPUT_LIMIT = 64 * 1024
_unshare_ok: bool | None = None


@dataclass(slots=True)
class SandboxResult:
    """What the snippet did."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    #: "netns" when a network namespace isolated it, else "socket-guard".
    isolation: str = "socket-guard"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def _can_unshare() -> bool:
    global _unshare_ok
    if _unshare_ok is None:
        exe = shutil.which("unshare")
        _unshare_ok = False
        if exe is not None and sys.platform.startswith("linux"):
            try:
                _unshare_ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=5).returncode == 0
            except (OSError, subprocess.SubprocessError):
                _unshare_ok = False
    return _unshare_ok


def _limits(memory_mb: int, cpu_seconds: int) -> None:  # runs in the child before exec
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))


async def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 256) -> SandboxResult:
    """Run ``code`` with the limits above; never raises for the snippet's own failures."""
    if timeout <= 0 or memory_mb < 16:
        raise ValueError("timeout must be > 0 and memory_mb >= 16")
    with tempfile.TemporaryDirectory(prefix="toolmesh-py-") as tmp:
        path = Path(tmp) / "step.py"
        path.write_text(code, encoding="utf-8")
        argv = [sys.executable, "-I", "-c", _PRELUDE, str(path)]
        isolation = "socket-guard"
        if _can_unshare():
            argv = ["unshare", "-rn", *argv]
            isolation = "netns"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": tmp}
        cpu = max(1, int(timeout) + 1)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=tmp, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=lambda: _limits(memory_mb, cpu),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill(proc)
            out, err = await proc.communicate()
            return SandboxResult(None, _text(out), _text(err), timed_out=True, isolation=isolation)
        except BaseException:
            _kill(proc)
            await proc.wait()
            raise
        return SandboxResult(proc.returncode, _text(out), _text(err), isolation=isolation)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text(data: bytes | None) -> str:
    return (data or b"")[:_OUTPUT_LIMIT].decode("utf-8", "replace")
