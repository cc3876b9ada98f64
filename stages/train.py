"""Offline training of the direction model read by :mod:`stages.score`.

Label: ``y[t] = 1 if close[t+H] > close[t] else 0`` for bar t and horizon H bars; the last H
bars have no future close and are dropped. The rows must be consecutive bars of ONE symbol in
time order (a label must not span two symbols); to train on several symbols, build each
symbol's rows and labels separately and train per symbol, or extend this module.

Validation is chronological, never shuffled: the last ``valid_fraction`` (20 %) of the
labelled rows are the validation set, and the H rows just before it are purged (dropped from
both sets) because their labels look at closes inside the validation period: keeping them
would leak validation prices into training and flatter the metrics.

Determinism: fixed seed, one thread, the ``hist`` tree method; the same inputs give the same
model. ``created_ms`` is metadata only and never influences the model.

Files are written so a running :class:`stages.score.ModelStore` never sees half a version: the
model file first, then the meta file, each via a temporary name and an atomic rename (the
store keys versions on the meta file).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from stages.score import (
    META_SUFFIX,
    MODEL_PREFIX,
    MODEL_SUFFIX,
    meta_path_for,
    model_path_for,
    rows_to_matrix,
    valid_version,
)

__all__ = [
    "DEFAULT_PARAMS",
    "LABEL_DEFINITION",
    "chronological_split",
    "make_labels",
    "save_version",
    "train_model",
]

LABEL_DEFINITION = "close[t+H] > close[t]"

#: Small, shallow and deterministic; ``params`` passed to :func:`train_model` override these.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 50,
    "max_depth": 3,
    "learning_rate": 0.1,
    "objective": "binary:logistic",
    "tree_method": "hist",
    "random_state": 0,
    "n_jobs": 1,
}


def make_labels(closes: Sequence[float], horizon: int) -> np.ndarray:
    """``y[t] = close[t+H] > close[t]`` as int8 for t in ``0 .. len(closes)-H-1``.

    Equal closes give 0 (not up). The result has ``max(0, len(closes) - horizon)`` rows.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError("closes must be a one-dimensional sequence")
    if len(c) <= horizon:
        return np.empty(0, dtype=np.int8)
    return (c[horizon:] > c[:-horizon]).astype(np.int8)


