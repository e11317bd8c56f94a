"""How toolmesh's exceptions become OpenAI-shaped HTTP errors (status, type, code, Retry-After)."""

from __future__ import annotations

import logging
import time

from toolmesh.errors import (
    BudgetExceededError,
    ContextOverflowError,
    LLMError,
    MalformedResponseError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestRejectedError,
    StateUnavailableError,
    UnknownModelError,
)
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.web import BodyTooLarge

log = logging.getLogger("toolmesh.gateway.openai")


def seconds_to_utc_midnight(now: float | None = None) -> float:
    """When daily spend budgets reset."""
    now = time.time() if now is None else now
    return 86400.0 - now % 86400.0


def budget_error(exc: BudgetExceededError | str) -> ApiError:
    """429 ``insufficient_quota``; Retry-After only when waiting helps (a daily spend budget)."""
    message = str(exc)
    daily = "daily spend" in message
    return ApiError(429, message, "insufficient_quota", code="budget_exceeded",
                    retry_after=seconds_to_utc_midnight() if daily else None)


def to_api_error(exc: BaseException) -> ApiError:
    """The HTTP error for any exception raised while serving a chat completion."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BodyTooLarge):
        return ApiError(413, str(exc), code="request_too_large")
    if isinstance(exc, RequestRejectedError):
        if exc.reason in ("concurrency", "rate"):
            return ApiError(429, str(exc), "rate_limit_error", code=f"user_{exc.reason}_limit",
                            retry_after=exc.retry_after if exc.retry_after is not None else 1.0)
        return ApiError(400, str(exc), code="request_rejected")
    if isinstance(exc, BudgetExceededError):
        return budget_error(exc)
    if isinstance(exc, StateUnavailableError):  # spend budgets kept in an unreachable Redis
        return ApiError(503, str(exc), "api_error", code="shared_state_unavailable", retry_after=1.0)
    if isinstance(exc, LLMError):
        return _llm_error(exc)
    if isinstance(exc, ValueError):  # e.g. the agent refusing an empty question
        return ApiError(400, str(exc))
    log.error("chat completion failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__})", "server_error", code="internal_error")


def _llm_error(exc: LLMError) -> ApiError:
    message = str(exc).split("\n", 1)[0]
    if isinstance(exc, UnknownModelError):
        return ApiError(404, message, code="model_not_found")
    if isinstance(exc, RateLimitedError):
        return ApiError(429, f"upstream model rate limited: {message}", "rate_limit_error",
                        code="upstream_rate_limited",
                        retry_after=exc.retry_after if exc.retry_after is not None else 1.0)
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, message, code="context_length_exceeded")
    if isinstance(exc, ProviderUnavailableError):
        if exc.status is not None and exc.status >= 500:
            return ApiError(502, f"upstream model failed: {message}", "api_error", code="upstream_error")
        return ApiError(503, f"upstream model unavailable: {message}", "api_error", code="upstream_unavailable",
                        retry_after=1.0)
    if isinstance(exc, MalformedResponseError):
        return ApiError(502, f"upstream model sent a malformed response: {message}", "api_error",
                        code="upstream_malformed")
    if exc.status in (400, 422):  # the model API refused what the caller sent (pass-through)
        return ApiError(400, f"upstream model rejected the request: {message}", code="upstream_bad_request")
    return ApiError(502, f"upstream model error: {message}", "api_error", code="upstream_error")
