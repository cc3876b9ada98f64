"""Consolidator: best bid/offer, fail-over, tie-breaking, dispersion, quality, snapshots."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from stages.consolidate import Consolidated, Consolidator
from stages.types import Tick


def tk(broker: str, t: int, bid: float, ask: float, recv_us: int = 0) -> Tick:
    return Tick(broker=broker, symbol="EURUSD", time_msc=t, bid=bid, ask=ask, recv_time_us=recv_us)


def test_best_bid_ask_across_three_brokers() -> None:
    c = Consolidator("EURUSD")
    c.update(tk("A", 1_000, 1.10000, 1.10020))
    c.update(tk("B", 1_100, 1.10005, 1.10030))
    out = c.update(tk("C", 1_200, 1.09990, 1.10015))
    assert isinstance(out, Consolidated)
    assert out.best_bid == 1.10005 and out.best_bid_broker == "B"
    assert out.best_ask == 1.10015 and out.best_ask_broker == "C"
    assert out.fresh_brokers == 3
    assert out.mid == pytest.approx((1.10005 + 1.10015) / 2)
    assert out.spread == pytest.approx(0.00010)


def test_crossed_consolidated_spread_is_kept_negative() -> None:
    c = Consolidator("EURUSD")
    c.update(tk("A", 0, 1.1000, 1.1002))
    out = c.update(tk("B", 10, 1.1004, 1.1006))  # B's bid above A's ask
    assert out.best_bid == 1.1004 and out.best_ask == 1.1002
    assert out.spread == pytest.approx(-0.0002)


def test_single_broker_view() -> None:
    c = Consolidator("EURUSD")
    out = c.update(tk("A", 0, 1.1, 1.1002))
    assert out == Consolidated(1.1, "A", 1.1002, "A", 1, 0.0, (1.1 + 1.1002) / 2, 1.1002 - 1.1)


def test_stale_broker_drops_out_and_comes_back() -> None:
    c = Consolidator("EURUSD", staleness_ms=1_000)
    c.update(tk("A", 0, 1.1010, 1.1012))  # A has the best bid
    out = c.update(tk("B", 1_000, 1.1000, 1.1002))  # A exactly 1000 ms old: still fresh
    assert out.fresh_brokers == 2 and out.best_bid_broker == "A"
    out = c.update(tk("B", 1_001, 1.1000, 1.1002))  # A 1001 ms old: stale
    assert out.fresh_brokers == 1
    assert out.best_bid_broker == "B" and out.best_bid == 1.1000
    assert out.best_ask_broker == "B"
    out = c.update(tk("B", 5_000, 1.1001, 1.1003))
    assert out.fresh_brokers == 1 and out.best_bid == 1.1001
    out = c.update(tk("A", 5_100, 1.1020, 1.1022))  # A comes back: fail-back
    assert out.fresh_brokers == 2
    assert out.best_bid_broker == "A" and out.best_bid == 1.1020
    assert out.best_ask_broker == "B" and out.best_ask == 1.1003


def test_broker_with_newer_quote_than_incoming_tick_is_fresh() -> None:
    c = Consolidator("EURUSD", staleness_ms=1_000)
    c.update(tk("A", 10_000, 1.2000, 1.2002))
    out = c.update(tk("B", 3_000, 1.1000, 1.1002))  # B lags far behind A
    assert out.fresh_brokers == 2 and out.best_bid_broker == "A"


def test_tie_broken_by_priority_then_name_deterministically() -> None:
    pri = {"zeta": 1, "alpha": 2}
    for order in (("alpha", "zeta", "mid"), ("zeta", "mid", "alpha"), ("mid", "alpha", "zeta")):
        c = Consolidator("EURUSD", priorities=pri)
        out = None
        for name in order:  # identical histories: same time, same quote, same latency
            out = c.update(tk(name, 1_000, 1.1, 1.1002, recv_us=1_000_000 + 5_000))
        assert out is not None
        assert out.best_bid_broker == "zeta" and out.best_ask_broker == "zeta", order

    for order in (("b", "a", "c"), ("c", "b", "a")):
        c = Consolidator("EURUSD")  # no priorities: name decides
        for name in order:
            out = c.update(tk(name, 1_000, 1.1, 1.1002))
        assert out.best_bid_broker == "a" and out.best_ask_broker == "a"


def test_tie_broken_by_quality_score_before_priority() -> None:
    c = Consolidator("EURUSD", priorities={"A": 1, "B": 2})
    c.note_reject("A")  # A is preferred by priority but has a worse record
    c.update(tk("A", 1_000, 1.1, 1.1002))
    out = c.update(tk("B", 1_000, 1.1, 1.1002))
    assert c.score("A") < c.score("B")
    assert out.best_bid_broker == "B" and out.best_ask_broker == "B"
    # Latency also lowers the score.
    c2 = Consolidator("EURUSD", priorities={"A": 1, "B": 2})
    c2.update(tk("A", 1_000, 1.1, 1.1002, recv_us=1_000 * 1_000 + 400_000))  # 400 ms late
    out = c2.update(tk("B", 1_000, 1.1, 1.1002, recv_us=1_000 * 1_000 + 10_000))  # 10 ms late
    assert out.best_bid_broker == "B"


def test_dispersion_is_population_std_of_fresh_mids() -> None:
    c = Consolidator("EURUSD", staleness_ms=1_000)
    quotes = {"A": (1.10000, 1.10020), "B": (1.10010, 1.10030), "C": (1.10040, 1.10050)}
    out = None
    for i, (name, (b, a)) in enumerate(quotes.items()):
        out = c.update(tk(name, 100 * i, b, a))
    assert out is not None
    mids = [(b + a) / 2 for b, a in quotes.values()]
    assert out.dispersion == pytest.approx(statistics.pstdev(mids), rel=1e-9)
    assert out.dispersion > 0
    # Once A and B are stale only C is fresh: dispersion falls back to 0.
    out = c.update(tk("C", 2_000, 1.1004, 1.1005))
    assert out.fresh_brokers == 1 and out.dispersion == 0.0


def test_quality_metrics_on_hand_made_sequence() -> None:
    c = Consolidator("EURUSD", staleness_ms=1_000)
    # A: ticks at 0, 500, 3000 (one gap of 2500 > 1000), 20 ms latency, spread 2 points.
    for t in (0, 500, 3_000):
        c.update(tk("A", t, 1.1000, 1.1002, recv_us=(t + 20) * 1_000))
    c.note_duplicate("A")
    c.note_reject("A")
    c.note_reject("A")
    # B: ticks at 2000 and 4000 (gap exactly 2000 > 1000), no receive times.
    c.update(tk("B", 2_000, 1.1001, 1.1004))
    c.update(tk("B", 4_000, 1.1001, 1.1004))
    q = c.quality()
    qa, qb = q["A"], q["B"]
    assert qa["ticks"] == 3 and qb["ticks"] == 2
    assert qa["mean_latency_ms"] == pytest.approx(20.0)
    assert qb["mean_latency_ms"] == 0.0
    assert qa["mean_spread"] == pytest.approx(0.0002)
    assert qb["mean_spread"] == pytest.approx(0.0003)
    assert qa["gaps"] == 1 and qb["gaps"] == 1
    assert qa["duplicates"] == 1 and qa["rejects"] == 2 and qb["rejects"] == 0
    # now = 4000. A fresh: 500 + min(2500,1000) + tail min(1000,1000) = 2500 of 4000.
    assert qa["uptime"] == pytest.approx(2_500 / 4_000)
    # B fresh: min(2000,1000) + tail 0 = 1000 of 2000.
    assert qb["uptime"] == pytest.approx(1_000 / 2_000)
    assert qa["ticks_per_s"] == pytest.approx(3 / 4.0)
    assert qb["ticks_per_s"] == pytest.approx(2 / 2.0)
    assert qa["fresh"] == 1.0 and qb["fresh"] == 1.0
    # A: uptime .625 - bad 3/6 - 0.5*20/1000 ; B: uptime .5
    assert qa["score"] == pytest.approx(0.625 - 0.5 - 0.01)
    assert qb["score"] == pytest.approx(0.5)
    assert c.score("A") == qa["score"]
    # A broker known only from rejects has no quote, takes no part and scores low.
    c.note_reject("X")
    assert c.quality()["X"]["ticks"] == 0 and c.quality()["X"]["uptime"] == 0.0
    out = c.update(tk("B", 4_100, 1.1001, 1.1004))
    assert out.fresh_brokers == 1  # A last quoted at 3000: 1100 ms > 1000 -> stale


def _stream(n: int) -> list[Tick]:
    """A deterministic 3-broker stream with ties, stale periods and receive times."""
    out: list[Tick] = []
    t = 0
    for i in range(n):
        name = "ABC"[(i * 7) % 3 if i % 11 else 0]
        t += 50 + (i * 37) % 400 + (4_000 if i % 97 == 0 else 0)
        step = ((i * 13) % 7 - 3) * 0.00001
        bid = round(1.1 + step, 5)
        out.append(tk(name, t, bid, round(bid + 0.0002, 5), recv_us=(t + 5 + i % 30) * 1_000))
    return out


def test_snapshot_restore_equivalence() -> None:
    ticks = _stream(2_000)
    ref = Consolidator("EURUSD", staleness_ms=1_500, priorities={"B": 1, "C": 2})
    expected = []
    for i, tick in enumerate(ticks):
        if i % 50 == 0:
            ref.note_reject(tick.broker)
        expected.append(ref.update(tick))

    half = 1_000
    c = Consolidator("EURUSD", staleness_ms=1_500, priorities={"B": 1, "C": 2})
    got = []
    for i, tick in enumerate(ticks[:half]):
        if i % 50 == 0:
            c.note_reject(tick.broker)
        got.append(c.update(tick))
    blob = json.loads(json.dumps(c.snapshot()))
    c2 = Consolidator.restore(blob)
    assert c2.quality() == c.quality()
    for i, tick in enumerate(ticks[half:], start=half):
        if i % 50 == 0:
            c2.note_reject(tick.broker)
        got.append(c2.update(tick))
    assert got == expected
    assert c2.quality() == ref.quality()
    assert json.dumps(c2.snapshot(), sort_keys=True) == json.dumps(ref.snapshot(), sort_keys=True)
    # The stream really exercised fail-over and multi-broker views.
    assert {e.fresh_brokers for e in expected} >= {1, 2, 3}


def test_restore_can_override_configuration() -> None:
    c = Consolidator("EURUSD", staleness_ms=1_000)
    c.update(tk("A", 0, 1.1, 1.1002))
    c2 = Consolidator.restore(json.loads(json.dumps(c.snapshot())), staleness_ms=10_000)
    out = c2.update(tk("B", 5_000, 1.0, 1.0002))
    assert c2.staleness_ms == 10_000 and out.fresh_brokers == 2


def test_rejects_negative_staleness() -> None:
    with pytest.raises(ValueError):
        Consolidator("EURUSD", staleness_ms=-1)


def test_dispersion_precise_for_tiny_differences() -> None:
    c = Consolidator("EURUSD")
    c.update(tk("A", 0, 1.146050, 1.146070))
    out = c.update(tk("B", 1, 1.146051, 1.146071))
    assert out.dispersion == pytest.approx(0.0000005, rel=1e-6)
    assert not math.isnan(out.dispersion)
