"""Shared wiring for reasoning tests: the scripted LLM over HTTP behind a real Router."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.llm.router import Deployment, Router
from toolmesh.testing.scripted_llm import ScriptedLLM

MODEL = "deepseek-chat"  # priced in the registry
UNPRICED = "scripted-model"


def chain_rules(steps: list[str], answer: str, *, prompt_regex: str = r"[\s\S]", whole_rest: bool = True,
                **response: Any) -> list[dict[str, Any]]:
    """Rules making the scripted model a deterministic reasoner for one prompt: the first
    request (the prompt) gets step 1, "Continue with 【STEP k】" gets step k; each reply holds
    the rest of the chain (``whole_rest``) so the engine must cut at the next marker."""
    def reply(k: int) -> str:
        last = len(steps) if whole_rest else k
        body = "\n".join(f"【STEP {i}】 {steps[i - 1]}" for i in range(k, last + 1))
        return body + (f"\n【ANSWER】 {answer}" if last == len(steps) else "")

    rules = [{"when": {"user_regex": re.escape(f"Continue with 【STEP {k}】")}, "respond": {"text": reply(k), **response}}
             for k in range(2, len(steps) + 1)]
    rules.append({"when": {"user_regex": re.escape(f"Continue with 【STEP {len(steps) + 1}】")},
                  "respond": {"text": f"【ANSWER】 {answer}", **response}})
    rules.append({"when": {"user_regex": prompt_regex}, "respond": {"text": reply(1), **response}})
    return rules


@contextlib.asynccontextmanager
async def scripted_router(script: dict[str, Any] | list[Any], *, model: str = MODEL, rpm: int | None = None,
                          timeout: float = 60.0) -> AsyncIterator[tuple[Router, ScriptedLLM]]:
    async with ScriptedLLM(script) as srv:
        provider = OpenAIProvider(srv.base_url, "test-key")
        router = Router([Deployment("scripted", model, provider, rpm=rpm, timeout=timeout)], ModelRegistry.load())
        try:
            yield router, srv
        finally:
            await router.aclose()


def chat_bodies(srv: ScriptedLLM) -> list[dict[str, Any]]:
    return [r.body for r in srv.requests if r.path == "/v1/chat/completions"]
