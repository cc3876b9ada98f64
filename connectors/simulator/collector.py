"""The simulator as a collector: seeded multi-broker ticks and events into Kafka.

``tickstream collect simulate --config config/collectors/simulate.yaml`` runs it like any
venue collector (same :class:`~connectors.collector.Collector` lifecycle, same producer
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
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.collector import Collector, CollectorConfigError, RecordSink
from connectors.polling import ConfigReader, unwrap
from connectors.positions import DEFAULT_POSITION_EVERY, DEFAULT_POSITION_INTERVAL_S, Position
from connectors.resilience import Backoff
from connectors.simulator.events import EventStream
from connectors.simulator.ticks import (
    DEFAULT_PRICES,
    Anomalies,
    BrokerProfile,
    TickStream,
    broker_profiles,
)
from schemas.records import MarketEvent, RawTick
from stages.types import Tick

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
DEFAULT_BROKERS = ("ICM", "PEP", "FXCM")
#: Simulated time generated per round when not in real time (then the loop yields).
FAST_CHUNK_MS = 250
#: Longest real-time sleep, so health and stop stay responsive whatever the rate.
MAX_SLEEP_S = 0.25
#: Simulated time generated per round while catching up after a real-time restart.
CATCH_UP_MS = 10_000


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything the simulator collector needs; build it with :func:`load_config`."""

    name: str = "simulator"
    seed: int = 1
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    brokers: tuple[BrokerProfile, ...] = broker_profiles(DEFAULT_BROKERS)
    ticks_per_s: float = 2.0  # per symbol and broker
    realtime: bool = True
    start_ms: int | None = None  # simulated start when not in real time (None: now)
    max_ticks: int = 0  # 0 = endless
    anomalies: Anomalies = field(default_factory=Anomalies)
    calendar_every_s: float = 900.0  # 0 = no calendar events
    news_every_s: float = 180.0  # 0 = no headlines
    prices: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    position_every: int = DEFAULT_POSITION_EVERY  # records between stored positions
    position_interval_s: float = DEFAULT_POSITION_INTERVAL_S  # ... or seconds

    def fingerprint(self) -> str:
        """What fixes the generated stream (not the name, max_ticks or position settings)."""
        parts = (self.seed, self.symbols, self.brokers, self.ticks_per_s, self.realtime,
                 self.start_ms, self.anomalies, self.calendar_every_s, self.news_every_s,
                 sorted(self.prices.items()))
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class _Reader(ConfigReader):
    def raw(self, key: str) -> Any:
        """The value as written (marked as used); the caller validates it."""
        return self._get(key)


def _symbols(r: _Reader) -> tuple[str, ...]:
    raw = r.raw("symbols")
    if raw is None:
        return DEFAULT_SYMBOLS
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s.strip()]
    if not isinstance(raw, list) or not raw or not all(
        isinstance(s, str) and len(s.strip()) == 6 and s.strip().isalpha() for s in raw
    ):
        r.fail("symbols", "a non-empty list of 6-letter symbols such as [EURUSD, USDJPY]", raw)
    return tuple(dict.fromkeys(s.strip().upper() for s in raw))


def _brokers(r: _Reader) -> tuple[BrokerProfile, ...]:
    raw = r.raw("brokers")
    if raw is None:
        return broker_profiles(DEFAULT_BROKERS)
    if not isinstance(raw, list) or not raw:
        r.fail("brokers", "a non-empty list of broker names or {name, spread_pips, ...}", raw)
    defaults = broker_profiles([f"b{i}" for i in range(len(raw))])
    out: list[BrokerProfile] = []
    for i, item in enumerate(raw):
        if isinstance(item, str) and item.strip():
            d = defaults[i]
            out.append(BrokerProfile(item.strip(), d.spread_pips, d.latency_ms))
            continue
        if not isinstance(item, Mapping):
            r.fail(f"brokers[{i}]", "a broker name or a mapping", item)
        b = ConfigReader(item, r.where, f"{r.prefix}brokers[{i}].")
        d = defaults[i]
        out.append(BrokerProfile(
            name=b.required_text("name"),
            spread_pips=b.number("spread_pips", d.spread_pips, above=True),
            latency_ms=b.integer("latency_ms", d.latency_ms),
            noise_pips=b.number("noise_pips", d.noise_pips),
            latency_jitter_ms=b.number("latency_jitter_ms", d.latency_jitter_ms),
        ))
        b.finish()
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        r.fail("brokers", "unique broker names", names)
    return tuple(out)


