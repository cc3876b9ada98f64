"""The scale-free feature set and the labels: no price level leaks in, no future leaks in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.features import FEATURE_NAMES, derive
from stages.labels import make_labels, typical_spread

MIN = 60_000
BASE = {
    "symbol": "EURUSD", "bar_time": 0, "close": 1.3712, "sma_20": 1.3705, "ema_12": 1.3709,
    "ema_26": 1.3702, "rsi_14": 61.0, "macd": 0.00021, "macd_signal": 0.00015,
    "macd_hist": 0.00006, "bb_upper": 1.3731, "bb_middle": 1.3705, "bb_lower": 1.3679,
    "atr_14": 0.00042, "volatility_20": 0.00011, "momentum_10": 0.0009, "spread": 0.00008,
    "tick_count": 41, "dispersion": 0.00002, "fresh_brokers": 2,
    "minutes_to_next_event": 12.0, "minutes_since_last_event": None, "news_count_1h": 1,
    "news_sentiment_1h": 0.2, "trigger_recv_time_us": 0,
}
PRICE_FIELDS = ("close", "sma_20", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
                "bb_upper", "bb_middle", "bb_lower", "atr_14", "momentum_10", "spread",
                "dispersion")


@given(st.floats(min_value=1e-3, max_value=1e3))
def test_features_are_the_same_at_any_price_level(k: float) -> None:
    scaled = {**BASE, **{f: BASE[f] * k for f in PRICE_FIELDS}}
    a, b = derive(BASE), derive(scaled)
    assert list(a) == list(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        if a[name] is None:
            assert b[name] is None, name
        else:
            assert b[name] == pytest.approx(a[name], rel=1e-9, abs=1e-12), name


def test_no_raw_price_level_is_a_feature() -> None:
    assert not {"close", "sma_20", "ema_12", "ema_26", "bb_upper", "bb_middle",
                "bb_lower"} & set(FEATURE_NAMES)


def test_warm_up_and_zero_denominators_give_none_not_a_guess() -> None:
    warm = {**BASE, "sma_20": None, "atr_14": None, "bb_upper": None, "momentum_10": None}
    got = derive(warm)
    for name in ("dist_sma20_atr", "dist_ema12_atr", "ema_gap_atr", "macd_atr", "bb_position",
                 "atr_rel", "spread_atr", "ret_10"):
        assert got[name] is None, name
    assert derive({**BASE, "atr_14": 0.0})["dist_sma20_atr"] is None
    assert derive({**BASE, "spread": 0.0})["dispersion_spread"] is None
    assert all(v is None or math.isfinite(v) for v in derive(BASE).values())


def test_labels_look_exactly_h_minutes_ahead_and_drop_gaps_and_the_end() -> None:
    times = [0, MIN, 2 * MIN, 3 * MIN, 10 * MIN, 11 * MIN]  # a gap after 3 min
    closes = [1.0, 1.1, 0.9, 1.0, 1.2, 1.2]
    labels, future = make_labels(times, closes, 1, 0.05)
    assert labels == [1, -1, 1, None, 0, None]
    assert future == [1.1, 0.9, 1.0, None, 1.2, None]
    labels2, _ = make_labels(times, closes, 2, 0.05)
    assert labels2 == [-1, -1, None, None, None, None]


def test_a_label_uses_no_bar_but_the_one_h_ahead() -> None:
    times = [i * MIN for i in range(10)]
    closes = [1.0 + 0.01 * i for i in range(10)]
    base, _ = make_labels(times, closes, 3, 0.0)
    for t in range(10):
        # change every close except bar t and t+3: bar t's label must not change
        changed = [c if i in (t, t + 3) else c * 5 for i, c in enumerate(closes)]
        assert make_labels(times, changed, 3, 0.0)[0][t] == base[t]


def test_threshold_is_the_typical_spread_and_inputs_are_checked() -> None:
    assert typical_spread([0.0001, 0.0003, 0.0002]) == 0.0002
    assert typical_spread([]) == 0.0
    with pytest.raises(ValueError, match="distinct"):
        make_labels([0, 0], [1.0, 1.0], 1, 0.0)
    with pytest.raises(ValueError, match="horizon"):
        make_labels([0], [1.0], 0, 0.0)
