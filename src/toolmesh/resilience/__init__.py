"""Resilience building blocks: circuit breakers, retries, concurrency limits, token buckets."""

from toolmesh.resilience.circuit import CircuitBreaker, CircuitState, default_is_failure
from toolmesh.resilience.circuit_registry import CircuitGuard, CircuitRegistry
from toolmesh.resilience.limits import ConcurrencyLimiter, MultiLimiter, TokenBucket
from toolmesh.resilience.retry import RetryPolicy, default_is_retryable

__all__ = [
    "CircuitBreaker",
    "CircuitGuard",
    "CircuitRegistry",
    "CircuitState",
    "ConcurrencyLimiter",
    "MultiLimiter",
    "RetryPolicy",
    "TokenBucket",
    "default_is_failure",
    "default_is_retryable",
]
