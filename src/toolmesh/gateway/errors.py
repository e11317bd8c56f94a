"""The gateway's HTTP error answer, shared by the OpenAI-compatible API and the admin API.

Both surfaces answer ``{"error": {...}}`` with the same four fields, but clients already parse
each one as it is, so each keeps its exact bytes: the OpenAI surface writes
``message, type, param, code`` and defaults ``type`` to ``invalid_request_error`` (what
OpenAI itself answers for 4xx, so the official SDK raises its usual types); the admin surface
writes ``message, type, code, param`` and, when no type is given, derives it from the status.
"""

from __future__ import annotations

import orjson

__all__ = ["ADMIN_TYPES", "ApiError"]

#: The admin API's error ``type`` by status when the raiser gave none (anything else: ``api_error``).
ADMIN_TYPES = {400: "invalid_request_error", 403: "permission_error", 404: "not_found_error",
               405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error"}


class ApiError(Exception):
    """An error answer: HTTP ``status``, ``message``, error ``type``, ``code`` and the offending ``param``.

    ``type=None`` leaves the type to the surface that renders it (see the module docstring).
    ``retry_after`` (seconds) becomes a ``Retry-After`` header; ``headers`` are sent as given.
    """

    def __init__(
        self, status: int, message: str, type: str | None = None, *, param: str | None = None,
        code: str | None = None, retry_after: float | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an error answer needs a 4xx or 5xx status, not {status}")
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.headers = headers

    def openai_body(self) -> bytes:
        """OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
        return orjson.dumps({"error": {"message": self.message, "type": self.type or "invalid_request_error",
                                       "param": self.param, "code": self.code}})

    def admin_body(self) -> bytes:
        """The admin API's shape: ``{"error": {"message", "type", "code", "param"}}``."""
        kind = self.type or ADMIN_TYPES.get(self.status, "api_error")
        return orjson.dumps({"error": {"message": self.message, "type": kind, "code": self.code,
                                       "param": self.param}})

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The extra response headers: the given ones, then ``Retry-After`` in whole seconds (at least 1)."""
        out = list(self.headers or ())
        if self.retry_after is not None:
            out.append((b"retry-after", str(max(1, int(self.retry_after + 0.999))).encode()))
        return out
