"""Test utilities that talk over real sockets: the scripted LLM server (OpenAI and Anthropic APIs)
and a fault-injecting TCP proxy.

``from toolmesh.testing import ScriptedLLM, FaultProxy, Fault`` (imported lazily so that
``python -m toolmesh.testing.scripted_llm`` runs without a double-import warning).
:mod:`toolmesh.testing.services` starts real redis-server, haproxy and PostgreSQL processes on
loopback (the scale-out tests and ``bench scale`` share it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolmesh.testing.faultproxy import Fault, FaultProxy
    from toolmesh.testing.scripted_llm import RecordedRequest, ScriptedLLM

__all__ = ["Fault", "FaultProxy", "RecordedRequest", "ScriptedLLM"]


def __getattr__(name: str) -> Any:
    if name in ("Fault", "FaultProxy"):
        from toolmesh.testing import faultproxy

        return getattr(faultproxy, name)
    if name in __all__:
        from toolmesh.testing import scripted_llm

        return getattr(scripted_llm, name)
    raise AttributeError(name)
