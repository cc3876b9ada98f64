"""ContextBook: as-of join of calendar and news events, no look-ahead, bounded, restartable."""

from __future__ import annotations

import json
import random

import pytest

from schemas.records import MarketEvent
from stages.context import LOOKBACK_MS, NEWS_WINDOW_MS, ContextBook

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_549_238_400_000  # 2019-02-04 00:00 UTC


def cal(
    event_id: str, currency: str, at: int, *, published: int | None = None,
    impact: str = "HIGH", actual: str | None = None,
) -> MarketEvent:
    return MarketEvent(
        event_id=event_id, kind="CALENDAR", currency=currency, currencies=[currency],
        title=event_id, event_time_ms=at, published_ms=at - 7 * DAY if published is None
        else published, impact=impact, actual=actual, source="test",
    )


def news(
    event_id: str, currency: str, published: int, sentiment: float | None = None,
) -> MarketEvent:
    return MarketEvent(
        event_id=event_id, kind="NEWS", currency=currency, currencies=[currency],
        title=event_id, event_time_ms=published, published_ms=published,
        sentiment=sentiment, source="test",
    )


def feats(book: ContextBook, t: int, symbol: str = "EURUSD") -> dict[str, float | int | None]:
    return book.features(symbol, t)


def test_next_and_last_high_impact_over_both_currencies() -> None:
    book = ContextBook()
    book.add(cal("ecb", "EUR", T0 + 10 * HOUR))
    book.add(cal("nfp", "USD", T0 + 9 * HOUR + 30 * MIN))
    book.add(cal("ism", "USD", T0 + 9 * HOUR + 45 * MIN, impact="MEDIUM"))
    book.add(cal("boj", "JPY", T0 + 9 * HOUR + 50 * MIN))
    book.add(cal("hol", "EUR", T0 + 9 * HOUR + 55 * MIN, impact="HOLIDAY"))
    t = T0 + 9 * HOUR + 40 * MIN
    assert feats(book, t) == {
        "minutes_to_next_event": 20.0, "minutes_since_last_event": 10.0,
        "news_count_1h": 0, "news_sentiment_1h": None,
    }
    # The JPY release is seen by USDJPY, not by EURUSD.
    assert feats(book, t, "USDJPY")["minutes_to_next_event"] == 10.0
    assert feats(book, t, "USDJPY")["minutes_since_last_event"] == 10.0
    assert feats(book, t, "GBPCHF")["minutes_to_next_event"] is None
    # An event at exactly the bar time is the last one (0 min ago), not the next one.
    at = T0 + 9 * HOUR + 30 * MIN
    assert feats(book, at)["minutes_since_last_event"] == 0.0
    assert feats(book, at)["minutes_to_next_event"] == 30.0
    # Before everything / after everything.
    assert feats(book, T0)["minutes_since_last_event"] is None
    assert feats(book, T0)["minutes_to_next_event"] == 9 * 60 + 30
    late = T0 + 11 * HOUR
    assert feats(book, late)["minutes_to_next_event"] is None
    assert feats(book, late)["minutes_since_last_event"] == 60.0
    # The since-last lookback is capped at 24 h.
    assert feats(book, T0 + 10 * HOUR + LOOKBACK_MS)["minutes_since_last_event"] == 24 * 60
    assert feats(book, T0 + 10 * HOUR + LOOKBACK_MS + 1)["minutes_since_last_event"] is None


def test_unpublished_events_are_invisible() -> None:
    book = ContextBook()
    release = T0 + 12 * HOUR
    book.add(cal("cpi", "USD", release, published=T0 + 8 * HOUR))
    assert feats(book, T0 + 8 * HOUR - 1)["minutes_to_next_event"] is None
    assert feats(book, T0 + 8 * HOUR)["minutes_to_next_event"] == 4 * 60
    assert book.high_impact_within("EURUSD", release - 1, 15)
    assert not book.high_impact_within("EURUSD", T0 + 8 * HOUR - 1, 5 * 60)
    assert book.high_impact_within("EURUSD", T0 + 8 * HOUR, 4 * 60)


