"""Walk-forward splits: time order, purge and embargo hold for any timeline (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.walkforward import SplitError, final_split, walk_forward

MIN = 60_000


@st.composite
def timelines(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int, str]:
    """Bar times of 1-3 symbols with gaps (weekends, outages), shuffled as a file may be."""
    n_symbols = draw(st.integers(1, 3))
    times: list[int] = []
    for _ in range(n_symbols):
        t = draw(st.integers(0, 100)) * MIN
        for _ in range(draw(st.integers(150, 400))):
            times.append(t)
            t += MIN * (1 if draw(st.integers(0, 40)) else draw(st.integers(2, 300)))
    arr = np.asarray(times, dtype=np.int64)
    perm = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(arr))
    return (arr[perm], draw(st.integers(1, 15)), draw(st.integers(0, 15)),
            draw(st.integers(1, 4)), draw(st.sampled_from(["expanding", "rolling"])))


@settings(max_examples=60, deadline=None)
@given(timelines())
def test_no_training_label_window_reaches_a_later_part(
    case: tuple[np.ndarray, int, int, int, str],
) -> None:
    times, h, e, n_folds, window = case
    try:
        folds = walk_forward(times, n_folds=n_folds, horizon_ms=h * MIN, embargo_ms=e * MIN,
                             window=window, min_rows=5)  # type: ignore[arg-type]
    except SplitError:
        return  # too few rows for this many folds: a clear error, not a bad split
    gap = (h + e) * MIN
    assert [f.number for f in folds] == list(range(1, n_folds + 1))
    previous_test_end = None
    for f in folds:
        fit, valid, test = times[f.fit], times[f.valid], times[f.test]
        # Disjoint parts, in time order.
        assert not (set(f.fit) & set(f.valid)) and not (set(f.valid) & set(f.test))
        assert not (set(f.fit) & set(f.test))
        assert fit.max() < valid.min() and valid.max() < test.min()
        # Purge + embargo: every label window [t, t+H] ends, with the embargo, before the
        # next part begins; so no training row's label overlaps a validation or test row.
        assert (fit + gap < valid.min()).all()
        assert (np.concatenate([fit, valid]) + gap < test.min()).all()
        # Test blocks follow each other; each holds every row of its time span.
        if previous_test_end is not None:
            assert test.min() > previous_test_end
        previous_test_end = test.max()
        span = (times >= test.min()) & (times <= test.max())
        assert span.sum() == len(f.test)
    # The last fold tests on the end of the data.
    assert previous_test_end == times.max()
    if window == "expanding" and len(folds) > 1:
        firsts = [times[np.concatenate([f.fit, f.valid])].min() for f in folds]
        assert len(set(firsts)) == 1  # every fold trains from the start of the data


def test_final_split_purges_before_validation() -> None:
    times = np.arange(1000, dtype=np.int64) * MIN
    fit, valid = final_split(times, horizon_ms=5 * MIN, embargo_ms=5 * MIN)
    assert times[valid].min() == 750 * MIN and len(valid) == 250
    assert times[fit].max() + 10 * MIN < times[valid].min()
    assert len(fit) == 740  # 10 rows purged


def test_too_few_rows_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="fewer folds"):
        walk_forward(np.arange(50, dtype=np.int64) * MIN, n_folds=4, horizon_ms=5 * MIN)
    with pytest.raises(SplitError, match="at least 1"):
        walk_forward(np.arange(50, dtype=np.int64) * MIN, n_folds=0, horizon_ms=MIN)
