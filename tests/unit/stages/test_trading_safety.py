"""Trading safety (issue 13 item 8): no entry during warm-up, stop-loss / take-profit /
maximum holding time checked on every tick (inline, in ``process`` with any ``--jobs``, and
across a restart), symbols the model was not trained on, a missing model directory."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import FAST_FEATURES, RISK, train_small_model

from connectors.files import write_canonical
from connectors.simulator import simulate
from offline.process import run_process
from offline.process_shard import record_row
from schemas.records import TradingCommand
from stages.config import ExitLimits, RiskLimits
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.risk import RiskManager, command_id_for, exit_code
from stages.score import ModelError, ModelStore
from stages.types import Tick
from topology.settings import Settings, SettingsError

#: Tight exits, so a 30-minute feed closes positions by every rule.
EXITS = {**RISK, "TICKSTREAM_RISK_MAX_HOLD_S": "300", "TICKSTREAM_RISK_TAKE_PROFIT_PIPS": "3",
         "TICKSTREAM_RISK_MAX_TOTAL_POSITIONS": "2"}
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
PIPS = {"EURUSD": 0.0001, "USDJPY": 0.01}


def _settings(extra: dict[str, str] | None = None) -> Settings:
    return Settings.from_env({**EXITS, **(extra or {})}, env_file=None)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("model"), _settings())


@pytest.fixture(scope="module")
def feed() -> list[Tick]:
    return simulate(7, seconds=1800)


def _inline(ticks: list[Tick], settings: Settings, models: Path,
            cut: int | None = None) -> tuple[list[TradingCommand], Pipeline]:
    """The worker's path: tick by tick; with ``cut``, every symbol's state goes through
    JSON into a new pipeline there, as a checkpoint and a restart do."""
    config = PipelineConfig.from_settings(settings)
    p = Pipeline(config, models=ModelStore(models))
    assert p.models is not None and p.models.latest() is not None
    out, cmds = Outputs(), []
    for i, t in enumerate(ticks):
        if i == cut:
            fresh = Pipeline(config, models=ModelStore(models))
            assert fresh.models is not None and fresh.models.latest() is not None
            for symbol in list(p.states):
                fresh.restore_symbol(symbol, json.loads(json.dumps(p.snapshot_symbol(symbol))))
            p = fresh
        p.on_tick(t, out)
        cmds += out.commands
        out.clear()
    p.flush(out)
    cmds += out.commands
    return cmds, p


def _rows(cmds: list[TradingCommand]) -> list[tuple[str, ...]]:
    return [tuple("" if v is None else str(v) for v in record_row(c)) for c in cmds]


def test_every_exit_rule_fires_and_process_gives_the_same_commands_with_any_jobs(
        feed: list[Tick], model: Path, tmp_path: Path) -> None:
    settings = _settings()
    cmds, p = _inline(feed, settings, model)
    kinds = Counter(exit_code(c) or c.action for c in cmds)
    assert kinds["stop_loss"] and kinds["take_profit"] and kinds["max_hold"], kinds
    for c in cmds:
        code = exit_code(c)
        if code is None:
            continue
        assert c.reason.startswith(f"{code}: ") and c.confidence == 1.0
        assert c.command_id == command_id_for(c.symbol, c.bar_time, "CLOSE",
                                              p.models.current.model_id, code)  # type: ignore[union-attr]
    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(feed, fh)
    for jobs in (1, 2):
        result = run_process([src], settings, model, tmp_path / f"j{jobs}", jobs=jobs)
        with (tmp_path / f"j{jobs}" / "commands.csv").open() as fh:
            offline = [tuple(r.values()) for r in csv.DictReader(fh)]
        assert offline == _rows(cmds), f"--jobs {jobs}"
        assert sum(result["commands"].values()) == len(cmds)


def test_a_long_stops_on_the_bid_a_short_on_the_ask_and_the_stop_wins() -> None:
    limits = RiskLimits(cooldown_s=0, atr_stop_mult=0.0, atr_take_mult=0.0,
                        exits=ExitLimits(stop_loss_pips=10, take_profit_pips=20, max_hold_s=0))
    m = RiskManager(limits, PIPS)
    args = {"atr": None, "spread": 0.0001, "event_blackout": False, "kill_switch": False,
            "model_version": "v1", "trigger_recv_time_us": 0, "now_us": 0}
    buy = m.decide(symbol="EURUSD", bar_time=T0, p_up=0.9, price=1.1, **args)  # type: ignore[arg-type]
    assert buy is not None and buy.stop_loss == pytest.approx(1.099)
    assert buy.take_profit == pytest.approx(1.102)
    assert m.watching("EURUSD")
    tick = {"trigger_recv_time_us": 7, "now_us": 8}
    # the ask falling through the stop does not matter to a long: its bid does
    assert m.on_tick("EURUSD", T0 + 61_000, 1.0995, 1.0985, **tick) is None
    assert m.on_tick("EURUSD", T0 + 62_000, 1.0990, 1.0992, kill_switch=True, **tick) is None
    close = m.on_tick("EURUSD", T0 + 63_000, 1.0990, 1.0992, **tick)
    assert close is not None and close.action == "CLOSE" and close.price == 1.0990
    assert exit_code(close) == "stop_loss" and close.bar_time == T0 + 63_000
    assert close.volume == buy.volume and close.trigger_recv_time_us == 7
    assert not m.watching("EURUSD") and m.open_positions == 0
    sell = m.decide(symbol="USDJPY", bar_time=T0, p_up=0.1, price=150.0, **args)  # type: ignore[arg-type]
    assert sell is not None and sell.stop_loss == pytest.approx(150.1)
    assert m.on_tick("USDJPY", T0 + 61_000, 150.11, 150.09, **tick) is None  # bid: no
    target = m.on_tick("USDJPY", T0 + 62_000, 149.79, 149.80, **tick)
    assert target is not None and exit_code(target) == "take_profit" and target.price == 149.80


def test_the_pip_cap_is_the_nearer_level_and_max_hold_runs_from_the_bar_close() -> None:
    limits = RiskLimits(exits=ExitLimits(stop_loss_pips=5, take_profit_pips=0, max_hold_s=120),
                        exits_by_symbol={"USDJPY": ExitLimits(50, 0, 0)})
    m = RiskManager(limits, PIPS)
    args = {"spread": 0.0001, "event_blackout": False, "kill_switch": False,
            "model_version": "v1", "trigger_recv_time_us": 0, "now_us": 0}
    # ATR stop 2 x 0.0010 = 20 pips, capped at 5; ATR target 30 pips (no pip cap)
    buy = m.decide(symbol="EURUSD", bar_time=T0, p_up=0.9, price=1.1, atr=0.0010, **args)  # type: ignore[arg-type]
    assert buy is not None and buy.stop_loss == pytest.approx(1.0995)
    assert buy.take_profit == pytest.approx(1.103)
    tick = {"trigger_recv_time_us": 0, "now_us": 0}
    assert m.on_tick("EURUSD", T0 + 60_000 + 119_999, 1.1, 1.1001, **tick) is None
    held = m.on_tick("EURUSD", T0 + 180_000, 1.1, 1.1001, **tick)
    assert held is not None and exit_code(held) == "max_hold"
    # USDJPY's own limits: ATR 2 x 0.05 = 10 pips is nearer than its 50-pip cap; no max hold
    sell = m.decide(symbol="USDJPY", bar_time=T0, p_up=0.1, price=150.0, atr=0.05, **args)  # type: ignore[arg-type]
    assert sell is not None and sell.stop_loss == pytest.approx(150.1)
    assert m.exit_levels("USDJPY")[3] is None


def test_an_open_position_survives_a_restart_with_its_levels(
        feed: list[Tick], model: Path) -> None:
    settings = _settings()
    whole, _ = _inline(feed, settings, model)
    # restart where a position is open, between its entry and its tick exit
    entry = next(i for i, c in enumerate(whole) if c.action != "CLOSE"
                 and exit_code(whole[i + 1]) is not None)
    cut = next(i for i, t in enumerate(feed)
               if t.time_msc > whole[entry].bar_time + 61_000 and t.symbol == whole[entry].symbol)
    assert cut < next(i for i, t in enumerate(feed) if t.time_msc >= whole[entry + 1].bar_time)
    restarted, _ = _inline(feed, settings, model, cut=cut)
    assert _rows(restarted) == _rows(whole)


def test_the_kill_switch_holds_tick_exits_until_lifted(feed: list[Tick], model: Path) -> None:
    settings = _settings()
    p = Pipeline(PipelineConfig.from_settings(settings), models=ModelStore(model))
    assert p.models is not None and p.models.latest() is not None
    out = Outputs()
    held, stopped_at = 0, 0
    for stopped_at, t in enumerate(feed):  # noqa: B007 (where the loop stopped is used)
        if p.risk.open_positions and not p.kill_switch:
            p.kill_switch = True
        p.on_tick(t, out)
        assert not p.kill_switch or not out.commands
        held += p.kill_switch
        out.clear()
        if held > 2000:
            break
    assert p.risk.open_positions
    p.kill_switch = False
    closes = []
    for t in feed[stopped_at + 1:]:
        p.on_tick(t, out)
        closes += [c for c in out.commands if exit_code(c) is not None]
        out.clear()
    assert closes, "after the lift the exit rules apply again"


def test_a_raw_indicator_model_makes_no_decision_during_warm_up(
        feed: list[Tick], model: Path) -> None:
    store = ModelStore(model)
    m = store.latest()
    assert m is not None and m.required_features == FAST_FEATURES  # no context feature
    cmds, p = _inline(feed, _settings(), model)
    # RSI and ATR need 15 bars: the first 14 bars of each symbol are not scored
    assert p.not_scored["warmup"] == 14 * 2 and cmds
    first = {c.symbol: c.bar_time for c in reversed(cmds)}
    for symbol, bar_time in first.items():
        first_bar = min(t.time_msc for t in feed if t.symbol == symbol) // 60_000 * 60_000
        assert bar_time >= first_bar + 14 * 60_000


def test_a_symbol_the_model_was_not_trained_on_is_scored_only_when_allowed(
        feed: list[Tick], model: Path, tmp_path: Path) -> None:
    only = tmp_path / "eur"
    only.mkdir()
    for f in model.iterdir():
        (only / f.name).write_bytes(f.read_bytes())
    meta_path = only / "model-v1.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["symbols"] = {"EURUSD": 100}
    meta_path.write_text(json.dumps(meta))
    refused, p = _inline(feed, _settings(), only)
    assert {c.symbol for c in refused} == {"EURUSD"} and p.not_scored["untrained_symbol"]
    for allow in ("USDJPY", "*"):
        s = _settings({"TICKSTREAM_MODEL_ALLOW_SYMBOLS": allow})
        allowed, p = _inline(feed, s, only)
        assert {c.symbol for c in allowed} == {"EURUSD", "USDJPY"}
        assert p.not_scored["untrained_symbol"] == 0


def test_process_with_a_missing_model_directory_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(simulate(1, seconds=60), fh)
    with pytest.raises(ModelError, match=r"model directory .*typo does not exist"):
        run_process([src], _settings(), tmp_path / "typo", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelError, match="is not a directory"):
        run_process([src], _settings(), tmp_path / "file", None)


def test_exit_settings_take_a_default_and_per_symbol_overrides() -> None:
    s = Settings.from_env({"TICKSTREAM_RISK_STOP_LOSS_PIPS": "25,GBPJPY=60",
                           "TICKSTREAM_RISK_MAX_HOLD_S": "usdjpy=600",
                           "TICKSTREAM_MODEL_ALLOW_SYMBOLS": "gbpjpy, USDJPY"}, env_file=None)
    assert s.risk.exits == ExitLimits(25.0, 0.0, 3600)
    assert s.risk.exits_for("GBPJPY") == ExitLimits(60.0, 0.0, 3600)
    assert s.risk.exits_for("USDJPY") == ExitLimits(25.0, 0.0, 600)
    assert s.risk.exits_for("EURUSD") == s.risk.exits
    assert s.model_allow_symbols == {"GBPJPY", "USDJPY"}
    assert Settings.from_env({}, env_file=None).risk.exits == ExitLimits()
    for name, value in (("RISK_STOP_LOSS_PIPS", "-1"), ("RISK_STOP_LOSS_PIPS", "XXXYYY=5"),
                        ("RISK_TAKE_PROFIT_PIPS", "EURUSD=1,EURUSD=2"),
                        ("RISK_MAX_HOLD_S", "1.5"), ("MODEL_ALLOW_SYMBOLS", "EUR")):
        with pytest.raises(SettingsError, match=f"TICKSTREAM_{name}: expected"):
            Settings.from_env({f"TICKSTREAM_{name}": value}, env_file=None)
