"""The request bodies of ``/v1`` and ``/admin`` as pydantic models: the definitions ``/openapi.json``
is generated from (:mod:`toolmesh.gateway.ops.openapi`).

``POST /admin/servers`` validates with :class:`toolmesh.hub.config.ServerConfig` itself, so its
schema is that model's. The other bodies keep their hand-written validators (``/v1`` chat
parsing is on the hot path: ``orjson`` plus type checks, see :mod:`toolmesh.gateway.openai.wire`;
their error messages are part of the API). The models here describe exactly what those
validators accept, and ``tests/test_openapi_bodies.py`` keeps the two in step in both
directions: every body generated from a schema is accepted by its handler's validator, and every
body the validator accepts validates against the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.config import JsonDict

from toolmesh.gateway.openai.reasoning import REQUEST_OPTIONS
from toolmesh.hub.config import CacheConfig, CoalesceConfig

__all__ = [
    "AssistantMessage",
    "ChatCompletionRequest",
    "KeyCreate",
    "RoutingRule",
    "RoutingRulePost",
    "ServerPatch",
]

Ident = Annotated[str, Field(min_length=1, max_length=256)]


class _Open(BaseModel):
    """Unknown members are ignored by the validators, as OpenAI's API does."""

    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    """Unknown members are refused (400 naming the member)."""

    model_config = ConfigDict(extra="forbid")


class TextPart(_Open):
    """A text content part (image and audio parts are not supported)."""

    type: Literal["text", "refusal"]
    text: str


Content = str | list[TextPart]


class SystemMessage(_Open):
    """A ``system``, ``developer`` or ``user`` message: content is required."""

    role: Literal["system", "developer", "user"]
    content: Content


class FunctionCall(_Open):
    name: str
    arguments: str = Field("", description="the arguments as a JSON string, as the model wrote them")


class ToolCallItem(_Open):
    id: str
    function: FunctionCall


class AssistantMessage(_Open):
    """An assistant turn of the history: ``content`` and/or a non-empty ``tool_calls``."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array", "minItems": 1}}},
    ]})

    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallItem] | None = None


class ToolMessage(_Open):
    """A tool result."""

    role: Literal["tool"]
    tool_call_id: str = Field(min_length=1)
    content: Content | None = None


Message = Annotated[SystemMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionSpec(_Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON Schema object")


class FunctionTool(_Open):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Open):
    name: str


class FunctionChoice(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Open):
    include_usage: bool | None = None


_IDENT_SCHEMA: JsonDict = {"type": "string", "minLength": 1, "maxLength": 256}
_OPTION_NAMES: list[JsonValue] = list(sorted(REQUEST_OPTIONS))


class Metadata(BaseModel):
    """String values; ``session_id`` and ``scenario`` are read by the gateway."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "properties": {"session_id": _IDENT_SCHEMA, "scenario": _IDENT_SCHEMA},
        "additionalProperties": {"type": "string"}})


class ToolmeshExtension(_Open):
    """toolmesh's own members of a chat request."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"properties": {"reasoning": {
        "description": "answer with the reasoning engine: true, or per-request options (docs/reasoning.md)",
        "anyOf": [{"type": "boolean"}, {"type": "null"},
                  {"type": "object", "propertyNames": {"enum": _OPTION_NAMES}}]}}})


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions``. Without ``tools`` the gateway's agent answers with the tenant's
    MCP tools; with ``tools`` it passes the request to the model router."""

    model: str = Field(min_length=1, description="a served model, a deployment name, `auto` or a scenario")
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    user: Ident | None = None
    metadata: Metadata | None = None
    toolmesh: ToolmeshExtension | None = None


class KeyCreate(_Closed):
    """``POST /admin/keys``: a new key of the caller's tenant (shown once)."""

    scopes: list[Literal["chat", "mcp", "admin"]] | None = Field(
        None, description='default: every scope; also accepted as a comma-separated string ("chat,mcp")')
    name: Annotated[str, Field(max_length=200)] | None = None


class RoutingRule(_Open):
    """A routing rule: how the router picks among the deployments of ``models``."""

    strategy: str | None = Field(None, description="e.g. cost, latency, priority, round_robin")
    models: list[str] | None = Field(None, description="models or deployment names this rule may use")


class RoutingRulePost(RoutingRule):
    """``POST /admin/routing``: add or replace the rule of ``scenario``."""

    scenario: str = Field(min_length=1, pattern=r"^[^/]+$")


class ServerPatch(_Closed):
    """``PATCH /admin/servers/{name}``: how the server's results are shared (at least one member)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    cache: CacheConfig = Field(default_factory=CacheConfig, description="the result cache, e.g. {ttl: 5}")
    coalesce: CoalesceConfig = Field(default_factory=CoalesceConfig,
                                     description="sharing of identical in-flight calls")
