"""Offline training: labels, chronological split, metrics, files written for the model store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss

from stages.score import Model, model_path_for
from stages.train import DEFAULT_PARAMS, chronological_split, make_labels, train_model

# Same tuple as stages.indicators.FEATURE_NAMES (not imported: written by another engineer).
FEATURE_NAMES = (
    "close", "sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "atr_14", "volatility_20", "momentum_10", "spread",
    "tick_count", "dispersion", "fresh_brokers", "minutes_to_next_event",
    "minutes_since_last_event", "news_count_1h", "news_sentiment_1h",
)


def synthetic(
    n: int, horizon: int = 1, seed: int = 7
) -> tuple[list[dict[str, float | int | None]], list[float]]:
    """Bars whose ``momentum_10`` announces the next move (learnable); other features noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    closes = [1.1]
    for t in range(n - 1):
        closes.append(closes[-1] + 0.0004 * signal[t] + 0.0001 * rng.normal())
    rows: list[dict[str, float | int | None]] = []
    for t in range(n):
        row: dict[str, float | int | None] = {name: float(rng.normal()) for name in FEATURE_NAMES}
        row["close"] = closes[t]
        row["momentum_10"] = float(signal[t])
        row["tick_count"] = int(rng.integers(1, 50))
        row["news_sentiment_1h"] = None  # missing values must be accepted
        rows.append(row)
    return rows, closes


def test_labels_compare_with_the_close_h_bars_later() -> None:
    closes = [1.0, 2.0, 2.0, 1.0, 3.0]
    assert make_labels(closes, 1).tolist() == [1, 0, 0, 1]  # 2>1, 2>2 no, 1>2 no, 3>1
    assert make_labels(closes, 2).tolist() == [1, 0, 1]  # 2>1, 1>2 no, 3>2
    assert make_labels(closes, 4).tolist() == [1]  # only t=0 has close[t+4]
    assert make_labels(closes, 5).tolist() == []  # no row has a future close
    assert make_labels(closes, 9).tolist() == []
    assert make_labels([], 1).tolist() == []


@pytest.mark.parametrize("bad", [0, -1, True])
def test_labels_reject_a_bad_horizon(bad: int) -> None:
    with pytest.raises(ValueError, match="horizon"):
        make_labels([1.0, 2.0, 3.0], bad)


def test_split_keeps_time_order_and_purges_the_gap() -> None:
    train, valid = chronological_split(100, 0.2, gap=3)
    assert (train.start, train.stop) == (0, 77)
    assert (valid.start, valid.stop) == (80, 100)
    with pytest.raises(ValueError, match="too few rows"):
        chronological_split(4, 0.2, gap=3)


def test_train_writes_a_model_the_scorer_loads(tmp_path: Path) -> None:
    rows, closes = synthetic(800, horizon=2)
    meta_path = train_model(
        rows, closes, 2, tmp_path, "v1", (1_000, 2_000),
        feature_names=FEATURE_NAMES, created_ms=123,
    )
    assert meta_path == tmp_path / "model-v1.meta.json"
    assert model_path_for(tmp_path, "v1").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == "v1"
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["label"] == {"horizon_bars": 2, "definition": "close[t+H] > close[t]"}
    assert meta["training_range"] == {"start_ms": 1_000, "end_ms": 2_000}
    assert meta["created_ms"] == 123
    assert meta["params"]["max_depth"] == DEFAULT_PARAMS["max_depth"]
    m = meta["metrics"]
    for key in ("logloss", "auc", "accuracy", "n_train", "n_valid", "base_rate",
                "base_rate_train", "logloss_baseline", "n_purged"):
        assert key in m, key
    n_labelled = 800 - 2
    assert m["n_valid"] == round(n_labelled * 0.2)
    assert m["n_purged"] == 2
    assert m["n_train"] + m["n_purged"] + m["n_valid"] == n_labelled
    assert m["n_unlabelled"] == 2
    # The signal is learnable: the model must beat the constant base-rate forecast.
    assert m["auc"] > 0.8
    assert m["logloss"] < m["logloss_baseline"]
    assert 0.0 < m["base_rate"] < 1.0

    model = Model.load(meta_path, known_features=FEATURE_NAMES)
    assert model.version == "v1" and model.horizon_bars == 2


