"""Configuration of the simulator collector (``config/collectors/simulate.yaml``).

:func:`load_config` turns the parsed YAML mapping into a :class:`SimulatorConfig`; every
error reads ``"{file}: {dotted.key}: {what is wrong}"`` (:mod:`connectors.base.config`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base.config import ConfigReader
from connectors.positions import DEFAULT_POSITION_EVERY, DEFAULT_POSITION_INTERVAL_S
from connectors.simulator.ticks import DEFAULT_PRICES, Anomalies, BrokerProfile, broker_profiles

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
DEFAULT_BROKERS = ("ICM", "PEP", "FXCM")


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


def _symbols(r: ConfigReader) -> tuple[str, ...]:
    raw = r.raw("symbols")
    if raw is None:
        return DEFAULT_SYMBOLS
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s.strip()]
    if not isinstance(raw, list) or not raw or not all(
        isinstance(s, str) and len(s.strip()) == 6 and s.strip().isalpha() for s in raw
    ):
        raise r.expected("symbols", "a non-empty list of 6-letter symbols such as "
                                    "[EURUSD, USDJPY]", raw)
    return tuple(dict.fromkeys(s.strip().upper() for s in raw))


def _brokers(r: ConfigReader) -> tuple[BrokerProfile, ...]:
    raw = r.raw("brokers")
    if raw is None:
        return broker_profiles(DEFAULT_BROKERS)
    if not isinstance(raw, list) or not raw:
        raise r.expected("brokers", "a non-empty list of broker names or "
                                    "{name, spread_pips, ...}", raw)
    defaults = broker_profiles([f"b{i}" for i in range(len(raw))])
    out: list[BrokerProfile] = []
    for i, item in enumerate(raw):
        d = defaults[i]
        if isinstance(item, str) and item.strip():
            out.append(BrokerProfile(item.strip(), d.spread_pips, d.latency_ms))
            continue
        if not isinstance(item, Mapping):
            raise r.expected(f"brokers[{i}]", "a broker name or a mapping", item)
        b = r.child(item, f"brokers[{i}]")
        out.append(BrokerProfile(
            name=b.text("name"),
            spread_pips=b.number("spread_pips", d.spread_pips, above=True),
            latency_ms=b.integer("latency_ms", d.latency_ms),
            noise_pips=b.number("noise_pips", d.noise_pips),
            latency_jitter_ms=b.number("latency_jitter_ms", d.latency_jitter_ms),
        ))
        b.finish()
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise r.expected("brokers", "unique broker names", names)
    return tuple(out)


def _anomalies(r: ConfigReader) -> Anomalies:
    d = Anomalies()
    an = Anomalies(
        duplicate=r.number("duplicate", d.duplicate, 0, 1),
        crossed=r.number("crossed", d.crossed, 0, 1),
        spike=r.number("spike", d.spike, 0, 1),
        out_of_order=r.number("out_of_order", d.out_of_order, 0, 1),
        jump_every_s=r.number("jump_every_s", d.jump_every_s),
        stall_every_s=r.number("stall_every_s", d.stall_every_s),
        stall_min_s=r.number("stall_min_s", d.stall_min_s, above=True),
        stall_max_s=r.number("stall_max_s", d.stall_max_s, above=True),
    )
    if an.crossed + an.spike > 1:
        raise r.expected("crossed", "crossed + spike <= 1", an.crossed + an.spike)
    if an.stall_min_s > an.stall_max_s:
        raise r.expected("stall_min_s", f"at most stall_max_s ({an.stall_max_s:g})",
                         an.stall_min_s)
    r.finish()
    return an


def _prices(r: ConfigReader, symbols: Sequence[str]) -> dict[str, float]:
    raw = r.raw("prices")
    prices = dict(DEFAULT_PRICES)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int | float) and v > 0
        for k, v in raw.items()
    ):
        raise r.expected("prices", "a mapping of symbol to a positive start price", raw)
    prices.update({k.upper(): float(v) for k, v in raw.items()})
    missing = [s for s in symbols if s not in prices]
    if missing:
        raise r.error("prices", f"no start price for {', '.join(missing)}: add one here")
    return prices


def load_config(
    config: Mapping[str, Any], *, config_path: str | None = None
) -> SimulatorConfig:
    """Validate a parsed YAML mapping; raises :class:`CollectorConfigError`."""
    r = ConfigReader.for_file(config, config_path, "simulate")
    symbols = _symbols(r)
    ticks_per_s = r.number("ticks_per_s", 2.0, 0, 1000, above=True)  # per symbol and broker
    realtime = r.flag("realtime", True)
    start_ms = r.raw("start_ms")
    if start_ms is not None and (isinstance(start_ms, bool) or not isinstance(start_ms, int)
                                 or start_ms < 0):
        raise r.expected("start_ms", "epoch milliseconds (an integer >= 0)", start_ms)
    if start_ms is not None and realtime:
        raise r.error("start_ms", "only without real time (in real time the clock starts "
                                  "now): set realtime: false")
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
        position_every=r.integer("position_every", DEFAULT_POSITION_EVERY, lo=1),
        position_interval_s=r.number("position_interval_s", DEFAULT_POSITION_INTERVAL_S,
                                     above=True),
    )
    for key in ("calendar_every_s", "news_every_s"):
        value = getattr(cfg, key)
        if 0 < value < 1:
            raise events.expected(key, "0 (off) or at least 1 second", value)
    events.finish()
    r.finish()
    return cfg
