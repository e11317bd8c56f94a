"""The ASGI types, defined once for every raw ASGI handler in toolmesh (the gateway, the servers).

The same shapes as ``starlette.types``: the scope and the messages are mutable mappings (an
ASGI server may hand over any mapping, and the gateway writes the caller into the scope), so
handlers index and ``get`` them rather than relying on ``dict`` methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

#: The connection scope (``type``, ``path``, ``headers``, ...).
Scope = MutableMapping[str, Any]
#: One event received from, or sent to, the ASGI server.
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