def test_high_impact_within_window_boundaries() -> None:
    book = ContextBook()
    release = T0 + 14 * HOUR + 30 * MIN
    book.add(cal("nfp", "USD", release))
    book.add(cal("ifo", "EUR", T0 + 3 * HOUR, impact="MEDIUM"))
    assert book.high_impact_within("EURUSD", release - 15 * MIN, 15)
    assert not book.high_impact_within("EURUSD", release - 15 * MIN - 1, 15)
    assert book.high_impact_within("EURUSD", release + 15 * MIN, 15)
    assert not book.high_impact_within("EURUSD", release + 15 * MIN + 1, 15)
    assert book.high_impact_within("USDJPY", release, 0)
    assert not book.high_impact_within("EURGBP", release, 15)
    assert not book.high_impact_within("EURUSD", T0 + 3 * HOUR, 15)  # only MEDIUM


def test_news_window_boundaries_dedupe_and_sentiment() -> None:
    book = ContextBook()
    t = T0 + 5 * HOUR
    book.add(news("old", "EUR", t - NEWS_WINDOW_MS, 1.0))  # excluded: window is (t-1h, t]
    book.add(news("edge", "EUR", t - NEWS_WINDOW_MS + 1, 0.5))
    book.add(news("both", "EUR", t - 10 * MIN, -0.25))
    book.add(news("both", "USD", t - 10 * MIN, -0.25))  # one headline, two currencies
    book.add(news("nosent", "USD", t, None))  # counted, no sentiment
    book.add(news("future", "USD", t + 1, 1.0))  # not yet published
    book.add(news("yen", "JPY", t - MIN, 1.0))  # another pair
    f = feats(book, t)
    assert f["news_count_1h"] == 3
    assert f["news_sentiment_1h"] == pytest.approx((0.5 - 0.25) / 2)
    assert feats(book, t, "USDJPY")["news_count_1h"] == 3  # both, nosent, yen
    # One ms later "edge" leaves the window as "future" enters it.
    f = feats(book, t + 1)
    assert f["news_count_1h"] == 3
    assert f["news_sentiment_1h"] == pytest.approx((-0.25 + 1.0) / 2)
    only_none = ContextBook()
    only_none.add(news("n", "USD", t, None))
    assert feats(only_none, t) == {
        "minutes_to_next_event": None, "minutes_since_last_event": None,
        "news_count_1h": 1, "news_sentiment_1h": None,
    }


def test_a_new_version_replaces_the_old_one_from_its_publication_on() -> None:
    book = ContextBook()
    release = T0 + 13 * HOUR + 30 * MIN
    book.add(cal("nfp", "USD", release, published=T0))
    before = feats(book, release - HOUR)
    # The actual arrives at the release: same event, not a second one.
    book.add(cal("nfp", "USD", release, published=release, actual="+304K"))
    assert len(book) == 2  # two versions of one event
    assert feats(book, release - HOUR) == before
    assert feats(book, release + MIN)["minutes_since_last_event"] == 1.0
    # Rescheduled (published at T0 + 2h): bars before the notice see the old time.
    book.add(cal("nfp", "USD", release + HOUR, published=T0 + 2 * HOUR))
    assert feats(book, T0 + HOUR)["minutes_to_next_event"] == (release - T0 - HOUR) / MIN
    assert feats(book, T0 + 3 * HOUR)["minutes_to_next_event"] == (release - T0) / MIN - 120
    # Downgraded: no longer a HIGH event once the downgrade is published.
    book.add(cal("nfp", "USD", release, published=release + 2 * MIN, impact="LOW"))
    assert feats(book, release + MIN)["minutes_since_last_event"] == 1.0
    assert feats(book, release + 3 * MIN)["minutes_since_last_event"] is None
    # Same published time again: replaced, not added (idempotent replay).
    n = len(book)
    book.add(cal("nfp", "USD", release, published=release + 2 * MIN, impact="LOW"))
    assert len(book) == n
    # A revised sentiment of a news item replaces it, counted once.
    book.add(news("h1", "EUR", T0 + 20 * HOUR, 0.2))
    book.add(news("h1", "EUR", T0 + 20 * HOUR + 5 * MIN, 0.8))
    assert feats(book, T0 + 20 * HOUR + MIN)["news_sentiment_1h"] == 0.2
    f = feats(book, T0 + 20 * HOUR + 6 * MIN)
    assert f["news_count_1h"] == 1 and f["news_sentiment_1h"] == 0.8


