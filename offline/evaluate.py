"""Out-of-sample scoring of a direction model: metrics, baselines, intervals, calibration.

Everything here is a pure function of arrays, so the walk-forward trainer
(:mod:`offline.train`) and its tests share it.

* :func:`metrics`: accuracy (at 0.5), log loss, ROC AUC and Brier score.
* Baselines, each fitted on the *training* rows only: ``base_rate`` (the training share of
  up-moves as a constant probability: the log-loss and Brier baseline; its accuracy is the
  majority class's), and ``previous_bar`` (P(up) given the direction of the previous bar's
  close, estimated on training: the persistence baseline).
* :func:`block_bootstrap`: a 95% interval for a statistic of the test rows, resampling
  blocks of consecutive rows (serially correlated rows make the plain bootstrap too narrow).
* :class:`Platt`: the calibration map fitted on validation rows (two numbers, applied by the
  live scorer with the same formula).
* :func:`choose_threshold`: the entry threshold that maximised the mean net move per trade
  on validation rows (never on test rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = [
    "THRESHOLD_GRID",
    "Platt",
    "auc",
    "block_bootstrap",
    "calibration_table",
    "choose_threshold",
    "log_loss",
    "metrics",
    "previous_bar_baseline",
    "threshold_trades",
]

EPS = 1e-15
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.52 + 0.02 * i, 2) for i in range(15))


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p.astype(np.float64), EPS, 1.0 - EPS)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = _clip(p)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC; None when the rows hold one class only (undefined)."""
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p))


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Accuracy (p > 0.5 means up), log loss, AUC and Brier score of probabilities ``p``."""
    y = y.astype(np.float64)
    p = p.astype(np.float64)
    return {
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "logloss": log_loss(y, p),
        "auc": auc(y, p),
        "brier": float(np.mean((p - y) ** 2)),
    }


def previous_bar_baseline(
    y_train: np.ndarray, prev_train: np.ndarray, prev_test: np.ndarray,
) -> np.ndarray:
    """P(up) for test rows from the previous bar's direction (+1 up, -1 down, 0 flat or
    unknown), with each direction's up-share estimated on the training rows (Laplace
    smoothed; an unknown direction gets the training base rate)."""
    base = (y_train.sum() + 1.0) / (len(y_train) + 2.0)
    out = np.full(len(prev_test), base, dtype=np.float64)
    for d in (-1, 1):
        m = prev_train == d
        rate = (y_train[m].sum() + 1.0) / (m.sum() + 2.0)
        out[prev_test == d] = rate
    return out


def block_bootstrap(
    stat: Callable[[np.ndarray], float | None], n: int, *, block: int = 30, reps: int = 400,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95% percentile interval of ``stat(indices)`` over moving-block resamples of
    ``range(n)`` (rows in time order). None when fewer than two resamples are defined."""
    if n < 2:
        return None
    block = max(1, min(block, n))
    rng = np.random.default_rng(seed)
    n_blocks = -(-n // block)
    values: list[float] = []
    for _ in range(reps):
        starts = rng.integers(0, n - block + 1, size=n_blocks)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        v = stat(idx)
        if v is not None and v == v:
            values.append(v)
    if len(values) < 2:
        return None
    lo, hi = np.percentile(np.asarray(values), [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True, slots=True)
class Platt:
    """Platt scaling: ``p = 1 / (1 + exp(-(a * logit(p_raw) + b)))``, fitted on validation
    rows by logistic regression on the raw score's logit. Two parameters: it cannot overfit
    a few hundred validation rows the way an isotonic step function does (measured on the
    Lean days: isotonic made the test log loss worse than the base rate's by 0.05), and with
    no signal it shrinks every score toward the base rate."""

    a: float
    b: float

    @classmethod
    def fit(cls, p_raw: np.ndarray, y: np.ndarray) -> Platt:
        from sklearn.linear_model import LogisticRegression

        z = _logit(p_raw)[:, None]
        if len(np.unique(y)) < 2:
            return cls(0.0, float(_logit(np.asarray([np.clip(y.mean(), 1e-3, 1 - 1e-3)]))[0]))
        lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
        lr.fit(z, y.astype(np.int64))
        return cls(float(lr.coef_[0][0]), float(lr.intercept_[0]))

    def apply(self, p_raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * _logit(p_raw) + self.b)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "a": self.a, "b": self.b}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 1e-6, 1.0 - 1e-6)
    return np.log(q / (1.0 - q))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability table (equal-width bins of p): mean p, observed up-share and count per
    bin, and the expected calibration error (count-weighted |mean p - observed|)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        mp, obs = float(p[m].mean()), float(y[m].mean())
        rows.append({"bin": [float(edges[b]), float(edges[b + 1])], "mean_p": mp,
                     "observed": obs, "rows": int(m.sum())})
        ece += m.sum() / len(p) * abs(mp - obs)
    return {"bins": rows, "ece": float(ece)}


def threshold_trades(
    p: np.ndarray, move: np.ndarray, cost: np.ndarray, threshold: float,
) -> np.ndarray:
    """Net move (price units) of each row traded at ``threshold``: long when p >= it, short
    when p <= 1 - it, the move over the horizon signed by the side, minus the cost."""
    long = p >= threshold
    short = p <= 1.0 - threshold
    side = long.astype(np.float64) - short.astype(np.float64)
    traded = side != 0
    net: np.ndarray = side[traded] * move[traded] - cost[traded]
    return net


def choose_threshold(
    p: np.ndarray, move_pips: np.ndarray, cost_pips: np.ndarray, *, min_trades: int = 20,
) -> dict[str, Any]:
    """The grid threshold with the best mean net pips per trade on these (validation) rows,
    among those with at least ``min_trades`` trades; ``threshold`` None when none is
    positive (no threshold is worth trading)."""
    table = []
    best: tuple[float, float] | None = None
    for thr in THRESHOLD_GRID:
        net = threshold_trades(p, move_pips, cost_pips, thr)
        mean = float(net.mean()) if len(net) else None
        table.append({"threshold": thr, "trades": len(net), "mean_net_pips": mean})
        if mean is not None and len(net) >= min_trades and mean > 0.0 and (
                best is None or mean > best[1]):
            best = (thr, mean)
    return {"threshold": None if best is None else best[0],
            "mean_net_pips": None if best is None else best[1], "grid": table}
