"""IndicatorState (live, TA-Lib streams) against batch_features (TA-Lib batch): bit-exact.

The contract under test (see ``stages/indicators.py``): both paths compute each bar's
indicators over ``bars[start(i) : i + 1]`` with ``start`` fixed by epochs of the bar index, so
they agree with ``==`` on every bar, also after snapshot -> JSON -> restore at any bar.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import talib

from schemas.records import Bar, FeatureVector
from stages.indicators import (
    DEFAULT_MAX_HISTORY,
    FEATURE_NAMES,
    INDICATOR_NAMES,
    MIN_MAX_HISTORY,
    IndicatorState,
    batch_features,
)

MINUTE = 60_000
DUKASCOPY = "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz"


def minute_bars(path: Path, symbol: str = "EURUSD") -> list[Bar]:
    """Mid OHLC bars per UTC minute from a ``timestamp_utc,bid,ask,...`` gzip CSV."""
    bars: list[Bar] = []
    key = ""
    o = h = lo = c = bid = ask = spread_sum = 0.0
    n = 0

    def flush() -> None:
        t = int(datetime.fromisoformat(key + ":00").replace(tzinfo=UTC).timestamp()) * 1000
        bars.append(Bar(
            symbol=symbol, bar_time=t, open=o, high=h, low=lo, close=c, bid_close=bid,
            ask_close=ask, tick_count=n, mean_spread=spread_sum / n, fresh_brokers=1,
        ))

    with gzip.open(path, "rt", newline="") as f:
        rows = csv.reader(f)
        assert next(rows)[:3] == ["timestamp_utc", "bid", "ask"]
        for ts, b, a, *_ in rows:
            bid, ask = float(b), float(a)
            mid = (bid + ask) * 0.5
            minute = ts[:16]  # "YYYY-MM-DD HH:MM"
            if minute != key:
                if n:
                    flush()
                key, o, h, lo, n, spread_sum = minute, mid, mid, mid, 0, 0.0
            h = max(h, mid)
            lo = min(lo, mid)
            c = mid
            n += 1
            spread_sum += ask - bid
    if n:
        flush()
    return bars


@pytest.fixture(scope="module")
def real_bars(shared_data: Path) -> list[Bar]:
    return minute_bars(shared_data / DUKASCOPY)


def synthetic_bars(n: int, seed: int = 7, symbol: str = "EURUSD") -> list[Bar]:
    """A seeded random walk on a 0.5e-5 grid, with a flat stretch (zero returns) inside."""
    rng = np.random.default_rng(seed)
    closes = 1.14 + np.cumsum(rng.normal(0.0, 1.5e-4, n))
    closes = np.round(closes / 5e-6) * 5e-6
    closes[n // 3: n // 3 + 30] = closes[n // 3]  # RSI/ATR through a motionless market
    out = []
    for i, c in enumerate(closes.tolist()):
        up, dn = abs(rng.normal(0.0, 1e-4)), abs(rng.normal(0.0, 1e-4))
        out.append(Bar(
            symbol=symbol, bar_time=1_546_300_800_000 + i * MINUTE, open=c, high=c + up,
            low=c - dn, close=c, bid_close=c - 5e-6, ask_close=c + 5e-6, tick_count=1 + i % 9,
            mean_spread=1e-5, fresh_brokers=1 + i % 3, dispersion=float(i % 4) * 1e-6,
        ))
    return out


def run_live(bars: list[Bar], state: IndicatorState) -> list[dict[str, float | None]]:
    out = []
    for b in bars:
        f = state.on_bar(b)
        assert f is not None
        out.append(f)
    return out


def assert_identical(
    live: list[dict[str, float | None]], batch: list[dict[str, float | None]],
) -> None:
    """Every feature of every bar equal with ``==`` (None where TA-Lib says NaN)."""
    assert len(live) == len(batch)
    for i, (a, b) in enumerate(zip(live, batch, strict=True)):
        assert list(a) == list(FEATURE_NAMES[:18]), i
        for name in FEATURE_NAMES[:18]:
            x, y = a[name], b[name]
            assert x is None or not math.isnan(x), (i, name)
            assert x == y and type(x) is type(y), (i, name, x, y)


def restored(state: IndicatorState) -> IndicatorState:
    return IndicatorState.restore(json.loads(json.dumps(state.snapshot())))


def test_feature_names_match_the_wire_schema() -> None:
    assert FEATURE_NAMES == (
        "close", "sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
        "bb_upper", "bb_middle", "bb_lower", "atr_14", "volatility_20", "momentum_10",
        "spread", "tick_count", "dispersion", "fresh_brokers", "minutes_to_next_event",
        "minutes_since_last_event", "news_count_1h", "news_sentiment_1h",
    )
    assert set(FEATURE_NAMES) <= set(FeatureVector.FIELDS)
    assert FEATURE_NAMES[1:14] == INDICATOR_NAMES


@pytest.mark.data
def test_real_bars_live_equals_batch_exactly(real_bars: list[Bar]) -> None:
    assert 2_700 <= len(real_bars) <= 2_880
    assert all(b.bar_time % MINUTE == 0 for b in real_bars)
    live = run_live(real_bars, IndicatorState("EURUSD"))
    batch = batch_features(real_bars)
    assert_identical(live, batch)
    # After warm-up every indicator has a value, and the values are the right kind of thing.
    last = live[-1]
    assert all(last[name] is not None for name in INDICATOR_NAMES)
    assert last["close"] == real_bars[-1].close
    assert last["bb_lower"] < last["bb_middle"] < last["bb_upper"]  # type: ignore[operator]
    assert 0.0 <= last["rsi_14"] <= 100.0  # type: ignore[operator]
    assert 0.0 < last["volatility_20"] < 1e-3  # type: ignore[operator]


@pytest.mark.data
def test_real_bars_restart_anywhere_is_bit_identical(real_bars: list[Bar]) -> None:
    """Small max_history: ~45 epochs over the day; restore at boundaries and in between."""
    mh = MIN_MAX_HISTORY
    epoch = mh - mh // 2
    uninterrupted = run_live(real_bars, IndicatorState("EURUSD", mh))
    assert_identical(uninterrupted, batch_features(real_bars, max_history=mh))
    cuts = sorted({0, 1, 20, 33, 34, 35, *range(epoch - 1, len(real_bars), epoch),
                   *range(epoch, len(real_bars), epoch), *range(epoch + 1, len(real_bars), 97)})
    state = IndicatorState("EURUSD", mh)
    fed = 0
    for cut in cuts:
        for b in real_bars[fed:cut]:
            state.on_bar(b)
        fed = cut
        snap = state.snapshot()
        assert len(snap["close"]) <= mh
        again = restored(state)
        assert again.bars_seen == cut
        tail = real_bars[cut: cut + 2 * epoch + 3]
        assert_identical(run_live(tail, again), uninterrupted[cut: cut + len(tail)])


@pytest.mark.data
def test_real_bars_match_plain_full_history_talib(real_bars: list[Bar]) -> None:
    """Documents the contract: exactly the full-history batch while start(i) == 0, and
    within rounding of it afterwards (SMA/BBANDS running sums differ in the last bits; the
    default W = 512 is long enough for the EMA/Wilder seeds to have decayed below that)."""
    mh = DEFAULT_MAX_HISTORY
    feats = batch_features(real_bars, max_history=mh)
    c = np.array([b.close for b in real_bars])
    h = np.array([b.high for b in real_bars])
    lo = np.array([b.low for b in real_bars])
    macd, sig, hist = talib.MACD(c, 12, 26, 9)
    up, mid, dn = talib.BBANDS(c, 20, 2.0, 2.0, 0)  # type: ignore[arg-type]
    plain = {
        "sma_20": talib.SMA(c, 20), "ema_12": talib.EMA(c, 12), "ema_26": talib.EMA(c, 26),
        "rsi_14": talib.RSI(c, 14), "macd": macd, "macd_signal": sig, "macd_hist": hist,
        "bb_upper": up, "bb_middle": mid, "bb_lower": dn, "atr_14": talib.ATR(h, lo, c, 14),
        "momentum_10": talib.MOM(c, 10),
    }
    exact_until = mh  # W = R = mh / 2: start(i) == 0 for i < 2R
    for name, series in plain.items():
        ref = [None if math.isnan(x) else x for x in series.tolist()]
        got = [f[name] for f in feats]
        assert got[:exact_until] == ref[:exact_until], name
        for i in range(exact_until, len(got)):
            g, r = got[i], ref[i]
            assert g is not None and r is not None
            assert abs(g - r) <= 1e-12 * max(1.0, abs(r)), (name, i, g, r)


def test_long_history_5000_bars_and_restart() -> None:
    bars = synthetic_bars(5_000)
    live = run_live(bars, IndicatorState("EURUSD"))
    assert_identical(live, batch_features(bars))
    assert_identical(live, batch_features(bars, max_history=DEFAULT_MAX_HISTORY))
    epoch = DEFAULT_MAX_HISTORY - DEFAULT_MAX_HISTORY // 2
    for cut in (1, 300, epoch - 1, epoch, 2 * epoch, 2 * epoch + 1, 3_333, 4_999):
        state = IndicatorState("EURUSD")
        run_live(bars[:cut], state)
        assert_identical(run_live(bars[cut:], restored(state)), live[cut:])


def test_different_max_history_differs_only_after_the_first_epochs() -> None:
    """The epoch scheme is real: a small W changes late values (so == above is not vacuous)."""
    bars = synthetic_bars(1_500, seed=3)
    small = batch_features(bars, max_history=MIN_MAX_HISTORY)
    big = batch_features(bars, max_history=2_048)
    assert small[:MIN_MAX_HISTORY] == big[:MIN_MAX_HISTORY]
    assert any(a["rsi_14"] != b["rsi_14"] for a, b in zip(small, big, strict=True))


def test_warm_up_is_none_until_each_lookback_is_filled() -> None:
    bars = synthetic_bars(40, seed=11)
    live = run_live(bars, IndicatorState("EURUSD"))
    assert_identical(live, batch_features(bars))
    first_value = {
        "sma_20": 19, "ema_12": 11, "ema_26": 25, "rsi_14": 14, "macd": 33, "macd_signal": 33,
        "macd_hist": 33, "bb_upper": 19, "bb_middle": 19, "bb_lower": 19, "atr_14": 14,
        "volatility_20": 20, "momentum_10": 10,
    }
    for name, k in first_value.items():
        assert all(f[name] is None for f in live[:k]), name
        assert all(f[name] is not None for f in live[k:]), name
    # Bar features are present from the first bar.
    assert live[0]["close"] == bars[0].close and live[0]["spread"] == bars[0].mean_spread
    assert live[0]["tick_count"] == bars[0].tick_count
    assert live[0]["fresh_brokers"] == bars[0].fresh_brokers
    assert live[0]["dispersion"] == bars[0].dispersion


def test_hand_checked_values() -> None:
    """Independent arithmetic (not TA-Lib) for the simplest indicators."""
    bars = synthetic_bars(40, seed=5)
    f = batch_features(bars)
    closes = [b.close for b in bars]
    assert f[10]["momentum_10"] == closes[10] - closes[0]
    assert f[19]["sma_20"] == pytest.approx(sum(closes[:20]) / 20, rel=1e-14)
    rets = np.diff(np.log(np.array(closes[:21])))
    assert f[20]["volatility_20"] == pytest.approx(float(np.std(rets, ddof=0)), rel=1e-12)
    tr = [max(bars[i].high, closes[i - 1]) - min(bars[i].low, closes[i - 1]) for i in range(1, 15)]
    assert f[14]["atr_14"] == pytest.approx(sum(tr) / 14, rel=1e-12)
    mid, sd = f[19]["bb_middle"], float(np.std(closes[:20]))
    assert mid is not None
    assert f[19]["bb_upper"] == pytest.approx(mid + 2 * sd, rel=1e-12)
    assert f[19]["bb_lower"] == pytest.approx(mid - 2 * sd, rel=1e-12)
    m = f[39]
    assert m["macd_hist"] == pytest.approx(m["macd"] - m["macd_signal"], abs=1e-15)  # type: ignore[operator]


def test_too_short_series_gives_only_bar_features() -> None:
    bars = synthetic_bars(9, seed=2)
    for f in (run_live(bars, IndicatorState("EURUSD")), batch_features(bars)):
        assert len(f) == 9
        assert all(row[name] is None for row in f for name in INDICATOR_NAMES)
    assert batch_features([]) == []
    empty = IndicatorState("EURUSD")
    again = restored(empty)
    assert again.bars_seen == 0 and again.last_bar_time is None
    assert_identical(run_live(bars, again), batch_features(bars))


def test_replayed_or_stale_bars_are_ignored() -> None:
    bars = synthetic_bars(200, seed=9)
    ref = run_live(bars, IndicatorState("EURUSD"))
    state = IndicatorState("EURUSD")
    out = []
    for i, b in enumerate(bars):
        f = state.on_bar(b)
        assert f is not None
        out.append(f)
        if i % 17 == 5:  # at-least-once delivery: the same bar, and an older one, again
            assert state.on_bar(b) is None
            assert state.on_bar(bars[i // 2]) is None
    assert_identical(out, ref)
    assert state.bars_seen == 200 and state.last_bar_time == bars[-1].bar_time


def test_bad_bars_are_rejected_without_changing_state() -> None:
    bars = synthetic_bars(60, seed=4)
    ref = run_live(bars, IndicatorState("EURUSD"))
    state = IndicatorState("EURUSD")
    run_live(bars[:30], state)
    b = bars[30]
    for bad in (
        Bar(symbol="EURUSD", bar_time=b.bar_time, open=b.open, high=b.high, low=b.low,
            close=math.nan, bid_close=b.bid_close, ask_close=b.ask_close, tick_count=1,
            mean_spread=1e-5, fresh_brokers=1),
        Bar(symbol="EURUSD", bar_time=b.bar_time, open=b.open, high=math.inf, low=b.low,
            close=b.close, bid_close=b.bid_close, ask_close=b.ask_close, tick_count=1,
            mean_spread=1e-5, fresh_brokers=1),
        Bar(symbol="GBPUSD", bar_time=b.bar_time, open=b.open, high=b.high, low=b.low,
            close=b.close, bid_close=b.bid_close, ask_close=b.ask_close, tick_count=1,
            mean_spread=1e-5, fresh_brokers=1),
    ):
        with pytest.raises(ValueError):
            state.on_bar(bad)
    assert_identical(run_live(bars[30:], state), ref[30:])
    with pytest.raises(ValueError, match="does not increase"):
        batch_features([bars[1], bars[0]])
    with pytest.raises(ValueError):
        IndicatorState("EURUSD", MIN_MAX_HISTORY - 1)
    snap = IndicatorState("EURUSD").snapshot()
    snap["version"] = 99
    with pytest.raises(ValueError, match="version"):
        IndicatorState.restore(snap)


def test_snapshot_is_plain_json_and_bounded() -> None:
    bars = synthetic_bars(700, seed=13)
    state = IndicatorState("EURUSD", MIN_MAX_HISTORY)
    for b in bars:
        state.on_bar(b)
        snap = state.snapshot()
        assert len(snap["close"]) == len(snap["high"]) == len(snap["low"]) <= MIN_MAX_HISTORY
    text = json.dumps(snap)
    assert json.loads(text) == snap
    assert snap["count"] == 700 and snap["symbol"] == "EURUSD"
    assert snap["max_history"] == MIN_MAX_HISTORY
