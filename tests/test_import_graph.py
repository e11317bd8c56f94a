"""The import graph of ``src/toolmesh``: no cycles, no private names taken from another module.

Every module is parsed with :mod:`ast` (nothing is imported), and every import statement counts:
module level, under ``if TYPE_CHECKING:``, and function-local lazy imports alike — a lazy import
hides a cycle from the interpreter, not from the design. An edge goes to the module that defines
the imported name: ``from toolmesh.hub import transports`` points at the sub-package, ``from
toolmesh.hub import Hub`` at ``toolmesh/hub/__init__.py``. Importing a package does not count as
importing its parent's ``__init__`` (that is how Python works, not a design choice).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT_PACKAGE = "toolmesh"

# Packages exempt from the rules: none. Add one here only with a comment saying why and until when.
ALLOWED_PACKAGES: frozenset[str] = frozenset()


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    #: Modules this one imports (inside ``toolmesh``), each with the line of its first import.
    imports: dict[str, int] = field(default_factory=dict)
    #: (line, source module, name) of every private name imported from another module.
    private: list[tuple[int, str, str]] = field(default_factory=list)


def find_modules(src: Path = SRC) -> dict[str, Module]:
    """Every module under ``src/toolmesh`` by dotted name."""
    out: dict[str, Module] = {}
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        out[name] = Module(name, path, is_package)
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def scan(modules: dict[str, Module]) -> None:
    """Fill ``imports`` and ``private`` of every module."""
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node in ast.walk(tree):  # every statement: module level, TYPE_CHECKING, function bodies
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        module.imports.setdefault(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node)
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        module.imports.setdefault(submodule, node.lineno)
                    elif target in modules:
                        module.imports.setdefault(target, node.lineno)
                        if _is_private(alias.name):
                            module.private.append((node.lineno, target, alias.name))
        module.imports.pop(module.name, None)


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in modules:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, list(modules[start].imports))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, list(modules[nxt].imports)))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _allowed(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGES)


def _describe(component: list[str], modules: dict[str, Module]) -> str:
    members = set(component)
    edges = [
        f"{a} -> {b} (line {modules[a].imports[b]})"
        for a in component
        for b in sorted(modules[a].imports)
        if b in members
    ]
    return "cycle: " + "; ".join(edges)


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    modules = find_modules()
    scan(modules)
    return modules


def test_the_scan_sees_the_package(graph: dict[str, Module]) -> None:
    # Guards the checker itself: a wrong root would find no module and pass vacuously.
    assert "toolmesh.hub.handle" in graph
    assert "toolmesh.hub.transports.base" in graph["toolmesh.hub.handle"].imports
    assert len(graph) > 100


def test_no_import_cycles(graph: dict[str, Module]) -> None:
    bad = [c for c in cycles(graph) if not all(_allowed(m) for m in c)]
    assert not bad, "\n".join(_describe(c, graph) for c in bad)


def test_no_private_names_across_modules(graph: dict[str, Module]) -> None:
    bad = [
        f"{m.name}:{line} imports {name} from {source}"
        for m in graph.values()
        if not _allowed(m.name)
        for line, source, name in m.private
    ]
    assert not bad, "\n".join(bad)


# -- the checker finds what it must (on a synthetic tree, so a broken checker cannot pass) -------


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = tmp_path / ROOT_PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    modules = find_modules(tmp_path)
    scan(modules)
    return modules


def test_checker_finds_lazy_and_type_checking_cycles(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "__init__.py": "",
        "p/__init__.py": "",
        "p/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toolmesh.p.b import B\n",
        "p/b.py": "def f():\n    from . import c\n",
        "p/c.py": "from .a import thing\n",
        "p/d.py": "from toolmesh.p import a\n",
    })
    assert cycles(modules) == [["toolmesh.p.a", "toolmesh.p.b", "toolmesh.p.c"]]
    assert modules["toolmesh.p.d"].imports == {"toolmesh.p.a": 1}


def test_checker_finds_private_names_but_not_private_modules(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "__init__.py": "",
        "q/__init__.py": "",
        "q/_impl.py": "_SECRET = 1\n__version__ = '1'\n",
        "q/user.py": "from toolmesh.q._impl import _SECRET, __version__\nfrom toolmesh.q import _impl\n",
    })
    assert modules["toolmesh.q.user"].private == [(1, "toolmesh.q._impl", "_SECRET")]
    assert cycles(modules) == []
