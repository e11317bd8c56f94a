"""Type aliases the Hub's modules share (one place, like ``starlette.types``)."""

from __future__ import annotations

from typing import Any

#: A JSON object as decoded by ``orjson``: MCP params, results, tool definitions, schemas.
JsonDict = dict[str, Any]

__all__ = ["JsonDict"]
