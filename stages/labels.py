"""Training labels: did the consolidated mid move by more than a threshold within H minutes?

For the bar closing at ``bar_time`` t (its close is the consolidated mid at the end of the
minute), the label looks at the close of the bar at exactly ``t + H`` minutes of the same
symbol:

* ``move = close[t + H] - close[t]``;
* label ``1`` when ``move > threshold``, ``-1`` when ``move < -threshold``, else ``0``.

The threshold defaults to the symbol's typical (median) spread over the rows given, so a
non-zero label is a move worth paying the spread for. A row gets no label (None: dropped
from training) when there is no bar at ``t + H``: the horizon runs past the data, or into a
gap (a weekend, a feed outage, a minute without ticks). Labels are computed per symbol, so
one can never span two symbols, and they use only bars after t (t+H), never t's own future
features.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

MINUTE_MS = 60_000

LABEL_DEFINITION = ("sign(close[t+H] - close[t]) beyond +-threshold (1 up, -1 down, 0 within); "
                    "no label without a bar at exactly t+H")


def typical_spread(spreads: Sequence[float]) -> float:
    """The median of ``spreads`` (0 when there are none)."""
    finite = [s for s in spreads if s == s]
    return float(statistics.median(finite)) if finite else 0.0


def make_labels(
    bar_times: Sequence[int], closes: Sequence[float], horizon_min: int, threshold: float,
) -> tuple[list[int | None], list[float | None]]:
    """Per row of ONE symbol (bar times strictly increasing): the label and the future
    close it was computed from (None where the row has no label)."""
    if horizon_min < 1:
        raise ValueError(f"horizon_min must be at least 1, got {horizon_min}")
    if threshold < 0:
        raise ValueError(f"threshold must not be negative, got {threshold}")
    index = {t: i for i, t in enumerate(bar_times)}
    if len(index) != len(bar_times):
        raise ValueError("bar times of one symbol must be distinct")
    labels: list[int | None] = []
    future: list[float | None] = []
    step = horizon_min * MINUTE_MS
    for t, close in zip(bar_times, closes, strict=True):
        j = index.get(t + step)
        if j is None:
            labels.append(None)
            future.append(None)
            continue
        move = closes[j] - close
        labels.append(1 if move > threshold else -1 if move < -threshold else 0)
        future.append(closes[j])
    return labels, future
