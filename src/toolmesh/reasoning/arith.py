"""Exact checking of ``expr = value`` claims: an ``ast``-based evaluator over Fractions (never ``eval``)."""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from fractions import Fraction

# Characters an arithmetic expression in prose may use (× ÷ − are normalised below).
_EXPR_CHARS = r"[0-9.,+\-*/×÷−–·^() \t$]"
_CLAIM = re.compile(rf"(?={_EXPR_CHARS}*[0-9])({_EXPR_CHARS}+)=(?!=)")
_RHS = re.compile(rf"[ \t]*({_EXPR_CHARS}+)")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
# Models often write LaTeX: \(4 \times 3 = 12\).
_LATEX_OPS = {"\\times": "×", "\\cdot": "·", "\\div": "÷", "\\(": " ", "\\)": " ", "\\[": " ", "\\]": " "}
_LATEX = re.compile(r"\\times|\\cdot|\\div|\\[()\[\]]")
_MAX_POW = 64
_MAX_DIGITS = 4000


class ArithmeticError_(ValueError):
    """An expression that is not plain arithmetic (or too big to check)."""


@dataclass(slots=True)
class Claim:
    """One ``lhs = rhs`` claim and whether it holds."""

    lhs: str
    rhs: str
    ok: bool
    actual: Fraction

    def describe(self) -> str:
        return f"{self.lhs} = {self.rhs} is wrong: {self.lhs} = {format_number(self.actual)}"


def format_number(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    as_float = x.numerator / x.denominator
    return f"{x.numerator}/{x.denominator} (≈ {as_float:.6g})"


def _normalise(text: str) -> str:
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    return (text.replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-").replace("–", "-")
            .replace("^", "**").replace("$", ""))


def evaluate(expr: str) -> Fraction:
    """The exact value of a plain arithmetic expression (``+ - * / ** ( )``, ints, decimals).

    Raises :class:`ArithmeticError_` for anything else (names, calls, huge powers)."""
    source = _normalise(expr).strip()
    if not source or "," in source:
        raise ArithmeticError_(f"not an arithmetic expression: {expr!r}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise ArithmeticError_(f"not an arithmetic expression: {expr!r}") from None
    return _eval(tree.body)


def _eval(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # str() of a float is its shortest repr, so 0.1 is exactly 1/10
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div):
            if b == 0:
                raise ArithmeticError_("division by zero")
            return a / b
        if isinstance(node.op, ast.Pow):
            if b.denominator != 1 or abs(b) > _MAX_POW:
                raise ArithmeticError_("only small integer powers are checked")
            if a == 0 and b < 0:
                raise ArithmeticError_("division by zero")
            result = a ** int(b)
            if len(str(result.numerator)) > _MAX_DIGITS:
                raise ArithmeticError_("number too large")
            return Fraction(result)
    raise ArithmeticError_(f"unsupported expression element {type(node).__name__}")


def _decimals(rhs: str) -> int | None:
    """Decimal places written in a plain number (for rounding tolerance), or None if not a plain number."""
    m = re.fullmatch(r"\s*-?\d+(?:\.(\d+))?\s*", _normalise(rhs))
    if m is None:
        return None
    return len(m.group(1) or "")


def _equal(actual: Fraction, claimed: Fraction, rhs: str) -> bool:
    if actual == claimed:
        return True
    places = _decimals(rhs)
    if places is None or (actual.denominator == 1 and claimed.denominator == 1):
        return False
    # "1/3 = 0.333" holds when the claim is the value rounded (or cut) to the places written.
    scale = 10 ** places
    rounded = Fraction(round(actual * scale), scale)
    cut = Fraction(int(actual * scale), scale)  # int() truncates towards zero
    return claimed in (rounded, cut)


def _has_operator(expr: str) -> bool:
    return re.search(r"\d\s*[-+*/×÷−–·^]\s*[\d(.]|\)\s*[-+*/×÷−–·^]|[-+*/×÷−–·^]\s*\(", expr) is not None


def claims(text: str) -> list[Claim]:
    """Every checkable ``expr = value`` claim in ``text`` (a chain ``a = b = c`` gives two)."""
    found: list[Claim] = []
    for line in _LATEX.sub(lambda m: _LATEX_OPS[m.group(0)], text).splitlines():
        for sides in _chains(line):
            for lhs, rhs in itertools.pairwise(sides):
                if not (_has_operator(lhs) or _has_operator(rhs)):
                    continue
                try:
                    a, b = evaluate(lhs), evaluate(rhs)
                except ArithmeticError_:
                    continue
                found.append(Claim(lhs, rhs, _equal(a, b, rhs) or _equal(b, a, lhs), a))
    return found


def _chains(line: str) -> list[list[str]]:
    """The arithmetic runs joined by '=' in one line: ``"so 3*4 = 12 = 6+6."`` → ``[["3*4", "12", "6+6"]]``."""
    out: list[list[str]] = []
    pos = 0
    while True:
        m = _CLAIM.search(line, pos)
        if m is None:
            return out
        sides = [_trim(m.group(1))]
        pos = m.end()
        while True:
            r = _RHS.match(line, pos)
            if r is None:
                break
            sides.append(_trim(r.group(1)))
            pos = r.end()
            if line.startswith("=", pos) and not line.startswith("==", pos):
                pos += 1
                continue
            break
        sides = [x for x in sides if x]
        if len(sides) >= 2:
            out.append(sides)


def _trim(expr: str) -> str:
    """Drop prose punctuation around an expression: sentence dots, list commas, unbalanced brackets."""
    expr = expr.strip().rstrip(".,(").lstrip(")").strip()
    while expr.count("(") > expr.count(")") and expr.startswith("("):
        expr = expr[1:].strip()
    while expr.count(")") > expr.count("(") and expr.endswith(")"):
        expr = expr[:-1].strip()
    return expr
