"""Argument validation against a tool's input schema, with a fast path for simple schemas.

Profiling the Hub (docs/benchmarks.md) put ``jsonschema`` at ~29 % of the client's
per-call time. Most tool schemas are flat objects of typed properties, so such a
schema is compiled into a small Python check that answers "certainly valid" in a
few microseconds. Anything the fast path does not understand, and every instance
it does not accept, goes to ``jsonschema`` (2020-12), which stays the authority
and produces the error messages. The fast path may only say "valid" when
``jsonschema`` would too; property-based tests hold it to that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from toolmesh.errors import InvalidArgumentsError

Check = Callable[[Any], bool]

#: Keywords that never constrain an instance (annotations), safe to ignore.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                          "deprecated", "readOnly", "writeOnly", "format"})
_SCALARS = ("string", "integer", "number", "boolean", "null")


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPE_CHECKS: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _compile_scalar(schema: Any) -> Check | None:
    """A check for a property schema, or None when it is outside the fast subset."""
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict):
        return None
    checks: list[Check] = []
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(n not in _TYPE_CHECKS for n in names):
                return None
            fns = [_TYPE_CHECKS[n] for n in names]
            checks.append(fns[0] if len(fns) == 1 else _any_of(fns))
        elif key == "enum" and isinstance(value, list) and all(
            isinstance(x, str | int | float) and not isinstance(x, bool) for x in value
        ):
            # Restricted to strings and non-bool numbers: equality then matches JSON Schema's.
            checks.append(_in_enum(list(value)))
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") and isinstance(
            value, int | float
        ) and not isinstance(value, bool):
            checks.append(_bound(key, value))
        elif key in ("minLength", "maxLength") and isinstance(value, int) and not isinstance(value, bool):
            checks.append(_length(key, value))
        elif key == "anyOf" and isinstance(value, list) and value:
            subs = [_compile_scalar(s) for s in value]
            if any(s is None for s in subs):
                return None
            checks.append(_any_of([s for s in subs if s is not None]))
        elif key == "items" and schema.get("type") == "array":
            sub = _compile_scalar(value)
            if sub is None:
                return None
            checks.append(_items(sub))
        else:
            return None
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    return _all_of(checks)


def _any_of(fns: list[Check]) -> Check:
    return lambda v: any(f(v) for f in fns)


def _all_of(fns: list[Check]) -> Check:
    return lambda v: all(f(v) for f in fns)


def _in_enum(allowed: list[Any]) -> Check:
    return lambda v: not isinstance(v, bool) and v in allowed


def _items(sub: Check) -> Check:
    return lambda v: not isinstance(v, list) or all(sub(x) for x in v)


def _bound(key: str, limit: float) -> Check:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if key == "minimum":
        return lambda v: not number(v) or v >= limit
    if key == "maximum":
        return lambda v: not number(v) or v <= limit
    if key == "exclusiveMinimum":
        return lambda v: not number(v) or v > limit
    return lambda v: not number(v) or v < limit


def _length(key: str, n: int) -> Check:
    # JSON Schema counts code points, as len() on str does.
    if key == "minLength":
        return lambda v: not isinstance(v, str) or len(v) >= n
    return lambda v: not isinstance(v, str) or len(v) <= n


def compile_fast(schema: Any) -> Check | None:
    """A fast validity check for a flat object schema, or None if the schema is not simple."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    props: dict[str, Check] = {}
    required: list[str] = []
    additional: bool | Check = True
    for key, value in schema.items():
        if key in _ANNOTATIONS or key == "type":
            continue
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                prop_check = _compile_scalar(sub)
                if prop_check is None:
                    return None
                props[name] = prop_check
        elif key == "required" and isinstance(value, list) and all(isinstance(r, str) for r in value):
            required = list(value)
        elif key == "additionalProperties" and isinstance(value, bool):
            additional = value
        else:
            return None
    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return False
        for name in required:
            if name not in instance:
                return False
        for name, value in instance.items():
            fn = props.get(name)
            if fn is None:
                if additional is False:
                    return False
            elif not fn(value):
                return False
        return True

    return check


def _no_retrieval(uri: str) -> Resource[Any]:
    """``$ref`` to another document: never fetched (SEP-2106 forbids dereferencing network URIs;
    a tool definition must not make the client reach out to arbitrary hosts)."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


#: Same-document refs (``#/$defs/...``) resolve; anything else is left unresolved.
_REGISTRY: Registry[Any] = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


class ArgumentValidator:
    """Validates one tool's arguments; raise :class:`InvalidArgumentsError` with every problem named."""

    __slots__ = ("fast", "full", "label")

    def __init__(self, schema: Any, label: str) -> None:
        self.label = label
        self.fast = compile_fast(schema)
        self.full: Any = None
        try:
            cls = validators.validator_for(schema, default=Draft202012Validator)
            cls.check_schema(schema)
            self.full = cls(schema, registry=_REGISTRY)
        except Exception:
            self.fast = None

    def __call__(self, arguments: dict[str, Any]) -> None:
        fast = self.fast
        if fast is not None and fast(arguments):
            return
        if self.full is None:
            return
        try:
            errors = list(self.full.iter_errors(arguments))
        except Unresolvable:
            return  # the schema points outside itself: the server, which can resolve it, decides
        if errors:
            msgs = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5]]
            raise InvalidArgumentsError(
                f"arguments for {self.label} violate its input schema: " + "; ".join(msgs), errors=msgs
            )
