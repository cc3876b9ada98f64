"""Seeded multi-broker quotes: one random walk per symbol, quoted by every broker.

Each broker has its own spread, latency and noise around the symbol's mid (so the brokers'
quotes are correlated through the shared walk, as real venues are), and the walk injects
anomalies at configurable rates: duplicates, crossed quotes, one-tick spikes, genuine jumps
(a news-like level shift every broker follows), out-of-order ticks and stalls (a broker
going quiet for a while, then back).

:func:`simulate` returns a finite, sorted list (tests, the demo, training data);
:class:`TickStream` produces the same kind of stream endlessly and incrementally, in
receive order, for the simulator collector. Both are plain Python and seeded: the same seed
and arguments give the same ticks.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stages.types import Tick

#: Start prices of :func:`simulate` (unchanged: seeded outputs depend on them).
BASE_PRICES = {"EURUSD": 1.0850, "GBPUSD": 1.2650, "USDJPY": 151.20, "AUDUSD": 0.6550}
#: Start prices the collector uses: :data:`BASE_PRICES` plus the other majors and crosses.
DEFAULT_PRICES = {
    **BASE_PRICES, "USDCHF": 0.8850, "USDCAD": 1.3650, "NZDUSD": 0.6050, "EURJPY": 164.05,
    "GBPJPY": 191.25, "EURGBP": 0.8577, "EURCHF": 0.9602, "AUDJPY": 99.03,
}


@dataclass(frozen=True, slots=True)
class Anomalies:
    """Rates of injected anomalies. Probabilities are per quote unless named ``*_every_s``."""

    duplicate: float = 0.01  # the same quote received twice
    crossed: float = 0.002  # bid and ask swapped
    spike: float = 0.001  # one quote 60 pips off, the next one back
    out_of_order: float = 0.002  # an older quote re-delivered late
    jump_every_s: float = 600.0  # a genuine level shift (news), about this often per symbol
    # A broker goes quiet (no quote for any symbol) about this often, for stall_min_s to
    # stall_max_s, then quotes again; 0 = never (and then no random draw is spent on it).
    stall_every_s: float = 0.0
    stall_min_s: float = 5.0
    stall_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    """How one broker quotes: spread and noise around the mid (pips), receive latency (ms)."""

    name: str
    spread_pips: float
    latency_ms: int
    noise_pips: float = 0.05
    latency_jitter_ms: float = 0.0  # mean of an exponential extra delay; 0 = constant


def broker_profiles(brokers: Sequence[str | BrokerProfile]) -> tuple[BrokerProfile, ...]:
    """Profiles for ``brokers``; a bare name gets the n-th default (tighter, faster first)."""
    return tuple(
        b if isinstance(b, BrokerProfile) else BrokerProfile(b, 0.8 + 0.4 * i, 20 + 30 * i)
        for i, b in enumerate(brokers)
    )


def pip_size(symbol: str) -> float:
    return 0.01 if symbol.endswith("JPY") else 0.0001


class Stalls:
    """When each broker is quiet: windows drawn lazily from a per-broker seeded generator.

    Independent of the quote generators, so turning stalls on does not change the prices,
    and the same for every symbol (a stalled broker connection stalls all of them).
    """

    def __init__(
        self, seed: int, brokers: Sequence[str], start_ms: int, anomalies: Anomalies
    ) -> None:
        if anomalies.stall_every_s <= 0:
            raise ValueError("stall_every_s must be > 0")
        if not 0 < anomalies.stall_min_s <= anomalies.stall_max_s:
            raise ValueError("need 0 < stall_min_s <= stall_max_s")
        self.anomalies = anomalies
        self._rng = {b: random.Random(f"tickstream-stall:{seed}:{b}") for b in brokers}
        self._starts: dict[str, list[int]] = {b: [] for b in brokers}
        self._ends: dict[str, list[int]] = {b: [] for b in brokers}
        self._covered = dict.fromkeys(brokers, start_ms)  # windows drawn up to here

    def _draw(self, broker: str) -> None:
        an, rng = self.anomalies, self._rng[broker]
        start = self._covered[broker] + int(rng.expovariate(1.0 / an.stall_every_s) * 1000)
        end = start + int(rng.uniform(an.stall_min_s, an.stall_max_s) * 1000)
        self._starts[broker].append(start)
        self._ends[broker].append(end)
        self._covered[broker] = end

    def quiet(self, broker: str, t_ms: int) -> bool:
        """Whether ``broker`` sends nothing at ``t_ms`` (any order of queries)."""
        while self._covered[broker] <= t_ms:
            self._draw(broker)
        i = bisect.bisect_right(self._starts[broker], t_ms) - 1
        return i >= 0 and t_ms < self._ends[broker][i]

    def windows(self, broker: str, until_ms: int) -> list[tuple[int, int]]:
        """The quiet windows of ``broker`` that start before ``until_ms``."""
        self.quiet(broker, until_ms)
        return [(s, e) for s, e in zip(self._starts[broker], self._ends[broker], strict=True)
                if s < until_ms]


class SymbolWalk:
    """One symbol's mid-price walk, quoted by every broker, advanced one step at a time.

    A step lasts ``1000 / ticks_per_s`` ms; in it each broker that is not stalled quotes
    once at a random time within the step, received ``latency`` ms later.
    """

    def __init__(
        self,
        rng: random.Random,
        symbol: str,
        brokers: Sequence[BrokerProfile],
        start_ms: int,
        ticks_per_s: float,
        anomalies: Anomalies,
        mid: float,
        stalls: Stalls | None = None,
    ) -> None:
        if not 0 < ticks_per_s <= 1000:
            raise ValueError("ticks_per_s must be in (0, 1000]")
        self.rng = rng
        self.symbol = symbol
        self.brokers = tuple(brokers)
        self.anomalies = anomalies
        self.stalls = stalls
        self.pip = pip_size(symbol)
        self.mid = mid
        self.step_ms = int(1000 / ticks_per_s)
        self.t = start_ms  # start of the next step
        self.last_by_broker: dict[str, Tick] = {}
        self._jump_p = (
            self.step_ms / 1000 / anomalies.jump_every_s if anomalies.jump_every_s > 0 else 0.0
        )

    def step(self, out: list[Tick]) -> None:
        """Append this step's quotes (generation order, not receive order) and advance."""
        rng, an, pip, sym = self.rng, self.anomalies, self.pip, self.symbol
        step_ms, t, stalls = self.step_ms, self.t, self.stalls
        last_by_broker = self.last_by_broker
        mid = self.mid + rng.gauss(0.0, 0.3) * pip
        if self._jump_p and rng.random() < self._jump_p:
            mid += rng.choice((-1, 1)) * rng.uniform(25, 40) * pip  # news: level shift
        self.mid = mid
        for prof in self.brokers:
            b = prof.name
            if stalls is not None and stalls.quiet(b, t):
                continue
            bt = t + rng.randint(0, step_ms - 1)
            half = prof.spread_pips * pip / 2
            m = mid + rng.gauss(0.0, prof.noise_pips) * pip
            bid, ask = round(m - half, 6), round(m + half, 6)
            r = rng.random()
            if r < an.crossed:
                bid, ask = ask, bid
            elif r < an.crossed + an.spike:
                bid, ask = round(bid + 60 * pip, 6), round(ask + 60 * pip, 6)
            lat = prof.latency_ms
            if prof.latency_jitter_ms > 0:
                lat += int(rng.expovariate(1.0 / prof.latency_jitter_ms))
            tick = Tick(b, sym, bt, bid, ask, (bt + lat) * 1000)
            out.append(tick)
            if rng.random() < an.duplicate:
                out.append(Tick(b, sym, bt, bid, ask, (bt + lat + 5) * 1000))
            prev = last_by_broker.get(b)
            if prev is not None and rng.random() < an.out_of_order:
                out.append(Tick(b, sym, prev.time_msc - 500, prev.bid, prev.ask,
                                (bt + lat + 7) * 1000))
            last_by_broker[b] = tick
        self.t = t + step_ms