def chronological_split(
    n: int, valid_fraction: float = 0.2, gap: int = 0
) -> tuple[slice, slice]:
    """(train, valid) slices over ``n`` time-ordered rows: valid is the last part, no shuffle.

    ``n_valid = max(1, round(n * valid_fraction))``; the ``gap`` rows before the validation
    set belong to neither slice. Raises ValueError when fewer than one training row remains.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    n_valid = max(1, round(n * valid_fraction))
    n_train = n - n_valid - gap
    if n_train < 1:
        raise ValueError(
            f"too few rows to split: {n} labelled rows, {n_valid} validation, {gap} purged"
        )
    return slice(0, n_train), slice(n - n_valid, n)


def _default_feature_names() -> tuple[str, ...]:
    # Imported here, not at module level: training must not depend on TA-Lib being importable
    # when the caller names its features.
    from stages.indicators import FEATURE_NAMES

    return tuple(FEATURE_NAMES)


def _metrics(
    y_valid: np.ndarray, p_valid: np.ndarray, base_rate_train: float
) -> dict[str, Any]:
    y = y_valid.astype(np.int64)
    p = np.clip(p_valid.astype(np.float64), 1e-15, 1 - 1e-15)
    both = len(np.unique(y)) == 2
    base = np.full(len(y), min(max(base_rate_train, 1e-15), 1 - 1e-15))
    return {
        "logloss": float(log_loss(y, p, labels=[0, 1])),
        "logloss_baseline": float(log_loss(y, base, labels=[0, 1])),
        # AUC is undefined with one class in the validation set: null, not a crash.
        "auc": float(roc_auc_score(y, p)) if both else None,
        "accuracy": float(accuracy_score(y, (p > 0.5).astype(np.int64))),
        "base_rate": float(y.mean()) if len(y) else None,
    }


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.parent / f".tmp-{path.name}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_model(
    features: Sequence[Mapping[str, float | int | None]],
    closes: Sequence[float],
    horizon: int,
    out_dir: Path,
    version: str,
    training_range: tuple[int, int],
    params: dict[str, Any] | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    valid_fraction: float = 0.2,
    created_ms: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Train on time-ordered feature rows and their closes; write model + meta; return meta path.

    ``features[i]`` are the features of the bar whose close is ``closes[i]``. ``feature_names``
    fixes the model's column order (default: ``stages.indicators.FEATURE_NAMES``); a missing or
    None feature is NaN (XGBoost's "missing"). ``training_range`` is the (start_ms, end_ms)
    event-time span of the data, recorded for audit. An existing version is never overwritten
    unless ``overwrite`` is True: a version name must always mean the same model.
    """
    if len(features) != len(closes):
        raise ValueError(f"{len(features)} feature rows but {len(closes)} closes")
    if not valid_version(version):
        raise ValueError(f"invalid model version {version!r} (letters, digits, '.', '_', '-')")
    start_ms, end_ms = int(training_range[0]), int(training_range[1])
    if start_ms > end_ms:
        raise ValueError(f"training_range start {start_ms} is after end {end_ms}")
    names = tuple(feature_names) if feature_names is not None else _default_feature_names()
    if not names or len(set(names)) != len(names):
        raise ValueError("feature_names must be non-empty and unique")

    y = make_labels(closes, horizon)
    n = len(y)
    train_sl, valid_sl = chronological_split(n, valid_fraction, gap=horizon)
    x = rows_to_matrix(features[:n], names)
    x_train, y_train = x[train_sl], y[train_sl]
    x_valid, y_valid = x[valid_sl], y[valid_sl]

    p: dict[str, Any] = dict(DEFAULT_PARAMS)
    if params:
        p.update(params)
    clf = xgb.XGBClassifier(**p)
    clf.fit(x_train, y_train)
    booster = clf.get_booster()
    booster.feature_names = list(names)  # the model file carries its own column names
    # Score validation through the booster exactly as stages.score does (inplace, float32).
    p_valid = np.asarray(booster.inplace_predict(x_valid, validate_features=False))

    base_rate_train = float(y_train.mean())
    metrics = _metrics(y_valid, p_valid, base_rate_train)
    metrics.update(
        {
            "n_train": len(y_train),
            "n_valid": len(y_valid),
            "n_purged": int(valid_sl.start - train_sl.stop),
            "n_unlabelled": int(len(closes) - n),
            "base_rate_train": base_rate_train,
            "train_rows": [int(train_sl.start), int(train_sl.stop)],
            "valid_rows": [int(valid_sl.start), int(valid_sl.stop)],
        }
    )
    json_params = {k: v for k, v in p.items() if isinstance(v, (str, int, float, bool))}
    meta: dict[str, Any] = {
        "version": version,
        "feature_names": list(names),
        "label": {"horizon_bars": horizon, "definition": LABEL_DEFINITION},
        "training_range": {"start_ms": start_ms, "end_ms": end_ms},
        "metrics": metrics,
        "params": json_params,
        "xgboost_version": xgb.__version__,
        "created_ms": int(time.time() * 1000) if created_ms is None else int(created_ms),
    }

    return save_version(Path(out_dir), version, booster, meta, overwrite=overwrite)


def save_version(
    out_dir: Path, version: str, booster: xgb.Booster, meta: Mapping[str, Any], *,
    overwrite: bool = False,
) -> Path:
    """Write ``model-<version>.json`` then its meta file, each atomically; return the meta
    path. Raises FileExistsError when the version exists and ``overwrite`` is False."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_path_for(out_dir, version)
    meta_path = meta_path_for(out_dir, version)
    if not overwrite and (model_path.exists() or meta_path.exists()):
        raise FileExistsError(f"model version {version!r} already exists in {out_dir}")
    assert model_path.name.startswith(MODEL_PREFIX) and model_path.name.endswith(MODEL_SUFFIX)
    assert meta_path.name.endswith(META_SUFFIX)
    tmp_model = out_dir / f".tmp-{model_path.name}"  # keeps the .json suffix: JSON format
    booster.save_model(str(tmp_model))
    os.replace(tmp_model, model_path)
    _write_atomic_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta_path
