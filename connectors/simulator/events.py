"""Seeded calendar events and headlines for the simulated symbols' currencies.

A calendar entry is announced an hour ahead (no actual) and re-published with the actual at
its release time, as a real calendar feed does; a headline is published once with a
sentiment score. :func:`simulate_events` returns a finite list in publication order;
:class:`EventStream` produces them incrementally for the simulator collector.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from schemas.records import MarketEvent

CALENDAR_TITLES = ("Non-Farm Employment Change", "CPI m/m", "Interest Rate Decision",
                   "Retail Sales m/m", "GDP q/q", "Unemployment Rate")
HEADLINES = ("{c} rallies as traders price in a hawkish turn",
             "{c} slides after weak data disappoints",
             "{c} steady ahead of central bank meeting",
             "{c} surges on strong jobs report",
             "{c} falls as growth fears deepen")
ANNOUNCE_AHEAD_MS = 3_600_000


def currencies_of(symbols: Sequence[str]) -> list[str]:
    return sorted({c for s in symbols for c in (s[:3], s[3:6])})


def calendar_entry(
    rng: random.Random, event_id: str, currencies: Sequence[str], t: int, start_ms: int
) -> list[MarketEvent]:
    """The announcement and the release of one calendar event at ``t``."""
    cur = rng.choice(currencies)
    title = rng.choice(CALENDAR_TITLES)
    impact = rng.choice(("HIGH", "HIGH", "MEDIUM", "LOW"))
    forecast = f"{rng.uniform(-1, 3):.1f}%"
    previous = f"{rng.uniform(-1, 3):.1f}%"
    actual = f"{rng.uniform(-1, 3):.1f}%"
    return [
        MarketEvent(
            event_id=event_id, kind="CALENDAR", currency=cur, currencies=[cur], title=title,
            event_time_ms=t, published_ms=published, impact=impact, forecast=forecast,
            previous=previous, actual=act, source="SIMULATOR",
        )
        for published, act in ((max(start_ms, t - ANNOUNCE_AHEAD_MS), None), (t, actual))
    ]


def headline(
    rng: random.Random, event_id: str, currencies: Sequence[str], t: int
) -> MarketEvent:
    cur = rng.choice(currencies)
    title = rng.choice(HEADLINES).format(c=cur)
    return MarketEvent(
        event_id=event_id, kind="NEWS", currency=cur, currencies=[cur], title=title,
        event_time_ms=t, published_ms=t, sentiment=round(rng.uniform(-1, 1), 3),
        source="SIMULATOR",
    )


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
    currencies = currencies_of(symbols)
    out: list[MarketEvent] = []
    end = start_ms + seconds * 1000
    n = 0
    t = start_ms + int(rng.uniform(0.2, 1.0) * calendar_every_s * 1000)
    while t < end:
        out += calendar_entry(rng, f"sim-cal-{seed}-{n}", currencies, t, start_ms)
        n += 1
        t += int(rng.uniform(0.5, 1.5) * calendar_every_s * 1000)
    t = start_ms + int(rng.uniform(0.0, 1.0) * news_every_s * 1000)
    while t < end:
        out.append(headline(rng, f"sim-news-{seed}-{n}", currencies, t))
        n += 1
        t += int(rng.uniform(0.5, 1.5) * news_every_s * 1000)
    out.sort(key=lambda e: (e.published_ms, e.event_id))
    return out


class EventStream:
    """Calendar events and headlines in publication order, endlessly, as far as asked.

    Calendar and news have their own generators seeded from ``seed``; event ids carry the
    seed and the start time, so two runs of a collector never reuse an id. ``*_every_s`` of
    0 turns that kind off.
    """

    def __init__(
        self,
        seed: int,
        symbols: Sequence[str],
        start_ms: int,
        calendar_every_s: float = 900.0,
        news_every_s: float = 180.0,
    ) -> None:
        self.start_ms = start_ms
        self.currencies = currencies_of(symbols)
        self.calendar_every_s = calendar_every_s
        self.news_every_s = news_every_s
        self._cal_rng = random.Random(f"tickstream-sim-calendar:{seed}")
        self._news_rng = random.Random(f"tickstream-sim-news:{seed}")
        self._id = f"{seed}-{start_ms}"
        self._cal_n = self._news_n = 0
        self._cal_t = start_ms + int(self._cal_rng.uniform(0.2, 1.0) * calendar_every_s * 1000)
        self._news_t = start_ms + int(self._news_rng.uniform(0.0, 1.0) * news_every_s * 1000)
        self._heap: list[tuple[int, str, int, MarketEvent]] = []
        self._seq = 0

    def _push(self, ev: MarketEvent) -> None:
        heapq.heappush(self._heap, (ev.published_ms, ev.event_id, self._seq, ev))
        self._seq += 1

    def until(self, t_ms: int) -> list[MarketEvent]:
        """Every not yet returned event published before ``t_ms``."""
        if self.currencies and self.calendar_every_s > 0:
            every_ms = self.calendar_every_s * 1000
            while max(self.start_ms, self._cal_t - ANNOUNCE_AHEAD_MS) < t_ms:
                eid = f"sim-cal-{self._id}-{self._cal_n}"
                for ev in calendar_entry(self._cal_rng, eid, self.currencies, self._cal_t,
                                         self.start_ms):
                    self._push(ev)
                self._cal_n += 1
                self._cal_t += max(1, int(self._cal_rng.uniform(0.5, 1.5) * every_ms))
        if self.currencies and self.news_every_s > 0:
            every_ms = self.news_every_s * 1000
            while self._news_t < t_ms:
                eid = f"sim-news-{self._id}-{self._news_n}"
                self._push(headline(self._news_rng, eid, self.currencies, self._news_t))
                self._news_n += 1
                self._news_t += max(1, int(self._news_rng.uniform(0.5, 1.5) * every_ms))
        out: list[MarketEvent] = []
        while self._heap and self._heap[0][0] < t_ms:
            out.append(heapq.heappop(self._heap)[3])
        return out

    def next_ms(self) -> int | None:
        """The earliest publication time of an event not yet returned; None when off."""
        times = [self._heap[0][0]] if self._heap else []
        if self.currencies and self.calendar_every_s > 0:
            times.append(max(self.start_ms, self._cal_t - ANNOUNCE_AHEAD_MS))
        if self.currencies and self.news_every_s > 0:
            times.append(self._news_t)
        return min(times) if times else None
