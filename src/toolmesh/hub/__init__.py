"""The Hub: a multi-tenant MCP client (SPEC §1).

Import the public names from here::

    from toolmesh.hub import Hub, ServerConfig, load_config
"""

from toolmesh.hub.changes import ChangeEvent, ChangeListener
from toolmesh.hub.config import CacheConfig, CircuitConfig, CoalesceConfig, HealthConfig, ServerConfig
from toolmesh.hub.configfile import ToolmeshConfig, load_config, parse_config
from toolmesh.hub.convert import anthropic_tool, openai_tool
from toolmesh.hub.handle import ServerHandle
from toolmesh.hub.hub import DEFAULT_TENANT, CircuitStoreFactory, Hub, LimiterFactory, StatusCallback
from toolmesh.hub.naming import ToolNameMap
from toolmesh.hub.owner import HandleOwner
from toolmesh.hub.render import (
    anthropic_tool_result,
    result_to_anthropic_content,
    result_to_openai_content,
    result_to_text,
)
from toolmesh.hub.result import ToolResult
from toolmesh.hub.resultcache import ResultCache
from toolmesh.hub.transports.types import LogHandler, ProgressCallback, ServerRequestHandler
from toolmesh.hub.types import JsonDict

__all__ = [
    "DEFAULT_TENANT",
    "CacheConfig",
    "ChangeEvent",
    "ChangeListener",
    "CircuitConfig",
    "CircuitStoreFactory",
    "CoalesceConfig",
    "HandleOwner",
    "HealthConfig",
    "Hub",
    "JsonDict",
    "LimiterFactory",
    "LogHandler",
    "ProgressCallback",
    "ResultCache",
    "ServerConfig",
    "ServerHandle",
    "ServerRequestHandler",
    "StatusCallback",
    "ToolNameMap",
    "ToolResult",
    "ToolmeshConfig",
    "anthropic_tool",
    "anthropic_tool_result",
    "load_config",
    "openai_tool",
    "parse_config",
    "result_to_anthropic_content",
    "result_to_openai_content",
    "result_to_text",
]
