"""BarBuilder: OHLC correctness, closing rules, late ticks, idle flush, snapshots, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.history.parse import read_history
from schemas.records import Bar
from stages.bars import BarBuilder
from stages.consolidate import Consolidator
from stages.types import MINUTE_MS, Tick

T0 = 1_546_383_600_000  # 2019-01-01 23:00:00 UTC, a minute boundary


def add(bb: BarBuilder, t: int, mid: float, spread: float = 0.0002, fresh: int = 2,
        disp: float = 0.0, recv: int = 0) -> Bar | None:
    return bb.add(t, mid, mid - spread / 2, mid + spread / 2, spread, fresh, disp, recv)


def test_ohlc_count_and_means() -> None:
    bb = BarBuilder("EURUSD")
    rows = [  # (offset ms, mid, spread, fresh, dispersion)
        (100, 1.1000, 0.0002, 2, 0.00001),
        (5_000, 1.1010, 0.0004, 3, 0.00003),
        (20_000, 1.0990, 0.0003, 3, 0.00002),
        (59_999, 1.1005, 0.0001, 1, 0.0),
    ]
    for off, mid, sp, fr, disp in rows:
        assert add(bb, T0 + off, mid, sp, fr, disp, recv=(T0 + off) * 1_000) is None
    bar = add(bb, T0 + 60_000, 1.2, recv=123_456_789)
    assert bar is not None
    assert bar.symbol == "EURUSD" and bar.bar_time == T0
    assert (bar.open, bar.high, bar.low, bar.close) == (1.1000, 1.1010, 1.0990, 1.1005)
    assert bar.tick_count == 4
    assert bar.mean_spread == pytest.approx((0.0002 + 0.0004 + 0.0003 + 0.0001) / 4)
    assert bar.dispersion == pytest.approx((0.00001 + 0.00003 + 0.00002) / 4)
    assert bar.fresh_brokers == 1  # value at the last tick
    assert bar.bid_close == pytest.approx(1.1005 - 0.00005)
    assert bar.ask_close == pytest.approx(1.1005 + 0.00005)
    assert bar.trigger_recv_time_us == 123_456_789
    # The closing tick opened the next bar.
    nxt = bb.flush(trigger_recv_time_us=7)
    assert nxt is not None and nxt.bar_time == T0 + MINUTE_MS
    assert nxt.open == nxt.close == 1.2 and nxt.tick_count == 1 and nxt.trigger_recv_time_us == 7


def test_bar_closes_only_when_a_later_minute_arrives() -> None:
    bb = BarBuilder("EURUSD")
    for off in range(0, 60_000, 1_000):
        assert add(bb, T0 + off, 1.1 + off * 1e-9) is None
    assert bb.open_bar_time == T0
    bar = add(bb, T0 + 60_000, 1.2)
    assert bar is not None and bar.tick_count == 60
    assert bb.open_bar_time == T0 + 60_000


def test_empty_minutes_produce_no_bar() -> None:
    bb = BarBuilder("EURUSD")
    add(bb, T0 + 10, 1.1)
    bar = add(bb, T0 + 5 * MINUTE_MS + 10, 1.2)  # four empty minutes in between
    assert bar is not None and bar.bar_time == T0
    last = bb.flush()
    assert last is not None and last.bar_time == T0 + 5 * MINUTE_MS
    assert bb.flush() is None


def test_late_tick_is_folded_not_reopening_a_bar() -> None:
    bb = BarBuilder("EURUSD")
    add(bb, T0 + 1_000, 1.1000)
    closed = add(bb, T0 + 61_000, 1.1010)
    assert closed is not None and closed.bar_time == T0
    assert add(bb, T0 + 59_000, 1.0990) is None  # late: earlier minute, folded
    assert bb.late_ticks == 1
    bar = bb.flush()
    assert bar is not None and bar.bar_time == T0 + MINUTE_MS
    assert bar.tick_count == 2 and bar.low == 1.0990 and bar.close == 1.0990
    # No bar open now: a tick for an already emitted minute is dropped, never re-emitted.
    assert add(bb, T0 + 61_500, 1.1) is None
    assert bb.late_dropped == 1 and bb.open_bar_time is None
    assert bb.flush() is None


def test_idle_flush() -> None:
    bb = BarBuilder("EURUSD")
    assert bb.idle_flush(T0, 0) is None
    add(bb, T0 + 30_000, 1.1)
    assert bb.idle_flush(T0 + 60_000 + 4_999, 5_000) is None
    bar = bb.idle_flush(T0 + 60_000 + 5_000, 5_000, trigger_recv_time_us=99)
    assert bar is not None and bar.bar_time == T0 and bar.trigger_recv_time_us == 99
    assert bb.idle_flush(T0 + 10 * MINUTE_MS, 5_000) is None
    # A later tick starts a new bar normally.
    add(bb, T0 + 2 * MINUTE_MS, 1.2)
    assert bb.open_bar_time == T0 + 2 * MINUTE_MS


def test_snapshot_restore_of_open_bar() -> None:
    seq = [(T0 + i * 7_919, 1.1 + ((i * 31) % 17 - 8) * 1e-5, 0.0001 + (i % 3) * 1e-5, 1 + i % 3,
            (i % 5) * 1e-6, (T0 + i * 7_919) * 1_000 + 30_000) for i in range(200)]
    ref = BarBuilder("EURUSD")
    expected = [b for row in seq if (b := ref.add(row[0], row[1], row[1] - row[2] / 2,
                                                  row[1] + row[2] / 2, *row[2:])) is not None]
    expected.append(ref.flush())

    bb = BarBuilder("EURUSD")
    got: list[Bar | None] = []
    for i, row in enumerate(seq):
        if i in (37, 120):  # mid-bar restarts
            assert bb.open_bar_time is not None
            bb = BarBuilder.restore(json.loads(json.dumps(bb.snapshot())))
        b = bb.add(row[0], row[1], row[1] - row[2] / 2, row[1] + row[2] / 2, *row[2:])
        if b is not None:
            got.append(b)
    got.append(BarBuilder.restore(json.loads(json.dumps(bb.snapshot()))).flush())
    assert got == expected
    assert len(expected) > 20
    empty = BarBuilder.restore(json.loads(json.dumps(BarBuilder("X").snapshot())))
    assert empty.open_bar_time is None and empty.flush() is None


# ---------------------------------------------------------------------- real data

@pytest.mark.data
def test_two_brokers_from_real_ticks(shared_data: Path) -> None:
    path = shared_data / "multi/EURUSD_dukascopy_20190101T23.csv"
    a_ticks = [
        Tick(broker="A", symbol="EURUSD", time_msc=x.time_msc, bid=x.bid, ask=x.ask,
             recv_time_us=(x.time_msc + 20) * 1_000)
        for x in read_history("nautilus", path, broker="A", symbol="EURUSD")
        if isinstance(x, Tick)
    ]
    assert len(a_ticks) == 10_000
    shift, delay = 0.00002, 150  # broker B: +0.2 pip, 150 ms later
    b_ticks = [Tick(broker="B", symbol="EURUSD", time_msc=x.time_msc + delay,
                    bid=x.bid + shift, ask=x.ask + shift, recv_time_us=(x.time_msc + delay + 20)
                    * 1_000) for x in a_ticks]
    merged = sorted(a_ticks + b_ticks, key=lambda x: (x.time_msc, x.broker))

    cons = Consolidator("EURUSD", staleness_ms=5_000)
    builder = BarBuilder("EURUSD")
    bars: list[Bar] = []
    latest: dict[str, Tick] = {}
    both_fresh = 0
    two = 0
    for x in merged:
        latest[x.broker] = x
        c = cons.update(x)
        if len(latest) == 2 and all(x.time_msc - q.time_msc <= 5_000 for q in latest.values()):
            both_fresh += 1
            assert c.fresh_brokers == 2
            for q in latest.values():
                assert c.best_bid >= q.bid
                assert c.best_ask <= q.ask
        two += c.fresh_brokers == 2
        assert c.mid == pytest.approx((c.best_bid + c.best_ask) / 2)
        bar = builder.add(x.time_msc, c.mid, c.best_bid, c.best_ask, c.spread,
                          c.fresh_brokers, c.dispersion, x.recv_time_us)
        if bar is not None:
            assert bar.trigger_recv_time_us == x.recv_time_us
            bars.append(bar)
    last = builder.flush()
    assert last is not None
    bars.append(last)

    assert two > 0.9 * len(merged), two / len(merged)
    assert both_fresh == two
    minutes = {x.time_msc - x.time_msc % 60_000 for x in merged}
    assert [b.bar_time for b in bars] == sorted(minutes)
    assert sum(b.tick_count for b in bars) == len(merged)
    assert builder.late_ticks == 0 and builder.late_dropped == 0
    for b in bars:
        assert b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close)
        assert 1 <= b.fresh_brokers <= 2 and b.dispersion >= 0.0
    q = cons.quality()
    assert q["A"]["ticks"] == q["B"]["ticks"] == 10_000
    assert q["A"]["mean_latency_ms"] == pytest.approx(20.0)
    assert q["A"]["gaps"] == q["B"]["gaps"] > 0  # real feed has quiet spells > 5 s
