"""The one ApiError of the gateway renders each surface's error shape byte for byte.

Clients already parse these bodies (the OpenAI SDK, admin scripts), so the expected bytes
are spelled out literally: key order and defaults included. Pure logic, no server needed;
the end-to-end shapes are checked by test_gateway_openai.py and test_gateway_admin.py.
"""

from __future__ import annotations

import pytest

from toolmesh.gateway import ApiError
from toolmesh.gateway.openai.wire import sse_error


@pytest.mark.parametrize(("err", "body"), [
    (ApiError(404, "no session 'x'"), b'{"error":{"message":"no session \'x\'","type":"not_found_error","code":null,"param":null}}'),
    (ApiError(400, "bad", param="p"), b'{"error":{"message":"bad","type":"invalid_request_error","code":null,"param":"p"}}'),
    (ApiError(409, "dup", code="k"), b'{"error":{"message":"dup","type":"conflict_error","code":"k","param":null}}'),
    (ApiError(403, "off"), b'{"error":{"message":"off","type":"permission_error","code":null,"param":null}}'),
    (ApiError(500, "boom"), b'{"error":{"message":"boom","type":"api_error","code":null,"param":null}}'),
])
def test_admin_shape(err: ApiError, body: bytes) -> None:
    assert err.admin_body() == body


@pytest.mark.parametrize(("err", "body"), [
    # OpenAI answers 404 for an unknown model as invalid_request_error, not not_found_error
    (ApiError(404, "nf", code="model_not_found"),
     b'{"error":{"message":"nf","type":"invalid_request_error","param":null,"code":"model_not_found"}}'),
    (ApiError(400, "b", param="messages[0].role"),
     b'{"error":{"message":"b","type":"invalid_request_error","param":"messages[0].role","code":null}}'),
    (ApiError(429, "q", "insufficient_quota", code="budget_exceeded"),
     b'{"error":{"message":"q","type":"insufficient_quota","param":null,"code":"budget_exceeded"}}'),
])
def test_openai_shape(err: ApiError, body: bytes) -> None:
    assert err.openai_body() == body
    assert sse_error(err) == b"data: " + body + b"\n\n"


def test_an_explicit_type_wins_on_both_surfaces() -> None:
    err = ApiError(404, "m", "rate_limit_error")
    assert b'"type":"rate_limit_error"' in err.admin_body()
    assert b'"type":"rate_limit_error"' in err.openai_body()


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (0.1, b"1"), (1.0, b"1"), (3.2, b"4"), (59.999, b"60")])
def test_retry_after_is_whole_seconds_rounded_up(retry_after: float | None, header: bytes | None) -> None:
    headers = ApiError(429, "slow", retry_after=retry_after, headers=[(b"allow", b"GET")]).response_headers()
    expected = [(b"allow", b"GET")] + ([(b"retry-after", header)] if header is not None else [])
    assert headers == expected


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_only_error_statuses(status: int) -> None:
    with pytest.raises(ValueError, match=f"4xx or 5xx status, not {status}"):
        ApiError(status, "fine")