def test_validation_rows_are_the_last_ones(tmp_path: Path) -> None:
    rows, closes = synthetic(600, horizon=1)
    meta_path = train_model(rows, closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES)
    m = json.loads(meta_path.read_text())["metrics"]
    n_labelled = 599
    assert m["valid_rows"] == [n_labelled - m["n_valid"], n_labelled]
    assert m["train_rows"] == [0, m["n_train"]]
    # Re-score exactly the last n_valid labelled rows: the stored logloss must be theirs.
    y = make_labels(closes, 1)
    model = Model.load(meta_path)
    lo, hi = m["valid_rows"]
    p = model.predict_many(rows[lo:hi]).astype(np.float64)
    assert log_loss(y[lo:hi], np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]) == pytest.approx(
        m["logloss"], rel=1e-9
    )
    # ... and not those of the first rows (which a shuffled or leading split would include).
    p_head = model.predict_many(rows[: hi - lo]).astype(np.float64)
    assert log_loss(y[: hi - lo], np.clip(p_head, 1e-15, 1 - 1e-15), labels=[0, 1]) != (
        pytest.approx(m["logloss"], rel=1e-6)
    )


def test_regime_change_lands_entirely_in_validation(tmp_path: Path) -> None:
    """Prices rise every bar in the last quarter: only an unshuffled tail split sees 100 % up."""
    rows, closes = synthetic(500, horizon=1)
    start = 350
    for t in range(start, 500):
        closes[t] = closes[start - 1] + 0.0001 * (t - start + 1)
        rows[t]["close"] = closes[t]
    meta_path = train_model(rows, closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES)
    m = json.loads(meta_path.read_text())["metrics"]
    assert m["n_valid"] == round(499 * 0.2) and m["valid_rows"][0] >= start
    assert m["base_rate"] == 1.0
    assert m["auc"] is None  # one class in validation: AUC undefined, reported as null
    assert 0.3 < m["base_rate_train"] < 0.7


def test_training_is_deterministic(tmp_path: Path) -> None:
    rows, closes = synthetic(400)
    a = train_model(rows, closes, 1, tmp_path / "a", "v1", (0, 1),
                    feature_names=FEATURE_NAMES, created_ms=1)
    b = train_model(rows, closes, 1, tmp_path / "b", "v1", (0, 1),
                    feature_names=FEATURE_NAMES, created_ms=1)
    assert a.read_text() == b.read_text()
    model_a, model_b = model_path_for(a.parent, "v1"), model_path_for(b.parent, "v1")
    assert model_a.read_bytes() == model_b.read_bytes()


def test_params_override_defaults(tmp_path: Path) -> None:
    rows, closes = synthetic(300)
    meta_path = train_model(rows, closes, 1, tmp_path, "v1", (0, 1),
                            params={"n_estimators": 5, "max_depth": 2},
                            feature_names=FEATURE_NAMES)
    meta = json.loads(meta_path.read_text())
    assert meta["params"]["n_estimators"] == 5 and meta["params"]["max_depth"] == 2
    dump = json.loads(model_path_for(tmp_path, "v1").read_text())
    trees = dump["learner"]["gradient_booster"]["model"]["trees"]
    assert len(trees) == 5


def test_existing_version_is_not_overwritten(tmp_path: Path) -> None:
    rows, closes = synthetic(300)
    train_model(rows, closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES)
    with pytest.raises(FileExistsError, match="v1"):
        train_model(rows, closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES)
    train_model(rows, closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES,
                overwrite=True)


def test_bad_inputs_are_rejected(tmp_path: Path) -> None:
    rows, closes = synthetic(300)
    with pytest.raises(ValueError, match="feature rows"):
        train_model(rows[:-1], closes, 1, tmp_path, "v1", (0, 1), feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="version"):
        train_model(rows, closes, 1, tmp_path, "../x", (0, 1), feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="version"):
        train_model(rows, closes, 1, tmp_path, "x.meta", (0, 1), feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="training_range"):
        train_model(rows, closes, 1, tmp_path, "v1", (2, 1), feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="too few rows"):
        train_model(rows[:3], closes[:3], 1, tmp_path, "v1", (0, 1),
                    feature_names=FEATURE_NAMES)
    assert list(tmp_path.iterdir()) == []


def test_default_feature_names_come_from_the_indicators_stage(tmp_path: Path) -> None:
    indicators = pytest.importorskip("stages.indicators")
    rows, closes = synthetic(300)
    meta_path = train_model(rows, closes, 1, tmp_path, "v1", (0, 1))
    assert json.loads(meta_path.read_text())["feature_names"] == list(indicators.FEATURE_NAMES)