def _anomalies(r: ConfigReader) -> Anomalies:
    d = Anomalies()

    def rate(key: str, default: float) -> float:
        value = r.number(key, default)
        if value > 1:
            r.fail(key, "a probability from 0 to 1", value)
        return value

    an = Anomalies(
        duplicate=rate("duplicate", d.duplicate),
        crossed=rate("crossed", d.crossed),
        spike=rate("spike", d.spike),
        out_of_order=rate("out_of_order", d.out_of_order),
        jump_every_s=r.number("jump_every_s", d.jump_every_s),
        stall_every_s=r.number("stall_every_s", d.stall_every_s),
        stall_min_s=r.number("stall_min_s", d.stall_min_s, above=True),
        stall_max_s=r.number("stall_max_s", d.stall_max_s, above=True),
    )
    if an.crossed + an.spike > 1:
        r.fail("crossed", "crossed + spike <= 1", an.crossed + an.spike)
    if an.stall_min_s > an.stall_max_s:
        r.fail("stall_min_s", f"at most stall_max_s ({an.stall_max_s:g})", an.stall_min_s)
    r.finish()
    return an


def _prices(r: _Reader, symbols: Sequence[str]) -> dict[str, float]:
    raw = r.raw("prices")
    prices = dict(DEFAULT_PRICES)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int | float) and v > 0
        for k, v in raw.items()
    ):
        r.fail("prices", "a mapping of symbol to a positive start price", raw)
    prices.update({k.upper(): float(v) for k, v in raw.items()})
    missing = [s for s in symbols if s not in prices]
    if missing:
        r.fail("prices", f"a start price for {', '.join(missing)}", raw)
    return prices


def load_config(
    config: Mapping[str, Any], *, config_path: str | None = None
) -> SimulatorConfig:
    """Validate a parsed YAML mapping; raises :class:`CollectorConfigError`."""
    where = config_path or "<simulate config>"
    if not isinstance(config, Mapping):
        raise CollectorConfigError(f"{where}: the configuration must be a mapping")
    r = _Reader(unwrap(config, "simulate"), where)
    kind = r.text("kind", "simulate")
    if kind != "simulate":
        r.fail("kind", "'simulate'", kind)
    symbols = _symbols(r)
    ticks_per_s = r.number("ticks_per_s", 2.0, above=True)
    if ticks_per_s > 1000:
        r.fail("ticks_per_s", "at most 1000 (per symbol and broker)", ticks_per_s)
    realtime = r.flag("realtime", True)
    start_ms = r.raw("start_ms")
    if start_ms is not None and (isinstance(start_ms, bool) or not isinstance(start_ms, int)
                                 or start_ms < 0):
        r.fail("start_ms", "epoch milliseconds (an integer >= 0)", start_ms)
    if start_ms is not None and realtime:
        r.fail("start_ms", "absent in real time (the clock starts now); set realtime: false",
               start_ms)
    events = r.section("events")
    cfg = SimulatorConfig(
        name=r.text("name", "simulator"),
        seed=r.integer("seed", 1),
        symbols=symbols,
        brokers=_brokers(r),
        ticks_per_s=ticks_per_s,
        realtime=realtime,
        start_ms=start_ms,
        max_ticks=r.integer("max_ticks", 0),
        anomalies=_anomalies(r.section("anomalies")),
        calendar_every_s=events.number("calendar_every_s", 900.0),
        news_every_s=events.number("news_every_s", 180.0),
        prices=_prices(r, symbols),
        position_every=r.integer("position_every", DEFAULT_POSITION_EVERY, minimum=1),
        position_interval_s=r.number("position_interval_s", DEFAULT_POSITION_INTERVAL_S,
                                     above=True),
    )
    for key in ("calendar_every_s", "news_every_s"):
        value = getattr(cfg, key)
        if 0 < value < 1:
            events.fail(key, "0 (off) or at least 1 second", value)
    events.finish()
    r.finish()
    return cfg


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatorCollector(Collector):
    """Streams :class:`~connectors.simulator.ticks.TickStream` and
    :class:`~connectors.simulator.events.EventStream` through the collector lifecycle."""

    kind: ClassVar[str] = "simulate"
    source: ClassVar[str] = "SIMULATOR"
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
                emit_tick(RawTick(
                    broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, time_msc=t.time_msc,
                    recv_time_us=time.time_ns() // 1000 if realtime else t.recv_time_us,
                    source="SIMULATOR",
                ))
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
