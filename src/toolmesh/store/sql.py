"""What the store's engines share: the connection shape handed to ``Store.run``, transactions, URLs.

``Store.run(fn)`` calls ``fn(conn)`` on the store's thread; ``conn`` is a :class:`Connection`
(SQLite's own ``sqlite3.Connection``, or :class:`toolmesh.store.postgres.PgConnection`), and
its SQL is the subset both engines share, with ``?`` parameters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from toolmesh.errors import ConfigError, unknown_key_message

__all__ = ["PLAIN_INSERT", "Connection", "Cursor", "Engine", "SqlValue", "StoreSettings", "check_params",
           "insert_table", "parse_url", "transaction"]

T = TypeVar("T")
SqlValue = None | int | float | str | bytes
Engine = Literal["sqlite", "postgresql"]
_SQL_TYPES = (type(None), int, float, str, bytes)
#: ``INSERT INTO table (columns) VALUES (?, …)``, nothing more (the statements that go in bulk).
PLAIN_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([\w\s,]+)\)\s*VALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)\s*$",
                          re.I | re.S)
_TABLES: dict[str, str | None] = {}


class Cursor(Protocol):
    """The result of :meth:`Connection.execute`."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection on the store's thread, in autocommit mode (see :func:`transaction`)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


def transaction(conn: Connection, fn: Callable[[Connection], T], *, lock: bool = True) -> T:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error).

    The write lock is taken up front on both engines (PostgreSQL: an advisory lock), so
    read-modify-write transactions never interleave, across processes too.

    ``lock=False``: a plain ``BEGIN``, for a transaction whose first statement writes the row
    that orders it against its conflicting peers (an upsert of a session row: PostgreSQL
    holds that row's lock until commit; SQLite takes its write lock at that first write,
    before reading anything, so its busy timeout applies). Transactions on other rows then
    run in parallel instead of queueing behind one lock for the whole database."""
    conn.execute("BEGIN IMMEDIATE" if lock else "BEGIN")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def insert_table(sql: str) -> str | None:
    """The table of a plain ``INSERT INTO t (…) VALUES (?, …)`` (lower case), None for any other statement."""
    try:
        return _TABLES[sql]
    except KeyError:
        m = PLAIN_INSERT.match(sql)
        table = m.group(1).lower() if m else None
        if len(_TABLES) < 4096:  # statements are constants: a few dozen in practice
            _TABLES[sql] = table
        return table


def parse_url(url: str) -> tuple[Engine, str]:
    """``(engine, location)`` of a store URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``sqlite:///:memory:`` or ``postgresql://user:pass@host:port/db`` (also ``postgres://``)."""
    if not isinstance(url, str):
        raise TypeError(f"store url must be str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"store url {url!r} has no scheme: use sqlite:///path or postgresql://host/db")
    if scheme == "sqlite":
        if rest in ("", "/", "/:memory:"):
            return "sqlite", ":memory:"
        if not rest.startswith("/"):
            raise ValueError(f"store url {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
        return "sqlite", os.path.expanduser(rest[1:])
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if rest in ("", "/"):
            raise ValueError(f"store url {url!r} names no server or database")
        return "postgresql", "postgresql://" + rest
    raise ValueError(f"store url scheme {scheme!r} is not supported: use sqlite:///path or postgresql://…")


def check_params(params: Sequence[SqlValue]) -> tuple[SqlValue, ...]:
    """``params`` as a tuple, after checking every value is one SQL can hold."""
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"params must be a tuple or list, not {type(params).__name__}")
    for v in params:
        if not isinstance(v, _SQL_TYPES):
            raise TypeError(f"unsupported SQL parameter type {type(v).__name__}: {v!r:.80}")
    return tuple(params)


#: Rows kept in memory while the database is unreachable, unless ``store.buffer_rows`` says otherwise.
BUFFER_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The ``store`` section: ``{url: sqlite:///path | postgresql://…, buffer_rows: 100000}``
    (``path: FILE`` is the older spelling of ``url: sqlite:///FILE``)."""

    #: A SQLite path or a ``sqlite:///``/``postgresql://`` URL; None: ``$TOOLMESH_HOME/toolmesh.db``.
    location: str | None = None
    buffer_rows: int = BUFFER_ROWS

    @classmethod
    def from_section(cls, section: dict[str, Any], source: str | None = None) -> StoreSettings:
        """Validate the raw section; a :class:`ConfigError` names the bad key."""
        unknown = sorted(set(section) - {"url", "path", "buffer_rows"})
        if unknown:
            raise ConfigError(unknown_key_message(str(unknown[0]), ("url", "path", "buffer_rows")),
                              key=f"store.{unknown[0]}", source=source)
        url, path = section.get("url"), section.get("path")
        if url is not None and path is not None:
            raise ConfigError("set store.url or store.path, not both", key="store.url", source=source)
        location: str | None = None
        if url is not None:
            try:
                parse_url(url)
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc), key="store.url", source=source) from None
            location = url
        elif path is not None:
            if not isinstance(path, (str, Path)) or not str(path):
                raise ConfigError("store.path must be a file path", key="store.path", source=source)
            location = os.path.expanduser(str(path))
        rows = section.get("buffer_rows", BUFFER_ROWS)
        if not isinstance(rows, int) or isinstance(rows, bool) or not 1024 <= rows <= 100_000_000:
            raise ConfigError("store.buffer_rows must be an int from 1024 to 100000000", key="store.buffer_rows",
                              source=source)
        return cls(location, rows)
