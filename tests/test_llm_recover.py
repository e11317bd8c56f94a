"""Recovery of tool calls written as text (pure logic, no I/O)."""

from __future__ import annotations

import pytest

from toolmesh.llm.recover import recover_tool_calls, tool_names


def _tool(name: str) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


TOOLS = [_tool("get_weather"), _tool("search_docs"), _tool("add")]


def one(text: str) -> tuple[str, dict[str, object], str]:
    calls, rest = recover_tool_calls(text, TOOLS)
    assert len(calls) == 1, (text, calls)
    c = calls[0]
    assert c.recovered and c.parse_error is None
    return c.name, c.arguments, rest


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '  {"name":"get_weather","arguments":"{\\"city\\": \\"Paris\\"}"}\n',
    '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}}',
    '{"function": "get_weather", "arguments": {"city": "Paris"}}',
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',  # unclosed tag (small models)
    '<function=get_weather>{"city": "Paris"}</function>',
    '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>',
    '{"name": "functions.get_weather", "arguments": {"city": "Paris"}}',
    '{"name": "GET_WEATHER", "arguments": {"city": "Paris"}}',
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
])
def test_shapes_recovered(text: str) -> None:
    name, args, rest = one(text)
    assert name == "get_weather"
    assert args == {"city": "Paris"}
    assert rest == ""


def test_surrounding_prose_is_kept_as_remaining_text() -> None:
    name, args, rest = one('Let me check.\n```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```\nOne moment.')
    assert (name, args) == ("add", {"a": 1, "b": 2})
    assert rest == "Let me check.\n\nOne moment."
    name, args, rest = one('I will call {"name": "add", "arguments": {"a": 1}} now')
    assert rest == "I will call  now"


def test_several_calls_in_order_with_unique_ids() -> None:
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "search_docs", "arguments": {"q": "x"}}\n</tool_call>')
    calls, rest = recover_tool_calls(text, TOOLS)
    assert [c.name for c in calls] == ["get_weather", "search_docs"]
    more, _ = recover_tool_calls('[{"name": "add", "arguments": {}}, {"name": "add", "arguments": {"a": 1}}]', TOOLS)
    ids = [c.id for c in calls + more]
    assert len(set(ids)) == 4 and all(i.startswith("call_") for i in ids)
    assert [c.arguments for c in more] == [{}, {"a": 1}]
    assert rest == ""


def test_mistral_marker_and_list() -> None:
    calls, rest = recover_tool_calls('[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1}}]', TOOLS)
    assert [c.name for c in calls] == ["add"] and rest == ""


def test_several_json_lines_in_one_tag() -> None:
    text = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>'
    calls, _ = recover_tool_calls(text, TOOLS)
    assert [c.arguments for c in calls] == [{"a": 1}, {"a": 2}]


def test_raw_arguments_is_json_of_the_arguments() -> None:
    calls, _ = recover_tool_calls('{"name": "add", "arguments": {"a": 1}}', TOOLS)
    assert calls[0].raw_arguments.replace(" ", "") == '{"a":1}'


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # missing brace
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris",}}\n```',  # trailing comma
    'Calling: {"name": "get_weather", "arguments": {"city": "Paris"',  # cut off
    '<function=get_weather>{"city": Paris}</function>',
])
def test_broken_json_yields_call_with_parse_error(text: str) -> None:
    calls, _ = recover_tool_calls(text, TOOLS)
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].parse_error and calls[0].arguments == {}
    assert calls[0].recovered


def test_garbage_inside_tool_call_tag_is_reported_not_dropped() -> None:
    calls, _ = recover_tool_calls("<tool_call>get weather for paris please</tool_call>", TOOLS)
    assert len(calls) == 1 and calls[0].parse_error and calls[0].name == ""


def test_arguments_that_are_not_an_object() -> None:
    calls, _ = recover_tool_calls('{"name": "add", "arguments": [1, 2]}', TOOLS)
    assert calls[0].parse_error and calls[0].arguments == {}
    calls, _ = recover_tool_calls('{"name": "add", "arguments": "not json"}', TOOLS)
    assert calls[0].parse_error and calls[0].raw_arguments == "not json"


@pytest.mark.parametrize("text", [
    "Use a dict like {a: 1} or a set {1, 2}; functions look like f(x) { return x; }.",
    'The config is {"name": "prod", "replicas": 3}.',  # JSON, but no offered tool name
    '{"name": "delete_everything", "arguments": {}}',  # not an offered tool
    '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',
    '<function=delete_everything>{"x": 1}</function>',
    '```json\n{"city": "Paris", "temp": 21}\n```',
    '{"name": "add", "arguments": {"a": 1}, "comment": "extra keys mean it is data"}',
    "Nothing to see here.",
    "",
])
def test_not_tool_calls(text: str) -> None:
    calls, rest = recover_tool_calls(text, TOOLS)
    assert calls == []
    assert rest == text


def test_ambiguous_case_insensitive_name_is_not_recovered() -> None:
    tools = [_tool("Lookup"), _tool("lookup")]
    assert recover_tool_calls('{"name": "LOOKUP", "arguments": {}}', tools)[0] == []
    calls, _ = recover_tool_calls('{"name": "lookup", "arguments": {}}', tools)
    assert calls[0].name == "lookup"


def test_no_tools_offered_means_nothing_recovered() -> None:
    text = '{"name": "add", "arguments": {}}'
    assert recover_tool_calls(text, []) == ([], text)


def test_tool_names_accepts_both_forms() -> None:
    assert tool_names([_tool("a"), {"name": "b", "input_schema": {}}]) == ["a", "b"]
