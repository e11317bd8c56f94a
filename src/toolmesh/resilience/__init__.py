"""Resilience building blocks: circuit breakers, retries, concurrency limits, token buckets.

Callers depend on the protocols of :mod:`toolmesh.resilience.abc` (``RateLimiter``,
``CapacityLimiter``, ``CircuitStore``); the classes here are their local implementations.
"""

from toolmesh.resilience.abc import CapacityLimiter, CircuitStore, ClientRateLimiter, RateLimiter
from toolmesh.resilience.circuit import CircuitBreaker, default_is_failure
from toolmesh.resilience.circuit_registry import CircuitGuard, CircuitRegistry
from toolmesh.resilience.circuit_state import CircuitState, LocalCircuitStore
from toolmesh.resilience.limits import ConcurrencyLimiter, MultiLimiter, TokenBucket
from toolmesh.resilience.retry import RetryPolicy, default_is_retryable

__all__ = [
    "CapacityLimiter",
    "CircuitBreaker",
    "CircuitGuard",
    "CircuitRegistry",
    "CircuitState",
    "CircuitStore",
    "ClientRateLimiter",
    "ConcurrencyLimiter",
    "LocalCircuitStore",
    "MultiLimiter",
    "RateLimiter",
    "RetryPolicy",
    "TokenBucket",
    "default_is_failure",
    "default_is_retryable",
]
