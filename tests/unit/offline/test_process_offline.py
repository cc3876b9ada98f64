"""``tickstream process``: the stage chain offline, every input row accounted for."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from pipeline_helpers import train_on_files

from connectors.files import (
    BadRow,
    TickFileError,
    data_rows,
    write_canonical,
)
from connectors.history.batch_readers import numbered_csv, numbered_rows
from connectors.history.parse import read_history
from offline import process_shard
from offline.decide import decide_in_order
from offline.process import run_process
from offline.process_shard import RowSink, Shard, ShardResult
from schemas.records import TradingCommand
from stages.context import ContextBook
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.score import ModelStore
from stages.types import Tick
from topology.settings import Settings

pytestmark = pytest.mark.data


def _canonical(shared_data: Path, tmp_path: Path) -> Path:
    ticks = [t for pair in ("EURUSD", "USDJPY") for t in read_history(
        "truefx", shared_data / f"multi/{pair}_20120104_NY17-24h.csv.gz", broker="HD",
        tz="America/New_York") if isinstance(t, Tick)]
    ticks.sort(key=lambda t: t.time_msc)
    # A second broker quoting the same EURUSD ticks 0.3 pip higher, 120 ms later.
    b2 = [Tick("B2", t.symbol, t.time_msc + 120, t.bid + 3e-5, t.ask + 3e-5)
          for t in ticks if t.symbol == "EURUSD"]
    merged = sorted(ticks + b2, key=lambda t: t.time_msc)
    # Inject: 50 redelivered ticks (duplicates), a crossed quote, an unknown symbol.
    merged[1000:1000] = merged[900:950]
    merged.insert(5000, Tick("HD", "EURUSD", merged[4999].time_msc, 1.3, 1.29))
    merged.insert(6000, Tick("HD", "XXXYYY", merged[5999].time_msc, 1.0, 1.1))
    path = tmp_path / "ticks.csv"
    with path.open("w", newline="") as fh:
        write_canonical(merged, fh)
    with path.open("a") as fh:
        fh.write("HD,EURUSD,notatime,1.1,1.2,\n")  # a malformed row
    return path


def test_invariant_and_outputs_on_real_data(shared_data: Path, tmp_path: Path) -> None:
    src = _canonical(shared_data, tmp_path)
    out_dir = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "topology.cli", "process", str(src), "--json", "--out",
         str(out_dir)],
        capture_output=True, text=True, check=True,
    )
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["ticks_in"] == r["clean"] + r["duplicates"] + sum(r["rejected"].values())
    assert r["duplicates"] >= 50
    assert r["rejected"].get("crossed_quote", 0) >= 1
    assert r["rejected"].get("unknown_symbol") == 1
    assert r["rejected"].get("malformed") == 1
    assert r["clean"] > 0.99 * r["ticks_in"]
    assert r["bars"] == r["features"] > 2000  # two symbols, ~24 h of minutes
    with (out_dir / "bars.csv").open() as fh:
        bars = list(csv.DictReader(fh))
    assert len(bars) == r["bars"]
    for b in bars:
        assert float(b["high"]) >= max(float(b["open"]), float(b["close"]))
        assert int(b["bar_time"]) % 60_000 == 0
    with (out_dir / "clean.csv").open() as fh:
        clean = list(csv.DictReader(fh))
    assert len(clean) == r["clean"]
    # While both brokers are fresh the best bid is never below the ticking broker's own bid,
    # and B2 (quoting 0.3 pip higher) gives it most of the time.
    both = [c for c in clean if c["symbol"] == "EURUSD" and c["fresh_brokers"] == "2"]
    assert len(both) > 0.9 * sum(c["symbol"] == "EURUSD" for c in clean)
    assert all(float(c["best_bid"]) >= float(c["bid"]) for c in both)
    assert all(float(c["best_ask"]) <= float(c["ask"]) for c in both)
    assert sum(c["best_bid_broker"] == "B2" for c in both) > 0.7 * len(both)
    with (out_dir / "rejected.csv").open() as fh:
        rej = list(csv.DictReader(fh))
    assert sum(r["rejected"].values()) == len(rej)
    assert any(x["reason"] == "malformed" and "notatime" in x["original"] for x in rej)
    for name in ("features", "commands"):
        assert (out_dir / f"{name}.csv").exists() or name == "commands"


def test_train_then_process_makes_commands(shared_data: Path, tmp_path: Path) -> None:
    duka = tmp_path / "duka.csv"
    with duka.open("w", newline="") as fh:
        write_canonical([t for t in read_history(
            "dukascopy", shared_data / "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz",
            broker="DUKA", symbol="EURUSD") if isinstance(t, Tick)], fh)
    models = tmp_path / "models"
    train_on_files([duka], models, Settings.from_env({}, env_file=None))
    eur = _canonical(shared_data, tmp_path)
    runs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        res = subprocess.run(
            [sys.executable, "-m", "topology.cli", "process", str(eur), "--model", str(models),
             "--json", "--out", str(out)], capture_output=True, text=True, check=True)
        runs.append((json.loads(res.stdout.strip().splitlines()[-1]), out))
    r = runs[0][0]
    assert r["model_version"] == "v1"
    assert sum(r["commands"].values()) > 0
    ids = [(runs[i][1] / "commands.csv").read_text().splitlines() for i in range(2)]
    assert [line.split(",")[0] for line in ids[0]] == [line.split(",")[0] for line in ids[1]]

    # The same --out folder again, without a model: no commands, and the earlier run's
    # commands.csv must not be left there to be taken for this run's
    again = subprocess.run(
        [sys.executable, "-m", "topology.cli", "process", str(eur), "--json", "--out",
         str(runs[0][1])], capture_output=True, text=True, check=True)
    assert sum(json.loads(again.stdout.strip().splitlines()[-1])["commands"].values()) == 0
    assert (runs[0][1] / "commands.csv").read_text().splitlines() == [ids[0][0]]  # header


@pytest.fixture(scope="module")
def file_and_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, Path]:
    """The two-symbol real-data file, and a model trained on it (so both symbols trade)."""
    tmp = tmp_path_factory.mktemp("jobs")
    src = _canonical(shared_data, tmp)
    models = tmp / "models"
    train_on_files([src], models, Settings.from_env({}, env_file=None))
    return src, models


def _settings(max_total: int) -> Settings:
    return Settings.from_env({"TICKSTREAM_RISK_ENTRY_THRESHOLD": "0.55",
                              "TICKSTREAM_RISK_COOLDOWN_S": "0",
                              "TICKSTREAM_RISK_MAX_TOTAL_POSITIONS": str(max_total)},
                             env_file=None)


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_any_number_of_jobs_gives_the_same_results(file_and_model: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """Symbols dealt out to 2 or 3 processes: the same counts, the same bytes in every
    output file and the same commands as one process, with a total-positions limit of one
    that makes each decision depend on the other symbol's (so the decision order matters)."""
    src, models = file_and_model
    runs = {}
    for jobs in (1, 2, 3):
        r = run_process([src], _settings(1), models, tmp_path / f"j{jobs}", jobs=jobs)
        assert r.pop("jobs") == jobs
        del r["seconds"], r["ticks_per_s"]
        runs[jobs] = (r, _outputs(tmp_path / f"j{jobs}"))
    one, files = runs[1]
    assert set(files) == {"clean.csv", "rejected.csv", "bars.csv", "features.csv",
                          "commands.csv"}
    assert one["ticks_in"] == one["clean"] + one["duplicates"] + sum(one["rejected"].values())
    commands = list(csv.DictReader(io.StringIO(files["commands.csv"].decode())))
    assert {c["symbol"] for c in commands} == {"EURUSD", "USDJPY"}
    for jobs in (2, 3):
        assert runs[jobs][0] == one
        for name, data in files.items():
            assert runs[jobs][1][name] == data, f"{name} differs with {jobs} jobs"
    # The limit binds: with room for two positions the commands are different.
    two = run_process([src], _settings(2), models, tmp_path / "two", jobs=2)
    assert (tmp_path / "two" / "commands.csv").read_bytes() != files["commands.csv"]
    assert sum(two["commands"].values()) > sum(one["commands"].values())


