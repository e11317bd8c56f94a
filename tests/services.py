"""Real servers from Debian's packages for the scale-out tests: redis-server, haproxy and PostgreSQL on loopback.

The servers are :mod:`toolmesh.testing.services`' (the benchmark starts the same ones); this module
makes a missing package skip the test, naming the package, instead of failing it. ``make test``
installs the packages (see the Makefile).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolmesh.testing import services
from toolmesh.testing.services import MissingProgramError, free_port, wait_port

__all__ = ["HAProxy", "PostgresServer", "RedisServer", "free_port", "haproxy", "postgres_server", "redis_server",
           "skip_if_missing", "wait_port"]


@contextlib.contextmanager
def skip_if_missing() -> Iterator[None]:
    """Skip the test (saying which Debian package is missing) when the block needs an uninstalled program."""
    try:
        yield
    except MissingProgramError as exc:
        pytest.skip(str(exc))


class RedisServer(services.RedisServer):
    """:class:`toolmesh.testing.services.RedisServer`; skips without redis-server (or redis-cli)."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        with skip_if_missing():
            super().__init__(workdir, cluster=cluster)

    def cli(self, *args: str) -> str:
        """Run one command with redis-cli (for assertions on keys and stats)."""
        with skip_if_missing():
            return super().cli(*args)


class HAProxy(services.HAProxy):
    """:class:`toolmesh.testing.services.HAProxy`; skips without haproxy."""

    def __init__(self, workdir: Path, backends: list[int], check: str | None = None) -> None:
        with skip_if_missing():
            super().__init__(workdir, backends, check)


class PostgresServer(services.PostgresServer):
    """:class:`toolmesh.testing.services.PostgresServer`; skips without PostgreSQL (or, as root, a user to
    run it as)."""

    def __init__(self, workdir: Path, *, new_session: bool = False) -> None:
        with skip_if_missing():
            super().__init__(workdir, new_session=new_session)


def redis_server(*, cluster: bool = False) -> contextlib.AbstractContextManager[RedisServer]:
    """A fresh redis-server on a free loopback port while the block runs (``cluster``: a one-node
    Redis Cluster, i.e. cluster mode's rules on keys without the other nodes)."""
    return RedisServer.running(cluster=cluster)


def haproxy(backends: list[int], check: str | None = None) -> contextlib.AbstractContextManager[HAProxy]:
    """haproxy round-robin over ``backends`` (ports on 127.0.0.1) while the block runs
    (``check``: health-checked on that path, with redispatch)."""
    return HAProxy.running(backends, check)


def postgres_server() -> contextlib.AbstractContextManager[PostgresServer]:
    """A fresh PostgreSQL cluster on a free loopback port while the block runs."""
    return PostgresServer.running()
