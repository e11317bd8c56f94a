"""Type aliases the Hub's modules share (one place, like ``starlette.types``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: A JSON object as decoded by ``orjson``: MCP params, results, tool definitions, schemas.
JsonDict = dict[str, Any]

__all__ = ["JsonDict", "as_mapping"]


def as_mapping(value: Any, expected: str) -> Mapping[str, Any]:
    """``value`` as a mapping: a dict as it is, an MCP SDK (pydantic) model dumped as its JSON
    form. ``TypeError`` naming ``expected`` (e.g. "an MCP tool dict or model") for anything else."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if dump is None:
        raise TypeError(f"expected {expected}, got {type(value).__name__}")
    out: Mapping[str, Any] = dump(by_alias=True, exclude_none=True, mode="json")
    return out
