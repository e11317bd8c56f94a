"""Slowloris: connections that never finish their request headers are closed (issue 11, part 4)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from gateway_support import Gateway, demo_server


def _trickle(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing
    return s


def _closed(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1024) == b""  # EOF: the server closed it
    except (TimeoutError, OSError):
        return False


def test_connections_that_never_finish_their_headers_are_closed(tmp_path: Path) -> None:
    g = Gateway(tmp_path, {"servers": {"catalog": demo_server("catalog")}},
                env={"TOOLMESH_HEADER_TIMEOUT": "1"}).start()
    try:
        idle = socket.create_connection(("127.0.0.1", g.port))  # connects and sends nothing at all
        slow = [_trickle(g.port) for _ in range(50)]
        # The gateway keeps serving everyone else meanwhile.
        assert httpx.get(g.url + "/healthz", timeout=10).status_code == 200
        # Every trickling connection (and the silent one) is closed soon after the 1 s header timeout.
        assert all(_closed(s, 15.0) for s in [*slow, idle])
        # A kept-alive client that sends whole requests is not affected by the timer.
        with httpx.Client(timeout=10) as client:
            for _ in range(3):
                assert client.get(g.url + "/healthz").status_code == 200
                time.sleep(0.6)  # 1.8 s on one connection: longer than the header timeout
        for s in [*slow, idle]:
            s.close()
    finally:
        g.stop()
