"""LLM provider faults (issue 11 §1) between the router and a real HTTP model server.

ScriptedLLM (a real OpenAI-compatible server) behind the fault proxy; the router and the
OpenAI provider as the gateway runs them. Found by ``toolmesh bench faults``: after a provider
failed twice the deployment cooled down for the router's whole ``cooldown`` (30 s) and no request
succeeded for that long although the provider answered again. Now a deployment cooling after
failures takes a trial request every 0.25-1 s while every candidate is cooling.
Counts, not timings: "a request succeeds within N attempts" with a pause between attempts that
is far below the 30 s cooldown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from toolmesh.errors import LLMError, ProviderUnavailableError, RateLimitedError
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.llm.router import Router
from toolmesh.llm.routing import Deployment
from toolmesh.llm.types import ChatRequest, Message
from toolmesh.testing import ScriptedLLM
from toolmesh.testing.faultproxy import Fault, FaultProxy


def canned(status: int, reason: str, retry_after: str | None = None) -> bytes:
    body = b'{"error":{"message":"scripted fault","type":"server_error"}}'
    extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode() + body


@pytest.fixture
async def routed() -> AsyncIterator[tuple[Router, FaultProxy]]:
    async with ScriptedLLM({"default": {"text": "fine"}}, log_requests=False) as llm, \
            FaultProxy("127.0.0.1", llm.port) as proxy:
        provider = OpenAIProvider(f"http://127.0.0.1:{proxy.port}/v1", "unused")
        router = Router([Deployment("only", "scripted-model", provider, timeout=1.0)], cooldown=30.0)
        yield router, proxy
        await router.aclose()


def ask() -> ChatRequest:
    return ChatRequest(model="scripted-model", messages=[Message(role="user", content="hi")])


async def recovers_within(router: Router, attempts: int, pause: float = 0.2) -> int:
    """How many attempts until a request succeeds (fails the test past ``attempts``)."""
    for n in range(1, attempts + 1):
        try:
            response = await router.complete(ask(), timeout=2.0)
        except LLMError:
            await asyncio.sleep(pause)
            continue
        assert response.message.content == "fine"
        return n
    raise AssertionError(f"no success in {attempts} attempts {pause}s apart (cooldown 30 s)")


@pytest.mark.parametrize("fault", [Fault("garbage", payload=canned(503, "Service Unavailable")),
                                   Fault("reset", after_bytes=40), Fault("blackhole")],
                         ids=["503", "reset", "timeout"])
async def test_a_recovered_provider_is_used_again_long_before_the_cooldown_ends(
        routed: tuple[Router, FaultProxy], fault: Fault) -> None:
    router, proxy = routed
    assert (await router.complete(ask())).message.content == "fine"
    proxy.set(fault)
    for _ in range(4):  # past the failure threshold (2): the deployment cools down
        with pytest.raises(ProviderUnavailableError):
            await router.complete(ask(), timeout=2.0)
    assert router.snapshot()["deployments"]["only"]["cooldown_reason"] == "unavailable"
    # While cooling, most requests fail fast without reaching the provider; trials are spaced.
    proxy.clear()
    await recovers_within(router, attempts=15)
    assert router.snapshot()["deployments"]["only"]["cooldown_s"] == 0.0


async def test_rate_limit_cooldown_still_waits_for_retry_after(routed: tuple[Router, FaultProxy]) -> None:
    router, proxy = routed
    proxy.set(Fault("garbage", payload=canned(429, "Too Many Requests", retry_after="60")))
    with pytest.raises(RateLimitedError):
        await router.complete(ask(), timeout=2.0)
    proxy.clear()
    before = proxy.stats.accepted
    for _ in range(5):  # the provider said when to come back: no trial requests before that
        with pytest.raises(RateLimitedError):
            await router.complete(ask(), timeout=2.0)
        await asyncio.sleep(0.1)
    assert proxy.stats.accepted == before
