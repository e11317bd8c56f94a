"""Config file loading: formats, env substitution, and every error path (HUB-2, IF-3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolmesh.errors import ConfigError
from toolmesh.hub.configfile import SECTIONS, TOP_LEVEL_KEYS, ToolmeshConfig, load_config, parse_config

ENV = {"TOKEN": "s3cr3t-value-42", "EMPTY": ""}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _err(data: object, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "conf.yaml", env=ENV if env is None else env)
    return ei.value


YAML = """
servers:
  catalog:
    command: python
    args: [-m, toolmesh.servers.demo.catalog, --port, 8080]
    env: {PORT: 8080, MODE: fast}
    cwd: /tmp
  pricing:
    url: https://pricing.example/mcp
    headers: {Authorization: "Bearer ${TOKEN}"}
    timeout: 5
    circuit: {failure_threshold: 3}
  legacy:
    url: http://old.example/sse
    enabled: false
tenants:
  acme:
    servers:
      crm: {url: "ws://crm:9000/mcp", protocol: "2026-07-28"}
llm:
  default_model: gpt-4.1-mini
agent: {max_turns: 8}
"""


def test_yaml(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "toolmesh.yaml", YAML), env=ENV)
    assert isinstance(cfg, ToolmeshConfig)
    assert set(cfg.servers) == {"catalog", "pricing", "legacy"}
    cat = cfg.servers["catalog"]
    assert cat.name == "catalog" and cat.transport == "stdio" and cat.cwd == "/tmp"
    assert cat.args == ["-m", "toolmesh.servers.demo.catalog", "--port", "8080"]
    assert cat.env == {"PORT": "8080", "MODE": "fast"}
    pr = cfg.servers["pricing"]
    assert pr.transport == "http" and pr.timeout == 5 and pr.circuit.failure_threshold == 3
    assert pr.headers == {"Authorization": "Bearer s3cr3t-value-42"}
    assert cfg.servers["legacy"].transport == "sse" and not cfg.servers["legacy"].enabled
    assert cfg.tenants["acme"]["crm"].transport == "websocket"
    assert cfg.tenants["acme"]["crm"].protocol == "2026-07-28"
    assert cfg.sections == {"llm": {"default_model": "gpt-4.1-mini"}, "agent": {"max_turns": 8}}
    assert cfg.section("gateway") == {}
    assert cfg.source and cfg.source.endswith("toolmesh.yaml")


def test_yml_and_toml_give_the_same_config(tmp_path: Path) -> None:
    toml = """
[servers.catalog]
command = "python"
args = ["-m", "toolmesh.servers.demo.catalog", "--port", "8080"]
env = { PORT = "8080", MODE = "fast" }
cwd = "/tmp"

[servers.pricing]
url = "https://pricing.example/mcp"
headers = { Authorization = "Bearer ${TOKEN}" }
timeout = 5
circuit = { failure_threshold = 3 }

[servers.legacy]
url = "http://old.example/sse"
enabled = false

[tenants.acme.servers.crm]
url = "ws://crm:9000/mcp"
protocol = "2026-07-28"

[llm]
default_model = "gpt-4.1-mini"

