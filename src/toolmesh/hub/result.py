"""The outcome of one tool call, as the Hub reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolmesh.errors import ToolmeshError


@dataclass(slots=True)
class ToolResult:
    """One tool call's outcome.

    ``ok`` is true when the call reached the tool and the tool did not report an
    error. ``is_error`` means the tool itself answered with ``isError``;
    ``error``/``error_type`` describe a failure (tool-reported or infrastructure:
    timeout, open circuit, unknown tool...).
    """

    server: str
    tool: str
    ok: bool
    content: list[dict[str, Any]] = field(default_factory=list)
    structured: Any = None
    is_error: bool = False
    error: str | None = None
    error_type: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    call_id: str | None = None
    arguments: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def from_mcp(cls, server: str, tool: str, result: dict[str, Any], latency_ms: float, attempts: int) -> ToolResult:
        content = result.get("content") or []
        is_error = bool(result.get("isError"))
        error = None
        if is_error:
            error = " ".join(c.get("text", "") for c in content if c.get("type") == "text").strip() or "tool error"
        return cls(
            server=server,
            tool=tool,
            ok=not is_error,
            content=content,
            structured=result.get("structuredContent"),
            is_error=is_error,
            error=error,
            error_type="ToolError" if is_error else None,
            latency_ms=latency_ms,
            attempts=attempts,
            meta=result.get("_meta"),
        )

    @classmethod
    def failure(cls, server: str, tool: str, exc: BaseException, latency_ms: float, attempts: int = 1) -> ToolResult:
        return cls(
            server=server,
            tool=tool,
            ok=False,
            error=str(exc) or type(exc).__name__,
            error_type=type(exc).__name__,
            latency_ms=latency_ms,
            attempts=attempts,
        )

    @property
    def text(self) -> str:
        """Text blocks joined; structured content as JSON when there is no text."""
        parts = [c.get("text", "") for c in self.content if c.get("type") == "text"]
        if parts:
            return "\n".join(parts)
        if self.structured is not None:
            import orjson

            return orjson.dumps(self.structured).decode()
        return self.error or ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``call --json`` shape plus detail)."""
        return {
            "ok": self.ok,
            "server": self.server,
            "tool": self.tool,
            "content": self.content,
            "structured": self.structured,
            "error": self.error,
            "error_type": self.error_type,
            "latency_ms": round(self.latency_ms, 3),
            "attempts": self.attempts,
            **({"call_id": self.call_id} if self.call_id is not None else {}),
        }

    def raise_for_error(self) -> ToolResult:
        """Raise :class:`ToolmeshError` when the call failed; return self otherwise."""
        if not self.ok:
            raise ToolmeshError(f"{self.server}/{self.tool}: {self.error}")
        return self
