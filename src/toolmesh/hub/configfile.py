"""Loading the toolmesh configuration file (HUB-2, IF-3).

Formats, chosen by extension:

* ``.yaml`` / ``.yml`` / ``.toml`` / ``.json`` with toolmesh's layout::

      servers:                      # tenant "default"
        catalog: {command: python, args: [-m, catalog]}
        pricing: {url: "https://pricing/mcp", headers: {Authorization: "Bearer ${PRICING_TOKEN}"}}
      tenants:
        acme: {servers: {crm: {url: "http://crm:8080/mcp"}}}
      llm: {...}                     # other sections, kept raw for their owners

  A server entry takes every :class:`~toolmesh.hub.config.ServerConfig` field
  except ``name`` (the key) and ``server`` (in-process objects are code-only).
* a server's ``transport`` (``type`` in ``mcpServers``) may be spelled ``stdio``, ``http``,
  ``streamable_http``, ``streamable-http``, ``streamableHttp`` (all Streamable HTTP), ``sse``,
  ``ws`` or ``websocket`` in every format.
* the desktop-client layout ``{"mcpServers": {name: {command, args, env} |
  {url, type, headers}}}`` (Claude Desktop, Cursor, VS Code), also accepted
  inside a tenant.

``${VAR}``, ``${VAR:-default}`` (unset or empty) and ``${VAR-default}`` (unset)
are substituted in every string value; ``$${`` is a literal ``${``. Every
problem raises :class:`~toolmesh.errors.ConfigError` naming the file and the
key path; header and env values (usually secrets) are never echoed.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolmesh.errors import ConfigError, unknown_key_message, validation_message
from toolmesh.hub.config import ServerConfig

__all__ = ["DEFAULT_TENANT", "SECTIONS", "TRANSPORT_ALIASES", "ToolmeshConfig", "load_config", "normalize_transport",
           "parse_config"]

DEFAULT_TENANT = "default"
#: Top-level sections owned by other features, kept as raw dicts. Add new ones here.
SECTIONS: tuple[str, ...] = ("llm", "models", "routing", "agent", "reasoning", "gateway", "store", "state",
                             "observability")
_SERVER_KEYS = ("servers", "mcpServers", "tenants")
TOP_LEVEL_KEYS: tuple[str, ...] = _SERVER_KEYS + SECTIONS
TENANT_KEYS: tuple[str, ...] = ("servers", "mcpServers")

#: Transport names as users write them (toolmesh, MCP SDKs, desktop clients) -> toolmesh's name.
#: Matched ignoring case, '-' and '_' (so ``streamable_http``, ``streamable-http``, ``streamableHttp``).
TRANSPORT_ALIASES: dict[str, str] = {
    "stdio": "stdio",
    "http": "http",
    "streamablehttp": "http",
    "sse": "sse",
    "ws": "websocket",
    "websocket": "websocket",
}
#: The spellings listed in error messages.
_ACCEPTED_TRANSPORTS = "stdio, http, streamable_http, streamable-http, streamableHttp, sse, ws, websocket"


def normalize_transport(value: Any) -> str | None:
    """toolmesh's transport name for a user-written one (``None`` when not recognised)."""
    if not isinstance(value, str):
        return None
    return TRANSPORT_ALIASES.get(value.strip().lower().replace("-", "").replace("_", ""))


#: Desktop-client keys with no meaning here, skipped quietly.
_DESKTOP_IGNORED = frozenset({"autoApprove", "alwaysAllow", "disabledTools", "description"})
_SERVER_FIELDS = tuple(f for f in ServerConfig.model_fields if f not in ("name", "server"))
_STRINGY = ("args", "env", "headers")  # YAML turns 8080 into an int; these want strings
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_REF = re.compile(r"\$(\$)?\{([^}]*)(\})?")
_REF_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", re.DOTALL)

Path_ = tuple[str | int, ...]


def _default_tenants() -> dict[str, dict[str, ServerConfig]]:
    return {DEFAULT_TENANT: {}}


