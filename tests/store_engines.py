"""A ``store_url`` fixture that runs a store test on both engines: a SQLite file and a PostgreSQL database.

One PostgreSQL cluster (tests/services.py) serves the whole test session; every test gets its own
fresh database. Import the fixtures into a test module: ``from store_engines import pg, store_url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services import PostgresServer, postgres_server

__all__ = ["pg", "store_url"]


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (skips when PostgreSQL is not installed)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives: a new SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    server: PostgresServer = request.getfixturevalue("pg")
    return server.create_database()
