"""The simulator as a collector: seeded multi-broker ticks and events into Kafka.

``tickstream collect simulate --config config/collectors/simulate.yaml`` runs it like any
venue collector (same :class:`~connectors.base.collector.Collector` lifecycle, same producer
path, same health reports), so the demo, the tests and the benchmarks exercise the real
collector machinery without a broker account.

Two modes:

* ``realtime: true`` (default): the simulated clock starts at the wall clock and every tick
  is sent when it is due, at ``ticks_per_s`` per symbol and broker; ``recv_time_us`` is the
  wall clock at send time and ``time_msc`` the simulated broker time (so latency, stalls and
  out-of-order ticks look as they would live).
* ``realtime: false``: as fast as the producer takes them (benchmarks, backfills), with the
  simulated receive times; ``start_ms`` fixes the simulated start, so a run is reproducible
  record for record.

``max_ticks`` (0 = endless) stops the collector after exactly that many ticks.

Resuming (:mod:`connectors.positions`): the position is the configuration's fingerprint,
the simulated start and how many ticks and events have been sent. The same configuration
and start give the same ticks and the same events, so a restart regenerates the stream
and sends only what comes after the stored counts (``max_ticks`` counts across restarts).
In real time the simulated clock keeps the stored start, so the ticks due while the
collector was down are sent at once (in chunks of :data:`CATCH_UP_MS`), then it goes on
in real time. A changed configuration (seed, symbols, brokers, rates, ...) starts afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from connectors.base.collector import Collector, RecordSink
from connectors.base.resilience import Backoff
from connectors.positions import Position
from connectors.simulator.config import SimulatorConfig
from connectors.simulator.events import EventStream
from connectors.simulator.parse import SOURCE, raw_tick
from connectors.simulator.ticks import TickStream
from schemas.records import MarketEvent
from stages.types import Tick

log = logging.getLogger(__name__)

#: Simulated time generated per round when not in real time (then the loop yields).
FAST_CHUNK_MS = 250
#: Longest real-time sleep, so health and stop stay responsive whatever the rate.
MAX_SLEEP_S = 0.25
#: Simulated time generated per round while catching up after a real-time restart.
CATCH_UP_MS = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatorCollector(Collector):
    """Streams :class:`~connectors.simulator.ticks.TickStream` and
    :class:`~connectors.simulator.events.EventStream` through the collector lifecycle."""

    kind: ClassVar[str] = "simulate"
    source: ClassVar[str] = SOURCE
    resumable: ClassVar[bool] = True

    def __init__(self, config: SimulatorConfig, sink: RecordSink) -> None:
        # Nothing here can fail the way a network does; keep retrying if the sink does.
        super().__init__(config.name, sink, backoff=Backoff(base_s=0.5, max_attempts=0))
        self.config = config
        self.ticks: TickStream | None = None
        self.events: EventStream | None = None
        self.start_ms = 0
        self._start_mono = 0.0
        self.sim_ms = 0  # simulated time generated up to
        self.position_every = config.position_every
        self.position_interval_s = config.position_interval_s
        self.tick_index = 0  # ticks generated so far, sent or skipped (max_ticks counts these)
        self.event_index = 0
        self._resume: Position | None = None
        self._skip_ticks = self._skip_events = 0  # already sent before a restart

    # ---- positions ----------------------------------------------------------------------
    def _position(self) -> Position:
        return {"config": self.config.fingerprint(), "start_ms": self.start_ms,
                "ticks": self.tick_index, "events": self.event_index}

    def _restore(self, position: Position | None) -> None:
        if position is None:
            return
        if position.get("config") != self.config.fingerprint():
            log.warning("%s: the stored position belongs to another configuration; "
                        "starting afresh", self.name)
            return
        self._resume = position
        self._skip_ticks = int(position["ticks"])
        self._skip_events = int(position["events"])
        log.info("%s: resuming after %d ticks and %d events (simulated start %d)", self.name,
                 self._skip_ticks, self._skip_events, position["start_ms"])

    async def _connect(self) -> None:
        if self.ticks is not None:  # a new session continues the same simulated market
            return
        cfg = self.config
        start = cfg.start_ms if cfg.start_ms is not None and not cfg.realtime else now_ms()
        if self._resume is not None:
            start = int(self._resume["start_ms"])
        self.start_ms = self.sim_ms = start
        # In real time the simulated clock is the wall clock (also after a restart).
        behind_s = max(0.0, (now_ms() - start) / 1000) if cfg.realtime else 0.0
        self._start_mono = time.monotonic() - behind_s
        self.ticks = TickStream(cfg.seed, cfg.symbols, cfg.brokers, start, cfg.ticks_per_s,
                                cfg.anomalies, cfg.prices)
        if cfg.calendar_every_s > 0 or cfg.news_every_s > 0:
            self.events = EventStream(cfg.seed, cfg.symbols, start, cfg.calendar_every_s,
                                      cfg.news_every_s)
        log.info("%s: simulating %d symbols x %d brokers at %g ticks/s each (%s), seed %d",
                 self.name, len(cfg.symbols), len(cfg.brokers), cfg.ticks_per_s,
                 "real time" if cfg.realtime else "as fast as possible", cfg.seed)

    async def _stream(self) -> None:
        if self.config.realtime:
            await self._stream_realtime()
        else:
            await self._stream_fast()

    def _advance(self, t_ms: int) -> tuple[list[Tick], list[MarketEvent]]:
        assert self.ticks is not None
        self.sim_ms = max(self.sim_ms, t_ms)
        events = self.events.until(t_ms) if self.events is not None else []
        return self.ticks.until(t_ms), events

    async def _stream_fast(self) -> None:
        while not self.stopping:
            ticks, events = self._advance(self.sim_ms + FAST_CHUNK_MS)
            if not self._emit(ticks, events, realtime=False):
                await self.stop()
                return
            self.mark_alive()
            self.checkpoint_if_due()
            await asyncio.sleep(0)  # let the health timer and signal handlers run

    async def _stream_realtime(self) -> None:
        assert self.ticks is not None
        while not self.stopping:
            now = self.start_ms + int((time.monotonic() - self._start_mono) * 1000)
            target = min(now + 1, self.sim_ms + CATCH_UP_MS)
            ticks, events = self._advance(target)  # everything due by now
            if ticks or events:
                if not self._emit(ticks, events, realtime=True):
                    await self.stop()
                    return
                self.mark_alive()
            self.checkpoint_if_due()
            if target <= now:  # catching up: no sleep
                await asyncio.sleep(0)
                continue
            nxt = self.ticks.next_ms()
            if self.events is not None:
                nxt = min(nxt, self.events.next_ms() or nxt)
            due_s = (nxt - self.start_ms) / 1000 - (time.monotonic() - self._start_mono)
            await self._sleep(min(max(due_s, 0.0), MAX_SLEEP_S))

    def _emit(self, ticks: list[Tick], events: list[MarketEvent], *, realtime: bool) -> bool:
        """Send ticks and events merged by time; False once ``max_ticks`` have been sent.

        Ticks and events a previous run already sent (the restored position) are generated
        and counted, not sent; with a tracker, a checkpoint is taken as soon as
        ``position_every`` records were sent since the last one.
        """
        limit = self.config.max_ticks or -1
        emit_tick, emit_event = self.emit_tick, self._emit_event
        tracker, every, skip = self.positions, self.position_every, self._skip_ticks
        ev_i, n_ev = 0, len(events)
        for t in ticks:
            while ev_i < n_ev and events[ev_i].published_ms * 1000 <= t.recv_time_us:
                emit_event(events[ev_i])
                ev_i += 1
            i = self.tick_index
            if i == limit:
                return False
            if i >= skip:
                emit_tick(raw_tick(t, time.time_ns() // 1000 if realtime else t.recv_time_us))
            self.tick_index = i + 1
            if tracker is not None and tracker.open_sent >= every:
                tracker.checkpoint(self._position())
        if self.tick_index == limit:
            return False
        for ev in events[ev_i:]:
            emit_event(ev)
        return True

    def _emit_event(self, event: MarketEvent) -> None:
        if self.event_index >= self._skip_events:
            self.emit_event(event)
        self.event_index += 1
        tracker = self.positions
        if tracker is not None and tracker.open_sent >= self.position_every:
            tracker.checkpoint(self._position())

    def quiet_brokers(self) -> list[str]:
        """Brokers stalled at the current simulated time."""
        stalls = self.ticks.stalls if self.ticks is not None else None
        if stalls is None:
            return []
        return [b.name for b in self.config.brokers if stalls.quiet(b.name, self.sim_ms)]

    def health_dict(self) -> dict[str, Any]:
        out = super().health_dict()
        out.update(seed=self.config.seed, realtime=self.config.realtime,
                   sim_time_ms=self.sim_ms, quiet_brokers=self.quiet_brokers(),
                   resumed_after_ticks=self._skip_ticks)
        return out