class ToolmeshConfig(BaseModel):
    """A validated configuration: servers per tenant plus raw sections for other features."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tenants: dict[str, dict[str, ServerConfig]] = Field(default_factory=_default_tenants)
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None

    @property
    def servers(self) -> dict[str, ServerConfig]:
        """The servers of the default tenant (the top-level ``servers``)."""
        return self.tenants.get(DEFAULT_TENANT, {})

    def section(self, name: str) -> dict[str, Any]:
        """A raw section (``{}`` when absent)."""
        return self.sections.get(name, {})


def fmt_path(path: Path_) -> str:
    """``("servers", "a.b", "args", 0)`` → ``servers["a.b"].args[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


# --- reading -----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:
            continue  # unhashable key: the base constructor reports it
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_text(text: str, suffix: str, source: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
        except yaml.MarkedYAMLError as e:
            # Built from parts: str(e) would quote the offending line, which may hold a secret.
            mark = e.problem_mark or e.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = "; ".join(p for p in (e.context, e.problem) if p)
            raise ConfigError(f"invalid YAML{where}: {what}", source=source) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"invalid YAML: {type(e).__name__}", source=source) from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML: {e}", source=source) from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=source) from None
    raise ConfigError(
        f"unsupported config file type {suffix or '(no extension)'!r}; use .yaml, .yml, .toml or .json",
        source=source,
    )


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> ToolmeshConfig:
    """Read, substitute and validate a config file. ``env`` defaults to ``os.environ``."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror or e}", source=source) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", source=source) from None
    if not text.strip():
        raise ConfigError("the config file is empty", source=source)
    data = _parse_text(text, Path(source).suffix.lower(), source)
    if data is None:
        raise ConfigError("the config file is empty", source=source)
    return parse_config(data, source, env=env)


# --- environment substitution ------------------------------------------------------------------


def _substitute(value: Any, path: Path_, env: Mapping[str, str], source: str) -> Any:
    """A copy of ``value`` with ``${VAR}`` references replaced in every string."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def repl(m: re.Match[str]) -> str:
            if m.group(1):
                return m.group(0)[1:]  # $${...} -> ${...}
            if m.group(3) is None:
                raise ConfigError("unterminated '${' (write '$${' for a literal)", key=fmt_path(path), source=source)
            body = _REF_BODY.fullmatch(m.group(2))
            if body is None:
                raise ConfigError(
                    f"invalid variable reference '${{{m.group(2)}}}' (use ${{NAME}} or ${{NAME:-default}})",
                    key=fmt_path(path),
                    source=source,
                )
            name, op, default = body.groups()
            got = env.get(name)
            if got is None or (op == ":-" and got == ""):
                if op is None:
                    raise ConfigError(
                        f"environment variable {name!r} is not set (use ${{{name}:-default}} for a default)",
                        key=fmt_path(path),
                        source=source,
                    )
                return str(default)
            return got

        return _REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, str(k)), env, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, source) for i, v in enumerate(value)]
    return value


# --- validation --------------------------------------------------------------------------------


class _Problems:
    """Collects validation problems and the strings that must not appear in them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str]] = []
        self.secrets: dict[str, str] = {}

    def add(self, path: Path_, message: str) -> None:
        self.items.append((fmt_path(path), message))

    def hide(self, entry: Mapping[str, Any]) -> None:
        for key in ("headers", "env"):
            block = entry.get(key)
            if isinstance(block, Mapping):
                for v in block.values():
                    if isinstance(v, str) and len(v) >= 4:
                        self.secrets[v] = "***"
        url = entry.get("url")
        if isinstance(url, str):
            try:
                parts = urlsplit(url)
                password = parts.password
            except ValueError:
                return
            if password or parts.query:
                netloc = parts.netloc.rsplit("@", 1)[-1]
                safe = f"{parts.scheme}://***@{netloc}" if password else f"{parts.scheme}://{netloc}"
                self.secrets[url] = safe + parts.path + ("?***" if parts.query else "")
                if password and len(password) >= 4:
                    self.secrets[password] = "***"

    def raise_if_any(self) -> None:
        if not self.items:
            return
        redacted = []
        for path, msg in self.items:
            for secret in sorted(self.secrets, key=len, reverse=True):
                msg = msg.replace(secret, self.secrets[secret])
            redacted.append((path, msg))
        first_path, first_msg = redacted[0]
        more = "".join(f"; {p}: {m}" for p, m in redacted[1:])
        raise ConfigError(first_msg + more, key=first_path or None, source=self.source)


def _mapping(value: Any, path: Path_, problems: _Problems, what: str) -> dict[str, Any] | None:
    """``value`` as a dict with string keys (``None`` → ``{}``), or ``None`` after a problem."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"{what} must be a mapping, got {type(value).__name__}")
        return None
    for key in value:
        if not isinstance(key, str):
            problems.add(path, f"keys must be strings, got {key!r}")
            return None
    return value


def _pydantic_problems(exc: ValidationError, path: Path_, problems: _Problems) -> None:
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and len(loc) == 1:  # an entry's own key ('name' is the entry's)
            msg = unknown_key_message(str(loc[0]), _SERVER_FIELDS)
        else:
            msg = validation_message(err, ServerConfig)
        problems.add((*path, *loc), msg)


