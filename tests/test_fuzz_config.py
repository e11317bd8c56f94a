"""Fuzzing the config loader: any file or parsed value → a ToolmeshConfig or a ConfigError, nothing else.

A ConfigError about the content of a non-empty mapping must name the offending key.
"""

from __future__ import annotations

import datetime as dt
import json
import string
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_support import fuzz
from toolmesh.errors import ConfigError
from toolmesh.hub.configfile import ToolmeshConfig, load_config, parse_config

# Keys the loader gives meaning to, so generated documents reach deep into validation.
KEYS = [
    "servers", "mcpServers", "tenants", "llm", "gateway", "store", "state", "reasoning",
    "command", "args", "env", "url", "type", "transport", "headers", "cwd", "enabled", "disabled",
    "timeout", "name", "server", "autoApprove", "description", "acme", "crm", "a.b", "", " x", "a/b",
]
VALUES = ["stdio", "http", "sse", "ws", "streamable-http", "websocket", "python", "http://h:1/mcp",
          "https://u:secretpw@h/mcp?k=v", "${HOME}", "${UNSET_VAR_X}", "${A:-d}", "${A-d}", "$${x}", "${",
          "${1bad}", "${A:-${B}}", "ftp://x", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.sampled_from(VALUES),
    st.text(max_size=12), st.dates(), st.datetimes(), st.times(),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
        # non-string keys, as YAML allows
        st.dictionaries(st.one_of(st.integers(), st.booleans(), st.none()), inner, max_size=2),
    ),
    max_leaves=25,
)
top_level = st.dictionaries(st.sampled_from(KEYS[:8]) | keys, documents, min_size=1, max_size=4)
ENV = {"HOME": "/home/u", "A": "", "B": "b"}


def load_file(raw: bytes, suffix: str) -> ToolmeshConfig:
    """load_config on a real file holding ``raw``."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"c{suffix}"
        path.write_bytes(raw)
        return load_config(path, env=ENV)


def check(data: Any) -> None:
    try:
        cfg = parse_config(data, "fuzz.yaml", env=ENV)
    except ConfigError as e:
        if isinstance(data, dict) and data:
            assert e.key, f"ConfigError without a key: {e}"
        return
    assert isinstance(cfg, ToolmeshConfig)


@fuzz(300)
@given(documents)
def test_any_value_gives_config_or_config_error(data: Any) -> None:
    check(data)


@fuzz(300)
@given(top_level)
@example({"": None})  # found: the empty key was not named
@example({"servers": {"servers": {0: None}}})  # found: TypeError "keywords must be strings"
@example({"servers": {"a": {"url": "http://[::1"}}})
@example({"servers": {"a": {"command": "x", "env": {"K": dt.date(2020, 1, 1)}}}})
@example({"mcpServers": {"a": {"type": ["http"]}}})
@example({"tenants": {"t": {"servers": {"a": {"transport": {}}}}}})
def test_any_mapping_error_names_a_key(data: dict[Any, Any]) -> None:
    check(data)


# Fragments of the three syntaxes; joined at random they make files that are nearly valid.
FRAGMENTS = [
    "servers:", "\n", "  ", "a:", " {command: python}", " {url: 'http://h/mcp', type: sse}", "- x", "&a ", "*a",
    "<<: *a", "!!python/object:os.system", "[", "]", "{", "}", "'", '"', "\t", "#", "---", "...", "? ", "%YAML 1.1",
    "[servers.a]", "command = 'x'", "args = [1, 2]", "url = \"http://h\"", "[[servers]]", "=", "\\u0000", "\x00",
    '{"mcpServers": ', '{"a": {"command": "x", "args": [1]}}', "null", "true", "1e999", "${X}", "\ufeff", "é",
    "tenants:", "  t:", "    servers:", "type = 'ws'", "env: {K: 1}", "headers: {A: b}",
]
texts = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))


@fuzz(300)
@given(texts, st.sampled_from([".yaml", ".yml", ".toml", ".json", ".txt", ""]))
@example("a: !!python/object/apply:os.system ['true']", ".yaml")
@example("servers: {a: {command: x}, a: {command: y}}", ".yaml")
@example("? [a, b]\n: 1", ".yaml")
@example("x: 1\n---\ny: 2", ".yaml")
def test_any_text_file_gives_config_or_config_error(text: str, suffix: str) -> None:
    try:
        cfg = load_file(text.encode("utf-8", "surrogatepass"), suffix)
    except ConfigError:
        return
    assert isinstance(cfg, ToolmeshConfig)


@fuzz(200)
@given(st.binary(max_size=200), st.sampled_from([".yaml", ".toml", ".json"]))
def test_any_bytes_give_config_or_config_error(raw: bytes, suffix: str) -> None:
    try:
        load_file(raw, suffix)
    except ConfigError:
        pass


@fuzz(200)
@given(top_level, st.sampled_from(["yaml", "json"]))
def test_serialised_documents_agree_with_parse_config(data: dict[Any, Any], fmt: str) -> None:
    """The same document through a file gives the same outcome as through parse_config."""
    try:
        text = yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data)
    except (TypeError, ValueError, yaml.YAMLError):
        return  # not representable in that syntax (dates in JSON, NaN keys...)
    reparsed = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    if reparsed is None or reparsed == {}:
        return
    try:
        direct: Any = parse_config(reparsed, "x", env=ENV)
    except ConfigError as e:
        direct = ("error", e.key)
    try:
        via_file: Any = load_file(text.encode(), f".{fmt}")
    except ConfigError as e:
        via_file = ("error", e.key)
    if isinstance(direct, ToolmeshConfig):
        assert isinstance(via_file, ToolmeshConfig) and via_file.tenants == direct.tenants
    else:
        assert via_file == direct


@fuzz(300)
@given(st.text(alphabet=string.ascii_letters + string.digits + "${}:-_ ", max_size=30))
def test_env_references_substitute_or_name_the_key(value: str) -> None:
    data = {"servers": {"s": {"command": "x", "args": [value]}}}
    try:
        cfg = parse_config(data, "x", env=ENV)
    except ConfigError as e:
        assert e.key == "servers.s.args[0]", e
        return
    assert "${" not in cfg.servers["s"].args[0] or "$${" in value
