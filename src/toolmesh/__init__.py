"""toolmesh: a production runtime for LLM tool calling over MCP."""

from toolmesh.errors import (
    CircuitOpenError,
    ConfigError,
    ConnectionFailedError,
    InvalidArgumentsError,
    McpRemoteError,
    ProtocolError,
    ServerNotFoundError,
    SessionLostError,
    ToolmeshError,
    ToolNotFoundError,
    ToolTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "ConnectionFailedError",
    "InvalidArgumentsError",
    "McpRemoteError",
    "ProtocolError",
    "ServerNotFoundError",
    "SessionLostError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "ToolmeshError",
    "__version__",
]
