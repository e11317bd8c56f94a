"""Model-call limits hold for the whole fleet (``state.url``), not per process: a deployment's
``rpm``/``tpm``, and ``llm.limits`` per tenant and per user.

Two ``toolmesh serve`` processes share one Redis and one deployment (the scripted LLM as a process
of its own) with ``rpm: 20`` (a bucket of 20, refilled at one request every 3 s). Chat completions
are sent to both processes at once: the LLM receives at most 20 plus the refill over the flood,
the rest are refused with 429, from whichever process. Without the shared buckets each process
admitted its own 20 (40 in all). The tokens bucket is charged the request's estimate at
admission and corrected by the real usage afterwards. A tenant's ``llm.limits.tenant.rpm: 10``
(no deployment limit) admits 10 of 40 requests sent to both processes (20 without Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import scale_support
import services
from gateway_support import Gateway, running
from services import RedisServer

pytestmark = pytest.mark.timeout(120)

RPM, TPM = 20, 6000  # tokens: 100 a second, a bucket of 6,000
USAGE = {"input_tokens": 30, "output_tokens": 40}
MAX_TOKENS = 2000  # the estimate a request is admitted with is at least this


@dataclass
class Pair:
    redis: RedisServer
    llm: str
    one: Gateway
    two: Gateway


@contextlib.contextmanager
def _pair(tmp: Path, deployment: dict[str, object], llm_extra: dict[str, object]) -> Iterator[Pair]:
    """Two gateway processes on one Redis and one scripted model (its deployment "m" with ``deployment``'s
    keys added, the ``llm`` section with ``llm_extra``)."""
    with scale_support.scripted_llm(tmp, 0, USAGE) as llm, services.redis_server() as redis:
        cfg = {
            "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": llm, "api_key": "x",
                                     "model": "gpt-4o-mini", **deployment}], **llm_extra},
            "state": {"url": redis.url, "timeout": 5.0, "connect_timeout": 2.0},
            # Past this a request that would wait for a limit is refused (429) at once.
            "agent": {"llm_timeout": 2.0,
                      "user_limits": {"requests_per_minute": 1_000_000, "max_concurrent_runs": 10_000}},
        }
        one, two = Gateway(tmp / "one", cfg, no_auth=True), Gateway(tmp / "two", cfg, no_auth=True)
        with running(one, two):
            yield Pair(redis, llm, one, two)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with _pair(tmp_path_factory.mktemp("deployments"), {"rpm": RPM, "tpm": TPM}, {}) as p:
        yield p


def _llm_requests(llm: str) -> int:
    return int(httpx.get(llm.removesuffix("/v1") + "/_scripted/stats").json()["requests"])


async def _flood(urls: list[str], n: int) -> list[int]:
    body = {"model": "gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30.0) as client:
        async def one(i: int) -> int:
            return (await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body)).status_code
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _flooded(pair: Pair, n: int) -> tuple[list[int], int, float]:
    """``n`` concurrent chats over both processes: their status codes, the requests that reached
    the model, and the seconds it took; checks every answer is a 200 or a 429, one per request sent."""
    before = _llm_requests(pair.llm)
    started = time.monotonic()
    codes = asyncio.run(_flood([pair.one.url, pair.two.url], n))
    elapsed = time.monotonic() - started
    sent = _llm_requests(pair.llm) - before
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) == sent
    return codes, sent, elapsed


def test_two_processes_share_a_deployments_rpm_and_tpm(pair: Pair) -> None:
    # The tokens bucket first: one request, admitted with its estimate, then corrected to its usage.
    body = {"model": "gpt-4o-mini", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(pair.one.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    left = _tokens_left(pair.redis, settle_within=5.0)
    # Charged the estimate (> 2,000) and never corrected, it would read below 4,000 plus the refill
    # since; corrected by the real usage (70 tokens), it is within 70 of full.
    assert left >= TPM - USAGE["input_tokens"] - USAGE["output_tokens"] - 1, left

    codes, sent, elapsed = _flooded(pair, 60)
    # The first request took one of the 20; the refill adds one every 3 s.
    assert RPM - 1 - 1 <= sent <= RPM - 1 + elapsed * RPM / 60 + 1, (sent, elapsed)
    assert codes.count(429) >= 60 - sent


def _tokens_left(redis: RedisServer, settle_within: float) -> float:
    """The tokens bucket's level once the correction has landed (it only ever goes up after it)."""
    deadline = time.monotonic() + settle_within
    key = "tm:{llm}:d:m:t"
    best = 0.0
    while time.monotonic() < deadline:
        out = redis.cli("HGET", key, "tk").strip()
        if out:
            best = max(best, float(out))
            if best >= TPM - 100:
                break
        time.sleep(0.05)
    return best


@pytest.fixture(scope="module")
def tenant_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with _pair(tmp_path_factory.mktemp("llm-limits"), {}, {"limits": {"tenant": {"rpm": 10, "tpm": TPM}}}) as p:
        yield p


def test_a_tenants_llm_limits_hold_across_processes(tenant_pair: Pair) -> None:
    pair = tenant_pair
    _, sent, elapsed = _flooded(pair, 40)
    assert 10 - 1 <= sent <= 10 + elapsed * 10 / 60 + 1, (sent, elapsed)
    # The tenant's tokens bucket was charged each request's estimate and corrected to its usage.
    keys = pair.redis.cli("--scan", "--pattern", "tm:{default}:lt:default:*").split()
    assert sorted(k.rsplit(":", 1)[1] for k in keys) == ["r", "t"]
