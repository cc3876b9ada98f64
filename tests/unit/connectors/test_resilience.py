"""The collector contract's policies and run loop, on an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from sinks import ListSink

from connectors.base.collector import Collector
from connectors.base.resilience import (
    Backoff,
    CircuitBreaker,
    CircuitOpen,
    FatalCollectorError,
    RateLimiter,
    ReconnectExhausted,
    retry_after_s,
)
from schemas.records import RawTick


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_backoff_is_jittered_below_an_exponential_ceiling_and_bounded() -> None:
    b = Backoff(base_s=0.1, factor=2.0, cap_s=1.0, max_attempts=6, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 6  # jitter: no two equal
    with pytest.raises(ReconnectExhausted, match="6 consecutive failures"):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 0.1


def test_circuit_breaker_opens_after_n_failures_and_probes_half_open() -> None:
    clock = Clock()
    cb = CircuitBreaker(threshold=3, reset_s=10.0, clock=clock)
    for _ in range(2):
        cb.record_failure()
        cb.check()  # still closed
    cb.record_failure()
    assert cb.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpen) as exc:
        cb.check()
    assert exc.value.retry_in_s == pytest.approx(10.0)
    clock.t += 10.0
    assert cb.state == CircuitBreaker.HALF_OPEN
    cb.check()  # one probe goes through
    cb.record_failure()  # the probe failed: open again at once
    assert cb.state == CircuitBreaker.OPEN and cb.opens == 2
    clock.t += 10.0
    cb.record_success()
    assert cb.state == CircuitBreaker.CLOSED and cb.failures == 0


def test_rate_limiter_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    rl = RateLimiter(rate_per_s=2.0, burst=2, clock=clock)
    assert rl.try_acquire() == 0.0 and rl.try_acquire() == 0.0
    assert rl.try_acquire() == pytest.approx(0.5)
    clock.t += 0.5
    assert rl.try_acquire() == 0.0
    assert rl.try_acquire() == pytest.approx(0.5)


def test_retry_after_header_forms() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


class Flaky(Collector):
    """Fails to connect ``failures`` times (the error text echoes the secret), then emits."""

    kind = "test"

    def __init__(self, failures: int, fatal: bool = False, **kw: object) -> None:
        super().__init__("flaky", ListSink(), secrets=["s3cret"], **kw)  # type: ignore[arg-type]
        self.failures = failures
        self.fatal = fatal
        self.connects = 0

    async def _connect(self) -> None:
        self.connects += 1
        if self.fatal:
            raise FatalCollectorError("401 for token s3cret")
        if self.connects <= self.failures:
            raise ConnectionError("refused by host with key s3cret")

    async def _stream(self) -> None:
        self.mark_alive()
        self.emit_tick(RawTick(broker="B", symbol="EURUSD", bid=1.1, ask=1.1001, time_msc=1,
                               recv_time_us=1))
        await self.stop()


async def test_run_reconnects_with_backoff_and_redacts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = Flaky(2, backoff=Backoff(base_s=0.001, cap_s=0.001, max_attempts=5))
    await asyncio.wait_for(c.run(), 10)
    assert c.connects == 3 and c.health.reconnects == 2 and c.health.errors == 2
    assert c.backoff.attempts == 0  # reset by mark_alive
    assert [t for t, _k, _r in c.sink.sent] == ["ticks.raw"]  # type: ignore[attr-defined]
    assert "s3cret" not in caplog.text and "s3cret" not in (c.health.last_error or "")
    assert "***" in caplog.text


async def test_run_gives_up_with_a_named_error_and_stops_at_once_on_fatal() -> None:
    c = Flaky(99, backoff=Backoff(base_s=0.001, cap_s=0.001, max_attempts=3),
              breaker=CircuitBreaker(threshold=100))
    with pytest.raises(ReconnectExhausted):
        await asyncio.wait_for(c.run(), 10)
    assert c.connects == 4
    f = Flaky(0, fatal=True)
    with pytest.raises(FatalCollectorError) as exc:
        await asyncio.wait_for(f.run(), 10)
    assert f.connects == 1 and "s3cret" not in str(exc.value)


async def test_stop_ends_a_blocked_receive_at_once() -> None:
    class Quiet(Flaky):
        streaming = asyncio.Event()

        async def _stream(self) -> None:
            self.streaming.set()
            await self._until_stopped(asyncio.Event().wait())  # a receive that never returns

    q = Quiet(0)
    task = asyncio.create_task(q.run())
    await asyncio.wait_for(q.streaming.wait(), 5)
    await q.stop()
    await asyncio.wait_for(task, 5)
    assert q.connects == 1 and q.health.errors == 0
