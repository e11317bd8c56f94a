"""Test utilities that talk over real sockets: the scripted LLM server (OpenAI and Anthropic APIs).

``from toolmesh.testing import ScriptedLLM`` (imported lazily so that
``python -m toolmesh.testing.scripted_llm`` runs without a double-import warning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolmesh.testing.scripted_llm import RecordedRequest, ScriptedLLM

__all__ = ["RecordedRequest", "ScriptedLLM"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from toolmesh.testing import scripted_llm

        return getattr(scripted_llm, name)
    raise AttributeError(name)
