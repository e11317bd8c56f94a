"""The fast argument check never accepts what jsonschema rejects (property-based)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from toolmesh.errors import InvalidArgumentsError
from toolmesh.hub.argcheck import ArgumentValidator, compile_fast

scalar_types = st.sampled_from(["string", "integer", "number", "boolean", "null"])
prop_schema = st.one_of(
    st.builds(lambda t: {"type": t}, scalar_types),
    st.builds(lambda ts: {"type": ts}, st.lists(scalar_types, min_size=1, max_size=3, unique=True)),
    st.builds(lambda e: {"enum": e}, st.lists(st.one_of(st.text(max_size=3), st.integers(-3, 3)), min_size=1,
                                              max_size=4)),
    st.builds(lambda lo, hi: {"type": "number", "minimum": lo, "maximum": hi}, st.integers(-5, 0), st.integers(0, 5)),
    st.builds(lambda lo: {"type": "integer", "exclusiveMinimum": lo}, st.integers(-3, 3)),
    st.builds(lambda n: {"type": "string", "minLength": n, "maxLength": n + 2}, st.integers(0, 3)),
    st.builds(lambda t: {"anyOf": [{"type": t}, {"type": "null"}], "default": None}, scalar_types),
    st.builds(lambda t: {"type": "array", "items": {"type": t}}, scalar_types),
    st.just({}),
)
object_schema = st.builds(
    lambda props, req, addl: {
        "type": "object",
        "title": "args",
        "properties": props,
        "required": [k for k in props if k in req],
        **({"additionalProperties": addl} if addl is not None else {}),
    },
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), prop_schema, max_size=4),
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
    st.one_of(st.none(), st.booleans()),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(-10, 10, allow_nan=False),
              st.text(max_size=5)),
    lambda children: st.lists(children, max_size=3),
    max_leaves=5,
)
instances = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), json_values, max_size=5)


@settings(max_examples=800, deadline=None)
@given(object_schema, instances)
def test_fast_path_agrees_with_jsonschema(schema: dict[str, Any], instance: dict[str, Any]) -> None:
    fast = compile_fast(schema)
    assert fast is not None, schema  # every generated schema is in the fast subset
    reference = Draft202012Validator(schema).is_valid(instance)
    assert fast(instance) == reference, (schema, instance)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}, "$defs": {"X": {"type": "string"}}},
        {"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}},
        {"type": "object", "properties": {"x": {"type": "object", "properties": {}}}},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}]}}},
    ],
)
def test_complex_schemas_fall_back_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_fast(schema) is None
    check = ArgumentValidator(schema, "s/t")
    with pytest.raises(InvalidArgumentsError):
        check({"x": 5})


def test_errors_name_every_problem() -> None:
    check = ArgumentValidator({"type": "object", "properties": {"sku": {"type": "string"}, "n": {"type": "integer"}},
                               "required": ["sku"], "additionalProperties": False}, "inventory/check_stock")
    check({"sku": "SKU-1001", "n": 2})
    with pytest.raises(InvalidArgumentsError) as info:
        check({"n": "two", "extra": 1})
    text = str(info.value)
    assert "inventory/check_stock" in text and "'sku' is a required property" in text
    assert "n: 'two' is not of type 'integer'" in text and "Additional properties" in text
    assert len(info.value.errors) == 3


def test_broken_schema_does_not_block_calls() -> None:
    check = ArgumentValidator({"type": "object", "properties": {"x": {"type": "nonsense"}}}, "s/t")
    check({"x": 1})
