"""``tickstream query commands``' outcomes: the stored commands filled at a venue's stored
quotes give the backtest's trades over the same ticks, and count them once per day row."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import RISK, train_small_model

from connectors.files import write_canonical
from connectors.simulator import simulate
from offline.backtest import backtest, load_models, utc_day
from offline.outcomes import command_outcomes, stored_commands
from offline.process import run_process
from storage.backend import open_backend
from storage.errors import StorageError
from storage.url import parse_store_url
from topology.settings import Settings
from topology.store_cli import add_parsers

SETTINGS = Settings.from_env({**RISK, "TICKSTREAM_RISK_STOP_LOSS_PIPS": "3",
                              "TICKSTREAM_RISK_TAKE_PROFIT_PIPS": "4"}, env_file=None)
PIPS = {s: spec.pip_size for s, spec in SETTINGS.symbols.items()}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    tmp = tmp_path_factory.mktemp("outcomes")
    models = train_small_model(tmp, SETTINGS)
    ticks = sorted(simulate(7, symbols=("EURUSD",), brokers=("ICM", "FXCM"), seconds=4 * 3600,
                            start_ms=1_700_085_600_000),  # 22:00 UTC: over midnight
                   key=lambda t: (t.recv_time_us, t.broker))
    path = tmp / "ticks.csv"
    with path.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    url = f"chdb://{tmp / 'store'}"
    res = run_process([path], SETTINGS, models, None, store=url)
    assert res["stored"]["commands"] > 4
    return url, path, models


def test_outcomes_are_the_backtests_trades(filled: tuple[str, Path, Path]) -> None:
    url, path, models = filled
    from connectors.files import read_canonical
    from stages.types import Tick

    ticks = [t for t in read_canonical(path) if isinstance(t, Tick)]
    summary, trades = backtest(ticks, SETTINGS, load_models(models), venue="FXCM",
                               random_runs=1)
    assert summary["stats"]["trades"] > 2
    backend = open_backend(parse_store_url(url))
    try:
        out = command_outcomes(backend, PIPS, venue="FXCM")
        default = command_outcomes(backend, PIPS)
        with pytest.raises(StorageError, match="venue 'IG' has no stored clean ticks"):
            command_outcomes(backend, PIPS, venue="IG")
        stored = stored_commands(backend)
    finally:
        backend.close()

    def key(t: object) -> tuple[object, ...]:
        return tuple(getattr(t, f) for f in ("symbol", "side", "entry_time_ms", "entry_price",
                                             "exit_time_ms", "exit_price", "exit_reason",
                                             "pips", "pnl"))

    assert [key(t) for t in out.trades] == [key(t) for t in trades]
    assert default.venue in ("ICM", "FXCM")
    rows = out.result.dicts()
    assert {r["venue"] for r in rows} == {"FXCM"}
    assert len({r["day"] for r in rows}) == 2  # the run spans a UTC midnight
    # every trade is on its entry's day row, once; a CLOSE row counts the closes it filled
    by_id = {c.command_id: c for c in stored}
    want: Counter[tuple[str, str]] = Counter()
    pips: dict[tuple[str, str], float] = {}
    for t in trades:
        c = by_id[t.entry_command_id]
        k = (utc_day(c.bar_time), c.action)
        want[k] += 1
        pips[k] = pips.get(k, 0.0) + t.pips
    for r in rows:
        k = (r["day"], r["action"])
        if r["action"] == "CLOSE":
            assert r["wins"] is None and r["net_pips"] is None
            assert 0 <= r["filled"] <= r["commands"]
        else:
            assert r["filled"] == want[k]
            assert r["net_pips"] == pytest.approx(pips.get(k), abs=1e-6) if want[k] else \
                r["net_pips"] is None
            assert r["wins"] == sum(1 for t in trades if t.pips > 0 and
                                    (utc_day(by_id[t.entry_command_id].bar_time),
                                     by_id[t.entry_command_id].action) == k)
    assert sum(r["filled"] for r in rows if r["action"] != "CLOSE") == len(trades)
    assert sum(r["filled"] for r in rows if r["action"] == "CLOSE") == sum(
        1 for t in trades if t.exit_command_id is not None)


def test_query_commands_prints_outcomes(filled: tuple[str, Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = filled[0]
    parser = argparse.ArgumentParser(prog="tickstream")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = parser.parse_args(["query", "commands", "--store", url, "--json", "--venue", "ICM",
                              "--latency-ms", "0", "--commission", "2"])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["venue"] for r in rows} == {"ICM"}
    assert {"filled", "open", "wins", "net_pips", "pnl", "currency"} <= set(rows[0])
    args = parser.parse_args(["query", "commands", "--store", url])
    assert args.func(args) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("outcomes: filled at ") and "latency 250 ms" in first
    args = parser.parse_args(["query", "commands", "--store", url, "--venue", "IG"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "venue 'IG'" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["query", "commands", "--latency-ms", "-1"])
