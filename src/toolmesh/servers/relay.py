"""Messages of a handshake-era session that belong to another worker or replica.

With several workers or replicas and no sticky routing, a session's POSTs reach any process, but
two kinds of client message only mean something to the process serving a particular request:
``notifications/cancelled`` for a request running elsewhere, and the client's answer to a
server→client request (elicitation, sampling, roots) another process sent. A
:class:`SessionRelay` (the gateway's, over Redis pub/sub, when ``state.url`` is set) carries
them there: :meth:`StreamableHttp.deliver <toolmesh.servers.http.StreamableHttp.deliver>` hands
one to the session's :class:`~toolmesh.servers.state.Conn` in the process that holds its target.
"""

from __future__ import annotations

from typing import Any, Protocol

from toolmesh.servers.state import Conn

__all__ = ["SessionRelay", "meant_elsewhere"]


class SessionRelay(Protocol):
    """Carries a session's message to every other process serving the same endpoints."""

    def forward(self, session: str, message: dict[str, Any]) -> None:
        """Send ``message`` of ``session`` on (never blocks or raises; a lost one is logged)."""


def meant_elsewhere(conn: Conn, message: Any) -> bool:
    """Whether ``message`` targets a request or a server→client request ``conn`` does not hold here."""
    if type(message) is not dict:
        return False
    method = message.get("method")
    if method == "notifications/cancelled":
        params = message.get("params")
        return type(params) is dict and params.get("requestId") not in conn.inflight
    if method is None and ("result" in message or "error" in message):
        return message.get("id") not in conn.pending
    return False
