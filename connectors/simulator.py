"""Seeded multi-broker tick simulator: one correlated random walk per symbol, quoted by
several brokers with their own spreads, latency and noise, plus injected anomalies
(duplicates, crossed quotes, one-tick spikes, genuine jumps, out-of-order ticks).

Plain Python (no Kafka): tests, the demo and the benchmarks feed its ticks through the same
producer path as the real collectors. The same seed gives the same ticks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.records import MarketEvent
from stages.types import Tick

BASE_PRICES = {"EURUSD": 1.0850, "GBPUSD": 1.2650, "USDJPY": 151.20, "AUDUSD": 0.6550}


@dataclass(frozen=True, slots=True)
class Anomalies:
    duplicate: float = 0.01
    crossed: float = 0.002
    spike: float = 0.001
    out_of_order: float = 0.002
    jump_every_s: float = 600.0  # a genuine level shift (news) about this often per symbol


def simulate(
    seed: int,
    symbols: Sequence[str] = ("EURUSD", "USDJPY"),
    brokers: Sequence[str] = ("ICM", "PEP", "FXCM"),
    start_ms: int = 1_700_000_000_000,
    seconds: int = 600,
    ticks_per_s: float = 1.0,
    anomalies: Anomalies | None = None,
) -> list[Tick]:
    """Ticks of every (symbol, broker) in receive order, with anomalies injected."""
    rng = random.Random(seed)
    an = anomalies or Anomalies()
    out: list[Tick] = []
    spreads = {b: 0.8 + 0.4 * i for i, b in enumerate(brokers)}  # pips
    latency = {b: 20 + 30 * i for i, b in enumerate(brokers)}  # ms
    for sym in symbols:
        pip = 0.01 if sym.endswith("JPY") else 0.0001
        mid = BASE_PRICES.get(sym, 1.0)
        step_ms = int(1000 / ticks_per_s)
        t = start_ms
        end = start_ms + seconds * 1000
        last_by_broker: dict[str, Tick] = {}
        while t < end:
            mid += rng.gauss(0.0, 0.3) * pip
            if rng.random() < step_ms / 1000 / an.jump_every_s:
                mid += rng.choice((-1, 1)) * rng.uniform(25, 40) * pip  # news: level shift
            for b in brokers:
                bt = t + rng.randint(0, step_ms - 1)
                half = spreads[b] * pip / 2
                m = mid + rng.gauss(0.0, 0.05) * pip
                bid, ask = round(m - half, 6), round(m + half, 6)
                r = rng.random()
                if r < an.crossed:
                    bid, ask = ask, bid
                elif r < an.crossed + an.spike:
                    bid, ask = round(bid + 60 * pip, 6), round(ask + 60 * pip, 6)
                tick = Tick(b, sym, bt, bid, ask, (bt + latency[b]) * 1000)
                out.append(tick)
                if rng.random() < an.duplicate:
                    out.append(Tick(b, sym, bt, bid, ask, (bt + latency[b] + 5) * 1000))
                prev = last_by_broker.get(b)
                if prev is not None and rng.random() < an.out_of_order:
                    out.append(Tick(b, sym, prev.time_msc - 500, prev.bid, prev.ask,
                                    (bt + latency[b] + 7) * 1000))
                last_by_broker[b] = tick
            t += step_ms
    out.sort(key=lambda k: k.recv_time_us)
    return out


CALENDAR_TITLES = ("Non-Farm Employment Change", "CPI m/m", "Interest Rate Decision",
                   "Retail Sales m/m", "GDP q/q", "Unemployment Rate")
HEADLINES = ("{c} rallies as traders price in a hawkish turn",
             "{c} slides after weak data disappoints",
             "{c} steady ahead of central bank meeting",
             "{c} surges on strong jobs report",
             "{c} falls as growth fears deepen")


def simulate_events(
    seed: int,
    symbols: Sequence[str] = ("EURUSD", "USDJPY"),
    start_ms: int = 1_700_000_000_000,
    seconds: int = 600,
    calendar_every_s: float = 900.0,
    news_every_s: float = 180.0,
) -> list[MarketEvent]:
    """Calendar events (announced an hour ahead, re-published with the actual at release
    time) and headlines for the symbols' currencies, in publication order. Seeded."""
    rng = random.Random(seed)
    currencies = sorted({c for s in symbols for c in (s[:3], s[3:6])})
    out: list[MarketEvent] = []
    end = start_ms + seconds * 1000
    n = 0
    t = start_ms + int(rng.uniform(0.2, 1.0) * calendar_every_s * 1000)
    while t < end:
        cur = rng.choice(currencies)
        title = rng.choice(CALENDAR_TITLES)
        impact = rng.choice(("HIGH", "HIGH", "MEDIUM", "LOW"))
        eid = f"sim-cal-{seed}-{n}"
        forecast = f"{rng.uniform(-1, 3):.1f}%"
        previous = f"{rng.uniform(-1, 3):.1f}%"
        actual = f"{rng.uniform(-1, 3):.1f}%"
        for published, act in ((max(start_ms, t - 3_600_000), None), (t, actual)):
            out.append(MarketEvent(
                event_id=eid, kind="CALENDAR", currency=cur, currencies=[cur], title=title,
                event_time_ms=t, published_ms=published, impact=impact, forecast=forecast,
                previous=previous, actual=act, source="SIMULATOR",
            ))
        n += 1
        t += int(rng.uniform(0.5, 1.5) * calendar_every_s * 1000)
    t = start_ms + int(rng.uniform(0.0, 1.0) * news_every_s * 1000)
    while t < end:
        cur = rng.choice(currencies)
        eid = f"sim-news-{seed}-{n}"
        title = rng.choice(HEADLINES).format(c=cur)
        out.append(MarketEvent(
            event_id=eid, kind="NEWS", currency=cur, currencies=[cur], title=title,
            event_time_ms=t, published_ms=t, sentiment=round(rng.uniform(-1, 1), 3),
            source="SIMULATOR",
        ))
        n += 1
        t += int(rng.uniform(0.5, 1.5) * news_every_s * 1000)
    out.sort(key=lambda e: (e.published_ms, e.event_id))
    return out
