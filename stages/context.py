"""Economic-calendar and news context per currency, joined to bars *as of* the bar time.

Why: a model must know that US payrolls are due in 5 minutes, and the risk stage must stand
aside around such releases. But a feature may only use what was known when the bar closed,
or a back-test looks into the future. :class:`ContextBook` therefore keeps every *version*
of an event with the time it was published, and every query at time ``T`` sees, per
``(currency, event_id)``, only the latest version with ``published_ms <= T``:

* a later version (e.g. the calendar ``actual`` filled in, a rescheduled ``event_time_ms``)
  replaces the earlier one for queries at or after its ``published_ms``, and changes nothing
  for earlier bars; two versions with the same ``published_ms`` are one version (the later
  ``add`` wins), which makes a replayed event idempotent;
* an event published after ``T`` does not exist for ``T``.

Hence features are a pure function of (events added, symbol, bar time), whatever the order in
which events and bars arrived, as long as a bar is queried no earlier than
``prune_lag_ms`` behind the newest ``published_ms`` seen (see :meth:`ContextBook.prune`).

Features for a pair ``symbol`` (currencies ``symbol[:3]`` and ``symbol[3:6]``) at ``T``:

* ``minutes_to_next_event``: minutes until the nearest HIGH-impact CALENDAR event of either
  currency with ``event_time_ms > T``; None if none is known.
* ``minutes_since_last_event``: minutes since the latest HIGH-impact CALENDAR event with
  ``T - 24 h <= event_time_ms <= T``; None if none (the 24 h cap, :data:`LOOKBACK_MS`, keeps
  the feature independent of how much history happens to be kept).
* ``news_count_1h``: NEWS items of either currency with ``published_ms`` in
  ``(T - 1 h, T]``, a headline filed under both currencies (same ``event_id``) counted once.
* ``news_sentiment_1h``: mean ``sentiment`` of those items that carry one; None if none.

Events are kept per currency, so the state can live in a Faust table keyed by currency
(:meth:`ContextBook.snapshot_currency` / :meth:`ContextBook.restore_currency`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from typing import Any

from schemas.records import MarketEvent

__all__ = [
    "CALENDAR",
    "DEFAULT_PRUNE_LAG_MS",
    "HIGH",
    "LOOKBACK_MS",
    "NEWS",
    "NEWS_WINDOW_MS",
    "ContextBook",
]

CALENDAR = "CALENDAR"
NEWS = "NEWS"
HIGH = "HIGH"
_IMPACTS = frozenset({"NONE", "LOW", "MEDIUM", "HIGH", "HOLIDAY"})

MINUTE_MS = 60_000
#: ``minutes_since_last_event`` looks back at most this far (and prune keeps this much).
LOOKBACK_MS = 24 * 3_600_000
#: The news window of ``news_count_1h`` / ``news_sentiment_1h``.
NEWS_WINDOW_MS = 3_600_000
#: How far a queried bar may lag the newest ``published_ms`` seen before automatic pruning
#: could change its answer (a catching-up bar stream after a restart, for instance).
DEFAULT_PRUNE_LAG_MS = 6 * 3_600_000
#: Automatic pruning runs when the newest published time advanced this much since the last.
_PRUNE_EVERY_MS = 10 * MINUTE_MS
_SNAPSHOT_VERSION = 1

# One version of one event: (published_ms, kind, event_time_ms, impact, sentiment).
_Version = tuple[int, str, int, str, float | None]


class _CurrencyBook:
    """Every kept version of every event of one currency, with two sorted indexes.

    ``cal``: (event_time_ms, published_ms, event_id) of each HIGH-impact CALENDAR version.
    ``news``: (published_ms, event_id) of each NEWS version.
    """

    __slots__ = (
        "cal", "cal_times", "max_published", "news", "news_times", "revision", "versions",
    )

    def __init__(self) -> None:
        self.versions: dict[str, list[_Version]] = {}
        self.cal: list[tuple[int, int, str]] = []
        self.cal_times: list[int] = []
        self.news: list[tuple[int, str]] = []
        self.news_times: list[int] = []
        self.max_published: int | None = None
        # Events added so far: orders two snapshots of the same currency (newer = higher).
        self.revision = 0

    # -- index maintenance -----------------------------------------------------------------

    def _index(self, event_id: str, v: _Version) -> None:
        published, kind, event_time, impact, _ = v
        if kind == CALENDAR and impact == HIGH:
            entry = (event_time, published, event_id)
            j = bisect_left(self.cal, entry)
            self.cal.insert(j, entry)
            self.cal_times.insert(j, event_time)
        elif kind == NEWS:
            item = (published, event_id)
            j = bisect_left(self.news, item)
            self.news.insert(j, item)
            self.news_times.insert(j, published)

    def _unindex(self, event_id: str, v: _Version) -> None:
        published, kind, event_time, impact, _ = v
        if kind == CALENDAR and impact == HIGH:
            entry = (event_time, published, event_id)
            j = bisect_left(self.cal, entry)
            del self.cal[j]
            del self.cal_times[j]
        elif kind == NEWS:
            item = (published, event_id)
            j = bisect_left(self.news, item)
            del self.news[j]
            del self.news_times[j]

    def put(self, event_id: str, v: _Version) -> None:
        """Insert a version; one with the same published time is replaced."""
        versions = self.versions.setdefault(event_id, [])
        published = v[0]
        for j, old in enumerate(versions):
            if old[0] == published:
                self._unindex(event_id, old)
                versions[j] = v
                break
        else:
            insort(versions, v, key=_published)
        self._index(event_id, v)
        if self.max_published is None or published > self.max_published:
            self.max_published = published

    # -- queries ---------------------------------------------------------------------------

    def visible(self, event_id: str, t: int) -> _Version | None:
        """The version of ``event_id`` known at ``t`` (latest published at or before it)."""
        versions = self.versions.get(event_id)
        if versions:
            for v in reversed(versions):
                if v[0] <= t:
                    return v
        return None

    def next_high(self, t: int) -> int | None:
        """Earliest ``event_time_ms > t`` of a HIGH CALENDAR event as known at ``t``."""
        cal = self.cal
        for j in range(bisect_right(self.cal_times, t), len(cal)):
            event_time, published, event_id = cal[j]
            if published <= t:
                v = self.visible(event_id, t)
                if v is not None and v[0] == published:
                    return event_time
        return None

    def last_high(self, t: int) -> int | None:
        """Latest ``event_time_ms`` in ``[t - LOOKBACK_MS, t]`` of a HIGH CALENDAR event."""
        cal = self.cal
        lo = t - LOOKBACK_MS
        for j in range(bisect_right(self.cal_times, t) - 1, -1, -1):
            event_time, published, event_id = cal[j]
            if event_time < lo:
                break
            if published <= t:
                v = self.visible(event_id, t)
                if v is not None and v[0] == published:
                    return event_time
        return None

    def news_in_window(self, t: int, out: dict[str, tuple[int, float | None]]) -> None:
        """Add to ``out`` the visible NEWS items with ``published_ms`` in (t - 1 h, t]."""
        news = self.news
        times = self.news_times
        for j in range(bisect_right(times, t - NEWS_WINDOW_MS), bisect_right(times, t)):
            published, event_id = news[j]
            v = self.visible(event_id, t)
            if v is None or v[0] != published or v[1] != NEWS:
                continue
            seen = out.get(event_id)
            if seen is None or published > seen[0]:
                out[event_id] = (published, v[4])

    def any_high_between(self, t: int, lo: int, hi: int) -> bool:
        """Whether a HIGH CALENDAR event known at ``t`` has ``lo <= event_time_ms <= hi``."""
        cal = self.cal
        for j in range(bisect_left(self.cal_times, lo), bisect_right(self.cal_times, hi)):
            _, published, event_id = cal[j]
            if published <= t:
                v = self.visible(event_id, t)
                if v is not None and v[0] == published:
                    return True
        return False

    # -- pruning and persistence -----------------------------------------------------------

    def prune(self, before_ms: int) -> int:
        """Drop what no query at ``T >= before_ms`` can see; return versions dropped."""
        cal_cutoff = before_ms - LOOKBACK_MS
        news_cutoff = before_ms - NEWS_WINDOW_MS
        dropped = 0
        for event_id in list(self.versions):
            versions = self.versions[event_id]
            # Versions superseded by one published at or before before_ms are invisible.
            keep_from = 0
            for j, v in enumerate(versions):
                if v[0] <= before_ms:
                    keep_from = j
            kept = versions[keep_from:]
            # Whole event: a calendar event all of whose (kept) times are older than the
            # lookback, or a news item whose latest version left the window.
            if all(
                (v[2] < cal_cutoff) if v[1] == CALENDAR else (v[0] <= news_cutoff) for v in kept
            ):
                kept = []
            if len(kept) != len(versions):
                for v in versions:
                    if v not in kept:
                        self._unindex(event_id, v)
                        dropped += 1
                if kept:
                    self.versions[event_id] = kept
                else:
                    del self.versions[event_id]
        return dropped

    def snapshot(self) -> dict[str, Any]:
        return {
            "max_published": self.max_published,
            "revision": self.revision,
            "events": {
                event_id: [list(v) for v in versions]
                for event_id, versions in self.versions.items()
            },
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> _CurrencyBook:
        book = cls()
        for event_id, versions in data["events"].items():
            for published, kind, event_time, impact, sentiment in versions:
                book.put(
                    str(event_id),
                    (
                        int(published), str(kind), int(event_time), str(impact),
                        None if sentiment is None else float(sentiment),
                    ),
                )
        mp = data.get("max_published")
        if mp is not None and (book.max_published is None or int(mp) > book.max_published):
            book.max_published = int(mp)
        book.revision = int(data.get("revision", 0))
        return book


def _published(v: _Version) -> int:
    return v[0]


class ContextBook:
    """As-of join of calendar and news events onto bars, per currency, memory-bounded.

    Promise: :meth:`features` and :meth:`high_impact_within` at time ``T`` depend only on
    events with ``published_ms <= T`` (no look-ahead), and on nothing pruned, provided ``T``
    is at least ``newest published_ms seen - prune_lag_ms``.

    Live, bars trail the event feeds by far less than the default 6 h lag. Offline, either
    replay events and bars interleaved in time order, or pass ``prune_lag_ms=None`` (no
    automatic pruning) before loading a whole history of events and then querying old bars.
    """

    __slots__ = ("_books", "_last_prune", "prune_lag_ms")

    def __init__(self, prune_lag_ms: int | None = DEFAULT_PRUNE_LAG_MS) -> None:
        if prune_lag_ms is not None and prune_lag_ms < 0:
            raise ValueError(f"prune_lag_ms must be >= 0 or None, got {prune_lag_ms}")
        self.prune_lag_ms = prune_lag_ms
        self._books: dict[str, _CurrencyBook] = {}
        self._last_prune: int | None = None

    @property
    def currencies(self) -> list[str]:
        """Currencies that hold at least one event version, sorted."""
        return sorted(c for c, b in self._books.items() if b.versions)

    def __len__(self) -> int:
        """Number of event versions kept (all currencies)."""
        return sum(len(vs) for b in self._books.values() for vs in b.versions.values())

    def max_published(self) -> int | None:
        """Newest ``published_ms`` seen over all currencies (drives automatic pruning)."""
        seen = [b.max_published for b in self._books.values() if b.max_published is not None]
        return max(seen) if seen else None

    def add(self, ev: MarketEvent) -> None:
        """Record one event version for ``ev.currency``; prune automatically now and then
        (every 10 min of ``published_ms``, up to ``newest published - prune_lag_ms``).

        Raises ValueError for an unknown ``kind`` or ``impact`` (nothing is recorded).
        Only ``ev.currency`` is indexed: an item about several currencies arrives once per
        currency (the way ``events.*`` publishes it, keyed by currency).
        """
        kind = ev.kind
        if kind != CALENDAR and kind != NEWS:
            raise ValueError(f"event {ev.event_id}: unknown kind {kind!r}")
        if ev.impact not in _IMPACTS:
            raise ValueError(f"event {ev.event_id}: unknown impact {ev.impact!r}")
        sentiment = ev.sentiment
        if sentiment is not None and not math.isfinite(sentiment):
            sentiment = None
        book = self._books.get(ev.currency)
        if book is None:
            book = self._books[ev.currency] = _CurrencyBook()
        published = int(ev.published_ms)
        book.put(
            ev.event_id,
            (published, kind, int(ev.event_time_ms), ev.impact, sentiment),
        )
        book.revision += 1
        lag = self.prune_lag_ms
        if lag is None:
            return
        newest = self.max_published()
        if newest is not None and (
            self._last_prune is None or newest - self._last_prune >= _PRUNE_EVERY_MS
        ):
            self._last_prune = newest
            self.prune(newest - lag)

    def prune(self, before_ms: int) -> int:
        """Drop every version no query at ``T >= before_ms`` can use; return how many.

        Kept horizon: HIGH calendar events with ``event_time_ms >= before_ms - 24 h`` (and
        all future ones), news published after ``before_ms - 1 h``, and of each event only
        the version visible at ``before_ms`` and later ones.
        """
        dropped = 0
        for cur in list(self._books):
            book = self._books[cur]
            dropped += book.prune(before_ms)
        return dropped

    def features(self, symbol: str, bar_time_ms: int) -> dict[str, float | int | None]:
        """The four context features of ``symbol`` for the bar closing at ``bar_time_ms``."""
        t = bar_time_ms
        nxt: int | None = None
        last: int | None = None
        items: dict[str, tuple[int, float | None]] = {}
        for cur in _pair(symbol):
            book = self._books.get(cur)
            if book is None:
                continue
            e = book.next_high(t)
            if e is not None and (nxt is None or e < nxt):
                nxt = e
            e = book.last_high(t)
            if e is not None and (last is None or e > last):
                last = e
            book.news_in_window(t, items)
        sentiments = [s for _, s in items.values() if s is not None]
        return {
            "minutes_to_next_event": None if nxt is None else (nxt - t) / MINUTE_MS,
            "minutes_since_last_event": None if last is None else (t - last) / MINUTE_MS,
            "news_count_1h": len(items),
            "news_sentiment_1h": (
                math.fsum(sentiments) / len(sentiments) if sentiments else None
            ),
        }

    def high_impact_within(self, symbol: str, time_ms: int, minutes: float) -> bool:
        """Whether a HIGH calendar event of either currency, known at ``time_ms``, is due
        within ``minutes`` before or after it (``|event_time_ms - time_ms| <= minutes``).

        The risk stage's event blackout: no new position shortly before or after a release.
        """
        span = int(minutes * MINUTE_MS)
        for cur in _pair(symbol):
            book = self._books.get(cur)
            if book is not None and book.any_high_between(time_ms, time_ms - span, time_ms + span):
                return True
        return False

    # -- persistence -----------------------------------------------------------------------

    def snapshot_currency(self, currency: str) -> dict[str, Any]:
        """JSON-ready state of one currency (the value of the Faust table keyed by it)."""
        book = self._books.get(currency)
        data = (book or _CurrencyBook()).snapshot()
        data["version"] = _SNAPSHOT_VERSION
        return data

    def revision(self, currency: str) -> int:
        """How many events this currency's book has taken in (its snapshots carry it too)."""
        book = self._books.get(currency)
        return book.revision if book is not None else 0

    def restore_currency(self, currency: str, data: dict[str, Any]) -> None:
        """Replace the state of one currency with :meth:`snapshot_currency` output."""
        if data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported ContextBook snapshot version {data.get('version')}")
        self._books[currency] = _CurrencyBook.restore(data)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state of every currency."""
        return {
            "version": _SNAPSHOT_VERSION,
            "prune_lag_ms": self.prune_lag_ms,
            "last_prune": self._last_prune,
            "currencies": {c: self.snapshot_currency(c) for c in sorted(self._books)},
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> ContextBook:
        """A book equal to the one :meth:`snapshot` was taken from."""
        if data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported ContextBook snapshot version {data.get('version')}")
        lag = data["prune_lag_ms"]
        book = cls(None if lag is None else int(lag))
        last = data.get("last_prune")
        book._last_prune = None if last is None else int(last)
        for cur, cdata in data["currencies"].items():
            book.restore_currency(str(cur), cdata)
        return book


def _pair(symbol: str) -> tuple[str, str]:
    """The currencies of a pair symbol (``EURUSD`` -> ``EUR``, ``USD``)."""
    return symbol[:3], symbol[3:6]
