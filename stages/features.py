"""The model's scale-free feature set, derived from one bar's :class:`FeatureVector`.

Raw price levels (close, SMA, EMA, Bollinger bands) do not generalise: a model trained at
EURUSD 1.37 learns nothing usable at 1.08, or for another pair. Each feature here is a
return, a distance from an average in units of the ATR or of the band width, a ratio of
spreads, an oscillator or a count, so that it means the same at any price level. Every
value comes from the bar's own :class:`~schemas.records.FeatureVector` (which holds only
what was known at the bar's close), so a feature can never look ahead; a value whose input
is missing (indicator warm-up) or whose denominator is 0 is None.

:data:`FEATURE_SET` names this definition; it is written next to every feature matrix and
model, and a change to :func:`derive` must change it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FEATURE_SET = "scale-free-v1"

FEATURE_NAMES: tuple[str, ...] = (
    "ret_10",             # momentum_10 / close[t-10]: the 10-bar return
    "dist_sma20_atr",     # (close - sma_20) / atr_14
    "dist_ema12_atr",     # (close - ema_12) / atr_14
    "ema_gap_atr",        # (ema_12 - ema_26) / atr_14
    "macd_atr",           # macd / atr_14
    "macd_hist_atr",      # macd_hist / atr_14
    "bb_position",        # (close - bb_lower) / (bb_upper - bb_lower): 0 at the lower band
    "rsi_14",
    "atr_rel",            # atr_14 / close
    "volatility_20",      # std of 20 one-bar log returns (already scale-free)
    "spread_atr",         # spread / atr_14
    "spread_rel",         # spread / close
    "dispersion_spread",  # cross-broker dispersion / spread
    "log_ticks",          # log(1 + tick_count)
    "fresh_brokers",
    "minutes_to_next_event",
    "minutes_since_last_event",
    "news_count_1h",
    "news_sentiment_1h",
)


#: Features that may legitimately be missing on a live bar (no calendar or news known yet);
#: every other feature missing means warm-up or a degenerate bar, and the scorer then makes
#: no decision (no entry on the first bars of a run).
OPTIONAL_FEATURES: frozenset[str] = frozenset(
    {"minutes_to_next_event", "minutes_since_last_event", "news_sentiment_1h"})


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or not math.isfinite(den):
        return None
    value = num / den
    return value if math.isfinite(value) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def derive(fv: Mapping[str, Any]) -> dict[str, float | None]:
    """The :data:`FEATURE_NAMES` of one bar, from its feature vector as a mapping."""
    close = fv["close"]
    atr = fv.get("atr_14")
    mom = fv.get("momentum_10")
    spread = fv.get("spread")
    upper, lower = fv.get("bb_upper"), fv.get("bb_lower")
    ticks = fv.get("tick_count")
    return {
        "ret_10": _ratio(mom, _diff(close, mom)),
        "dist_sma20_atr": _ratio(_diff(close, fv.get("sma_20")), atr),
        "dist_ema12_atr": _ratio(_diff(close, fv.get("ema_12")), atr),
        "ema_gap_atr": _ratio(_diff(fv.get("ema_12"), fv.get("ema_26")), atr),
        "macd_atr": _ratio(fv.get("macd"), atr),
        "macd_hist_atr": _ratio(fv.get("macd_hist"), atr),
        "bb_position": _ratio(_diff(close, lower), _diff(upper, lower)),
        "rsi_14": fv.get("rsi_14"),
        "atr_rel": _ratio(atr, close),
        "volatility_20": fv.get("volatility_20"),
        "spread_atr": _ratio(spread, atr),
        "spread_rel": _ratio(spread, close),
        "dispersion_spread": _ratio(fv.get("dispersion"), spread),
        "log_ticks": None if ticks is None else math.log1p(ticks),
        "fresh_brokers": fv.get("fresh_brokers"),
        "minutes_to_next_event": fv.get("minutes_to_next_event"),
        "minutes_since_last_event": fv.get("minutes_since_last_event"),
        "news_count_1h": fv.get("news_count_1h"),
        "news_sentiment_1h": fv.get("news_sentiment_1h"),
    }
