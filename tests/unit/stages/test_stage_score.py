"""Scoring: Model loading/validation/prediction and the ModelStore's reload and fallback rules."""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from stages.score import (
    Model,
    ModelError,
    ModelStore,
    meta_path_for,
    model_path_for,
    natural_key,
)
from stages.train import train_model

# Same tuple as stages.indicators.FEATURE_NAMES (not imported: written by another engineer).
FEATURE_NAMES = (
    "close", "sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "atr_14", "volatility_20", "momentum_10", "spread",
    "tick_count", "dispersion", "fresh_brokers", "minutes_to_next_event",
    "minutes_since_last_event", "news_count_1h", "news_sentiment_1h",
)

Row = dict[str, float | int | None]


def synthetic(n: int, seed: int = 3) -> tuple[list[Row], list[float]]:
    """Bars whose ``momentum_10`` announces the next close's direction; the rest is noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    closes = [1.1]
    for t in range(n - 1):
        closes.append(closes[-1] + 0.0004 * signal[t] + 0.0001 * rng.normal())
    rows: list[Row] = []
    for t in range(n):
        row: Row = {name: float(rng.normal()) for name in FEATURE_NAMES}
        row["close"] = closes[t]
        row["momentum_10"] = float(signal[t])
        rows.append(row)
    return rows, closes


DATA = synthetic(600)


def train(out_dir: Path, version: str, names: tuple[str, ...] = FEATURE_NAMES,
          n_estimators: int = 30) -> Path:
    rows, closes = DATA
    return train_model(rows, closes, 1, out_dir, version, (0, 1),
                       params={"n_estimators": n_estimators}, feature_names=names,
                       created_ms=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with v1 and v2 (different models), copied into each test's own directory."""
    d = tmp_path_factory.mktemp("models")
    train(d, "v1", n_estimators=10)
    train(d, "v2", n_estimators=40)
    return d


