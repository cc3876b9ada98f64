"""Walk-forward splits in time order, with a purge and an embargo.

The rows of every symbol are laid on one timeline (``bar_time``, epoch ms) and cut into
``n_folds + 1`` consecutive blocks of about equal row counts (a cut never separates two rows
of the same bar time). Fold ``k`` (1-based) tests on block ``k``; it trains on the blocks
before it — all of them (``expanding``) or only the one just before (``rolling``).

Inside the training part, the last ``valid_fraction`` of its rows (by time) are the
*validation* rows: the model is fitted on the rest (*fit* rows), and calibrated and its
entry thresholds chosen on validation. The test rows are never looked at until the fold is
scored.

A row's label looks at the bar ``horizon_ms`` after it, so a row whose label window
``[t, t + horizon]`` reaches into a later part would leak that part's prices. Between each
pair of consecutive parts (fit → validation, training → test) the rows are **purged**: an
earlier-part row is kept only when ``t + horizon_ms + embargo_ms < first time of the later
part``. ``embargo_ms`` (default: one horizon) widens the gap beyond the label window, against
serial correlation of the features themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Fold", "SplitError", "final_split", "walk_forward"]

Window = Literal["expanding", "rolling"]


class SplitError(ValueError):
    """Too few rows or times for the folds asked: one line saying what to change."""


@dataclass(frozen=True, slots=True)
class Fold:
    """Row indices (into the caller's arrays) of one walk-forward fold."""

    number: int
    fit: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    purged: int  # rows dropped by the purges and embargoes of this fold

    def ranges(self, times: np.ndarray) -> dict[str, list[int]]:
        """``[first, last]`` bar time of each part (for reports and metadata)."""
        return {name: [int(times[idx].min()), int(times[idx].max())]
                for name, idx in (("fit", self.fit), ("valid", self.valid), ("test", self.test))}


def _cut_points(times: np.ndarray, n_blocks: int) -> list[int]:
    """Start positions (into the sorted order) of ``n_blocks`` blocks of about equal size,
    moved forward so that no bar time is split between two blocks."""
    n = len(times)
    cuts = [0]
    for b in range(1, n_blocks):
        pos = round(n * b / n_blocks)
        while 0 < pos < n and times[pos] == times[pos - 1]:
            pos += 1
        if pos <= cuts[-1] or pos >= n:
            raise SplitError(
                f"cannot cut {n} rows into {n_blocks} time blocks: too few distinct bar "
                "times (use fewer folds or more data)")
        cuts.append(pos)
    cuts.append(n)
    return cuts


def _purge_before(idx: np.ndarray, times: np.ndarray, later_start: int, gap_ms: int) -> np.ndarray:
    kept: np.ndarray = idx[times[idx] + gap_ms < later_start]
    return kept


def walk_forward(
    times: np.ndarray, *, n_folds: int = 4, horizon_ms: int, embargo_ms: int | None = None,
    valid_fraction: float = 0.25, window: Window = "expanding", min_rows: int = 20,
) -> list[Fold]:
    """The folds over rows whose bar times are ``times`` (any order; indices refer to it)."""
    if n_folds < 1:
        raise SplitError(f"--folds must be at least 1, got {n_folds}")
    if not 0.0 < valid_fraction < 1.0:
        raise SplitError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if horizon_ms < 0 or (embargo_ms is not None and embargo_ms < 0):
        raise SplitError("horizon and embargo must not be negative")
    if window not in ("expanding", "rolling"):
        raise SplitError(f"window must be expanding or rolling, got {window!r}")
    gap = horizon_ms + (horizon_ms if embargo_ms is None else embargo_ms)
    times = np.asarray(times, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    st = times[order]
    cuts = _cut_points(st, n_folds + 1)
    folds: list[Fold] = []
    for k in range(1, n_folds + 1):
        first_block = 0 if window == "expanding" else k - 1
        train = order[cuts[first_block]:cuts[k]]
        test = order[cuts[k]:cuts[k + 1]]
        test_start = int(st[cuts[k]])
        kept = _purge_before(train, times, test_start, gap)
        # Validation: the last valid_fraction of the kept training rows, by time, again
        # without splitting a bar time; the fit rows before it are purged the same way.
        kt = np.sort(times[kept], kind="stable")
        if len(kt) < 2:
            raise SplitError(f"fold {k}: no training rows left after the purge "
                             "(use fewer folds, a shorter horizon or more data)")
        vpos = round(len(kt) * (1.0 - valid_fraction))
        vpos = min(max(vpos, 1), len(kt) - 1)
        valid_start = int(kt[vpos])
        valid = kept[times[kept] >= valid_start]
        fit = _purge_before(kept[times[kept] < valid_start], times, valid_start, gap)
        for name, part in (("fit", fit), ("validation", valid), ("test", test)):
            if len(part) < min_rows:
                raise SplitError(
                    f"fold {k}: {len(part)} {name} rows, fewer than {min_rows} (use fewer "
                    "folds, a shorter horizon or more data)")
        purged = len(train) - len(fit) - len(valid)
        folds.append(Fold(k, np.sort(fit), np.sort(valid), np.sort(test), purged))
    return folds


def final_split(
    times: np.ndarray, *, horizon_ms: int, embargo_ms: int | None = None,
    valid_fraction: float = 0.25, min_rows: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) over all rows, for the model that is saved: the same purge."""
    times = np.asarray(times, dtype=np.int64)
    gap = horizon_ms + (horizon_ms if embargo_ms is None else embargo_ms)
    st = np.sort(times, kind="stable")
    vpos = min(max(round(len(st) * (1.0 - valid_fraction)), 1), max(len(st) - 1, 1))
    valid_start = int(st[vpos]) if len(st) > 1 else int(st[0]) + 1
    idx = np.arange(len(times))
    valid = idx[times >= valid_start]
    fit = _purge_before(idx[times < valid_start], times, valid_start, gap)
    if len(fit) < min_rows or len(valid) < min_rows:
        raise SplitError(f"{len(fit)} fit and {len(valid)} validation rows for the final "
                         f"model, fewer than {min_rows}: more data is needed")
    return fit, valid
