"""Reconnect backoff, circuit breaker and request rate limit shared by every collector.

Each is a small object with an injectable clock and random source, so the collector loop in
:mod:`connectors.base.collector` stays readable and the policies are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class ReconnectExhausted(RuntimeError):
    """Raised when a collector has failed to (re)connect ``max_attempts`` times in a row."""


class CircuitOpen(RuntimeError):
    """Raised by :meth:`CircuitBreaker.check` while the breaker is open."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"circuit open; next probe in {retry_in_s:.2f} s")
        self.retry_in_s = retry_in_s


class FatalCollectorError(RuntimeError):
    """A failure that retrying cannot fix (bad credentials, bad configuration): stop."""


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in delay and in attempts.

    ``next_delay()`` returns ``uniform(0, min(cap, base * factor**n))`` for the n-th
    consecutive failure and raises :class:`ReconnectExhausted` after ``max_attempts``
    (``0`` = unbounded). ``reset()`` after a success.
    """

    base_s: float = 0.2
    factor: float = 2.0
    cap_s: float = 30.0
    max_attempts: int = 10
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def ceiling(self, attempt: int) -> float:
        return float(min(self.cap_s, self.base_s * self.factor**attempt))

    def next_delay(self) -> float:
        if self.max_attempts and self.attempts >= self.max_attempts:
            raise ReconnectExhausted(f"gave up after {self.attempts} consecutive failures")
        ceiling = self.ceiling(self.attempts)
        self.attempts += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``reset_s``.

    While open, :meth:`check` raises :class:`CircuitOpen`. After ``reset_s`` one probe is
    allowed (half-open): its success closes the breaker, its failure opens it again.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self, threshold: int = 5, reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.opens = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return self.CLOSED
        if self._clock() - self.opened_at >= self.reset_s:
            return self.HALF_OPEN
        return self.OPEN

    def check(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go through now."""
        if self.state == self.OPEN:
            assert self.opened_at is not None
            raise CircuitOpen(self.reset_s - (self._clock() - self.opened_at))

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or self.failures >= self.threshold:
            if self.opened_at is None or self.state == self.HALF_OPEN:
                self.opens += 1
            self.opened_at = self._clock()


class RateLimiter:
    """Token bucket: at most ``rate_per_s`` requests per second, bursts of ``burst``."""

    def __init__(
        self, rate_per_s: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or return the seconds to wait for the next one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Backoff (``base_s * 2**n``, jittered, capped) and circuit-breaker settings."""

    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int = 10
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0

    def backoff(self) -> Backoff:
        return Backoff(base_s=self.base_s, cap_s=self.cap_s, max_attempts=self.max_attempts)

    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.breaker_threshold, self.breaker_reset_s)


class HeartbeatTimeout(ConnectionError):
    """A stream sent nothing (no data, no heartbeat) for longer than its timeout."""


class RetryLater(ConnectionError):
    """HTTP 429 or 5xx: retry with backoff, not before ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or HTTP date).

    None when absent or unreadable; never negative. ``now`` is epoch seconds (tests).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
