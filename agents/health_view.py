"""Brokers, symbols and feed quality as ``/health/`` and ``/metrics`` report them, figured
from the pipeline's live state (plain values in: no Faust, no Kafka client).

Once a second (a timer in :mod:`agents.health`) :meth:`LiveView.update` reads the consolidator
of every symbol this worker holds (the per-broker counters that also feed the
``broker_quality`` table) and keeps the cumulative per-broker counts of the last
:data:`WINDOW_S` seconds of wall time. So a broker's rate and latency describe the last few
seconds, while its uptime, duplicates and rejects are totals since its first quote.

What each figure means (``docs/health.md`` lists them for operators):

* broker ``status``: ``active`` (ticks accepted in the window and a fresh quote in at least one
  symbol), ``idle`` (no tick accepted in the window: its feed is quiet or gone), ``stale``
  (ticks arrive but in no symbol is its quote fresh at the symbol's latest event time: it
  lags the other brokers by more than the staleness limit, so consolidation leaves it out);
* symbol ``completeness``: the mean over its brokers of their uptime, the share of event time
  since a broker's first quote during which its quote was fresh;
* symbol ``spread_quality``: the mean over its brokers of ``1 - mean spread / spread limit``
  (the symbol's ``max_spread_pips``), clamped to [0, 1]: 1 is a zero spread, 0 a spread at
  or beyond the limit that the validator rejects;
* symbol ``broker_sync``: the share of the brokers quoting it whose quote is fresh at its
  latest event time (1: every broker in step; a lagging or silent broker lowers it).

The worker-wide quality figures are the means over symbols (``None`` while it holds none).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stages.config import SymbolSpec
    from stages.pipeline import Pipeline

#: Wall-clock window of the per-broker rate and latency.
WINDOW_S = 10.0
#: A page or scrape served this long after the last update recomputes first.
MAX_AGE_S = 1.0

ACTIVE, IDLE, STALE = "active", "idle", "stale"

# (symbol, broker) -> (accepted ticks, latency sum ms, ticks with a latency)
_Counts = dict[tuple[str, str], tuple[int, float, int]]


@dataclass(frozen=True, slots=True)
class BrokerView:
    """One broker as this worker sees it, over the symbols it holds."""

    status: str
    #: Symbols in which this broker's quote is fresh now.
    active_symbols: tuple[str, ...]
    #: Symbols it has quoted (accepted ticks) since their state began.
    symbols: tuple[str, ...]
    #: Accepted ticks per second of wall time over the window; None before two samples.
    ticks_per_s: float | None
    #: Mean receive time - broker time (ms) of the ticks accepted in the window; the mean
    #: since the first quote when none arrived in it; None without any receive time.
    latency_ms: float | None
    ticks: int
    duplicates: int
    rejects: int
    #: Mean over its symbols of the share of event time its quote was fresh.
    uptime: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "active_symbols": list(self.active_symbols),
            "symbols": list(self.symbols), "ticks_per_s": _round(self.ticks_per_s),
            "latency_ms": _round(self.latency_ms), "ticks": self.ticks,
            "duplicates": self.duplicates, "rejects": self.rejects,
            "uptime": _round(self.uptime),
        }


@dataclass(frozen=True, slots=True)
class SymbolQuality:
    completeness: float | None
    spread_quality: float | None
    broker_sync: float | None
    brokers: int
    fresh_brokers: int

    def as_dict(self) -> dict[str, Any]:
        return {"completeness": _round(self.completeness),
                "spread_quality": _round(self.spread_quality),
                "broker_sync": _round(self.broker_sync), "brokers": self.brokers,
                "fresh_brokers": self.fresh_brokers}


@dataclass(frozen=True, slots=True)
class Summary:
    """One update's figures (see the module docstring)."""

    at_s: float
    window_s: float
    #: Symbols in the configured universe (a worker tracks those of its partitions).
    configured: int = 0
    brokers: dict[str, BrokerView] = field(default_factory=dict)
    symbols: dict[str, SymbolQuality] = field(default_factory=dict)

    def quality(self) -> dict[str, float | None]:
        """The worker-wide figures: each the mean over symbols that have it."""
        out: dict[str, float | None] = {}
        for name in ("completeness", "spread_quality", "broker_sync"):
            values = [v for q in self.symbols.values()
                      if (v := getattr(q, name)) is not None]
            out[name] = sum(values) / len(values) if values else None
        return out


