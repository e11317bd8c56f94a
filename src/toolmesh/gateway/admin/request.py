"""Shared pieces of the admin API: the request context, query and body parsing."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from toolmesh.gateway.auth import Principal
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import BodyTooLarge, read_body
from toolmesh.net.asgi import Receive, Scope

__all__ = ["Request", "parse_time"]


@dataclass
class Request:
    """One admin request: the caller, the path below ``/admin/``, the query, and body access."""

    gw: Gateway
    principal: Principal
    method: str
    parts: list[str]
    query: dict[str, str]
    receive: Receive

    @classmethod
    def from_scope(cls, gw: Gateway, principal: Principal, scope: Scope, receive: Receive) -> Request:
        path: str = scope["path"]
        parts = [p for p in path.split("/")[2:] if p]  # drop "" and "admin"
        raw = scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(raw, keep_blank_values=True))
        return cls(gw, principal, scope["method"], parts, query, receive)

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object (400 if it is not one, 413 if too large)."""
        try:
            raw = await read_body(self.receive, self.gw.settings.max_body)
        except BodyTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        if not raw.strip():
            raise ApiError(400, "a JSON object body is required")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"body must be a JSON object, not {type(data).__name__}")
        return data

    def int_param(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer, got {raw!r}", param=name) from None
        if not lo <= value <= hi:
            raise ApiError(400, f"{name} must be between {lo} and {hi}", param=name)
        return value

    def time_param(self, name: str) -> float | None:
        raw = self.query.get(name)
        return None if raw is None or raw == "" else parse_time(raw, name)


def parse_time(raw: str, name: str) -> float:
    """Unix seconds, or an ISO 8601 date / date-time (UTC when no offset is given)."""
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ApiError(400, f"{name} must be a finite time", param=name)
        return value
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be Unix seconds or an ISO 8601 date/time, got {raw!r}",
                       param=name) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
