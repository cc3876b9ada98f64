"""``tickstream backtest`` end to end: a CSV file and the topic ``load`` filled give the same
trades; the output files are the same bytes twice; bad input is one line and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import RISK, train_small_model

from connectors.files import write_canonical
from connectors.history.parse import read_history
from offline.load import load_paths
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.data

EURUSD = ("oanda/tick/eurusd/20140513_quote.zip", "fxcm/tick/eurusd/20140513_quote.zip")


def tickstream(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topology.cli", "backtest", *args],
                          env={**os.environ, **RISK, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tickstream backtest:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def eurusd_ticks(shared_data: Path) -> list[Tick]:
    """EURUSD of 13 May (the symbol the small model knows) from OANDA then FXCM, with the
    receive time ``load`` gives history."""
    ticks = [t for p in EURUSD for t in read_history("lean", shared_data / "lean" / p)
             if isinstance(t, Tick)]
    return [Tick(t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.time_msc * 1000)
            for t in ticks]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("bt-cli"),
                             Settings.from_env(RISK, env_file=None))


@pytest.fixture(scope="module")
def csv_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ticks = eurusd_ticks(shared_data)
    start = 1_399_939_200_000 + 6 * 3_600_000  # 13 May 06:00 UTC, six hours
    ticks = sorted((t for t in ticks if start <= t.time_msc < start + 6 * 3_600_000),
                   key=lambda t: t.time_msc)
    path = tmp_path_factory.mktemp("bt-cli-data") / "eurusd.csv"
    with path.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    return path


def test_backtest_a_file(csv_file: Path, model_dir: Path, tmp_path: Path) -> None:
    runs: list[tuple[Path, dict[str, Any]]] = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        proc = tickstream(["--file", str(csv_file), "--model-dir", str(model_dir),
                           "--commission", "3", "--random-runs", "40", "--out", str(out),
                           "--json"], {})
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append((out, json.loads(proc.stdout)))
    (a, result), (b, _) = runs
    for name in ("summary.json", "trades.csv", "equity.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((a / "summary.json").read_text())
    assert {k: v for k, v in result.items() if k not in ("outputs", "seconds")} == summary
    stats = summary["stats"]
    assert stats["trades"] > 0 and summary["venue_chosen"] == "most clean ticks"
    assert stats["commission"] == pytest.approx(0.6 * stats["trades"], abs=1e-6)
    assert summary["random_baseline"]["runs"] == 40
    assert result["outputs"]["equity"] == str(a / "equity.png")

    # the human summary: a few lines, ending with where the files are
    proc = tickstream(["--file", str(csv_file), "--model-dir", str(model_dir), "--venue",
                       "OANDA", "--latency-ms", "1000", "--out", str(tmp_path / "h")], {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("backtest of model v1 over ") and "at OANDA (given)" in lines[0]
    assert "latency 1000 ms" in lines[0]
    assert any(ln.strip().startswith("trades ") and "hit rate" in ln for ln in lines)
    assert any("random sides" in ln and "p = " in ln for ln in lines)
    assert lines[-1].strip().startswith(f"equity curve {tmp_path / 'h' / 'equity.png'}")
    assert len(lines) <= 8


def test_bad_input_is_one_line_and_exit_1(csv_file: Path, model_dir: Path,
                                          tmp_path: Path) -> None:
    line = error_line(tickstream(["--file", str(csv_file), "--model-dir",
                                  str(tmp_path / "none"), "--out", str(tmp_path / "o")], {}))
    assert "model directory" in line and "does not exist" in line
    (tmp_path / "empty").mkdir()
    line = error_line(tickstream(["--file", str(csv_file), "--model-dir",
                                  str(tmp_path / "empty"), "--out", str(tmp_path / "o")], {}))
    assert "no usable model in" in line
    line = error_line(tickstream(["--file", str(csv_file), "--model-dir", str(model_dir),
                                  "--venue", "IG", "--out", str(tmp_path / "o")], {}))
    assert "venue 'IG'" in line and "FXCM" in line and "OANDA" in line
    assert not (tmp_path / "o").exists()


def test_no_command_is_a_summary_not_an_error(csv_file: Path, model_dir: Path,
                                              tmp_path: Path) -> None:
    proc = tickstream(["--file", str(csv_file), "--model-dir", str(model_dir), "--out",
                       str(tmp_path / "o")], {"TICKSTREAM_RISK_MAX_POSITION_PER_SYMBOL": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: the model and risk rules made no command" in proc.stdout
    assert "trades 0," in proc.stdout
    assert (tmp_path / "o" / "equity.png").exists()


@pytest.mark.integration
def test_backtest_the_topic_equals_the_file(settings_env: dict[str, str],
                                            kafka_settings: Settings, shared_data: Path,
                                            model_dir: Path, tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    for p in EURUSD:
        assert load_paths(kafka_settings, "lean", [shared_data / "lean" / p])["loaded"] == 1
    src = tmp_path / "eurusd.csv"
    with src.open("w", newline="") as fh:
        write_canonical(eurusd_ticks(shared_data), fh)
    window = ["--from", "2014-05-13T02:00Z", "--to", "2014-05-13T10:00Z", "--symbols", "EURUSD"]
    results = []
    for source in (["--topic", "ticks.history"], ["--file", str(src)]):
        out = tmp_path / source[0].strip("-")
        proc = tickstream([*source, *window, "--model-dir", str(model_dir), "--random-runs",
                           "30", "--out", str(out), "--json"], settings_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append((out, json.loads(proc.stdout)))
    (topic_out, from_topic), (file_out, from_file) = results
    assert (topic_out / "trades.csv").read_bytes() == (file_out / "trades.csv").read_bytes()
    assert from_topic["stats"]["trades"] > 0
    assert from_topic["source"]["topic"] == kafka_settings.topic("ticks.history")
    assert from_topic["source"]["malformed"] == 0
    for key in ("stats", "random_baseline", "commands", "fills", "venue", "ticks"):
        assert from_topic[key] == from_file[key], key
