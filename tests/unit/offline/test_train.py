"""``tickstream train --features``: walk-forward report, promotion gate both ways,
determinism, and the saved model scored by the live scorer exactly as evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offline.evaluate import Platt
from offline.train import TrainError, format_summary, next_version, train
from stages.features import FEATURE_NAMES, FEATURE_SET
from stages.score import ModelStore
from topology.cli import main
from topology.settings import Settings

SYMBOLS = Settings.from_env({}, env_file=None).symbols
MIN = 60_000


def write_features(path: Path, *, signal: float, n: int = 800, seed: int = 0,
                   feature_set: str = FEATURE_SET) -> Path:
    """A replay-shaped feature file for EURUSD and NZDUSD. With ``signal`` > 0 the next
    move's sign follows ``f_rsi_14`` (above 50: up) that often beyond chance."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[object]] = {k: [] for k in (
        "symbol", "bar_time", "close", "spread", "label", "future_close", "threshold")}
    for name in FEATURE_NAMES:
        cols[f"f_{name}"] = []
    for symbol, price in (("EURUSD", 1.37), ("NZDUSD", 0.86)):
        for i in range(n):
            rsi = float(rng.uniform(10, 90))
            up = rng.random() < 0.5 + signal * np.sign(rsi - 50) / 2
            flat = rng.random() < 0.1
            move = 0.0 if flat else (3e-4 if up else -3e-4)
            cols["symbol"].append(symbol)
            cols["bar_time"].append(1_400_000_000_000 + i * MIN)
            cols["close"].append(price)
            cols["spread"].append(1e-5)
            cols["label"].append(0 if flat else 1 if up else -1)
            cols["future_close"].append(price + move)
            cols["threshold"].append(2e-5)
            for name in FEATURE_NAMES:
                value = rsi if name == "rsi_14" else None if name.startswith("minutes") \
                    else float(rng.normal())
                cols[f"f_{name}"].append(value)
    types = {"symbol": pa.string(), "bar_time": pa.int64(), "label": pa.int8()}
    schema = pa.schema([(k, types.get(k, pa.float64())) for k in cols])
    meta = {"feature_set": feature_set, "horizon_min": 5, "label_definition": "test",
            "threshold": 2e-5, "from_ms": None, "to_ms": None, "ticks": 0}
    schema = schema.with_metadata({"tickstream": json.dumps(meta)})
    pq.write_table(pa.Table.from_pydict(cols, schema=schema), path)
    return path


def test_a_model_with_an_edge_is_promoted_and_scored_as_evaluated(tmp_path: Path) -> None:
    features = write_features(tmp_path / "f.parquet", signal=0.5)
    models = tmp_path / "models"
    res = train(features, models, SYMBOLS, report=True)
    assert res["promoted"] and res["beats_best_baseline"] and not res["forced"]
    pooled = res["walk_forward"]["pooled"]
    assert pooled["model"]["auc"] > 0.65 and pooled["logloss_vs_best_ci"][1] < 0
    assert len(res["walk_forward"]["folds"]) == 4
    for fold in res["walk_forward"]["folds"]:
        assert fold["model"]["auc"] > 0.6  # every fold sees the signal
        assert fold["rows"] > 0 and fold["threshold"] is not None
    assert Path(res["report_png"]).read_bytes()[:4] == b"\x89PNG"
    text = format_summary(res)
    assert "beats the best baseline" in text and "saved v1" in text

    meta = json.loads(Path(res["meta"]).read_text())
    assert meta["feature_set"] == FEATURE_SET and set(meta["symbols"]) == {"EURUSD", "NZDUSD"}
    assert sum(meta["symbols"].values()) == res["rows"]
    assert meta["data"]["sha256"] and meta["label"]["horizon_min"] == 5
    assert "minutes_to_next_event" not in meta["required_features"]
    # The worker's scorer: same calibrated probability as the trainer computes.
    model = ModelStore(models).latest()
    assert model is not None and model.version == "v1" and model.feature_set == FEATURE_SET
    table = pq.read_table(features).to_pylist()[:50]
    rows = [{n: r[f"f_{n}"] for n in FEATURE_NAMES} for r in table]
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(models / "model-v1.json"))
    raw = booster.inplace_predict(model.matrix(rows), validate_features=False)
    cal = Platt(meta["calibration"]["a"], meta["calibration"]["b"]).apply(np.asarray(raw))
    assert [model.predict_one(r) for r in rows] == pytest.approx(list(cal), abs=1e-12)
    assert next_version(models) == "v2"


def test_no_edge_is_not_promoted_unless_forced(tmp_path: Path) -> None:
    features = write_features(tmp_path / "f.parquet", signal=0.0)
    models = tmp_path / "models"
    res = train(features, models, SYMBOLS, report=False)
    assert not res["beats_best_baseline"] and not res["promoted"]
    assert not list(models.glob("model-*"))
    assert "NO EDGE" in format_summary(res) and "not promoted" in format_summary(res)
    forced = train(features, models, SYMBOLS, report=False, force=True)
    assert forced["promoted"] and forced["forced"]
    assert (models / "model-v1.json").is_file()


def test_same_input_gives_byte_identical_model(tmp_path: Path) -> None:
    features = write_features(tmp_path / "f.parquet", signal=0.3)
    a = train(features, tmp_path / "a", SYMBOLS, force=True)
    b = train(features, tmp_path / "b", SYMBOLS, force=True)
    for name in ("model-v1.json", "model-v1.meta.json", "reports/v1.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["model_sha256"] == b["model_sha256"]


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    old = write_features(tmp_path / "old.parquet", signal=0.3, feature_set="raw-v0")
    with pytest.raises(TrainError, match="replay the history again"):
        train(old, tmp_path / "m", SYMBOLS)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(TrainError, match="not a readable Parquet"):
        train(junk, tmp_path / "m", SYMBOLS)
    good = write_features(tmp_path / "f.parquet", signal=0.5)
    train(good, tmp_path / "m", SYMBOLS, version="v7", report=False)
    with pytest.raises(TrainError, match="already exists"):
        train(good, tmp_path / "m", SYMBOLS, version="v7")
    # The CLI: exit 1 with one line for an unusable input, 3 when not promoted.
    assert main(["train", "--features", str(junk), "--model-dir", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tickstream train:") and "Traceback" not in "".join(err)
    flat = write_features(tmp_path / "flat.parquet", signal=0.0)
    assert main(["train", "--features", str(flat), "--model-dir", str(tmp_path / "n"),
                 "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["promoted"] is False
