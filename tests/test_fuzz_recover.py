"""Fuzzing tool-call recovery: any model text → recovered calls or a parse error, never an exception.

A recovered call without ``parse_error`` names an offered tool and carries a JSON object as
arguments (``raw_arguments`` decodes to exactly ``arguments``); a call written in any of the
supported shapes between plain prose comes back unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import fuzz
from toolmesh.llm.recover import recover_tool_calls

NAMES = ["get_weather", "search_docs", "add"]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in NAMES
]

# Pieces of every markup recovery knows, joined at random into near-miss model output.
FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<function=add>", "<function=nope>", "</function>", "<parameter=a>",
    "</parameter>", "```json\n", "```", "[TOOL_CALLS]", "<|python_tag|>", "<tool_calls>", "{", "}", "[", "]",
    '"name"', '"function"', '"arguments"', '"parameters"', '"tool_calls"', ":", ",", '"add"', '"get_weather"',
    '"functions.add"', '"ADD"', '"x"', "1", "null", '"{\\"a\\": 1}"', "\n", " ", "prose", '"', "\\", "é",
    '{"name": "add", "arguments": {"a": 1}}', '{"type": "function", "function": {"name": "add"}}',
]
texts = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))

# Known limitation (docs/fuzzing.md): a closing delimiter (```, </tool_call>, </function>) inside
# a JSON string ends the markup early, giving a parse_error call; strings here leave out ` and <.
strings = st.text(alphabet=st.characters(blacklist_characters="`<", blacklist_categories=("Cs",)), max_size=10)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=10,
)
arguments = st.dictionaries(strings, json_values, max_size=4)
# Prose that cannot itself look like markup.
prose = st.text(alphabet=st.characters(blacklist_characters="{}[]<>`\\\"", blacklist_categories=("Cs",)),
                max_size=40)


def check_calls(text: str) -> None:
    calls, rest = recover_tool_calls(text, TOOLS)
    assert isinstance(rest, str)
    if not calls:
        assert rest == text
    ids = [c.id for c in calls]
    assert len(set(ids)) == len(ids)
    for c in calls:
        assert c.recovered
        assert isinstance(c.arguments, dict)
        if c.parse_error is None:
            assert c.name in NAMES, c
            decoded = orjson.loads(c.raw_arguments) if c.raw_arguments.strip() else {}
            assert decoded == c.arguments
        else:
            assert c.arguments == {}
            assert c.name in NAMES or c.name == "", c


@fuzz(500)
@given(texts)
@example('<tool_call>{"name": "add", "arguments": {"a": NaN}}</tool_call>')
@example('{"name": "add", "arguments": {"a": 1e999}}')
@example('<function=add><parameter=a>1e999</parameter></function>')
@example('[{"name": "add"}, {"name": "add", "arguments": "[1]"}]')
# Found by this fuzzer (each raised TypeError/ValueError, or changed the arguments silently):
@example('{"name": "add", "arguments": {"a": 123456789012345678901234567890}}')
@example('{"name": "add", "arguments": {"a": "\\ud800"}}')
@example('{"name": "add", "arguments": {"a": ' + "1" * 5000 + "}}")
@example('{"name": "add", "arguments": {"a": NaN}}')
def test_any_text_recovers_valid_calls_or_parse_errors(text: str) -> None:
    check_calls(text)


def render(shape: str, name: str, args: dict[str, Any]) -> str:
    body = orjson.dumps({"name": name, "arguments": args}).decode()
    if shape == "bare":
        return body
    if shape == "parameters":
        return orjson.dumps({"name": name, "parameters": args}).decode()
    if shape == "openai":
        return orjson.dumps({"type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
                            ).decode()
    if shape == "fence":
        return f"```json\n{body}\n```"
    if shape == "tag":
        return f"<tool_call>\n{body}\n</tool_call>"
    if shape == "function":
        return f"<function={name}>{orjson.dumps(args).decode()}</function>"
    if shape == "list":
        return f"[{body}]"
    return orjson.dumps({"tool_calls": [{"name": name, "arguments": args}]}).decode()


SHAPES = ["bare", "parameters", "openai", "fence", "tag", "function", "list", "tool_calls"]


@fuzz(500)
@given(st.sampled_from(SHAPES), st.sampled_from(NAMES), arguments, prose, prose)
def test_a_call_in_any_shape_is_recovered_exactly(shape: str, name: str, args: dict[str, Any], before: str,
                                                  after: str) -> None:
    text = f"{before}\n{render(shape, name, args)}\n{after}"
    calls, rest = recover_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments, c.parse_error) for c in calls] == [(name, args, None)], text
    assert rest == f"{before}\n\n{after}".strip()


@fuzz(300)
@given(st.lists(st.tuples(st.sampled_from(["tag", "function", "fence"]), st.sampled_from(NAMES), arguments),
                min_size=1, max_size=4), prose)
def test_several_calls_come_back_in_order(items: list[tuple[str, str, dict[str, Any]]], sep: str) -> None:
    text = f"\n{sep}\n".join(render(*item) for item in items)
    calls, _ = recover_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [(n, a) for _, n, a in items], text
