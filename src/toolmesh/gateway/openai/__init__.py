"""The OpenAI-compatible API under ``/v1`` (GW-1).

:mod:`~toolmesh.gateway.openai.api` routes; :mod:`~toolmesh.gateway.openai.wire` parses requests
and writes responses; :mod:`~toolmesh.gateway.openai.agent` answers with the agent runtime (no
``tools`` in the request), :mod:`~toolmesh.gateway.openai.passthrough` forwards to the LLM router
(``tools`` given); :mod:`~toolmesh.gateway.openai.errors` maps exceptions to HTTP errors.

Not to be confused with the ``openai`` SDK: toolmesh imports absolutely only, so ``import openai``
anywhere still means the SDK.
"""

from toolmesh.gateway.openai.api import OpenAIApi
from toolmesh.gateway.openai.errors import to_api_error
from toolmesh.gateway.openai.wire import ChatCall, parse_chat

__all__ = ["ChatCall", "OpenAIApi", "parse_chat", "to_api_error"]
