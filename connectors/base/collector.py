"""The collector contract: one lifecycle, one reconnect loop, one producer path for every source.

A venue module subclasses :class:`Collector` and implements three hooks:

* ``_connect()`` — open the session (log in, open the stream, ``initialize`` the terminal);
* ``_stream()`` — receive until the session ends, calling :meth:`Collector.emit_tick`,
  :meth:`Collector.emit_event` or :meth:`Collector.reject` for every record, and
  :meth:`Collector.mark_alive` whenever the source proves it is healthy (a record, a
  heartbeat). Returning or raising ends the session; the base class reconnects;
* ``_disconnect()`` — release the session (idempotent).

The base class owns what every venue shares: exponential backoff with jitter that raises
:class:`~connectors.base.resilience.ReconnectExhausted` when exhausted, a circuit breaker, a
request rate limit for the venue to use, health counters, credential redaction, and the
routing of records (ticks to ``ticks.raw`` keyed by symbol, events to ``events.calendar`` /
``events.news`` keyed by currency, unparseable payloads to ``ticks.rejected`` with their
original bytes). :class:`~connectors.base.resilience.FatalCollectorError` (bad credentials, bad
configuration) stops the collector at once: retrying cannot fix it.

A venue that can resume (``resumable = True``) implements ``_position()`` and
``_restore(position)``; ``tickstream collect`` then hands it a
:class:`~connectors.positions.PositionTracker` (:meth:`Collector.track_positions`), the
venue calls :meth:`Collector.checkpoint_if_due` where its position is consistent, and
:meth:`Collector.run` stores the final position at a stop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from connectors.base.resilience import (
    Backoff,
    CircuitBreaker,
    CircuitOpen,
    FatalCollectorError,
    RateLimiter,
)
from schemas.records import MarketEvent, RawTick, Record
from schemas.rejects import rejected

if TYPE_CHECKING:
    from connectors.positions import Position, PositionTracker

log = logging.getLogger(__name__)

TICKS_TOPIC = "ticks.raw"
DEAD_LETTER_TOPIC = "ticks.rejected"
EVENT_TOPICS = {"CALENDAR": "events.calendar", "NEWS": "events.news"}


class RecordSink(Protocol):
    """Where collectors put records: :class:`connectors.producer.RecordProducer` in production."""

    def send(self, topic: str, key: str | bytes, record: Record) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> int: ...


class CollectorConfigError(ValueError):
    """A collector configuration file is wrong.

    The message reads ``"{file}: {dotted.key}: {what is wrong}"``
    (:class:`connectors.base.config.ConfigReader` writes them) and never quotes a secret.
    """


class SessionEnded(ConnectionError):
    """The source closed the session without an error (end of stream): reconnect."""


@dataclass(slots=True)
class CollectorHealth:
    """What a collector reports about itself (published on ``collectors.health``)."""

    name: str
    kind: str
    connected: bool = False
    last_tick_time_ms: int | None = None
    last_alive_mono: float | None = None
    ticks: int = 0
    events: int = 0
    rejected: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str | None = None
    circuit: str = CircuitBreaker.CLOSED
    started_mono: float = field(default_factory=time.monotonic)

    def ticks_per_s(self, now_mono: float | None = None) -> float:
        elapsed = (now_mono or time.monotonic()) - self.started_mono
        return self.ticks / elapsed if elapsed > 0 else 0.0


class Collector(abc.ABC):
    """Base class of every source; see the module docstring for the hook contract."""

    kind: ClassVar[str] = "collector"
    source: ClassVar[str] = "UNKNOWN"  # RawTick.source enum symbol
    #: Whether the venue keeps a durable position (``_position``/``_restore``).
    resumable: ClassVar[bool] = False
    #: How often a resumable venue stores its position (records / seconds).
    position_every: int = 1000
    position_interval_s: float = 1.0

    def __init__(
        self,
        name: str,
        sink: RecordSink,
        *,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        rate_limit: RateLimiter | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.sink = sink
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker()
        self.rate_limit = rate_limit
        self.health = CollectorHealth(name=name, kind=self.kind)
        self._secrets = [s for s in secrets if s]
        self._stopping = asyncio.Event()
        self.positions: PositionTracker | None = None

    # ---- hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _stream(self) -> None: ...

    async def _disconnect(self) -> None:  # noqa: B027 - sources without sessions need nothing
        """Release the session; called after every session, also after failures."""

    def _position(self) -> Position:
        """Where the collector stands after every record it has sent (resumable venues)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no position")

    def _restore(self, position: Position | None) -> None:  # noqa: B027 - see _position
        """Continue after ``position`` (the last stored one; None: never stored)."""

    # ---- positions ---------------------------------------------------------------------
    def track_positions(self, tracker: PositionTracker) -> None:
        """Send every record through ``tracker`` and resume after its loaded position."""
        if not self.resumable:
            raise TypeError(f"{self.kind} collectors keep no position")
        self.positions = tracker
        self.sink = tracker
        self._restore(tracker.loaded)

    def checkpoint_if_due(self) -> None:
        tracker = self.positions
        if tracker is not None and tracker.due():
            tracker.checkpoint(self._position())

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Connect, stream, reconnect with backoff until :meth:`stop` or a fatal error.

        Raises :class:`ReconnectExhausted` after too many consecutive failed sessions and
        :class:`FatalCollectorError` at once; both are logged with secrets redacted. With a
        position tracker, the final position is stored when it ends (only delivered records
        count: a failure leaves the position at the last delivered record).
        """
        try:
            await self._run()
        except BaseException:
            self._close_positions(raising=True)
            raise
        self._close_positions(raising=False)

    def _close_positions(self, *, raising: bool) -> None:
        tracker = self.positions
        if tracker is None:
            return
        try:
            if tracker.close(self._position()):
                log.info("%s: position stored (%d writes)", self.name, tracker.writes)
        except Exception as exc:
            if not raising:
                raise
            log.warning("%s: final position not stored: %s", self.name, exc)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                self.breaker.check()
            except CircuitOpen as exc:
                self.health.circuit = self.breaker.state
                await self._sleep(exc.retry_in_s)
                continue
            try:
                await self._connect()
                self.health.connected = True
                await self._stream()
                if not self.stopping:
                    raise SessionEnded("source closed the session")
            except asyncio.CancelledError:
                raise
            except FatalCollectorError as exc:
                self._note_error(exc)
                log.error("%s: fatal: %s", self.name, self.health.last_error)
                raise FatalCollectorError(self.redact(str(exc))) from None
            except Exception as exc:
                if self.stopping:
                    break
                self._note_error(exc)
                self.breaker.record_failure()
                self.health.circuit = self.breaker.state
                try:
                    delay = self.backoff.next_delay()
                except Exception:
                    log.error("%s: reconnects exhausted: %s", self.name, self.health.last_error)
                    raise
                self.health.reconnects += 1
                log.warning(
                    "%s: session lost (%s); reconnect %d in %.2f s", self.name,
                    self.health.last_error, self.backoff.attempts, delay,
                )
                await self._sleep(delay)
            finally:
                self.health.connected = False
                with contextlib.suppress(Exception):
                    await self._disconnect()

    async def stop(self) -> None:
        """Ask :meth:`run` to end after the current receive; then flush."""
        self._stopping.set()

    def flush(self, timeout_s: float = 30.0) -> int:
        return self.sink.flush(timeout_s)

    async def _until_stopped(self, receive: Coroutine[Any, Any, None]) -> None:
        """Run ``receive`` until it returns or raises, or until :meth:`stop` is called.

        Lets a blocked read (a quiet stream) end at once on stop; an error that ended the
        session is re-raised, so :meth:`run` backs off and reconnects.
        """
        reader = asyncio.create_task(receive, name=f"{self.name}-read")
        stop = asyncio.create_task(self._stopping.wait(), name=f"{self.name}-stop")
        try:
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, stop):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
            if reader.done() and not reader.cancelled():
                reader.result()  # re-raise what ended the session
            else:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    # ---- what venue code calls ---------------------------------------------------------
    def mark_alive(self) -> None:
        """The source proved healthy (valid record or heartbeat): reset backoff and breaker."""
        self.health.last_alive_mono = time.monotonic()
        if self.backoff.attempts or self.breaker.failures:
            self.backoff.reset()
            self.breaker.record_success()
            self.health.circuit = self.breaker.state

    def emit_tick(self, tick: RawTick) -> None:
        self.sink.send(TICKS_TOPIC, tick.symbol, tick)
        self.health.ticks += 1
        self.health.last_tick_time_ms = tick.time_msc

    def emit_event(self, event: MarketEvent) -> None:
        topic = EVENT_TOPICS.get(event.kind)
        if topic is None:
            raise ValueError(f"unknown event kind {event.kind!r}")
        self.sink.send(topic, event.currency, event)
        self.health.events += 1

    def reject(
        self, payload: bytes | str, reason: str, detail: str, key: str | None = None
    ) -> None:
        """Route an unparseable payload, byte for byte, to the dead-letter topic."""
        original = payload.encode() if isinstance(payload, str) else bytes(payload)
        rec = rejected(original, key.encode() if key else None,
                       f"collector:{self.kind}:{self.name}", -1, -1, reason,
                       self.redact(detail), "collect")
        self.sink.send(DEAD_LETTER_TOPIC, key or self.name, rec)
        self.health.rejected += 1

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _note_error(self, exc: BaseException) -> None:
        self.health.errors += 1
        self.health.last_error = self.redact(f"{type(exc).__name__}: {exc}")

    def health_dict(self) -> dict[str, Any]:
        h = self.health
        return {
            "name": h.name, "kind": h.kind, "connected": h.connected,
            "last_tick_time_ms": h.last_tick_time_ms, "ticks": h.ticks, "events": h.events,
            "rejected": h.rejected, "errors": h.errors, "reconnects": h.reconnects,
            "last_error": h.last_error, "circuit": self.breaker.state,
            "ticks_per_s": round(h.ticks_per_s(), 3),
        }
