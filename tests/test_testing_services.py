"""toolmesh.testing.services: the loopback servers the scale tests and ``bench scale`` share, and the
test suite's wrappers that turn a missing Debian package into a skip."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import services
from toolmesh.errors import ToolmeshError
from toolmesh.testing import services as shared


def test_a_missing_program_names_its_package() -> None:
    with pytest.raises(shared.MissingProgramError, match="'no-such-pkg'") as info:
        shared.find_program("tm-no-such-program", "no-such-pkg")
    assert isinstance(info.value, ToolmeshError) and isinstance(info.value, RuntimeError)
    assert (info.value.program, info.value.package) == ("tm-no-such-program", "no-such-pkg")


def test_the_test_wrappers_skip_where_the_shared_classes_raise(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, package: str) -> str:
        raise shared.MissingProgramError(f"{name} is not installed", name, package)

    monkeypatch.setattr(shared, "find_program", missing)
    with pytest.raises(shared.MissingProgramError):
        shared.HAProxy(tmp_path, [1])
    for make in (lambda: services.RedisServer(tmp_path), lambda: services.HAProxy(tmp_path, [1]),
                 lambda: services.PostgresServer(tmp_path)):
        with pytest.raises(pytest.skip.Exception, match="is not installed"):
            make()


def test_haproxy_config_names_every_backend(tmp_path: Path) -> None:
    proxy = services.HAProxy(tmp_path, [4001, 4002], check="/readyz")
    argv = proxy.command()
    text = Path(argv[argv.index("-f") + 1]).read_text()
    assert f"bind 127.0.0.1:{proxy.port}" in text and "option httpchk GET /readyz" in text
    assert "server s0 127.0.0.1:4001 check" in text and "server s1 127.0.0.1:4002 check" in text


def test_redis_runs_while_the_block_runs() -> None:
    with services.redis_server() as redis:
        assert isinstance(redis, services.RedisServer)
        assert redis.cli("PING").strip() == "PONG"
        port = redis.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