def test_jobs_on_the_command_line(file_and_model: tuple[Path, Path], tmp_path: Path) -> None:
    src, _models = file_and_model
    res = subprocess.run([sys.executable, "-m", "topology.cli", "process", str(src), "--json",
                          "--jobs", "2"], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["jobs"] == 2 and r["ticks_in"] > 100_000
    bad = subprocess.run([sys.executable, "-m", "topology.cli", "process", str(src),
                          "--jobs", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--jobs takes a whole number from 1 to 256" in bad.stderr


def _on_usdjpy_rows(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Make the shard that is given USDJPY rows call ``action`` (in that forked child)."""
    original = Shard.feed

    def feed(self: Shard, i: int, items: Iterable[tuple[int, Tick | BadRow]]) -> None:
        items = list(items)
        if any(isinstance(t, Tick) and t.symbol == "USDJPY" for _n, t in items):
            action()
        original(self, i, items)

    monkeypatch.setattr(Shard, "feed", feed)


def _boom() -> None:
    raise ZeroDivisionError("boom in the USDJPY shard")


def test_a_failing_shard_is_a_clear_error_and_no_process_is_left(
    file_and_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _models = file_and_model
    _on_usdjpy_rows(monkeypatch, _boom)
    with pytest.raises(RuntimeError, match=r"process shard \d failed") as err:
        run_process([src], _settings(1), None, tmp_path / "out", jobs=2)
    assert "ZeroDivisionError: boom in the USDJPY shard" in str(err.value)
    assert multiprocessing.active_children() == []
    assert not list((tmp_path / "out").glob(".parts-*"))  # the shards' parts are removed


def test_a_killed_shard_is_a_clear_error(
    file_and_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _models = file_and_model
    _on_usdjpy_rows(monkeypatch, lambda: os._exit(3))  # as if killed: no result, no traceback
    with pytest.raises(RuntimeError, match=r"process shard \d died \(exit code 3\)"):
        run_process([src], _settings(1), None, None, jobs=2)
    assert multiprocessing.active_children() == []


def test_a_file_without_the_header_is_a_clear_error_with_any_jobs(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    with good.open("w", newline="") as fh:
        write_canonical([Tick("HD", "EURUSD", 1_700_000_000_000, 1.1, 1.1001)], fh)
    bad = tmp_path / "bad.csv"
    bad.write_text("broker,symbol,time,bid,ask\nHD,EURUSD,1,1.1,1.2\n")
    for jobs in (1, 2):
        with pytest.raises(TickFileError, match="header lacks time_msc"):
            run_process([good, bad], _settings(1), None, tmp_path / f"out{jobs}", jobs=jobs)
        assert multiprocessing.active_children() == []


def test_progress_counts_every_input_row_with_any_jobs(shared_data: Path, tmp_path: Path
                                                      ) -> None:
    src = _canonical(shared_data, tmp_path)
    for jobs in (1, 2):
        updates: list[int] = []
        r = run_process([src], _settings(1), None, None, jobs=jobs, progress=updates.append)
        assert sum(updates) == r["ticks_in"] > 0  # malformed rows are input rows too
        assert len(updates) > 1 and max(updates) <= 2048  # reported as it goes, in chunks
        assert data_rows(src) == r["ticks_in"]  # the bar's total: where it ends


def _shard_run(src: Path, sink_dir: Path | None) -> ShardResult:
    """One shard over ``src`` with tick tapes, then the decisions, as ``run_process`` does."""
    settings = _settings(1)
    config = PipelineConfig.from_settings(settings)
    sink = RowSink(sink_dir) if sink_dir is not None else None
    shard = Shard(config, ContextBook(prune_lag_ms=None), [src], sink, record_ticks=True)
    shard.feed(0, numbered_rows(numbered_csv(src)))
    result = shard.finish()
    if sink is not None:
        sink.close()
    return result


@pytest.mark.parametrize("drain_every", [4096, 7])
def test_ticks_and_decisions_go_on_the_tapes_alike_by_row_and_by_window(
        file_and_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        drain_every: int) -> None:
    """Without ``--out`` a shard puts a whole window of rows (two symbols interleaved) on
    the tapes at once; with it, row by row. Every tick's row key, time, receive time, bid
    and ask, each decision's row key and place on its tape, and so every command made from
    them (stops and take-profits between decisions included), are the same."""
    src, models = file_and_model
    (tmp_path / "rows").mkdir()
    by_row = _shard_run(src, tmp_path / "rows")
    monkeypatch.setattr(process_shard, "DRAIN_EVERY", drain_every)
    by_window = _shard_run(src, None)
    assert set(by_window.tapes) == set(by_row.tapes) == {"EURUSD", "USDJPY"}
    for symbol, tape in by_row.tapes.items():
        other = by_window.tapes[symbol]
        assert len(tape) > 1000
        for column in ("keys", "times", "recvs", "bids", "asks"):
            assert getattr(other, column) == getattr(tape, column), (symbol, column)
    assert len(by_row.decisions) > 100
    assert [(k, d.symbol, d.bar, d.tick_pos) for k, d in by_window.decisions] == [
        (k, d.symbol, d.bar, d.tick_pos) for k, d in by_row.decisions]
    commands: list[list[TradingCommand]] = []
    for result in (by_row, by_window):
        store = ModelStore(models)
        store.latest()
        decider = Pipeline(PipelineConfig.from_settings(_settings(1)), models=store,
                           context=ContextBook(prune_lag_ms=None))
        out = Outputs()
        decide_in_order(decider, result.decisions, result.tapes, out)
        commands.append(out.commands)
    assert commands[0] == commands[1]
    assert any(c.action == "CLOSE" for c in commands[0])
