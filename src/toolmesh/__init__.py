"""toolmesh: a production runtime for LLM tool calling over MCP.

The error tree (:mod:`toolmesh.errors`) is exported here whole; the layers users import
export their own names: :mod:`toolmesh.hub`, :mod:`toolmesh.llm`, :mod:`toolmesh.agent`.
"""

from toolmesh.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConcurrencyLimitError,
    ConfigError,
    ConnectionFailedError,
    ContextOverflowError,
    InvalidArgumentsError,
    LLMError,
    MalformedResponseError,
    McpRemoteError,
    ProtocolError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestRejectedError,
    ServerNotFoundError,
    SessionLostError,
    StateUnavailableError,
    TaskSetError,
    ToolmeshError,
    ToolNotFoundError,
    ToolTimeoutError,
    UnknownModelError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "CircuitOpenError",
    "ConcurrencyLimitError",
    "ConfigError",
    "ConnectionFailedError",
    "ContextOverflowError",
    "InvalidArgumentsError",
    "LLMError",
    "MalformedResponseError",
    "McpRemoteError",
    "ProtocolError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestRejectedError",
    "ServerNotFoundError",
    "SessionLostError",
    "StateUnavailableError",
    "TaskSetError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "ToolmeshError",
    "UnknownModelError",
    "WeightsError",
    "__version__",
]
