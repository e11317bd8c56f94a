"""Router (LLM-3): strategies, scenario rules at run time, fallback, cooldown, limits, streaming.

Unit tests of routing logic with in-process fake providers and a fake clock."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque

import pytest

from toolmesh.errors import (
    ConfigError,
    ContextOverflowError,
    LLMError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownModelError,
)
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.provider import Provider
from toolmesh.llm.ratelimit import KeyedLimits
from toolmesh.llm.router import Deployment, Router, Rule, attempts_of, estimate_tokens
from toolmesh.llm.types import ChatRequest, ChatResponse, Message, StreamDone, TextDelta, ToolCall, Usage

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.t += d


class FakeProvider(Provider):
    """Plays a script of outcomes: "ok", an exception, "hang", or ("ok", headers)."""

    def __init__(self, name: str, *script: object) -> None:
        self.name = name
        self.script: deque[object] = deque(script)
        self.calls: list[str] = []

    async def complete(self, request, *, timeout=None):
        self.calls.append(request.model)
        action = self.script.popleft() if self.script else "ok"
        headers: dict[str, str] = {}
        if isinstance(action, tuple):
            action, headers = action
        if isinstance(action, BaseException):
            raise action
        if action == "hang":
            await asyncio.Event().wait()
        return ChatResponse(Message("assistant", f"{self.name}:{request.model}"), Usage(10, 5), request.model,
                            self.name, headers=headers)


class StreamingFake(FakeProvider):
    """Streams two text deltas; ``fail_after_first`` raises after the first one."""

    def __init__(self, name: str, *script: object, fail_after_first: bool = False) -> None:
        super().__init__(name, *script)
        self.fail_after_first = fail_after_first

    async def stream(self, request, *, timeout=None):
        self.calls.append(request.model)
        action = self.script.popleft() if self.script else "ok"
        if isinstance(action, BaseException):
            raise action
        yield TextDelta(f"{self.name}:")
        if self.fail_after_first:
            raise ProviderUnavailableError("connection reset mid-stream")
        yield TextDelta("rest")
        yield StreamDone(ChatResponse(Message("assistant", f"{self.name}:rest"), Usage(7, 3), request.model,
                                      self.name, ttft_ms=12.0, latency_ms=30.0))


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path))


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry.load(overrides={
        "text-only": {"provider": "openai", "price": {"input": 0.01, "output": 0.01}, "capabilities": ["streaming"],
                      "quality": 99},
    })


@pytest.fixture
def fc() -> FakeClock:
    return FakeClock()


def req(model="auto", text="hello", **kw) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", text)], **kw)


def make_router(registry, fc, deps, **kw) -> Router:
    return Router(deps, registry, clock=fc, sleep=fc.sleep, rng=random.Random(7), **kw)


def five(**kw) -> list[Deployment]:
    return [Deployment("gpt", "gpt-4.1", FakeProvider("gpt"), **kw),
            Deployment("sonnet", "claude-sonnet-4-5", FakeProvider("sonnet"), **kw),
            Deployment("flash", "gemini-2.5-flash", FakeProvider("flash"), **kw),
            Deployment("deepseek", "deepseek-chat", FakeProvider("deepseek"), **kw),
            Deployment("mystery", "mystery-model", FakeProvider("mystery"), **kw)]


# -- ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "order"), [
    ("cost", ["deepseek", "flash", "gpt", "sonnet", "mystery"]),        # unpriced last
    ("quality", ["sonnet", "gpt", "deepseek", "flash", "mystery"]),     # 90, 80, 75, 70, unknown 0
    ("latency", ["flash", "gpt", "sonnet", "deepseek", "mystery"]),     # ttft + 256 tokens × per-token
    ("balanced", ["flash", "gpt", "deepseek", "sonnet", "mystery"]),    # 0.4 q + 0.3 cost + 0.3 latency
])
def test_strategy_orders(registry, fc, strategy, order):
    r = make_router(registry, fc, five(), strategy=strategy)
    assert r.candidates(req()) == order


def test_latency_strategy_uses_ttft_for_streams(registry, fc):
    r = make_router(registry, fc, five(), strategy="latency")
    assert r.candidates(req(), streaming=True) == ["flash", "gpt", "deepseek", "mystery", "sonnet"]


def test_unknown_strategy_is_a_config_error(registry, fc):
    with pytest.raises(ConfigError) as ei:
        make_router(registry, fc, five(), strategy="fastest")
    assert ei.value.key == "strategy"


def test_priority_tiers_come_first(registry, fc):
    deps = five()
    deps[4].priority = -1  # the unpriced mystery model is the primary tier
    deps[1].priority = 1   # sonnet only as a last resort
    r = make_router(registry, fc, deps, strategy="quality")
    assert r.candidates(req()) == ["mystery", "gpt", "deepseek", "flash", "sonnet"]


def test_tools_needed_filters_auto(registry, fc):
    deps = [Deployment("plain", "text-only", FakeProvider("plain")), Deployment("gpt", "gpt-4.1", FakeProvider("gpt"))]
    r = make_router(registry, fc, deps, strategy="quality")
    assert r.candidates(req()) == ["plain", "gpt"]
    assert r.candidates(req(tools=TOOLS)) == ["gpt"]
    r2 = make_router(registry, fc, deps[:1])
    with pytest.raises(UnknownModelError, match="tool support"):
        r2.candidates(req(tools=TOOLS))


def test_weights_share_equal_deployments(registry, fc):
    deps = [Deployment("a", "gpt-4.1", FakeProvider("a"), weight=3), Deployment("b", "gpt-4.1", FakeProvider("b"))]
    r = make_router(registry, fc, deps, strategy="cost")
    firsts = [r.candidates(req("gpt-4.1"))[0] for _ in range(2000)]
    share = firsts.count("a") / len(firsts)
    assert 0.65 < share < 0.85  # 3:1 → 0.75 expected


def test_model_names_aliases_and_deployment_names(registry, fc):
    deps = [Deployment("ds-1", "deepseek-chat", FakeProvider("ds-1")),
            Deployment("ds-2", "deepseek-v3.2", FakeProvider("ds-2"), priority=1),
            Deployment("gpt", "gpt-4.1", FakeProvider("gpt"))]
    r = make_router(registry, fc, deps, fallbacks={"deepseek-v3.2": ["gpt-4.1"]})
    assert r.candidates(req("deepseek-v3.2")) == ["ds-1", "ds-2", "gpt"]
    assert r.candidates(req("deepseek/deepseek-chat")) == ["ds-1", "ds-2", "gpt"]
    assert r.candidates(req("ds-2")) == ["ds-2", "ds-1", "gpt"]  # deployment pinned first
    assert r.candidates(req("gpt-4.1")) == ["gpt"]
    with pytest.raises(UnknownModelError):
        r.candidates(req("gpt-5"))


async def test_provider_gets_the_deployment_model_id(registry, fc):
    p = FakeProvider("ds")
    r = make_router(registry, fc, [Deployment("ds", "deepseek-chat", p)])
    resp = await r.complete(req("deepseek-v3.2"))
    assert p.calls == ["deepseek-chat"] and resp.message.content == "ds:deepseek-chat"


# -- rules ----------------------------------------------------------------------------------------


async def test_scenario_rules_per_request_and_switched_at_run_time(registry, fc, caplog):
    rules = {"peak": {"strategy": "latency"}, "complex_reasoning": {"strategy": "quality"},
             "default": {"strategy": "cost"}}
    r = make_router(registry, fc, five(), rules=rules)
    assert (await r.complete(req(), scenario="peak")).provider == "flash"
    assert (await r.complete(req())).provider == "deepseek"
    assert (await r.complete(req(), scenario="complex_reasoning")).provider == "sonnet"
    caplog.set_level(logging.WARNING, logger="toolmesh.llm.router")
    assert (await r.complete(req(), scenario="no-such")).provider == "deepseek"
    assert (await r.complete(req(), scenario="no-such")).provider == "deepseek"
    assert caplog.text.count("no-such") == 1
    r.set_rule("default", "quality")  # no restart
    assert (await r.complete(req())).provider == "sonnet"
    r.set_rule("peak", {"models": ["deepseek-v3.2", "gpt"]})
    assert r.candidates(req(), scenario="peak") == ["deepseek", "gpt"]
    r.set_rule("peak", None)
    assert "peak" not in r.rules
    r.set_rules({"default": {"strategy": "cost"}})
    assert r.candidates(req()) == ["deepseek", "flash", "gpt", "sonnet", "mystery"]
    assert r.snapshot()["rules"] == {"default": {"strategy": "cost", "models": []}}


async def test_rule_switch_while_requests_are_in_flight(registry, fc):
    gate = asyncio.Event()

    class Slow(FakeProvider):
        async def complete(self, request, *, timeout=None):
            await gate.wait()
            return await super().complete(request, timeout=timeout)

    deps = [Deployment("cheap", "deepseek-chat", Slow("cheap")), Deployment("best", "claude-sonnet-4-5", Slow("best"))]
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    before = [asyncio.create_task(r.complete(req())) for _ in range(5)]
    await asyncio.sleep(0)
    r.set_rules({"default": "quality"})
    after = [asyncio.create_task(r.complete(req())) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert {resp.provider for resp in await asyncio.gather(*before)} == {"cheap"}
    assert {resp.provider for resp in await asyncio.gather(*after)} == {"best"}


@pytest.mark.parametrize(("rules", "key"), [
    ({"peak": {"strategy": "fastest"}}, "rules.peak.strategy"),
    ({"peak": {"strat": "latency"}}, "rules.peak.strat"),
    ({"peak": {}}, "rules.peak"),
    ({"peak": 3}, "rules.peak"),
    ({"peak": {"models": "gpt-4.1"}}, "rules.peak.models"),
    ({"peak": {"models": ["gpt-9"]}}, "rules.peak.models"),
])
def test_invalid_rules_name_the_key_and_keep_the_old_ones(registry, fc, rules, key):
    r = make_router(registry, fc, five(), rules={"default": "cost"})
    with pytest.raises(ConfigError) as ei:
        r.set_rules(rules)
    assert ei.value.key == key
    assert r.rules == {"default": Rule("cost")}


# -- fallback and cooldown ------------------------------------------------------------------------


def two(first: FakeProvider, second: FakeProvider | None = None, **kw) -> list[Deployment]:
    return [Deployment("primary", "deepseek-chat", first, **kw),
            Deployment("backup", "gpt-4.1", second or FakeProvider("backup"), **kw)]


async def test_429_falls_back_cools_down_and_recovers(registry, fc):
    primary = FakeProvider("primary", RateLimitedError("slow down", retry_after=7.0))
    r = make_router(registry, fc, two(primary), rules={"default": "cost"})
    resp = await r.complete(req())
    assert resp.provider == "backup"
    snap = r.snapshot()["deployments"]["primary"]
    assert snap["cooldown_s"] == pytest.approx(7.0) and snap["cooldown_reason"] == "rate_limited"
    assert snap["failures"] == 1 and snap["limits"]["factor"] == 0.5
    assert (await r.complete(req())).provider == "backup"  # still cooling: skipped, not called
    assert len(primary.calls) == 1
    fc.t += 7.0
    assert (await r.complete(req())).provider == "primary"
    assert r.snapshot()["deployments"]["primary"]["cooldown_s"] == 0.0


async def test_429_without_retry_after_uses_the_router_cooldown(registry, fc):
    primary = FakeProvider("primary", RateLimitedError("429"))
    r = make_router(registry, fc, two(primary), rules={"default": "cost"}, cooldown=12.0)
    await r.complete(req())
    assert r.snapshot()["deployments"]["primary"]["cooldown_s"] == pytest.approx(12.0)


async def test_repeated_5xx_puts_a_deployment_in_cooldown(registry, fc):
    err = ProviderUnavailableError("HTTP 503", status=503)
    primary = FakeProvider("primary", err, err, err)
    r = make_router(registry, fc, two(primary), rules={"default": "cost"}, cooldown=30.0, failure_threshold=2)
    assert (await r.complete(req())).provider == "backup"
    assert r.snapshot()["deployments"]["primary"]["cooldown_s"] == 0.0  # one 5xx: no cooldown yet
    assert (await r.complete(req())).provider == "backup"
    snap = r.snapshot()["deployments"]["primary"]
    assert snap["cooldown_s"] == pytest.approx(30.0) and snap["cooldown_reason"] == "unavailable"
    assert snap["consecutive_failures"] == 2
    await r.complete(req())
    assert len(primary.calls) == 2
    fc.t += 30.0
    assert (await r.complete(req())).provider == "backup"  # third scripted 503, tried again
    assert (await r.complete(req())).provider == "backup"  # ...and cooling again after it
    fc.t += 30.0
    assert (await r.complete(req())).provider == "primary"
    assert r.snapshot()["deployments"]["primary"]["consecutive_failures"] == 0


async def test_timeout_falls_back(registry, fc):
    deps = two(FakeProvider("primary", "hang"))
    deps[0].timeout = 0.05
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    resp = await r.complete(req())
    assert resp.provider == "backup"
    assert r.snapshot()["deployments"]["primary"]["failures"] == 1


async def test_context_overflow_only_to_a_larger_window(registry, fc):
    small = FakeProvider("mini", ContextOverflowError("too long"))
    same = FakeProvider("deepseek")
    large = FakeProvider("gpt")
    deps = [Deployment("mini", "gpt-4o-mini", small), Deployment("deepseek", "deepseek-chat", same),
            Deployment("gpt", "gpt-4.1", large)]
    r = make_router(registry, fc, deps, rules={"default": {"models": ["mini", "deepseek", "gpt"]}})
    resp = await r.complete(req())
    assert resp.provider == "gpt" and same.calls == []  # 128k → 128k would overflow too
    assert r.snapshot()["deployments"]["mini"]["cooldown_s"] == 0.0  # the request's fault, not the deployment's


async def test_all_fail_raises_the_last_error_with_attempts(registry, fc):
    deps = two(FakeProvider("primary", RateLimitedError("429 p", retry_after=1)),
               FakeProvider("backup", ProviderUnavailableError("503 b")))
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    with pytest.raises(ProviderUnavailableError, match="503 b") as ei:
        await r.complete(req())
    attempts = attempts_of(ei.value)
    assert [(a.deployment, a.error.split(":")[0]) for a in attempts] == [
        ("primary", "RateLimitedError"), ("backup", "ProviderUnavailableError")]
    assert any("router attempts" in n for n in ei.value.__notes__)


async def test_everything_cooling_down_says_when(registry, fc):
    deps = two(FakeProvider("primary", RateLimitedError("429", retry_after=5)),
               FakeProvider("backup", RateLimitedError("429", retry_after=9)))
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    with pytest.raises(RateLimitedError):
        await r.complete(req())
    with pytest.raises(RateLimitedError) as ei:
        await r.complete(req())
    assert ei.value.retry_after == pytest.approx(5.0) and attempts_of(ei.value) == ()


async def test_a_bad_request_is_not_retried_elsewhere(registry, fc):
    backup = FakeProvider("backup")
    r = make_router(registry, fc, two(FakeProvider("primary", LLMError("HTTP 400 bad", status=400)), backup),
                    rules={"default": "cost"})
    with pytest.raises(LLMError, match="400"):
        await r.complete(req())
    assert backup.calls == []


async def test_unknown_model(registry, fc):
    r = make_router(registry, fc, five())
    with pytest.raises(UnknownModelError):
        await r.complete(req("llama-9000"))


# -- limits ---------------------------------------------------------------------------------------


async def test_over_limit_deployment_is_skipped_then_waited_for(registry, fc):
    deps = two(FakeProvider("primary"), rpm=60)
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    served = [(await r.complete(req())).provider for _ in range(120)]
    assert served[:60] == ["primary"] * 60 and served[60:] == ["backup"] * 60
    assert fc.slept == []
    assert (await r.complete(req())).provider == "primary"  # both full: wait for the soonest
    assert fc.slept == [pytest.approx(1.0)]
    assert (await r.complete(req(), timeout=0.5)).provider == "backup"  # refilled during that second
    with pytest.raises(RateLimitedError) as ei:
        await r.complete(req(), timeout=0.5)
    assert ei.value.retry_after == pytest.approx(1.0)


async def test_tpm_estimate_is_reconciled_with_usage(registry, fc):
    deps = [Deployment("d", "gpt-4.1", FakeProvider("d"), tpm=6000)]
    r = make_router(registry, fc, deps, estimate_tokens=lambda request: 1000)
    await r.complete(req(max_tokens=1000))  # reserved 2000, used 15
    assert r.limiter("d").tokens.bucket.tokens == pytest.approx(6000 - 15)


def test_default_token_estimate():
    base = estimate_tokens(req(text="x" * 400))
    assert 100 <= base <= 110
    assert estimate_tokens(req(text="x" * 400, tools=TOOLS)) > base
    msg = Message("assistant", None, tool_calls=[ToolCall("1", "lookup", {"q": 1}, '{"q": 1}')])
    assert estimate_tokens(ChatRequest("m", [msg])) > 1


async def test_response_headers_slow_the_deployment_down(registry, fc):
    headers = {"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "10s"}
    deps = two(FakeProvider("primary", ("ok", headers)), rpm=600)
    r = make_router(registry, fc, deps, rules={"default": "cost"})
    await r.complete(req())
    assert r.snapshot()["deployments"]["primary"]["limits"]["requests_per_min"] == pytest.approx(12.0)


async def test_tenant_and_user_limits(registry, fc):
    r = make_router(registry, fc, five(), tenant_limits=KeyedLimits(rpm=3, clock=fc, sleep=fc.sleep),
                    user_limits=KeyedLimits(rpm=1, clock=fc, sleep=fc.sleep))
    await r.complete(req(), tenant="acme", user="ann", timeout=1)
    with pytest.raises(RateLimitedError):
        await r.complete(req(), tenant="acme", user="ann", timeout=1)
    await r.complete(req(), tenant="acme", user="bob", timeout=1)
    await r.complete(req(), tenant="other", user="ann", timeout=1)  # users are per tenant
    with pytest.raises(RateLimitedError):
        await r.complete(req(), tenant="acme", user="cy", timeout=1)  # tenant's 3 used (ann's refusal included)


# -- streaming ------------------------------------------------------------------------------------


async def collect(agen):
    return [e async for e in agen]


async def test_stream_falls_back_before_the_first_event(registry, fc):
    first = StreamingFake("primary", RateLimitedError("429", retry_after=3))
    second = StreamingFake("backup")
    r = make_router(registry, fc, two(first, second), rules={"default": "cost"})
    events = await collect(r.stream(req()))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["backup:", "rest"]
    assert isinstance(events[-1], StreamDone)
    snap = r.snapshot()["deployments"]
    assert snap["primary"]["cooldown_s"] == pytest.approx(3.0)
    assert snap["backup"]["successes"] == 1 and snap["backup"]["ttft_ms"] == 12.0


async def test_stream_never_falls_back_after_an_event(registry, fc):
    first = StreamingFake("primary", fail_after_first=True)
    second = StreamingFake("backup")
    r = make_router(registry, fc, two(first, second), rules={"default": "cost"})
    seen = []
    with pytest.raises(ProviderUnavailableError, match="mid-stream") as ei:
        async for e in r.stream(req()):
            seen.append(e)
    assert [e.text for e in seen] == ["primary:"]
    assert second.calls == [] and attempts_of(ei.value)[0].deployment == "primary"


async def test_stream_default_replay_and_early_close(registry, fc):
    r = make_router(registry, fc, two(FakeProvider("primary")), rules={"default": "cost"})
    agen = r.stream(req())
    first = await anext(agen)
    assert first.text == "primary:deepseek-chat"
    await agen.aclose()  # consumer stops early: no error
    events = await collect(r.stream(req()))
    assert isinstance(events[-1], StreamDone)


# -- snapshot and latency -------------------------------------------------------------------------


async def test_snapshot_and_latency_ewma(registry, fc):
    class Timed(FakeProvider):
        def __init__(self, name, latencies):
            super().__init__(name)
            self.latencies = deque(latencies)

        async def complete(self, request, *, timeout=None):
            resp = await super().complete(request, timeout=timeout)
            resp.latency_ms, resp.ttft_ms = self.latencies.popleft()
            return resp

    deps = [Deployment("a", "gpt-4.1", Timed("a", [(100.0, 40.0), (200.0, 60.0)]))]
    r = make_router(registry, fc, deps, ewma_alpha=0.5)
    seed = r.snapshot()["deployments"]["a"]
    assert seed["latency_ms"] == 600 + 12 * 256 and seed["ttft_ms"] == 600 and not seed["measured"]
    await r.complete(req())
    s = r.snapshot()["deployments"]["a"]
    assert (s["latency_ms"], s["ttft_ms"], s["measured"]) == (100.0, 40.0, True)  # first sample replaces the seed
    await r.complete(req())
    s = r.snapshot()["deployments"]["a"]
    assert (s["latency_ms"], s["ttft_ms"], s["successes"], s["failures"]) == (150.0, 50.0, 2, 0)
    snap = r.snapshot()
    assert snap["strategy"] == "balanced" and s["model"] == "gpt-4.1"


async def test_measured_latency_reorders_the_latency_strategy(registry, fc):
    class Timed(FakeProvider):
        async def complete(self, request, *, timeout=None):
            resp = await super().complete(request, timeout=timeout)
            resp.latency_ms = 5000.0
            return resp

    deps = [Deployment("flash", "gemini-2.5-flash", Timed("flash")), Deployment("gpt", "gpt-4.1", FakeProvider("gpt"))]
    r = make_router(registry, fc, deps, strategy="latency")
    assert r.candidates(req()) == ["flash", "gpt"]
    await r.complete(req())  # flash turns out slow
    assert r.candidates(req()) == ["gpt", "flash"]


def test_duplicate_deployment_names(registry, fc):
    with pytest.raises(ConfigError):
        make_router(registry, fc, [Deployment("a", "gpt-4.1", FakeProvider("a"))] * 2)


# -- integration: real OpenAI provider against the scripted server over a socket -------------------


async def test_429_with_retry_after_falls_back_over_a_real_socket(registry, fc):
    from toolmesh.llm.openai_provider import OpenAIProvider
    from toolmesh.testing.scripted_llm import ScriptedLLM

    script = {"rules": [
        {"when": {"model": "m-primary"},
         "respond": {"status": 429, "error": "rate limited", "headers": {
             "retry-after": "7", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7s"}}},
        {"when": {"model": "m-backup"},
         "respond": {"text": "from backup", "headers": {
             "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "3",
             "x-ratelimit-reset-requests": "30s"}}},
    ]}
    async with ScriptedLLM(script) as srv:
        primary, backup = OpenAIProvider(srv.base_url, "k"), OpenAIProvider(srv.base_url, "k")
        r = Router([Deployment("primary", "m-primary", primary, rpm=600),
                    Deployment("backup", "m-backup", backup)],
                   registry, rules={"default": {"models": ["primary", "backup"]}}, clock=fc, sleep=fc.sleep)
        try:
            resp = await r.complete(req())
            assert resp.message.content == "from backup"
            snap = r.snapshot()["deployments"]
            assert snap["primary"]["cooldown_reason"] == "rate_limited"
            # from Retry-After, not the 30 s default (on the fake clock: exactly 7 s)
            assert snap["primary"]["cooldown_s"] == pytest.approx(7.0)
            assert snap["primary"]["limits"]["factor"] == 0.5
            # the backup's headers taught its limiter: 3 left for 30 s, spread out
            assert snap["backup"]["limits"]["requests_per_min"] == pytest.approx(6.0, rel=0.05)
            fc.t += 6.9  # still cooling just before the window ends: straight to the backup
            events = [e async for e in r.stream(req())]
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "from backup"
            assert [q.body["model"] for q in srv.requests] == ["m-primary", "m-backup", "m-backup"]
            assert r.snapshot()["deployments"]["primary"]["cooldown_s"] == pytest.approx(0.1)
            fc.t += 0.2  # the window is over: the primary is tried first again
            assert r.snapshot()["deployments"]["primary"]["cooldown_s"] == 0.0
            await r.complete(req())
            assert [q.body["model"] for q in srv.requests][3] == "m-primary"
        finally:
            await r.aclose()


class MemoryFleet:
    """A FleetLimits in memory (pure logic): each deployment's fleet-wide request count, or a
    refusal for the given seconds; the corrections it was told."""

    def __init__(self, allow: dict[str, int]) -> None:
        self.allow = dict(allow)
        self.taken: list[tuple[str, list[tuple[str, float]]]] = []
        self.settled: list[tuple[str, str, float]] = []

    async def take(self, deployment, buckets):
        if self.allow.get(deployment, 0) <= 0:
            return 2.0
        self.allow[deployment] -= 1
        self.taken.append((deployment, [(b.dimension, b.cost) for b in buckets]))
        return 0.0

    def settle(self, deployment, bucket):
        self.settled.append((deployment, bucket.dimension, bucket.cost))


async def test_the_fleets_buckets_decide_after_the_deployments_own(registry, fc):
    # "primary" has room here, but the other processes used its fleet-wide allowance: the call goes
    # to "backup" at once, and primary starts nothing here until the fleet's retry time.
    deps = two(FakeProvider("primary"), rpm=60, tpm=60_000)
    fleet = MemoryFleet({"primary": 1, "backup": 10})
    r = make_router(registry, fc, deps, rules={"default": "cost"}, fleet=fleet, estimate_tokens=lambda request: 100)
    assert (await r.complete(req(max_tokens=100))).provider == "primary"
    assert (await r.complete(req(max_tokens=100))).provider == "backup"
    assert fc.slept == []
    assert fleet.taken == [("primary", [("r", 1.0), ("t", 200.0)]), ("backup", [("r", 1.0), ("t", 200.0)])]
    # Each answer's real usage (15 tokens) corrects the estimate (200) in the fleet's bucket too.
    assert fleet.settled == [("primary", "t", -185.0), ("backup", "t", -185.0)]
    assert r.limiter("primary").time_until(200) == pytest.approx(2.0)  # deferred by the fleet's answer
    # Refused everywhere: wait for the soonest, then the fleet admits.
    fleet.allow = {"primary": 0, "backup": 0}
    with pytest.raises(RateLimitedError):
        await r.complete(req(max_tokens=100), timeout=0.5)
    fleet.allow = {"backup": 1}
    assert (await r.complete(req(max_tokens=100), timeout=10)).provider == "backup"