def random_events(rng: random.Random, n: int) -> list[MarketEvent]:
    evs = []
    for _ in range(n):
        cur = rng.choice(["EUR", "USD", "JPY"])
        eid = f"e{rng.randrange(40)}"
        pub = T0 + rng.randrange(2 * DAY)
        if rng.random() < 0.5:
            at = pub + rng.randrange(-HOUR, DAY)
            impact = rng.choice(["HIGH", "HIGH", "MEDIUM", "LOW"])
            evs.append(cal(eid, cur, at, published=pub, impact=impact))
        else:
            evs.append(news("n" + eid, cur, pub, rng.choice([None, -1.0, 0.25, 0.5])))
    return evs


def test_look_ahead_is_impossible() -> None:
    """For every bar, the answer equals the one from only the events published by then,
    whatever arrived later and in whatever order."""
    rng = random.Random(20190204)
    for _ in range(20):
        evs = random_events(rng, 120)
        full = ContextBook(prune_lag_ms=3 * DAY)  # every t below is within the lag
        for ev in evs:
            full.add(ev)
        for t in (T0 + rng.randrange(2 * DAY) for _ in range(40)):
            known = ContextBook()
            for ev in evs:
                if ev.published_ms <= t:
                    known.add(ev)
            for sym in ("EURUSD", "USDJPY", "EURJPY"):
                assert full.features(sym, t) == known.features(sym, t), (sym, t)
                for m in (5, 15, 60):
                    assert full.high_impact_within(sym, t, m) == known.high_impact_within(
                        sym, t, m
                    )


def test_arrival_order_does_not_matter() -> None:
    rng = random.Random(7)
    evs = random_events(rng, 300)
    a, b = ContextBook(prune_lag_ms=3 * DAY), ContextBook(prune_lag_ms=3 * DAY)
    for ev in evs:
        a.add(ev)
    shuffled = evs[:]
    rng.shuffle(shuffled)
    # Equal published times are replace-by-later, so keep their relative order.
    shuffled.sort(key=lambda e: (e.currency, e.event_id, e.published_ms))
    for ev in shuffled:
        b.add(ev)
    for t in range(T0, T0 + 2 * DAY, 17 * MIN):
        assert a.features("EURUSD", t) == b.features("EURUSD", t)


def test_prune_drops_only_what_cannot_matter() -> None:
    rng = random.Random(11)
    evs = random_events(rng, 400)
    book = ContextBook(prune_lag_ms=None)  # no automatic pruning in this test
    for ev in evs:
        book.add(ev)
    before_ms = T0 + DAY + 6 * HOUR
    times = list(range(before_ms, T0 + 3 * DAY, 13 * MIN))
    ref = [(book.features("EURUSD", t), book.high_impact_within("USDJPY", t, 15)) for t in times]
    n = len(book)
    dropped = book.prune(before_ms)
    assert dropped > 0 and len(book) == n - dropped
    got = [(book.features("EURUSD", t), book.high_impact_within("USDJPY", t, 15)) for t in times]
    assert got == ref