[agent]
max_turns = 8
"""
    a = load_config(_write(tmp_path, "a.toml", toml), env=ENV)
    b = load_config(_write(tmp_path, "b.yml", YAML), env=ENV)
    assert a.model_dump(exclude={"source"}) == b.model_dump(exclude={"source"})


def test_mcp_servers_json(tmp_path: Path) -> None:
    doc = {
        "mcpServers": {
            "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
            "remote": {"url": "https://x.example/mcp", "type": "streamable-http", "headers": {"X-Key": "${TOKEN}"}},
            "events": {"type": "sse", "url": "https://x.example/sse"},
            "sock": {"type": "ws", "url": "wss://x.example/mcp"},
            "off": {"command": "x", "disabled": True, "autoApprove": ["a"]},
            "local": {"type": "stdio", "command": "node", "args": ["s.js"], "timeout": 90},
        }
    }
    cfg = load_config(_write(tmp_path, "claude_desktop_config.json", json.dumps(doc)), env=ENV)
    s = cfg.servers
    assert s["time"].command == "uvx" and s["time"].env == {"TZ": "UTC"}
    assert s["remote"].transport == "http" and s["remote"].headers == {"X-Key": "s3cr3t-value-42"}
    assert s["events"].transport == "sse"
    assert s["sock"].transport == "websocket"
    assert s["off"].enabled is False and s["time"].enabled is True
    assert s["local"].timeout == 90


def test_native_json_and_mcp_servers_inside_tenant(tmp_path: Path) -> None:
    doc = {"tenants": {"t1": {"mcpServers": {"a": {"command": "x"}}, "servers": {"b": {"command": "y"}}}}}
    cfg = load_config(_write(tmp_path, "c.json", json.dumps(doc)))
    assert set(cfg.tenants["t1"]) == {"a", "b"}
    assert cfg.servers == {}


def test_top_level_servers_merge_with_tenants_default() -> None:
    cfg = parse_config(
        {"servers": {"a": {"command": "x"}}, "tenants": {"default": {"servers": {"b": {"command": "y"}}}}}
    )
    assert set(cfg.servers) == {"a", "b"}
    e = _err({"servers": {"a": {"command": "x"}}, "tenants": {"default": {"servers": {"a": {"command": "y"}}}}})
    assert e.key == "tenants.default.servers.a" and "defined twice" in str(e)


def test_env_substitution_forms() -> None:
    env = {"A": "1", "EMPTY": ""}
    data = {
        "servers": {
            "s": {
                "command": "${A}",
                "args": ["${MISSING:-dflt}", "${EMPTY:-d2}", "${EMPTY-d3}", "x${A}y${A}", "$${A}", "$5 ${A:-}"],
                "env": {"K": "${MISSING-}"},
            }
        }
    }
    s = parse_config(data, env=env).servers["s"]
    assert s.command == "1"
    assert s.args == ["dflt", "d2", "", "x1y1", "${A}", "$5 1"]
    assert s.env == {"K": ""}
    # the input is not modified
    assert data["servers"]["s"]["command"] == "${A}"


def test_env_var_in_sections_and_numbers() -> None:
    cfg = parse_config(
        {"servers": {"s": {"command": "x", "timeout": "${T}"}}, "llm": {"key": "${A}"}}, env={"T": "2.5", "A": "k"}
    )
    assert cfg.servers["s"].timeout == 2.5
    assert cfg.sections["llm"] == {"key": "k"}


def test_missing_variable_names_key_and_variable() -> None:
    e = _err({"servers": {"p": {"url": "https://x/mcp", "headers": {"Authorization": "Bearer ${NOPE}"}}}})
    assert e.key == "servers.p.headers.Authorization"
    assert "'NOPE'" in str(e) and str(e).startswith("conf.yaml: servers.p.headers.Authorization: ")
    e2 = _err({"servers": {"p": {"command": "x", "args": ["ok", "${NOPE}"]}}})
    assert e2.key == "servers.p.args[1]"


@pytest.mark.parametrize("bad", ["${", "abc ${A", "${1A}", "${A B}", "${}"])
def test_malformed_references(bad: str) -> None:
    e = _err({"servers": {"s": {"command": bad}}}, env={"A": "1"})
    assert e.key == "servers.s.command"


def test_validation_errors_name_the_key_path() -> None:
    e = _err({"servers": {"catalog": {"command": "x", "timeout": 0}}})
    assert str(e) == "conf.yaml: servers.catalog.timeout: Input should be greater than 0"
    assert e.key == "servers.catalog.timeout" and e.source == "conf.yaml"
    e = _err({"servers": {"catalog": {"command": "x", "circuit": {"failure_threshold": 0}}}})
    assert e.key == "servers.catalog.circuit.failure_threshold"
    e = _err({"servers": {"catalog": {"command": "x", "comand": "y"}}})
    assert e.key == "servers.catalog.comand" and "unknown key" in str(e) and "command" in str(e)
    e = _err({"servers": {"catalog": {"args": ["a"]}}})
    assert e.key == "servers.catalog" and "exactly one of" in str(e) and "Value error" not in str(e)
    e = _err({"servers": {"bad name": {"command": "x"}}})
    assert e.key == 'servers["bad name"].name' and "whitespace" in str(e)
    e = _err({"servers": {"a": {"command": "x", "protocol": "2024-01-01"}}})
    assert e.key == "servers.a.protocol"
    e = _err({"servers": {"a": {"command": "x", "env": {"DEBUG": True}}}})
    assert e.key == "servers.a.env.DEBUG"


def test_several_errors_are_all_reported() -> None:
    e = _err({"servers": {"a": {"command": "x", "timeout": -1}, "b": {"command": "x", "retries": 99}}})
    assert e.key == "servers.a.timeout"
    assert "servers.b.retries: Input should be less than or equal to 10" in str(e)


@pytest.mark.parametrize(
    ("data", "key", "needle"),
    [
        ({"servers": {"a": {"command": "x"}}, "sever": {}}, "sever", "unknown top-level key"),
        ({"servers": ["a"]}, "servers", "must be a mapping"),
        ({"servers": {"a": "python"}}, "servers.a", "must be a mapping"),
        ({"servers": {1: {"command": "x"}}}, "servers", "keys must be strings"),
        ({"servers": {"a": {"command": "x", "name": "b"}}}, "servers.a.name", "the name is the key"),
        ({"servers": {"a": {"command": "x", "server": "obj"}}}, "servers.a.server", "code-only"),
        ({"tenants": {"t": {"servers": {}, "limits": {}}}}, "tenants.t.limits", "unknown key"),
        ({"tenants": {"a b": {}}}, 'tenants["a b"]', "tenant names"),
        ({"tenants": {"t": []}}, "tenants.t", "must be a mapping"),
        ({"llm": "gpt"}, "llm", "must be a mapping"),
        ({"mcpServers": {"a": {"url": "https://x/mcp", "type": "grpc"}}}, "mcpServers.a.type", "unknown type"),
        ({"mcpServers": {"a": {"command": "x", "disabled": "yes"}}}, "mcpServers.a.disabled", "true or false"),
        ({"mcpServers": {"a": {"command": "x", "envFile": ".env"}}}, "mcpServers.a.envFile", "unknown key"),
        ({"mcpServers": {"a": {"command": "x", "type": "stdio", "transport": "stdio"}}}, "mcpServers.a", "not both"),
        (
            {"servers": {"a": {"command": "x"}}, "mcpServers": {"a": {"command": "y"}}},
            "mcpServers.a",
            "defined twice",
        ),
    ],
)
def test_structural_errors(data: dict[object, object], key: str, needle: str) -> None:
    e = _err(data)
    assert e.key == key
    assert needle in str(e)


def test_top_level_shape() -> None:
    assert "top level must be a mapping" in str(_err([1]))
    assert "empty" in str(_err({}))
    # Every section owned by another feature is accepted at the top level and kept raw, each on its own.
    for name in SECTIONS:
        cfg = parse_config({name: {"probe": name}}, env={})
        assert cfg.sections == {name: {"probe": name}} and cfg.section(name) == {"probe": name}
        assert cfg.servers == {}
    assert set(TOP_LEVEL_KEYS) == {"servers", "mcpServers", "tenants", *SECTIONS}


def test_secrets_never_echoed() -> None:
    secret = ENV["TOKEN"]
    data = {
        "servers": {
            "a": {
                "url": "ftp://user:pw-${TOKEN}@host/mcp?api_key=${TOKEN}",
                "headers": {"Authorization": "Bearer ${TOKEN}"},
            },
            "b": {"url": "https://x/mcp", "headers": {"Authorization": f"Bearer {secret}"}, "timeout": "${TOKEN}"},
            "c": {"command": "x", "env": {"API_KEY": secret}, "retries": secret},
        }
    }
    msg = str(_err(data))
    assert "a: url must be" in msg and "ftp://***@host/mcp?***" in msg
    assert "servers.b.timeout" in msg and "servers.c.retries" in msg
    assert secret not in msg and "pw-" not in msg and "Bearer" not in msg


def test_secrets_not_echoed_by_parser_errors(tmp_path: Path) -> None:
    p = _write(tmp_path, "x.yaml", "servers:\n  a:\n    headers: {Authorization: Bearer hunter2: x}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "hunter2" not in str(ei.value) and "line 3" in str(ei.value)


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("e.yaml", "", "empty"),
        ("e.yaml", "# only a comment\n", "empty"),
        ("e.toml", "   \n", "empty"),
        ("e.yaml", "servers:\n  a: {command: x\n  b: 1\n", "invalid YAML at line 3"),
        ("e.yaml", "servers:\n  a: {command: x}\n  a: {command: y}\n", "duplicate key 'a'"),
        ("e.yaml", "- a\n- b\n", "top level must be a mapping"),
        ("e.toml", "[servers.a]\ncommand = \n", "invalid TOML: Invalid value (at line 2"),
        ("e.json", '{"mcpServers": {"a": {"command": "x",}}}', "invalid JSON at line 1, column 38"),
        ("e.ini", "[a]\n", "unsupported config file type '.ini'"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, text: str, needle: str) -> None:
    p = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert needle in str(ei.value)
    assert str(ei.value).startswith(str(p))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"servers: \xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = """
servers:
  a: &a {command: python, timeout: 5}
  b:
    <<: *a
    timeout: 9
"""
    cfg = load_config(_write(tmp_path, "m.yaml", text))
    assert cfg.servers["b"].timeout == 9 and cfg.servers["b"].command == "python"


def test_forward_headers_are_validated() -> None:
    import pytest as _pytest

    from toolmesh.hub.config import ServerConfig

    ok = ServerConfig(name="a", url="http://127.0.0.1:1/mcp", forward_headers=["X-User-Token"])
    assert ok.forward_headers == ["x-user-token"]
    with _pytest.raises(ValueError, match="transport 'http'"):
        ServerConfig(name="a", command="x", forward_headers=["X-User-Token"])
    with _pytest.raises(ValueError, match="not a valid HTTP header name"):
        ServerConfig(name="a", url="http://127.0.0.1:1/mcp", forward_headers=["X-Bad\r\nInjected: 1"])
    with _pytest.raises(ValueError, match="may not include"):
        ServerConfig(name="a", url="http://127.0.0.1:1/mcp", forward_headers=["Mcp-Session-Id"])


# --- transport spellings (issue 8) ------------------------------------------------------------

_ALIASES = [
    ("stdio", "stdio"),
    ("http", "http"),
    ("streamable_http", "http"),
    ("streamable-http", "http"),
    ("streamableHttp", "http"),
    ("sse", "sse"),
    ("ws", "websocket"),
    ("websocket", "websocket"),
]


def _entry(canonical: str) -> dict[str, str]:
    if canonical == "stdio":
        return {"command": "python"}
    scheme = "ws" if canonical == "websocket" else "http"
    return {"url": f"{scheme}://127.0.0.1:9/mcp"}


@pytest.mark.parametrize(("alias", "canonical"), _ALIASES)
def test_transport_aliases_in_yaml(tmp_path: Path, alias: str, canonical: str) -> None:
    lines = [f"{k}: {json.dumps(v)}" for k, v in _entry(canonical).items()]
    text = "servers:\n  s:\n" + "".join(f"    {line}\n" for line in [*lines, f"transport: {alias}"])
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path).servers["s"].transport == canonical


@pytest.mark.parametrize(("alias", "canonical"), _ALIASES)
def test_transport_aliases_in_toml(tmp_path: Path, alias: str, canonical: str) -> None:
    lines = [f"{k} = {json.dumps(v)}" for k, v in _entry(canonical).items()]
    path = tmp_path / "c.toml"
    path.write_text("[servers.s]\n" + "\n".join([*lines, f'transport = "{alias}"']) + "\n")
    assert load_config(path).servers["s"].transport == canonical


@pytest.mark.parametrize("key", ["type", "transport"])
@pytest.mark.parametrize(("alias", "canonical"), _ALIASES)
def test_transport_aliases_in_mcp_servers_json(tmp_path: Path, alias: str, canonical: str, key: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mcpServers": {"s": {**_entry(canonical), key: alias}}}))
    assert load_config(path).servers["s"].transport == canonical


@pytest.mark.parametrize(("suffix", "text", "key"), [
    (".yaml", "servers:\n  s:\n    url: http://127.0.0.1:9/mcp\n    transport: grpc\n", "servers.s.transport"),
    (".toml", '[servers.s]\nurl = "http://127.0.0.1:9/mcp"\ntransport = "grpc"\n', "servers.s.transport"),
    (".json", '{"mcpServers": {"s": {"url": "http://127.0.0.1:9/mcp", "type": "grpc"}}}', "mcpServers.s.type"),
])
def test_unknown_transport_names_the_key_and_lists_accepted(tmp_path: Path, suffix: str, text: str,
                                                           key: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    message = str(info.value)
    assert "'grpc'" in message
    for accepted in ("stdio", "http", "streamable_http", "streamable-http", "streamableHttp", "sse", "ws",
                     "websocket"):
        assert accepted in message


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"servers": {"a": {"command": "x", "transprt": "stdio"}}}, "servers.a.transprt",
         "unknown key (did you mean 'transport'?)"),
        ({"servers": {"a": {"command": "x", "circuit": {"failure_treshold": 3}}}},
         "servers.a.circuit.failure_treshold", "unknown key (did you mean 'failure_threshold'?)"),
        ({"servers": {"a": {"command": "x"}}, "stroe": {}}, "stroe", "unknown top-level key (did you mean 'store'?)"),
        ({"tenants": {"t": {"sevrers": {}}}}, "tenants.t.sevrers", "unknown key (did you mean 'servers'?)"),
    ],
)
def test_a_typo_is_named_with_the_key_it_was_meant_to_be(data: object, key: str, message: str) -> None:
    e = _err(data)
    assert e.key == key
    assert str(e) == f"conf.yaml: {key}: {message}"


def test_an_unknown_key_far_from_any_lists_the_allowed_ones_instead_of_guessing() -> None:
    e = _err({"servers": {"a": {"command": "x", "xyzzy": 1}}})
    assert "did you mean" not in str(e) and "(allowed: transport, command, args" in str(e)


def test_every_section_words_an_unknown_key_alike() -> None:
    from toolmesh.agent.config import AgentConfig
    from toolmesh.agent.factory import check_llm_section
    from toolmesh.gateway.config import GatewaySettings
    from toolmesh.store.shared import StateSettings
    from toolmesh.store.sql import StoreSettings

    cases = [
        (lambda: GatewaySettings.from_section({"prot": 8080}, "c.yaml"), "c.yaml: gateway.prot: unknown key (did you mean 'port'?)"),
        (lambda: GatewaySettings.from_section({"log": {"levle": "info"}}, "c.yaml"),
         "c.yaml: gateway.log.levle: unknown key (did you mean 'level'?)"),
        (lambda: StateSettings.from_section({"ur": "redis://x"}, "c.yaml"), "c.yaml: state.ur: unknown key (did you mean 'url'?)"),
        (lambda: StoreSettings.from_section({"pth": "x.db"}, "c.yaml"), "c.yaml: store.pth: unknown key (did you mean 'path'?)"),
        (lambda: AgentConfig.from_section({"max_turn": 3}, "c.yaml"), "c.yaml: agent.max_turn: unknown key (did you mean 'max_turns'?)"),
        (lambda: check_llm_section({"deployment": []}, "c.yaml"), "c.yaml: llm.deployment: unknown key (did you mean 'deployments'?)"),
        (lambda: check_llm_section({"deployments": [{"model": "m", "provder": "openai"}]}, "c.yaml"),
         "c.yaml: llm.deployments[0].provder: unknown key (did you mean 'provider'?)"),
    ]
    for make, expected in cases:
        with pytest.raises(ConfigError) as ei:
            make()
        assert str(ei.value) == expected
    # A value error keeps its own words, without pydantic's "Value error, " prefix.
    with pytest.raises(ConfigError) as ei:
        StateSettings.from_section({"url": "http://x"}, "c.yaml")
    assert str(ei.value).startswith("c.yaml: state.url: state.url must start with")
    # Far from every key: no guess, the allowed keys (a wrong guess misleads).
    with pytest.raises(ConfigError) as ei:
        AgentConfig.from_section({"max_step": 3})
    assert "did you mean" not in str(ei.value) and "max_turns" in str(ei.value)


def test_llm_limits_per_tenant_and_user_are_checked_and_built() -> None:
    from toolmesh.agent.factory import build_llm, check_llm_section
    from toolmesh.llm.models import ModelRegistry
    from toolmesh.llm.ratelimit import KeyedLimits

    bad = [
        ({"limits": {"tennant": {"rpm": 5}}}, "c.yaml: llm.limits.tennant: unknown key (did you mean 'tenant'?)"),
        ({"limits": {"user": {"tmp": 5}}}, "c.yaml: llm.limits.user.tmp: unknown key (allowed: rpm, tpm)"),
        ({"limits": {"tenant": {"rpm": 0}}}, "c.yaml: llm.limits.tenant.rpm: must be a number > 0 (per minute), not 0"),
        ({"limits": {"tenant": {"tpm": "lots"}}},
         "c.yaml: llm.limits.tenant.tpm: must be a number > 0 (per minute), not 'lots'"),
        ({"limits": [60]}, "c.yaml: llm.limits: must be a mapping like {tenant: {rpm: 600, tpm: 100000}, user: {rpm: 60}}"),
    ]
    for section, expected in bad:
        with pytest.raises(ConfigError) as ei:
            check_llm_section(section, "c.yaml")
        assert str(ei.value) == expected
    section = {"deployments": [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x",
                                "model": "gpt-4o-mini"}],
               "limits": {"tenant": {"rpm": 600, "tpm": 100_000}, "user": {"rpm": 60}}}
    router, _ = build_llm(section, ModelRegistry.load())
    assert isinstance(router.tenant_limits, KeyedLimits) and (router.tenant_limits.rpm, router.tenant_limits.tpm) == (
        600.0, 100_000.0)
    assert isinstance(router.user_limits, KeyedLimits) and router.user_limits.tpm is None
    router, _ = build_llm({"deployments": section["deployments"]}, ModelRegistry.load())
    assert router.tenant_limits is None and router.user_limits is None
