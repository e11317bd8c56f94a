"""Adaptive rate limits for model deployments, tenants and users (LLM-4).

:class:`AdaptiveLimiter` holds a requests-per-minute and a tokens-per-minute
:class:`~toolmesh.resilience.limits.TokenBucket` for one deployment and adapts them:

* provider headers (``x-ratelimit-remaining-*`` / ``-reset-*``, Anthropic's
  ``anthropic-ratelimit-*``, ``retry-after``) slow it down *before* the limit: when what
  remains would not last until the reset at the current pace, the rate becomes
  ``remaining / seconds-to-reset`` until the reset;
* a 429 cuts the rate multiplicatively (AIMD) and pauses until ``retry_after``; each
  success adds back a fixed fraction of the configured rate.

Single event loop, no locks (like the buckets). Clocks and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, Protocol

from toolmesh.errors import RateLimitedError
from toolmesh.resilience.limits import TokenBucket

__all__ = ["AdaptiveLimiter", "FleetBucket", "FleetLimits", "KeyLimiter", "KeyedLimits", "parse_duration",
           "parse_reset", "parse_retry_after"]

_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float | None:
    """Seconds in a Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``) or a
    plain number of seconds (``"1.5"``); ``None`` if neither."""
    v = value.strip()
    if _GO_DURATION.fullmatch(v):
        return sum(float(n) * _UNIT[u] for n, u in _GO_PART.findall(v))
    try:
        f = float(v)
    except ValueError:
        return None
    return f if f == f and f >= 0 else None  # NaN and negatives are garbage


def parse_reset(value: str, now_wall: float) -> float | None:
    """Seconds from now until a ``x-ratelimit-reset-*`` moment: a duration, seconds, an epoch
    time (seconds or milliseconds) or an ISO 8601 / RFC 3339 timestamp. Never negative."""
    secs = parse_duration(value)
    if secs is not None:
        if secs > 1e12:  # epoch milliseconds
            return max(0.0, secs / 1000.0 - now_wall)
        if secs > 1e9:  # epoch seconds (no reset window is 30 years long)
            return max(0.0, secs - now_wall)
        return secs
    try:
        ts = datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None
    return max(0.0, ts - now_wall)


def parse_retry_after(value: str, now_wall: float) -> float | None:
    """Seconds in a ``Retry-After`` value: delta seconds or an HTTP date (or what
    :func:`parse_reset` accepts)."""
    secs = parse_reset(value, now_wall)
    if secs is not None:
        return secs
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_wall)
    except (TypeError, ValueError, IndexError):
        return None


class FleetBucket(NamedTuple):
    """One of a deployment's buckets as every process shares it: ``dimension`` ``"r"``
    (requests) or ``"t"`` (tokens), refilled at ``rate`` per second up to ``capacity``; a request
    takes ``cost`` (in a settlement, the correction: negative gives tokens back)."""

    dimension: str
    rate: float
    capacity: float
    cost: float


class FleetLimits(Protocol):
    """The deployments' rate limits held once for every worker and replica (``state.url``).

    Without it each process enforces a deployment's ``rpm``/``tpm`` alone, so N processes send up
    to N times the limit. With it the router takes each request from the shared buckets too, after
    the deployment's own limiter (which still adapts to headers and 429s, and sets the rates)."""

    async def take(self, deployment: str, buckets: list[FleetBucket]) -> float:
        """Take every bucket's ``cost`` at once, or none: 0.0 when taken, else the seconds until
        they could be."""

    def settle(self, deployment: str, bucket: FleetBucket) -> None:
        """Correct a bucket by ``bucket.cost`` (the real usage against the estimate); never raises."""


class _Dim:
    """One limited dimension (requests or tokens) of a deployment."""

    __slots__ = ("bucket", "hint", "hint_until", "label", "learned", "limit", "paused_until")

    def __init__(self, label: str, limit: float | None) -> None:
        self.label = label
        self.limit = limit  # configured per-minute limit
        self.learned: float | None = None  # per-minute limit the provider announced
        self.bucket: TokenBucket | None = None
        self.hint: float | None = None  # per-second cap from "remaining until reset"
        self.hint_until = 0.0
        self.paused_until = 0.0  # "remaining: 0" until the reset

    @property
    def per_minute(self) -> float | None:
        return self.limit if self.limit is not None else self.learned


async def _no_sleep(_: float) -> None:
    return None


