"""Collision-free, reversible names for tools exposed to LLMs (HUB-8).

LLM APIs want function names matching ``^[a-zA-Z0-9_-]{1,64}$``; MCP server and
tool names may hold anything. :class:`ToolNameMap` maps ``(server, tool)`` pairs
to such names and back.

Name grammar. A *word* is ``[A-Za-z0-9-]+``; a *component* is words joined by
single underscores (``get_product-info``: no leading, trailing or doubled
``_``). Exposed names are components joined by ``__``:

* prefixed (default): ``server__tool`` when both names are components and the
  result fits in 64 characters (*readable* names); otherwise
  ``<server hint>__<tool hint>__<digest>`` (*hashed* names);
* unprefixed (single-server view): ``tool`` when it is a component of at most
  64 characters; otherwise ``<tool hint>__<digest>``.

Hints are lossy ASCII sanitisations; the digest is base32 of a BLAKE2b hash of
the exact pair. Readable and hashed names differ in their number of ``__``
separators, so they can never collide, and a readable name parses back
uniquely.

Guarantees:

* every exposed name matches ``^[a-zA-Z0-9_-]{1,64}$`` and the map is injective;
* a readable name depends only on its own pair (never on what else is in the
  map), so any set of such pairs gets the same names in any insertion order;
* a hashed name also depends only on its pair, except if two different pairs
  with equal hints share an 8-character (40-bit) digest: the later one then
  gets a longer digest. Only in that (astronomically rare) case does the name
  depend on insertion order.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Iterator

from toolmesh.errors import ToolNotFoundError, did_you_mean

#: The function-name pattern of OpenAI and Anthropic.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_LEN = 64
SEPARATOR = "__"

_COMPONENT = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9-]+")
_DIGEST_LENS = (8, 13, 20, 26)  # base32 chars: 40, 65, 100, 130 bits
_SERVER_HINT_MAX = 16


def _is_component(name: str) -> bool:
    return _COMPONENT.fullmatch(name) is not None


def _hint(name: str, limit: int) -> str:
    """A lossy, readable ASCII component derived from ``name`` (never empty)."""
    if not name.isascii():
        # Fold accents (café -> cafe); scripts without an ASCII form drop out.
        name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    hint = _UNSAFE_RUN.sub("_", name)[:limit].strip("_")
    return hint or "x"


def _digest(server: str, tool: str, length: int) -> str:
    # Length-prefix the server so ("a", "bc") and ("ab", "c") hash differently.
    raw = f"{len(server)}:{server}\x00{tool}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(raw, digest_size=20).digest()
    return base64.b32encode(digest).decode().lower()[:length]


def exposed_name(server: str, tool: str, *, prefixed: bool = True, digest_len: int = 8) -> str:
    """The canonical exposed name of ``(server, tool)``, computed statelessly.

    :class:`ToolNameMap` uses this and only lengthens the digest on a clash.
    """
    if prefixed:
        if _is_component(server) and _is_component(tool) and len(server) + len(tool) + 2 <= MAX_LEN:
            return f"{server}{SEPARATOR}{tool}"
        budget = MAX_LEN - digest_len - 2 * len(SEPARATOR)
        s_hint = _hint(server, min(_SERVER_HINT_MAX, budget // 2))
        t_hint = _hint(tool, budget - len(s_hint))
        return f"{s_hint}{SEPARATOR}{t_hint}{SEPARATOR}{_digest(server, tool, digest_len)}"
    if _is_component(tool) and len(tool) <= MAX_LEN:
        return tool
    t_hint = _hint(tool, MAX_LEN - digest_len - len(SEPARATOR))
    return f"{t_hint}{SEPARATOR}{_digest(server, tool, digest_len)}"


class ToolNameMap:
    """A two-way map between ``(server, tool)`` pairs and LLM-safe function names.

    With ``prefixed=False`` the map is a single-server view: names are the bare
    tool names, and adding a tool of a second server raises ``ValueError``
    (remove the first server before switching).
    """

    __slots__ = ("_by_name", "_by_pair", "prefixed")

    def __init__(self, *, prefixed: bool = True) -> None:
        self.prefixed = prefixed
        self._by_name: dict[str, tuple[str, str]] = {}
        self._by_pair: dict[tuple[str, str], str] = {}

    def add(self, server: str, tool: str) -> str:
        """Register the pair (idempotent) and return its exposed name."""
        pair = (server, tool)
        name = self._by_pair.get(pair)
        if name is not None:
            return name
        if not self.prefixed and self._by_pair:
            other = next(iter(self._by_pair))[0]
            if other != server:
                raise ValueError(f"unprefixed tool names hold one server; already holding {other!r}, got {server!r}")
        for length in _DIGEST_LENS:
            name = exposed_name(server, tool, prefixed=self.prefixed, digest_len=length)
            if name not in self._by_name:
                break
        else:  # pragma: no cover - needs a 130-bit hash collision
            raise RuntimeError(f"cannot find a free name for {pair!r}")
        self._by_name[name] = pair
        self._by_pair[pair] = name
        return name

    def resolve(self, exposed: str) -> tuple[str, str]:
        """The ``(server, tool)`` pair behind an exposed name; ``ToolNotFoundError`` if none."""
        try:
            return self._by_name[exposed]
        except KeyError:
            raise ToolNotFoundError(f"unknown tool name {exposed!r}{did_you_mean(exposed, self._by_name)}") from None

    def get(self, exposed: str) -> tuple[str, str] | None:
        """Like :meth:`resolve` but returns ``None`` for unknown names."""
        return self._by_name.get(exposed)

    def exposed(self, server: str, tool: str) -> str:
        """The exposed name of a registered pair; ``ToolNotFoundError`` if it was never added."""
        try:
            return self._by_pair[(server, tool)]
        except KeyError:
            raise ToolNotFoundError(f"tool {tool!r} of server {server!r} is not in the name map") from None

    def remove(self, server: str, tool: str) -> bool:
        """Forget one pair; returns whether it was present."""
        name = self._by_pair.pop((server, tool), None)
        if name is None:
            return False
        del self._by_name[name]
        return True

    def remove_server(self, server: str) -> int:
        """Forget every tool of ``server``; returns how many were removed."""
        gone = [pair for pair in self._by_pair if pair[0] == server]
        for pair in gone:
            del self._by_name[self._by_pair.pop(pair)]
        return len(gone)

    def clear(self) -> None:
        """Forget everything."""
        self._by_name.clear()
        self._by_pair.clear()

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        """``(exposed, (server, tool))`` for every entry, in insertion order."""
        return iter(self._by_name.items())

    def __contains__(self, exposed: object) -> bool:
        return exposed in self._by_name

    def __iter__(self) -> Iterator[str]:
        """Exposed names in insertion order."""
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"ToolNameMap(prefixed={self.prefixed}, size={len(self)})"
