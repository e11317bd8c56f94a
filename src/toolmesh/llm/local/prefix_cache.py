"""llama.cpp's state after the fixed prompt prefix (system prompt + tools), kept on disk.

Every tool-calling request starts with the same system turn while the tools are unchanged; reading
it is most of the first request's time on a CPU (~1,100 tokens for the demo tools). The KV state
after that prefix is saved once under ``$TOOLMESH_HOME/cache/llm-prefix/`` and loaded by later
processes instead of being recomputed.

A file is keyed by a hash of the model's identity (its sha256 when known), the llama.cpp binding's
version and the prefix's token ids, so another model, another binding or changed tools never pick
it up; the stored token ids are compared again on load. Writes are atomic; the directory keeps the
:data:`MAX_FILES` most recently used files. Every failure here only costs the prefill it would
have saved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"TMKV1\n"
#: Files kept per directory (oldest used are deleted first).
MAX_FILES = 8


class PrefixStore:
    """Saved KV states of prompt prefixes for one model, in one directory."""

    def __init__(self, directory: Path, model_key: str, binding_version: str) -> None:
        self.directory = directory
        self._salt = f"{model_key}\0{binding_version}\0".encode()

    def path(self, tokens: list[int]) -> Path:
        """The file for the prefix ``tokens``."""
        digest = hashlib.sha256(self._salt + np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()
        return self.directory / f"{digest[:32]}.kv"

    def load(self, tokens: list[int]) -> bytes | None:
        """The saved state for exactly ``tokens``, or ``None``."""
        path = self.path(tokens)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        ids = np.asarray(tokens, dtype=np.int32).tobytes()
        head = len(MAGIC) + 8
        if not data.startswith(MAGIC) or len(data) < head:
            return None
        n = int.from_bytes(data[len(MAGIC):head], "little")
        if n != len(tokens) or data[head:head + len(ids)] != ids:
            return None  # a hash collision or a foreign file: recompute
        try:
            os.utime(path)  # most recently used: pruned last
        except OSError:
            pass
        return data[head + len(ids):]

    def save(self, tokens: list[int], state: bytes) -> None:
        """Store ``state`` for ``tokens`` (atomic rename), then prune old files."""
        path = self.path(tokens)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".kv", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(MAGIC)
                    f.write(len(tokens).to_bytes(8, "little"))
                    f.write(np.asarray(tokens, dtype=np.int32).tobytes())
                    f.write(state)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune()
        except OSError as exc:
            log.info("could not save the prompt-prefix state to %s: %s", path, exc)

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.kv"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[MAX_FILES:]:
            old.unlink(missing_ok=True)


__all__ = ["MAX_FILES", "PrefixStore"]
