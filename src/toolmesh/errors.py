"""The error types toolmesh raises. Every failure a caller can act on has its own class.

The whole tree (each class is also exported from :mod:`toolmesh`); ``(also X)`` names
the built-in exception a class also derives from, so ``except LookupError`` keeps working::

    ToolmeshError
      ConfigError                    (also ValueError)
        WeightsError
      ServerNotFoundError            (also LookupError)
      ToolNotFoundError              (also LookupError)
      InvalidArgumentsError          (also ValueError)
      ConnectionFailedError          (also ConnectionError)
        SessionLostError
      ProtocolError
      ToolTimeoutError               (also TimeoutError)
      CircuitOpenError
      ConcurrencyLimitError
      McpRemoteError
      LLMError
        RateLimitedError
        ProviderUnavailableError
        ContextOverflowError
        UnknownModelError            (also LookupError)
        MalformedResponseError
      BudgetExceededError
      RequestRejectedError
      StateUnavailableError          (also ConnectionError)
      TaskSetError                   (also ValueError)

``retryable`` says whether repeating the same operation may succeed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

    _M = TypeVar("_M", bound=BaseModel)

__all__ = [
    "BudgetExceededError",
    "CircuitOpenError",
    "ConcurrencyLimitError",
    "ConfigError",
    "ConnectionFailedError",
    "ContextOverflowError",
    "InvalidArgumentsError",
    "LLMError",
    "MalformedResponseError",
    "McpRemoteError",
    "ProtocolError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestRejectedError",
    "ServerNotFoundError",
    "SessionLostError",
    "StateUnavailableError",
    "TaskSetError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "ToolmeshError",
    "UnknownModelError",
    "WeightsError",
]


class ToolmeshError(Exception):
    """Base class of every error toolmesh raises on purpose."""

    #: Whether repeating the same operation may succeed (drives retries).
    retryable: bool = False


class ConfigError(ToolmeshError, ValueError):
    """A configuration file or value is invalid. ``key`` names the offending setting."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = ""
        if source:
            where += f"{source}: "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")

    @classmethod
    def from_validation(cls, exc: ValidationError, section: str, *, source: str | None = None,
                        model: type | None = None) -> ConfigError:
        """The first problem of a config section's validation, worded for a person.

        ``section`` prefixes the key (``"gateway"`` → ``gateway.port``); ``model`` (the pydantic
        model validated) lets an unknown key name its closest allowed one: ``gateway.prot:
        unknown key (did you mean 'port'?)`` instead of pydantic's "Extra inputs are not permitted"."""
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        key = ".".join([section, *map(str, first["loc"])]) if section else ".".join(map(str, first["loc"]))
        return cls(validation_message(first, model), key=key or None, source=source)


def validate_section(model: type[_M], data: dict[str, Any], section: str, source: str | None = None) -> _M:
    """``model`` validated from a config section's raw ``data``; a :class:`ConfigError` names the
    first bad key (an unknown one with its closest allowed key), see :meth:`ConfigError.from_validation`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, section, source=source, model=model) from None


def validation_message(err: ErrorDetails, model: type | None = None) -> str:
    """A pydantic error's message for a config reader: the ``Value error, `` prefix dropped, and an
    unknown key named with the closest allowed key of ``model`` at that place (else all of them)."""
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] != "extra_forbidden":
        return msg
    return unknown_key_message(str(err["loc"][-1]), _fields_at(model, tuple(err["loc"][:-1])))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or ``""`` when none is near:
    a typo's likely fix, for a person or a model to act on (a wrong guess misleads, so only near ones)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_message(key: str, allowed: Sequence[str], what: str = "unknown key") -> str:
    """``what`` with the allowed key closest to ``key`` (a typo), else the allowed keys listed."""
    if not allowed:
        return what
    hint = did_you_mean(key, allowed)
    return f"{what}{hint}" if hint else f"{what} (allowed: {', '.join(allowed)})"


def _fields_at(model: type | None, loc: tuple[Any, ...]) -> list[str]:
    """The field names (aliases where set) of the nested model ``loc`` leads to; [] if unknown."""
    from pydantic import BaseModel

    for part in loc:
        if model is None or not issubclass(model, BaseModel):
            return []
        field = model.model_fields.get(str(part))
        model = field.annotation if field is not None and isinstance(field.annotation, type) else None
    if model is None or not isinstance(model, type) or not issubclass(model, BaseModel):
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


class ServerNotFoundError(ToolmeshError, LookupError):
    """No server of that name is registered for the tenant."""


class ToolNotFoundError(ToolmeshError, LookupError):
    """The server has no tool of that name (or the namespaced name maps to nothing)."""


class InvalidArgumentsError(ToolmeshError, ValueError):
    """Tool arguments are malformed or violate the tool's input schema."""

    def __init__(self, message: str, *, errors: list[str] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)


class ConnectionFailedError(ToolmeshError, ConnectionError):
    """The server could not be reached or the connection broke."""

    retryable = True


class SessionLostError(ConnectionFailedError):
    """The server no longer knows our session (HTTP 404, restarted process, closed stream)."""


class ProtocolError(ToolmeshError):
    """The peer sent something that is not valid MCP / JSON-RPC."""


class ToolTimeoutError(ToolmeshError, TimeoutError):
    """The call did not finish within its timeout (progress extends it up to a hard maximum)."""

    retryable = True


class CircuitOpenError(ToolmeshError):
    """The circuit breaker for this server or tool is open: the call fails fast."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ConcurrencyLimitError(ToolmeshError):
    """A concurrency limit was reached and the caller asked not to wait."""

    retryable = True


class McpRemoteError(ToolmeshError):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"MCP error {code}: {message}")

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        # -32603 internal and -32001 (server-side timeout) may pass; client mistakes will not.
        return self.code in (-32603, -32001)


# -- LLM layer and agent runtime ---------------------------------------------------------


class LLMError(ToolmeshError):
    """A model call failed. ``status`` is the provider's HTTP status when there was one."""

    def __init__(self, message: str, *, provider: str | None = None, model: str | None = None,
                 status: int | None = None) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        super().__init__(message)


class RateLimitedError(LLMError):
    """HTTP 429 (or a local rate limit): ``retry_after`` seconds, when known."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ProviderUnavailableError(LLMError):
    """5xx, connection failure or timeout talking to a model provider (fall back or retry)."""

    retryable = True


class ContextOverflowError(LLMError):
    """The request does not fit the model's context window."""


class UnknownModelError(LLMError, LookupError):
    """No provider/deployment is configured for that model name."""


class MalformedResponseError(LLMError):
    """The provider answered something that is not a valid completion."""


class BudgetExceededError(ToolmeshError):
    """A token, step, cost or spend budget would be exceeded. ``report`` says what was used."""

    def __init__(self, message: str, *, report: dict[str, object] | None = None) -> None:
        self.report = report or {}
        super().__init__(message)


class RequestRejectedError(ToolmeshError):
    """Input refused by a guard (prompt injection policy ``block``) or a per-user limit."""

    def __init__(self, message: str, *, reason: str = "", retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message)


class WeightsError(ConfigError):
    """The embedded model's weights are missing, incomplete or do not match their expected checksum."""


class StateUnavailableError(ToolmeshError, ConnectionError):
    """The shared state (Redis) cannot be reached now; callers fall back or refuse with 503."""


class TaskSetError(ToolmeshError, ValueError):
    """An evaluation task set name is unknown or a task file is malformed (``where`` names file and line)."""