def copy_version(src: Path, dst: Path, version: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(meta_path_for(src, version), meta_path_for(dst, version))
    shutil.copy(model_path_for(src, version), model_path_for(dst, version))


def publish_as(src: Path, version: str, dst: Path, new_version: str) -> None:
    """Copy a trained version under another version name (metadata rewritten to match)."""
    meta = json.loads(meta_path_for(src, version).read_text())
    meta_path_for(dst, new_version).write_text(json.dumps(dict(meta, version=new_version)))
    shutil.copy(model_path_for(src, version), model_path_for(dst, new_version))


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def probe(momentum: float) -> Row:
    row: Row = dict.fromkeys(FEATURE_NAMES, 0.0)
    row["close"] = 1.1
    row["momentum_10"] = momentum
    return row


# -- Model --------------------------------------------------------------------------------


def test_predictions_are_probabilities_that_follow_the_signal(trained: Path) -> None:
    model = Model.load(meta_path_for(trained, "v2"), known_features=FEATURE_NAMES)
    assert model.version == "v2" and model.horizon_bars == 1
    assert model.feature_names == FEATURE_NAMES
    rows, _ = DATA
    scores = [model.predict_one(r) for r in rows[:200]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert model.predict_one(probe(2.0)) > 0.7
    assert model.predict_one(probe(-2.0)) < 0.3


def test_scores_are_bit_for_bit_deterministic(trained: Path) -> None:
    rows, _ = DATA
    a = Model.load(meta_path_for(trained, "v2"))
    b = Model.load(meta_path_for(trained, "v2"))
    first = [bits(a.predict_one(r)) for r in rows[:100]]
    assert [bits(a.predict_one(r)) for r in rows[:100]] == first
    assert [bits(b.predict_one(r)) for r in rows[:100]] == first
    batch = b.predict_many(rows[:100])
    assert [bits(float(x)) for x in batch] == first  # batch path gives the same numbers
    assert b.predict_many([]).shape == (0,)


def test_calibrated_batch_scores_are_the_one_row_scores_bit_for_bit(
        trained: Path, tmp_path: Path) -> None:
    # tickstream process scores all bars in one batch; with a calibration map each score
    # must still be exactly what predict_one (the worker's path) gives.
    copy_version(trained, tmp_path, "v2")
    meta_file = meta_path_for(tmp_path, "v2")
    meta = json.loads(meta_file.read_text())
    meta["calibration"] = {"method": "platt", "a": 0.8731, "b": -0.1127}
    meta_file.write_text(json.dumps(meta))
    model = Model.load(meta_file)
    assert model._cal is not None
    rows, _ = DATA
    probes = [dict(r, rsi_14=None) if i % 7 == 0 else r for i, r in enumerate(rows[:200])]
    one = [bits(model.predict_one(r)) for r in probes]
    assert [bits(float(p)) for p in model.predict_many(probes)] == one
    assert len(set(one)) > 50  # the rows really score differently


def test_the_one_row_fast_path_gives_inplace_predicts_bits(trained: Path) -> None:
    # predict_one calls xgboost's C prediction directly (no wrapper work per call): on
    # random rows with missing values it must give exactly what inplace_predict gives.
    model = Model.load(meta_path_for(trained, "v2"))
    assert model._dense is not None, "the fast path must be in use with this xgboost"
    rng = np.random.default_rng(7)
    rows, _ = DATA
    probes: list[Row] = []
    for r in rows[:300]:
        row = dict(r)
        for name in FEATURE_NAMES:
            if rng.random() < 0.15:
                row[name] = None
            elif rng.random() < 0.3:
                row[name] = float(rng.normal(0, 3))
        probes.append(row)
    booster = model._booster
    for row in probes:
        x = np.array([[np.nan if row.get(n) is None else row[n] for n in model.feature_names]],
                     dtype=np.float32)
        want = float(booster.inplace_predict(x, validate_features=False)[0])
        if model._cal is not None:
            want = model.calibrate(want)
        assert bits(model.predict_one(row)) == bits(want)


def test_key_order_of_the_features_does_not_matter(trained: Path) -> None:
    model = Model.load(meta_path_for(trained, "v2"))
    rows, _ = DATA
    for row in rows[:50]:
        shuffled = dict(reversed(list(row.items())))
        assert list(shuffled) != list(row)
        assert bits(model.predict_one(shuffled)) == bits(model.predict_one(row))


def test_feature_order_comes_from_the_metadata(tmp_path: Path) -> None:
    order = tuple(reversed(FEATURE_NAMES))
    train(tmp_path, "r1", names=order)
    model = Model.load(meta_path_for(tmp_path, "r1"))
    assert model.feature_names == order
    row = probe(1.5)
    # The model must put momentum_10 where training put it: its score follows the signal...
    assert model.predict_one(probe(2.0)) > 0.7 > 0.3 > model.predict_one(probe(-2.0))
    # ... and equals a raw booster call on a row laid out in the metadata's order.
    x = np.array([[row[n] for n in order]], dtype=np.float32)
    direct = float(model._booster.inplace_predict(x)[0])
    assert bits(model.predict_one(row)) == bits(direct)
    wrong = np.array([[row[n] for n in FEATURE_NAMES]], dtype=np.float32)
    assert float(model._booster.inplace_predict(wrong)[0]) != direct


def test_none_and_absent_features_are_missing_values(trained: Path) -> None:
    model = Model.load(meta_path_for(trained, "v2"))
    row = probe(1.0)
    row["rsi_14"] = None
    absent = {k: v for k, v in row.items() if k != "rsi_14"}
    nan = dict(row, rsi_14=math.nan)
    p = model.predict_one(row)
    assert 0.0 <= p <= 1.0
    assert bits(model.predict_one(absent)) == bits(p)
    assert bits(model.predict_one(nan)) == bits(p)
    all_none: Row = dict.fromkeys(FEATURE_NAMES)
    assert 0.0 <= model.predict_one(all_none) <= 1.0


def test_load_errors_name_the_problem(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read metadata"):
        Model.load(tmp_path / "model-nope.meta.json")

    copy_version(trained, tmp_path, "v1")
    meta = meta_path_for(tmp_path, "v1")
    good = json.loads(meta.read_text())

    meta.write_text("{broken")
    with pytest.raises(ModelError, match="corrupt metadata JSON"):
        Model.load(meta)

    meta.write_text(json.dumps(dict(good, feature_names=good["feature_names"][:-1])))
    with pytest.raises(ModelError, match="feature list mismatch"):
        Model.load(meta)

    swapped = list(good["feature_names"])
    swapped[0], swapped[1] = swapped[1], swapped[0]
    meta.write_text(json.dumps(dict(good, feature_names=swapped)))
    with pytest.raises(ModelError, match="feature list mismatch"):
        Model.load(meta)

    meta.write_text(json.dumps(dict(good, label={"horizon_bars": 0})))
    with pytest.raises(ModelError, match="horizon_bars"):
        Model.load(meta)

    meta.write_text(json.dumps(dict(good, version="v9")))
    with pytest.raises(ModelError, match="file name"):
        Model.load(meta)

    meta.write_text(json.dumps(good))
    with pytest.raises(ModelError, match="does not produce"):
        Model.load(meta, known_features=[n for n in FEATURE_NAMES if n != "rsi_14"])

    model_path_for(tmp_path, "v1").write_text('{"learner": 1}')
    with pytest.raises(ModelError, match="corrupt model"):
        Model.load(meta)

    model_path_for(tmp_path, "v1").unlink()
    with pytest.raises(ModelError, match="model file missing"):
        Model.load(meta)


# -- ModelStore ---------------------------------------------------------------------------


def test_natural_sort_orders_numbers_by_value() -> None:
    versions = ["v10", "v2", "v1", "20240105-2", "20240105-10", "v1.10", "v1.9"]
    assert sorted(versions, key=natural_key) == [
        "20240105-2", "20240105-10", "v1", "v1.9", "v1.10", "v2", "v10",
    ]


def test_missing_or_empty_dir_means_no_model_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stages.score")
    store = ModelStore(tmp_path / "absent")
    assert store.latest() is None
    assert store.latest() is None
    assert store.maybe_reload(0.0) is False
    assert store.maybe_reload(100.0) is False
    assert store.current is None and store.healthy is False
    status = store.status()
    assert status["healthy"] is False and status["version"] is None
    json.dumps(status)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no usable model" in warnings[0].getMessage()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert ModelStore(empty).latest() is None


def test_latest_picks_the_highest_version(trained: Path, tmp_path: Path) -> None:
    copy_version(trained, tmp_path, "v1")
    publish_as(trained, "v1", tmp_path, "v9")
    publish_as(trained, "v2", tmp_path, "v10")  # natural sort: v10 > v9 (plain sort: v9)
    store = ModelStore(tmp_path)
    model = store.latest()
    assert model is not None and model.version == "v10"
    assert store.healthy
    status = store.status()
    assert status["version"] == "v10"
    assert status["available_versions"] == ["v1", "v9", "v10"]
    json.dumps(status)


def test_newer_version_is_picked_up_after_the_interval(
    trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stages.score")
    copy_version(trained, tmp_path, "v1")
    store = ModelStore(tmp_path, reload_interval_s=30.0)
    assert store.maybe_reload(1000.0) is True  # first check loads v1
    assert store.current is not None and store.current.version == "v1"
    p1 = store.current.predict_one(probe(1.0))
    assert store.maybe_reload(1005.0) is False  # nothing changed

    copy_version(trained, tmp_path, "v2")
    assert store.maybe_reload(1010.0) is False  # within the interval: not even looked at
    assert store.current.version == "v1"
    assert store.maybe_reload(1031.0) is True
    assert store.current.version == "v2"
    assert store.current.predict_one(probe(1.0)) != p1  # really a different model
    assert store.maybe_reload(1062.0) is False  # unchanged directory: no reload
    assert any("model v2 loaded" in r.getMessage() for r in caplog.records)


def test_corrupt_newest_keeps_the_previous_model(
    trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="stages.score")
    copy_version(trained, tmp_path, "v1")
    store = ModelStore(tmp_path, reload_interval_s=0.0)
    assert store.latest() is not None

    copy_version(trained, tmp_path, "v2")
    model_path_for(tmp_path, "v2").write_text("{corrupt")
    assert store.maybe_reload(1.0) is False
    assert store.current is not None and store.current.version == "v1"
    assert store.healthy
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "v2" in errors[0].getMessage()
    assert "keeping v1" in errors[0].getMessage()
    # Unrelated change in the directory: the known-bad v2 is not retried or logged again.
    (tmp_path / "model-v0.meta.json").write_text("{}")
    assert store.maybe_reload(2.0) is False
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert store.status()["failed_versions"] == ["v2"]

    # A fresh store (worker restart) with the same directory falls back to the newest good one.
    fresh = ModelStore(tmp_path)
    model = fresh.latest()
    assert model is not None and model.version == "v1"

    # Once v2 is repaired it is taken.
    copy_version(trained, tmp_path, "v2")
    assert store.maybe_reload(3.0) is True
    assert store.current.version == "v2"
    assert store.status()["failed_versions"] == []


def test_current_file_pins_a_version(trained: Path, tmp_path: Path) -> None:
    copy_version(trained, tmp_path, "v1")
    copy_version(trained, tmp_path, "v2")
    (tmp_path / "CURRENT").write_text("v1\n")
    store = ModelStore(tmp_path, reload_interval_s=0.0)
    model = store.latest()
    assert model is not None and model.version == "v1"
    assert store.status()["pinned_by"] == "CURRENT"

    (tmp_path / "CURRENT").unlink()
    assert store.maybe_reload(1.0) is True
    assert store.current is not None and store.current.version == "v2"
    assert store.status()["pinned_by"] is None

    (tmp_path / "CURRENT").write_text("v7")  # pin to a version that is not there
    assert store.maybe_reload(2.0) is False
    assert store.current.version == "v2"
    assert "v7" in str(store.status()["last_error"])

    (tmp_path / "CURRENT").write_text("v1")
    assert store.maybe_reload(3.0) is True
    assert store.current.version == "v1"


def test_announced_version_is_loaded_and_sticks(trained: Path, tmp_path: Path) -> None:
    copy_version(trained, tmp_path, "v1")
    copy_version(trained, tmp_path, "v2")
    store = ModelStore(tmp_path, reload_interval_s=0.0)
    assert store.latest() is not None and store.current is not None
    assert store.current.version == "v2"

    model = store.load_version("v1")
    assert model.version == "v1" and store.current is model
    assert store.status()["pinned_by"] == "announce"
    (tmp_path / "unrelated.txt").write_text("x")
    copy_version(trained, tmp_path / "x", "v2")
    store.maybe_reload(1.0)
    assert store.current.version == "v1"  # a directory check does not undo the announcement

    with pytest.raises(ModelError):
        store.load_version("v5")
    with pytest.raises(ModelError, match="invalid model version"):
        store.load_version("../v1")
    assert store.current.version == "v1"

    elsewhere = tmp_path / "elsewhere"
    copy_version(trained, elsewhere, "v2")
    assert store.load_version("v2", elsewhere).meta_path.parent == elsewhere
    assert store.maybe_reload(2.0) is False


def test_store_rejects_models_needing_unknown_features(trained: Path, tmp_path: Path) -> None:
    copy_version(trained, tmp_path, "v1")
    store = ModelStore(tmp_path, known_features=FEATURE_NAMES[:-1])
    assert store.latest() is None
    assert "does not produce" in str(store.status()["last_error"])


def test_two_models_with_the_same_version_name_have_different_ids(
        trained: Path, tmp_path: Path) -> None:
    from stages.risk import command_id_for

    other = tmp_path / "other"
    train(other, "v1", n_estimators=25)  # another model, also called v1
    a = Model.load(trained / "model-v1.meta.json")
    b = Model.load(other / "model-v1.meta.json")
    assert a.version == b.version == "v1"
    assert a.model_id != b.model_id and a.model_id.startswith("v1@")
    assert Model.load(trained / "model-v1.meta.json").model_id == a.model_id  # stable
    assert command_id_for("EURUSD", 0, "BUY", a.model_id) != \
        command_id_for("EURUSD", 0, "BUY", b.model_id)