class AdaptiveLimiter:
    """RPM/TPM token buckets for one deployment, adapting to headers and 429s (AIMD).

    ``rpm``/``tpm`` are the configured limits (``None``: unlimited unless the provider
    announces one in ``x-ratelimit-limit-*``). Each bucket holds one minute of allowance.
    On a 429 the rate factor is multiplied by ``decrease`` (not below ``min_fraction``; once
    per pause, so a burst of in-flight 429s counts once) and every success adds ``increase``.
    """

    __slots__ = ("_clock", "_cut_until", "_decrease", "_default_pause", "_factor", "_hints_due", "_increase",
                 "_min_fraction", "_paused_until", "_sleep", "_wall", "name", "requests", "tokens")

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        decrease: float = 0.5,
        increase: float = 0.05,
        min_fraction: float = 0.05,
        default_pause: float = 1.0,
    ) -> None:
        for label, v in (("rpm", rpm), ("tpm", tpm)):
            if v is not None and v <= 0:
                raise ValueError(f"{label} must be > 0")
        if not 0 < decrease < 1 or not 0 < min_fraction <= 1 or increase <= 0:
            raise ValueError("need 0 < decrease < 1, 0 < min_fraction <= 1, increase > 0")
        self.name = name
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._decrease = decrease
        self._increase = increase
        self._min_fraction = min_fraction
        self._default_pause = default_pause
        self._factor = 1.0
        self._paused_until = 0.0
        self._cut_until = 0.0
        self._hints_due = 0.0  # earliest hint expiry (0: none)
        self.requests = _Dim("requests", rpm)
        self.tokens = _Dim("tokens", tpm)
        self._apply(self.requests)
        self._apply(self.tokens)

    # -- state -----------------------------------------------------------------------------

    @property
    def factor(self) -> float:
        """Current fraction of the configured rate (1.0 = full, lowered by 429s)."""
        return self._factor

    def _rate(self, dim: _Dim) -> float | None:
        """Effective refill rate per second, or ``None`` if unlimited."""
        pm = dim.per_minute
        rate = pm * self._factor / 60.0 if pm is not None else None
        if dim.hint is not None and (rate is None or dim.hint < rate):
            rate = dim.hint
        return rate

    def _apply(self, dim: _Dim) -> None:
        rate = self._rate(dim)
        if rate is None:
            dim.bucket = None
            return
        capacity = dim.per_minute or max(1.0, rate * 60.0)
        if dim.bucket is None:
            dim.bucket = TokenBucket(rate, capacity, self._clock, sleep=_no_sleep, name=f"{self.name} {dim.label}")
        else:
            dim.bucket.set_rate(rate, capacity)

    def _expire_hints(self, now: float) -> None:
        self._hints_due = 0.0
        for dim in (self.requests, self.tokens):
            if dim.hint is not None:
                if now >= dim.hint_until:
                    dim.hint = None
                    self._apply(dim)
                elif not self._hints_due or dim.hint_until < self._hints_due:
                    self._hints_due = dim.hint_until

    # -- acquiring -------------------------------------------------------------------------

    def time_until(self, estimated_tokens: float = 0) -> float:
        """Seconds until one request of ``estimated_tokens`` may start (0: now). O(1)."""
        now = self._clock()
        if self._hints_due and now >= self._hints_due:
            self._expire_hints(now)
        req, tok = self.requests, self.tokens
        wait = max(self._paused_until, req.paused_until, tok.paused_until) - now
        if req.bucket is not None:
            wait = max(wait, req.bucket.time_until(1))
        if tok.bucket is not None and estimated_tokens > 0:
            wait = max(wait, tok.bucket.time_until(min(estimated_tokens, tok.bucket.capacity)))
        return wait if wait > 0 else 0.0

    async def acquire(self, estimated_tokens: float = 0, timeout: float | None = None) -> None:
        """Take one request and ``estimated_tokens`` tokens, waiting for them.

        Raises :class:`RateLimitedError` (``retry_after`` = the wait) at once if the wait would
        exceed ``timeout`` (``0``: never wait). Waiters are FIFO: each reserves on arrival."""
        wait = self.time_until(estimated_tokens)
        if wait > 0 and timeout is not None and wait > timeout:
            raise RateLimitedError(
                f"rate limit {self.name!r}: next slot in {wait:.3f}s, timeout {timeout}s", retry_after=wait)
        charged = self._charge(estimated_tokens)
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self._refund(charged)
                raise

    def try_acquire(self, estimated_tokens: float = 0) -> bool:
        """Take a request slot (and tokens) only if available now."""
        if self.time_until(estimated_tokens) > 0:
            return False
        self._charge(estimated_tokens)
        return True

    def _charge(self, estimated_tokens: float) -> float:
        # Reservations may drive a bucket negative; refund() of a negative amount charges.
        if self.requests.bucket is not None:
            self.requests.bucket.refund(-1)
        b = self.tokens.bucket
        if b is not None and estimated_tokens > 0:
            n = min(estimated_tokens, b.capacity)
            b.refund(-n)
            return n
        return 0.0

    def _refund(self, tokens: float) -> None:
        if self.requests.bucket is not None:
            self.requests.bucket.refund(1)
        if self.tokens.bucket is not None and tokens > 0:
            self.tokens.bucket.refund(tokens)

    # -- the fleet's buckets (FleetLimits) ----------------------------------------------------

    def fleet_buckets(self, estimated_tokens: float = 0) -> list[FleetBucket]:
        """What one request takes from the buckets every process shares: a request and
        ``estimated_tokens`` tokens, at this limiter's current (adapted) rates; [] if unlimited."""
        out: list[FleetBucket] = []
        for dim, code, cost in ((self.requests, "r", 1.0), (self.tokens, "t", estimated_tokens)):
            rate = self._rate(dim)
            if rate is None or rate <= 0 or cost <= 0:
                continue
            capacity = max(1.0, dim.per_minute or rate * 60.0)
            out.append(FleetBucket(code, rate, capacity, min(cost, capacity)))
        return out

    def fleet_settlement(self, estimated: float, actual_tokens: float) -> FleetBucket | None:
        """The tokens bucket's correction once the real usage is known (``cost`` may be negative:
        a refund); None when there is nothing to correct."""
        buckets = [b for b in self.fleet_buckets(estimated) if b.dimension == "t"]
        if not buckets:
            return None
        taken = buckets[0]
        diff = actual_tokens - taken.cost
        return FleetBucket("t", taken.rate, taken.capacity, diff) if diff else None

    def defer(self, seconds: float, estimated_tokens: float = 0) -> None:
        """The fleet's buckets refused what this limiter admitted: give the local charge back and
        start nothing here for ``seconds`` (other processes took the allowance)."""
        self._refund(min(estimated_tokens, self.tokens.bucket.capacity) if self.tokens.bucket is not None else 0.0)
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def reconcile(self, estimated: float, actual_tokens: float) -> None:
        """Correct the TPM bucket once the real usage is known (refund or charge the difference)."""
        b = self.tokens.bucket
        if b is None:
            return
        charged = min(estimated, b.capacity) if estimated > 0 else 0.0
        diff = actual_tokens - charged
        if diff:
            b.refund(-diff)

    # -- adapting --------------------------------------------------------------------------

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to a response's rate-limit headers (lower-case names)."""
        if not headers:
            return
        get = headers.get
        now: float | None = None
        for dim, names in ((self.requests, _REQ_HEADERS), (self.tokens, _TOK_HEADERS)):
            limit_s = _first(get, names[0])
            remaining = _first(get, names[1])
            if limit_s is None and remaining is None:
                continue
            if now is None:
                now = self._clock()
            if limit_s is not None:
                limit = parse_duration(limit_s)  # a plain count parses as a number
                if limit and limit != dim.learned:
                    dim.learned = limit
                    self._apply(dim)
            reset_s = _first(get, names[2])
            if remaining is None or reset_s is None:
                continue
            left = parse_duration(remaining)
            reset = parse_reset(reset_s, self._wall())
            if left is not None and reset is not None:
                self._observe_remaining(dim, left, reset, now)
        pause: float | None = None
        if (ra := get("retry-after-ms")) is not None and (ms := parse_duration(ra)) is not None:
            pause = ms / 1000.0
        elif (ra := get("retry-after")) is not None:
            pause = parse_retry_after(ra, self._wall())
        if pause:
            self._paused_until = max(self._paused_until, (now if now is not None else self._clock()) + pause)

    def _observe_remaining(self, dim: _Dim, left: float, reset: float, now: float) -> None:
        if left <= 0:
            dim.paused_until = max(dim.paused_until, now + reset)
            return
        pm = dim.per_minute
        pace = pm * self._factor / 60.0 if pm is not None else None
        if reset > 0 and (pace is None or left < pace * reset):
            # At the current pace what remains would run out before the reset: spread it.
            dim.hint = left / reset
            dim.hint_until = now + reset
            if not self._hints_due or dim.hint_until < self._hints_due:
                self._hints_due = dim.hint_until
        elif dim.hint is None:
            return
        else:
            dim.hint = None
        self._apply(dim)
        b = dim.bucket
        if b is not None and dim.hint is not None:
            excess = b.tokens - left
            if excess > 0:  # never burst past what the provider says is left
                b.refund(-excess)

    def on_429(self, retry_after: float | None = None) -> None:
        """The provider refused: pause until ``retry_after`` (or ``default_pause``) and cut
        the rate by ``decrease`` — once per pause window."""
        now = self._clock()
        pause = retry_after if retry_after is not None and retry_after >= 0 else self._default_pause
        self._paused_until = max(self._paused_until, now + pause)
        if now >= self._cut_until:
            self._factor = max(self._min_fraction, self._factor * self._decrease)
            self._cut_until = now + max(pause, 1.0)
            self._apply(self.requests)
            self._apply(self.tokens)
        for dim in (self.requests, self.tokens):
            b = dim.bucket
            if b is not None and (t := b.tokens) > 0:
                b.refund(-t)  # restart from empty at the reduced rate

    def on_success(self) -> None:
        """One successful call: recover additively toward the configured rate."""
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + self._increase)
            self._apply(self.requests)
            self._apply(self.tokens)

    def state(self) -> dict[str, Any]:
        """A JSON-friendly view for snapshots."""
        now = self._clock()
        out: dict[str, Any] = {"factor": round(self._factor, 4),
                               "paused_s": round(max(0.0, self._paused_until - now), 3)}
        for dim in (self.requests, self.tokens):
            rate = self._rate(dim)
            out[f"{dim.label}_per_min"] = None if rate is None else round(rate * 60.0, 3)
        return out

    def __repr__(self) -> str:
        return f"AdaptiveLimiter({self.name!r}, rpm={self.requests.per_minute}, tpm={self.tokens.per_minute}, " \
               f"factor={self._factor:.3g})"


