"""``GET /openapi.json``: an OpenAPI 3.1 document of ``/v1`` and ``/admin``.

Built once per worker from the live route tables (:meth:`OpenAIApi.route_table`,
:meth:`AdminApi.route_table`, dashboard routes included) and the body models the handlers
validate with (:mod:`toolmesh.gateway.bodies`, :class:`toolmesh.hub.config.ServerConfig`), so a
new route or field shows up without anyone editing this file. ``tests/test_openapi.py`` checks that
every route of the tables is in the document and that the document is valid OpenAPI 3.1.

Left out on purpose: the MCP endpoints (``/mcp``, ``/servers/{name}/mcp``, ``/sse``, ``/ws``:
JSON-RPC, described by the MCP specification, not by OpenAPI), ``/ui/`` (static files),
``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from toolmesh import __version__
from toolmesh.gateway import bodies
from toolmesh.hub.config import ServerConfig

__all__ = ["EXCLUDED", "build_document"]

#: Path prefixes the document leaves out (see the module docstring).
EXCLUDED = ("/mcp", "/sse", "/messages", "/ws", "/servers/", "/ui/", "/metrics", "/healthz", "/readyz")

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/Error"}
#: The error statuses every authenticated route can answer (auth, scope, rate limit, draining).
_EDGE = {"401": "missing or invalid API key", "403": "the key lacks the route's scope, or a Host/Origin is refused",
         "429": "rate limit exceeded (see Retry-After)", "503": "the gateway is starting or shutting down"}

#: Bodies by (method, path template); the schema of each is the model's (or ServerConfig's).
_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/v1/chat/completions"): bodies.ChatCompletionRequest,
    ("POST", "/admin/keys"): bodies.KeyCreate,
    ("POST", "/admin/routing"): bodies.RoutingRulePost,
    ("PUT", "/admin/routing/rules/{scenario}"): bodies.RoutingRule,
    ("PATCH", "/admin/servers/{id}"): bodies.ServerPatch,
}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 10_000}
_TIME = {"description": "Unix seconds or an ISO 8601 date/time", "type": "string"}
#: Query parameters by (method, path template): name -> schema.
_QUERY: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("GET", "/admin/sessions"): {"user": {"type": "string"}, "limit": _LIMIT,
                                 "offset": {"type": "integer", "minimum": 0, "maximum": 10**9}},
    ("GET", "/admin/usage"): {"group_by": {"type": "string", "description": "comma-separated: tenant, user, "
                                           "model, day, ..."}, "since": _TIME, "until": _TIME,
                              "user": {"type": "string"}, "model": {"type": "string"}},
    ("GET", "/admin/audit"): {"limit": _LIMIT, "since": _TIME, "user": {"type": "string"},
                              "server": {"type": "string"}, "tool": {"type": "string"},
                              "status": {"type": "string"}},
    ("GET", "/admin/costs"): {"since": _TIME, "until": _TIME, "reference": {"type": "string"}},
}
_SUMMARY = {
    "/v1/chat/completions": "Chat completion (JSON, or SSE with stream: true)",
    "/v1/models": "Served models, `auto` and routing scenarios",
    "/v1/models/{id}": "One served model",
}


def _registration_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """``ServerConfig`` as the admin API accepts it: no in-process ``server`` object."""
    schema = ServerConfig.model_json_schema(ref_template=_REF)
    defs.update(schema.pop("$defs", {}))
    schema["properties"].pop("server", None)
    transport = schema["properties"]["transport"]
    for option in transport.get("anyOf", [transport]):
        if "enum" in option:
            option["enum"] = [t for t in option["enum"] if t != "inprocess"]
    schema["title"] = "ServerRegistration"
    return schema


def _error_schema() -> dict[str, Any]:
    inner = {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}
    return {"type": "object", "required": ["error"], "properties": {"error": inner}}


def _responses(method: str, path: str, has_body: bool) -> dict[str, Any]:
    ok = "201" if (method, path) in (("POST", "/admin/servers"), ("POST", "/admin/keys")) else "200"
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if path == "/v1/chat/completions":
        content["text/event-stream"] = {"schema": {"type": "string"}}
    out: dict[str, Any] = {ok: {"description": "success", "content": content}}
    errors = {"400": "invalid request (param names the field)", "404": "not found", **_EDGE}
    if method != "GET" or path.startswith("/admin/"):
        errors["405"] = "method not allowed"
    if has_body:
        errors["413"] = "body too large"
    if path.startswith("/admin/servers") or path.startswith("/admin/keys"):
        errors["409"] = "conflict"
    if path == "/v1/chat/completions":
        errors.update({"502": "the model provider failed or answered malformed data"})
    for status, text in sorted(errors.items()):
        out[status] = {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    return out


def build_document(routes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (``(method, path template)``, ``/v1`` and ``/admin`` ones)."""
    routes = sorted(set(routes), key=lambda r: (r[1], r[0]))
    models = [(model, "validation") for model in _BODIES.values()]
    refs, top = models_json_schema(models, ref_template=_REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["ServerRegistration"] = _registration_schema(schemas)
    schemas["Error"] = _error_schema()
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        if path.startswith(EXCLUDED):
            continue
        op: dict[str, Any] = {"operationId": _operation_id(method, path),
                              "tags": ["openai" if path.startswith("/v1/") else "admin"],
                              "summary": _SUMMARY.get(path, f"{method} {path}")}
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in _path_params(path)]
        params += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in _QUERY.get((method, path), {}).items()]
        if params:
            op["parameters"] = params
        model = _BODIES.get((method, path))
        body_schema: dict[str, Any] | None = None
        if model is not None:
            body_schema = refs[(model, "validation")]
        elif (method, path) == ("POST", "/admin/servers"):
            body_schema = {"$ref": "#/components/schemas/ServerRegistration"}
        if body_schema is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
        op["responses"] = _responses(method, path, body_schema is not None)
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "toolmesh gateway", "version": __version__,
                 "description": "The OpenAI-compatible API (/v1, `chat` scope) and the admin API (/admin, "
                                "`admin` scope) of `toolmesh serve`. Every operation needs an API key as a "
                                "bearer token; the MCP endpoints (/mcp, /servers/{name}/mcp) follow the MCP "
                                "specification and are not described here."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API key made by `toolmesh keys create` or POST /admin/keys"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def document_bytes(routes: Iterable[tuple[str, str]]) -> bytes:
    """:func:`build_document`, serialised (served as is)."""
    return orjson.dumps(build_document(routes))


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def _operation_id(method: str, path: str) -> str:
    words = [seg.strip("{}") for seg in path.strip("/").split("/")]
    return method.lower() + "_" + "_".join(w.replace("-", "_") for w in words)