def test_prune_horizon_boundaries() -> None:
    book = ContextBook(prune_lag_ms=None)
    release = T0 + 2 * HOUR
    book.add(cal("gdp", "EUR", release, published=T0))
    book.add(cal("gdp", "EUR", release, published=release, actual="0.2%"))
    book.add(news("h", "USD", release, -0.5))
    assert len(book) == 3
    assert book.prune(release) == 1  # the superseded calendar version only
    assert book.prune(release + NEWS_WINDOW_MS - 1) == 0
    t = release + NEWS_WINDOW_MS - 1
    assert feats(book, t)["news_count_1h"] == 1
    assert book.prune(release + NEWS_WINDOW_MS) == 1  # out of every later window
    t = release + LOOKBACK_MS
    assert book.prune(t) == 0
    assert feats(book, t)["minutes_since_last_event"] == 24 * 60
    assert book.prune(t + 1) == 1
    assert len(book) == 0 and book.currencies == []


def test_memory_is_bounded_by_automatic_pruning() -> None:
    book = ContextBook(prune_lag_ms=HOUR)
    for i in range(20_000):  # a headline per minute for two weeks, plus hourly releases
        t = T0 + i * MIN
        book.add(news(f"n{i}", "USD", t, 0.1))
        if i % 60 == 0:
            book.add(cal(f"c{i}", "EUR", t + 3 * HOUR, published=t))
    # News: lag 1 h + window 1 h + prune step 10 min; calendar: 24 h back + 3 h ahead + lag.
    assert len(book) <= 140 + 30
    unbounded = ContextBook(prune_lag_ms=None)
    for i in range(3_000):
        unbounded.add(news(f"n{i}", "USD", T0 + i * MIN, 0.1))
    assert len(unbounded) == 3_000
    assert ContextBook.restore(unbounded.snapshot()).prune_lag_ms is None
    last = T0 + 19_999 * MIN
    f = book.features("EURUSD", last)
    assert f["news_count_1h"] == 60
    assert f["minutes_since_last_event"] is not None
    assert f["minutes_to_next_event"] is not None


def test_snapshot_restore_whole_and_per_currency() -> None:
    rng = random.Random(3)
    evs = random_events(rng, 300)
    book = ContextBook(prune_lag_ms=3 * DAY)
    for ev in evs[:200]:
        book.add(ev)
    whole = ContextBook.restore(json.loads(json.dumps(book.snapshot())))
    per_cur = ContextBook(prune_lag_ms=3 * DAY)
    for cur in book.currencies:
        snap = json.loads(json.dumps(book.snapshot_currency(cur)))
        per_cur.restore_currency(cur, snap)
    assert whole.currencies == per_cur.currencies == book.currencies == ["EUR", "JPY", "USD"]
    for ev in evs[200:]:  # identical behaviour after further events
        for b in (book, whole, per_cur):
            b.add(ev)
    for t in range(T0, T0 + 3 * DAY, 29 * MIN):
        for sym in ("EURUSD", "USDJPY"):
            ref = book.features(sym, t)
            assert whole.features(sym, t) == ref
            assert per_cur.features(sym, t) == ref
            assert whole.high_impact_within(sym, t, 30) == book.high_impact_within(sym, t, 30)
    assert len(whole) == len(book) == len(per_cur)
    assert ContextBook().snapshot_currency("CHF")["events"] == {}
    bad = book.snapshot()
    bad["version"] = 0
    with pytest.raises(ValueError, match="version"):
        ContextBook.restore(bad)


def test_rejects_unknown_kind_or_impact() -> None:
    book = ContextBook()
    ev = news("x", "USD", T0)
    ev.kind = "RUMOUR"
    with pytest.raises(ValueError, match="kind"):
        book.add(ev)
    ev2 = cal("y", "USD", T0, impact="EXTREME")
    with pytest.raises(ValueError, match="impact"):
        book.add(ev2)
    assert len(book) == 0