_REQ_HEADERS = (
    ("x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"),
    ("x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
    ("x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset"),
)
_TOK_HEADERS = (
    ("x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit"),
    ("x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining"),
    ("x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset"),
)


def _first(get: Callable[[str], str | None], names: tuple[str, str]) -> str | None:
    v = get(names[0])
    return v if v is not None else get(names[1])


class KeyLimiter(Protocol):
    """Rate limits per key (tenant, ``tenant/user``) in front of the router: :class:`KeyedLimits` in
    process; a shared store can fill the same two methods for several workers."""

    async def acquire(self, key: str, estimated_tokens: float = 0, timeout: float | None = None) -> None:
        """Take one request (and tokens) for ``key``; :class:`RateLimitedError` past ``timeout``."""
        ...

    def reconcile(self, key: str, estimated: float, actual_tokens: float) -> None:
        """Correct ``key``'s token count with the real usage (0 gives the estimate back)."""
        ...


class KeyedLimits:
    """RPM/TPM limits per key (tenant, user), with at most ``max_keys`` keys in memory (LRU).

    An evicted key starts again with full buckets: size ``max_keys`` above the number of keys
    active within a minute."""

    __slots__ = ("_clock", "_limiters", "_sleep", "max_keys", "name", "rpm", "tpm")

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, name: str = "key",
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rpm = rpm
        self.tpm = tpm
        self.name = name
        self.max_keys = max_keys
        self._clock = clock
        self._sleep = sleep
        self._limiters: OrderedDict[str, AdaptiveLimiter] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when neither RPM nor TPM is set (every call is a no-op)."""
        return self.rpm is not None or self.tpm is not None

    def limiter(self, key: str) -> AdaptiveLimiter:
        """The limiter of ``key`` (created on first use, marked most recently used)."""
        lims = self._limiters
        lim = lims.get(key)
        if lim is None:
            lim = AdaptiveLimiter(self.rpm, self.tpm, name=f"{self.name} {key}", clock=self._clock, sleep=self._sleep)
            lims[key] = lim
            if len(lims) > self.max_keys:
                lims.popitem(last=False)
        else:
            lims.move_to_end(key)
        return lim

    async def acquire(self, key: str, estimated_tokens: float = 0, timeout: float | None = None) -> None:
        """Take one request (and tokens) for ``key``; :class:`RateLimitedError` past ``timeout``."""
        if self.rpm is not None or self.tpm is not None:
            await self.limiter(key).acquire(estimated_tokens, timeout)

    def reconcile(self, key: str, estimated: float, actual_tokens: float) -> None:
        """Correct ``key``'s TPM bucket with the real usage."""
        if self.tpm is not None and (lim := self._limiters.get(key)) is not None:
            lim.reconcile(estimated, actual_tokens)

    def __len__(self) -> int:
        return len(self._limiters)
