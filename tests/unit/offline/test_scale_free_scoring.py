"""The live scorer on the scale-free feature set: it scores exactly what training saw,
makes no decision during indicator warm-up, and refuses symbols the model never saw."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_train import write_features

from connectors.files import read_canonical, write_canonical
from connectors.history.parse import read_history
from offline.process import run_process
from offline.replay import replay
from offline.train import train
from stages.features import FEATURE_NAMES
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.score import ModelStore
from stages.types import Tick
from topology.settings import Settings

pytestmark = pytest.mark.data

SETTINGS = Settings.from_env({}, env_file=None)


@pytest.fixture(scope="module")
def two_symbols_csv(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours of OANDA EURUSD and NZDUSD quotes, in time order."""
    lean = shared_data / "lean" / "oanda" / "tick"
    start = 1_399_881_600_000  # 2014-05-12 08:00 UTC
    ticks = [t for sym in ("eurusd", "nzdusd")
             for t in read_history("lean", lean / sym / "20140512_quote.zip")
             if isinstance(t, Tick) and start <= t.time_msc < start + 6 * 3_600_000]
    ticks.sort(key=lambda t: t.time_msc)
    path = tmp_path_factory.mktemp("scoring") / "two.csv"
    with path.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    return path


@pytest.fixture(scope="module")
def rsi_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A promoted scale-free model whose score follows RSI (trained on a made-up file)."""
    d = tmp_path_factory.mktemp("rsi")
    res = train(write_features(d / "f.parquet", signal=0.6), d / "models", SETTINGS.symbols,
                report=False)
    assert res["promoted"]
    return d / "models"


def test_process_scores_the_replayed_features_exactly(
    two_symbols_csv: Path, rsi_model: Path, tmp_path: Path,
) -> None:
    replay(None, SETTINGS, out=tmp_path / "f.parquet", files=[two_symbols_csv])
    rows = {(r["symbol"], r["bar_time"]): r
            for r in pq.read_table(tmp_path / "f.parquet").to_pylist()}
    result = run_process([two_symbols_csv], SETTINGS, rsi_model, tmp_path / "out")
    with (tmp_path / "out" / "commands.csv").open() as fh:
        commands = list(csv.DictReader(fh))
    assert sum(result["commands"].values()) == len(commands) > 5
    model = ModelStore(rsi_model).latest()
    assert model is not None
    checked = 0
    for cmd in commands:
        row = rows.get((cmd["symbol"], int(cmd["bar_time"])))
        if row is None:  # a bar without a label (gap ahead) is not in the training file
            continue
        p = model.predict_one({n: row[f"f_{n}"] for n in FEATURE_NAMES})
        expected = p if cmd["action"] == "BUY" else 1 - p
        if cmd["action"] != "CLOSE":
            assert float(cmd["confidence"]) == pytest.approx(expected, abs=1e-12)
            checked += 1
        # No decision was made on a bar with a required feature missing.
        assert all(row[f"f_{n}"] is not None for n in model.meta["required_features"])
    assert checked > 3


def test_no_entry_during_warm_up(two_symbols_csv: Path, rsi_model: Path) -> None:
    pipeline = Pipeline(PipelineConfig.from_settings(SETTINGS), models=ModelStore(rsi_model))
    pipeline.models.latest()  # type: ignore[union-attr]
    out = Outputs()
    first_command_bar = None
    bars = 0
    for tick in read_canonical(two_symbols_csv):
        assert isinstance(tick, Tick)
        pipeline.on_tick(tick, out)
        if tick.symbol == "EURUSD":
            bars += sum(1 for b in out.bars if b.symbol == "EURUSD")
        if first_command_bar is None and any(c.symbol == "EURUSD" for c in out.commands):
            first_command_bar = bars
        out.clear()
    assert pipeline.not_scored["warmup"] > 0
    # MACD's signal line needs 33 bars: nothing is scored before the indicators are warm.
    assert first_command_bar is not None and first_command_bar > 33


def test_a_symbol_the_model_never_saw_is_not_scored(
    two_symbols_csv: Path, tmp_path: Path,
) -> None:
    f = write_features(tmp_path / "f.parquet", signal=0.6)
    import pyarrow.compute as pc

    table = pq.read_table(f)
    pq.write_table(table.filter(pc.equal(table["symbol"], "EURUSD")), f)
    assert train(f, tmp_path / "m", SETTINGS.symbols, report=False)["promoted"]
    pipeline = Pipeline(PipelineConfig.from_settings(SETTINGS), models=ModelStore(tmp_path / "m"))
    pipeline.models.latest()  # type: ignore[union-attr]
    out = Outputs()
    symbols = set()
    for tick in read_canonical(two_symbols_csv):
        assert isinstance(tick, Tick)
        pipeline.on_tick(tick, out)
        symbols |= {c.symbol for c in out.commands}
        out.clear()
    assert symbols == {"EURUSD"}
    assert pipeline.not_scored["untrained_symbol"] > 100


def test_process_scoring_in_one_batch_decides_as_the_worker_scoring_bar_by_bar(
    two_symbols_csv: Path, rsi_model: Path, tmp_path: Path,
) -> None:
    # process scores all bars at once after its shards (Pipeline.prescore); the worker
    # scores each bar as it closes (predict_one). Same commands, confidences to the bit.
    pipeline = Pipeline(PipelineConfig.from_settings(SETTINGS), models=ModelStore(rsi_model))
    pipeline.models.latest()  # type: ignore[union-attr]
    out = Outputs()
    live = []
    for tick in read_canonical(two_symbols_csv):
        assert isinstance(tick, Tick)
        pipeline.on_tick(tick, out)
        live += out.commands
        out.clear()
    pipeline.flush(out)
    live += out.commands
    for jobs in (1, 2):
        result = run_process([two_symbols_csv], SETTINGS, rsi_model, tmp_path / str(jobs),
                             jobs=jobs)
        with (tmp_path / str(jobs) / "commands.csv").open() as fh:
            offline = list(csv.DictReader(fh))
        assert sum(result["commands"].values()) == len(offline) == len(live) > 5
        for got, want in zip(offline, live, strict=True):
            assert (got["command_id"], got["action"], got["symbol"], int(got["bar_time"])) \
                == (want.command_id, want.action, want.symbol, want.bar_time)
            assert float(got["confidence"]) == want.confidence  # written as repr: exact