class LiveView:
    """Samples the pipeline's consolidators and summarises them (see the module docstring).

    Read only between batches (the timer and the web handlers run on the worker's event
    loop, as the agent does), so a sample never sees half a batch.
    """

    def __init__(self, pipeline: Pipeline | None, symbols: Mapping[str, SymbolSpec],
                 window_s: float = WINDOW_S) -> None:
        self._pipeline = pipeline
        self._specs = symbols
        self.window_s = window_s
        self._samples: deque[tuple[float, _Counts]] = deque()
        self._summary: Summary | None = None
        self._restored: dict[str, _Counts] = {}

    def attach(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def restored(self, symbol: str) -> None:
        """``symbol``'s state was just restored from the table: its counts are from before
        (the rate must not count them as ticks of the last seconds)."""
        st = self._pipeline.states.get(symbol) if self._pipeline is not None else None
        if st is None:
            return
        raw = st.consolidator.snapshot()["brokers"]
        self._restored[symbol] = {
            (symbol, broker): (int(r["ticks"]), float(r["latency_sum"]), int(r["latency_n"]))
            for broker, r in raw.items() if int(r["ticks"]) > 0}

    def current(self, now_s: float) -> Summary:
        """The latest summary, recomputed when older than :data:`MAX_AGE_S`."""
        s = self._summary
        if s is None or now_s - s.at_s >= MAX_AGE_S:
            s = self.update(now_s)
        return s

    def update(self, now_s: float) -> Summary:
        """Take a sample at ``now_s`` (monotonic seconds) and recompute the summary."""
        pipeline = self._pipeline
        states = pipeline.states if pipeline is not None else {}
        counts: _Counts = {}
        per_broker: dict[str, dict[str, Any]] = {}
        symbols: dict[str, SymbolQuality] = {}
        for sym, st in sorted(states.items()):
            quality = st.consolidator.quality()
            raw = st.consolidator.snapshot()["brokers"]
            spec = self._specs.get(sym)
            limit = spec.max_spread_pips * spec.pip_size if spec is not None else 0.0
            uptimes: list[float] = []
            spreads: list[float] = []
            fresh = 0
            for broker, q in sorted(quality.items()):
                b = per_broker.setdefault(broker, {
                    "active": [], "symbols": [], "ticks": 0, "duplicates": 0, "rejects": 0,
                    "uptime": [], "lat_sum": 0.0, "lat_n": 0})
                b["duplicates"] += int(q["duplicates"])
                b["rejects"] += int(q["rejects"])
                ticks = int(q["ticks"])
                if ticks == 0:  # only duplicates or rejects so far: no quote
                    continue
                r = raw[broker]
                counts[(sym, broker)] = (ticks, float(r["latency_sum"]), int(r["latency_n"]))
                b["symbols"].append(sym)
                b["ticks"] += ticks
                b["uptime"].append(q["uptime"])
                b["lat_sum"] += float(r["latency_sum"])
                b["lat_n"] += int(r["latency_n"])
                uptimes.append(q["uptime"])
                if limit > 0:
                    spreads.append(min(1.0, max(0.0, 1.0 - q["mean_spread"] / limit)))
                if q["fresh"]:
                    fresh += 1
                    b["active"].append(sym)
            n = len(uptimes)
            symbols[sym] = SymbolQuality(
                completeness=sum(uptimes) / n if n else None,
                spread_quality=sum(spreads) / len(spreads) if spreads else None,
                broker_sync=fresh / n if n else None, brokers=n, fresh_brokers=fresh)

        samples = self._samples
        if samples:
            # A symbol and broker first seen since the last sample got its ticks since then,
            # counted from zero, or from its counts when its state was restored (those are
            # from before: :meth:`restored`).
            previous = samples[-1][1]
            seen = set().union(*(c for _t, c in samples))
            for key in counts.keys() - seen:
                previous[key] = self._restored.get(key[0], {}).get(key, (0, 0.0, 0))
        self._restored.clear()
        samples.append((now_s, counts))
        # The baseline is the newest sample at least a window old (or the oldest there is).
        while len(samples) > 1 and now_s - samples[1][0] >= self.window_s:
            samples.popleft()
        span = now_s - samples[0][0]
        # broker -> [ticks, latency sum, ticks with a latency] accepted in the window
        window: dict[str, list[float]] = {}
        if span > 0:
            for (sym, broker), (ticks, lat_sum, lat_n) in counts.items():
                # The oldest sample in the window that has this symbol and broker.
                base_s, old = next((t, c[(sym, broker)]) for t, c in samples
                                   if (sym, broker) in c)
                if base_s >= now_s:
                    continue
                w = window.setdefault(broker, [0.0, 0.0, 0.0])
                if ticks >= old[0] and lat_n >= old[2]:  # else: revoked and restored since
                    w[0] += ticks - old[0]
                    w[1] += lat_sum - old[1]
                    w[2] += lat_n - old[2]
        brokers: dict[str, BrokerView] = {}
        for broker, b in sorted(per_broker.items()):
            got = window.get(broker)
            rate = (got[0] if got is not None else 0.0) / span if span > 0 else None
            if got is not None and got[2] > 0:
                latency: float | None = got[1] / got[2]
            else:
                latency = b["lat_sum"] / b["lat_n"] if b["lat_n"] else None
            if not b["symbols"] or (rate is not None and rate == 0.0):
                status = IDLE
            elif not b["active"]:
                status = STALE
            else:
                status = ACTIVE
            ups = b["uptime"]
            brokers[broker] = BrokerView(
                status=status, active_symbols=tuple(b["active"]), symbols=tuple(b["symbols"]),
                ticks_per_s=rate, latency_ms=latency, ticks=b["ticks"],
                duplicates=b["duplicates"], rejects=b["rejects"],
                uptime=sum(ups) / len(ups) if ups else 0.0)
        self._summary = Summary(now_s, span, len(self._specs), brokers, symbols)
        return self._summary


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)