def simulate(
    seed: int,
    symbols: Sequence[str] = ("EURUSD", "USDJPY"),
    brokers: Sequence[str | BrokerProfile] = ("ICM", "PEP", "FXCM"),
    start_ms: int = 1_700_000_000_000,
    seconds: int = 600,
    ticks_per_s: float = 1.0,
    anomalies: Anomalies | None = None,
) -> list[Tick]:
    """Ticks of every (symbol, broker) in receive order, with anomalies injected.

    ``ticks_per_s`` is per symbol and broker. One generator serves the symbols in turn, so
    the output for a seed is fixed by all the arguments together.
    """
    rng = random.Random(seed)
    an = anomalies or Anomalies()
    profiles = broker_profiles(brokers)
    stalls = (
        Stalls(seed, [p.name for p in profiles], start_ms, an) if an.stall_every_s > 0 else None
    )
    out: list[Tick] = []
    end = start_ms + seconds * 1000
    for sym in symbols:
        walk = SymbolWalk(rng, sym, profiles, start_ms, ticks_per_s, an,
                          BASE_PRICES.get(sym, 1.0), stalls)
        while walk.t < end:
            walk.step(out)
    out.sort(key=lambda k: k.recv_time_us)
    return out


class TickStream:
    """Every symbol's quotes in receive order, endlessly, generated as far as asked.

    Each symbol has its own generator seeded from ``(seed, symbol)``, so a symbol's quotes do
    not depend on which other symbols are simulated. :meth:`until` returns every tick received
    before a simulated time; once all walks have stepped past it, no later step can produce a
    tick received earlier (receive time >= quote time >= step start), so the order is final.
    """

    def __init__(
        self,
        seed: int,
        symbols: Sequence[str],
        brokers: Sequence[str | BrokerProfile],
        start_ms: int,
        ticks_per_s: float = 1.0,
        anomalies: Anomalies | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> None:
        an = anomalies or Anomalies()
        profiles = broker_profiles(brokers)
        prices = DEFAULT_PRICES if prices is None else prices
        self.start_ms = start_ms
        self.stalls = (
            Stalls(seed, [p.name for p in profiles], start_ms, an)
            if an.stall_every_s > 0 else None
        )
        self.walks = [
            SymbolWalk(random.Random(f"tickstream-sim:{seed}:{sym}"), sym, profiles, start_ms,
                       ticks_per_s, an, prices.get(sym, 1.0), self.stalls)
            for sym in symbols
        ]
        self._heap: list[tuple[int, int, int, Tick]] = []
        self._seq = 0
        self._buf: list[Tick] = []

    def until(self, t_ms: int) -> list[Tick]:
        """Every not yet returned tick received before ``t_ms`` (simulated epoch ms)."""
        heap, buf, push = self._heap, self._buf, heapq.heappush
        seq = self._seq
        for i, walk in enumerate(self.walks):
            while walk.t < t_ms:
                buf.clear()
                walk.step(buf)
                for tick in buf:
                    push(heap, (tick.recv_time_us, i, seq, tick))
                    seq += 1
        self._seq = seq
        limit = t_ms * 1000
        out: list[Tick] = []
        pop = heapq.heappop
        while heap and heap[0][0] < limit:
            out.append(pop(heap)[3])
        return out

    def next_ms(self) -> int:
        """The earliest simulated time at which a not yet returned tick can be received."""
        pending = self._heap[0][0] // 1000 if self._heap else None
        nxt = min(w.t for w in self.walks) if self.walks else self.start_ms
        return nxt if pending is None else min(pending, nxt)
