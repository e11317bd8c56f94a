"""The exception tree is declared and exported whole: the tree drawn in toolmesh.errors is the real one,
and every class of it is importable from the top-level package."""

from __future__ import annotations

import inspect
import re

import pytest

import toolmesh
from toolmesh import errors

ERROR_CLASSES = {name: cls for name, cls in vars(errors).items()
                 if inspect.isclass(cls) and issubclass(cls, errors.ToolmeshError)
                 and cls.__module__ == errors.__name__}


def drawn_tree() -> dict[str, tuple[str, ...]]:
    """Class name -> its bases as drawn in the module docstring (parent first, then the "also" ones)."""
    doc = errors.__doc__ or ""
    lines = [ln for ln in doc.split("::", 1)[1].splitlines() if ln.strip()]
    lines = lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("    "))]
    bases: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        m = re.fullmatch(r"( *)(\w+)\s*(?:\(also ([\w, ]+)\))?", line)
        assert m, f"cannot read tree line {line!r}"
        depth, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else "Exception"
        also = tuple(a.strip() for a in m.group(3).split(",")) if m.group(3) else ()
        bases[name] = (parent, *also)
        stack.append((depth, name))
    return bases


def test_the_drawn_tree_lists_every_class_once() -> None:
    assert sorted(drawn_tree()) == sorted(ERROR_CLASSES)


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_the_drawn_tree_matches_the_real_bases(name: str) -> None:
    assert tuple(b.__name__ for b in ERROR_CLASSES[name].__bases__) == drawn_tree()[name]


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_every_error_is_exported_from_the_package(name: str) -> None:
    assert name in toolmesh.__all__
    assert name in errors.__all__
    assert getattr(toolmesh, name) is ERROR_CLASSES[name]


def test_all_names_only_what_exists() -> None:
    assert set(errors.__all__) == set(ERROR_CLASSES)
    assert set(toolmesh.__all__) == set(ERROR_CLASSES) | {"__version__"}