def _stringify(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    for key in _STRINGY:
        block = out.get(key)
        if isinstance(block, dict):
            out[key] = {k: _scalar_str(v) for k, v in block.items()}
        elif isinstance(block, list):
            out[key] = [_scalar_str(v) for v in block]
    return out


def _scalar_str(v: Any) -> Any:
    # bool is left alone on purpose: YAML's `yes` -> True must not silently become "True".
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def _desktop_entry(entry: dict[str, Any], path: Path_, problems: _Problems) -> dict[str, Any] | None:
    out = {k: v for k, v in entry.items() if k not in _DESKTOP_IGNORED}
    kinds = [k for k in ("type", "transport") if k in out]
    if len(kinds) > 1:
        problems.add(path, "give either 'type' or 'transport', not both")
        return None
    if kinds:
        kind = out.pop(kinds[0])
        mapped = normalize_transport(kind)
        if mapped is None:
            problems.add((*path, kinds[0]), f"unknown {kinds[0]} {kind!r}; use one of {_ACCEPTED_TRANSPORTS}")
            return None
        out["transport"] = mapped
    if "disabled" in out:
        disabled = out.pop("disabled")
        if not isinstance(disabled, bool):
            problems.add((*path, "disabled"), "must be true or false")
            return None
        out["enabled"] = not disabled
    return out


def _toolmesh_entry(entry: dict[str, Any], path: Path_, problems: _Problems) -> dict[str, Any] | None:
    """A toolmesh-layout entry with its ``transport`` spelled the canonical way."""
    if "transport" not in entry or entry["transport"] is None:
        return entry
    mapped = normalize_transport(entry["transport"])
    if mapped is None:
        problems.add((*path, "transport"),
                     f"unknown transport {entry['transport']!r}; use one of {_ACCEPTED_TRANSPORTS}")
        return None
    return {**entry, "transport": mapped}


def _servers(block: Any, path: Path_, desktop: bool, problems: _Problems) -> dict[str, ServerConfig]:
    servers: dict[str, ServerConfig] = {}
    entries = _mapping(block, path, problems, "a server list")
    if entries is None:
        return servers
    for name, entry in entries.items():
        where = (*path, name)
        if not isinstance(entry, dict):
            problems.add(where, f"a server must be a mapping, got {type(entry).__name__}")
            continue
        if _mapping(entry, where, problems, "a server") is None:
            continue  # a non-string key (YAML `0: x`) cannot become a field name
        problems.hide(entry)
        for banned, why in (("name", "the name is the key"), ("server", "in-process servers are code-only")):
            if banned in entry:
                problems.add((*where, banned), f"not allowed in a config file: {why}")
        if "name" in entry or "server" in entry:
            continue
        fields = _desktop_entry(entry, where, problems) if desktop else _toolmesh_entry(entry, where, problems)
        if fields is None:
            continue
        try:
            servers[name] = ServerConfig(name=name, **_stringify(fields))
        except ValidationError as e:
            _pydantic_problems(e, where, problems)
    return servers


def _merge(into: dict[str, ServerConfig], new: dict[str, ServerConfig], path: Path_, problems: _Problems) -> None:
    for name, cfg in new.items():
        if name in into:
            problems.add((*path, name), "server defined twice (in 'servers' and 'mcpServers')")
        else:
            into[name] = cfg


def _tenant_servers(block: Mapping[str, Any], path: Path_, problems: _Problems) -> dict[str, ServerConfig]:
    servers = _servers(block.get("servers"), (*path, "servers"), False, problems)
    if "mcpServers" in block:
        desktop = _servers(block["mcpServers"], (*path, "mcpServers"), True, problems)
        _merge(servers, desktop, (*path, "mcpServers"), problems)
    return servers


def parse_config(data: Any, source: str = "<config>", *, env: Mapping[str, str] | None = None) -> ToolmeshConfig:
    """Validate already-parsed config data (a dict from YAML/TOML/JSON); see the module doc."""
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", source=source)
    if not data:
        raise ConfigError("the config is empty", source=source)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(  # fmt_path: an empty or odd key is still named (as [""])
                unknown_key_message(str(key), TOP_LEVEL_KEYS, "unknown top-level key"), key=fmt_path((str(key),)),
                source=source,
            )
    data = _substitute(data, (), os.environ if env is None else env, source)
    problems = _Problems(source)

    tenants: dict[str, dict[str, ServerConfig]] = {DEFAULT_TENANT: _tenant_servers(data, (), problems)}
    raw_tenants = _mapping(data.get("tenants"), ("tenants",), problems, "'tenants'") or {}
    for tname, tblock in raw_tenants.items():
        where: Path_ = ("tenants", tname)
        if not tname or any(c.isspace() for c in tname) or "/" in tname:
            problems.add(where, "tenant names must be non-empty, without whitespace or '/'")
            continue
        tdata = _mapping(tblock, where, problems, "a tenant")
        if tdata is None:
            continue
        unknown = [k for k in tdata if k not in TENANT_KEYS]
        if unknown:
            problems.add((*where, unknown[0]), unknown_key_message(str(unknown[0]), TENANT_KEYS))
            continue
        servers = _tenant_servers(tdata, where, problems)
        _merge(tenants.setdefault(tname, {}), servers, (*where, "servers"), problems)

    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        if name in data:
            block = _mapping(data[name], (name,), problems, f"section {name!r}")
            if block is not None:
                sections[name] = block
    problems.raise_if_any()
    return ToolmeshConfig(tenants=tenants, sections=sections, source=source)
