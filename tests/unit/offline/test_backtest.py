"""``tickstream backtest``: fills, stops and P&L on hand-made quotes known to the pip; the
commands equal ``process``'s on real ticks; the same input gives the same files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import RISK, train_small_model

from connectors.files import write_canonical
from connectors.history.parse import read_history
from offline.backtest import (
    BacktestError,
    Quotes,
    Trade,
    backtest,
    exposure,
    load_models,
    load_ticks,
    max_drawdown,
    random_baseline,
    run_pipeline,
    simulate,
    trade_stats,
)
from offline.backtest_report import write_outputs
from offline.process import run_process
from offline.process_shard import record_row
from schemas.records import TradingCommand
from stages.pipeline import PipelineConfig
from stages.types import Tick
from topology.settings import Settings

PIPS = {"EURUSD": 0.0001, "USDJPY": 0.01, "EURGBP": 0.0001}
T0 = 1_400_000_000_000 - 1_400_000_000_000 % 86_400_000  # a UTC midnight
MIN = 60_000


def cmd(action: str, bar_time: int, *, symbol: str = "EURUSD", sl: float | None = None,
        tp: float | None = None, volume: float = 0.1, cid: str | None = None) -> TradingCommand:
    return TradingCommand(
        command_id=cid or f"{symbol}-{action}-{bar_time}", action=action, symbol=symbol,
        volume=volume, price=0.0, stop_loss=sl, take_profit=tp, confidence=0.7,
        model_version="hand", reason="test", bar_time=bar_time, trigger_recv_time_us=0,
        created_time_us=0)


def quotes(*rows: tuple[int, float, float]) -> Quotes:
    return Quotes.from_rows(rows)


def one(commands: list[TradingCommand], q: Quotes, symbol: str = "EURUSD",
        **kw: float) -> Trade:
    sim = simulate(commands, {symbol: q}, PIPS, **kw)  # type: ignore[arg-type]
    assert len(sim.trades) == 1, sim
    return sim.trades[0]


# ---- fills and P&L known to the pip ----------------------------------------------------

def test_buy_then_close_fills_at_the_venue_ask_and_bid_after_the_latency() -> None:
    # decided at T0 + 60 s (the bar's close); with 250 ms latency the order reaches the venue
    # at T0 + 60.25 s: the tick at 60.249 s is too early, the one at 60.300 s fills
    q = quotes((T0 + 60_000, 1.09990, 1.10000), (T0 + 60_249, 1.10000, 1.10010),
               (T0 + 60_300, 1.10010, 1.10020), (T0 + 150_000, 1.10040, 1.10050),
               (T0 + 180_250, 1.10070, 1.10080), (T0 + 200_000, 1.10100, 1.10110))
    t = one([cmd("BUY", T0), cmd("CLOSE", T0 + 2 * MIN)], q, commission=3.5)
    assert (t.side, t.entry_price, t.exit_price) == (1, 1.10020, 1.10070)
    assert (t.entry_time_ms, t.exit_time_ms, t.exit_reason) == (T0 + 60_300, T0 + 180_250,
                                                                "signal")
    assert t.pips == pytest.approx(5.0, abs=1e-9)
    assert t.spread_pips == pytest.approx(1.0, abs=1e-9)  # half of 1 pip in, half of 1 out
    assert t.commission == pytest.approx(0.7, abs=1e-12)  # 3.5 a lot a side, 0.1 lot, 2 sides
    assert t.pnl == pytest.approx(0.1 * 100_000 * 0.0005 - 0.7, abs=1e-9)  # $5.00 - $0.70
    assert t.currency == "USD" and t.exit_command_id == f"EURUSD-CLOSE-{T0 + 2 * MIN}"


def test_a_close_made_on_a_tick_fills_after_the_latency_from_that_tick() -> None:
    # the risk manager's max_hold CLOSE was decided at the tick at T0 + 90.5 s (its
    # bar_time), not at a bar close: it fills at the first quote 250 ms after that
    q = quotes((T0 + 61_000, 1.10000, 1.10010), (T0 + 90_500, 1.10020, 1.10030),
               (T0 + 90_800, 1.10030, 1.10040), (T0 + 150_900, 1.10090, 1.10100))
    close = cmd("CLOSE", T0 + 90_500)
    close.reason = f"max_hold: {T0 + 90_500}>={T0 + 90_000}"
    t = one([cmd("BUY", T0), close], q)
    assert (t.exit_time_ms, t.exit_price, t.exit_reason) == (T0 + 90_800, 1.10030, "max_hold")


def test_latency_zero_fills_on_the_tick_at_the_bar_close() -> None:
    q = quotes((T0 + 59_999, 1.0, 1.1), (T0 + 60_000, 1.10000, 1.10010),
               (T0 + 120_000, 1.10020, 1.10030))
    t = one([cmd("BUY", T0), cmd("CLOSE", T0 + MIN)], q, latency_ms=0)
    assert (t.entry_price, t.exit_price) == (1.10010, 1.10020)
    assert t.pips == pytest.approx(1.0, abs=1e-9)


def test_a_short_sells_at_the_bid_and_buys_back_at_the_ask() -> None:
    q = quotes((T0 + 61_000, 1.10050, 1.10060), (T0 + 181_000, 1.10000, 1.10012))
    t = one([cmd("SELL", T0), cmd("CLOSE", T0 + 2 * MIN)], q)
    assert (t.side, t.entry_price, t.exit_price) == (-1, 1.10050, 1.10012)
    assert t.pips == pytest.approx(3.8, abs=1e-9)
    assert t.spread_pips == pytest.approx(0.5 + 0.6, abs=1e-9)
    assert t.pnl == pytest.approx(3.8, abs=1e-9)  # 0.1 lot: $1 a pip


def test_a_stop_through_a_gap_fills_at_the_gap_tick_and_the_late_close_is_ignored() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 70_000, 1.10001, 1.10011),
               (T0 + 80_000, 1.09950, 1.09962),  # gaps through the 1.10000 stop
               (T0 + 90_000, 1.10100, 1.10110), (T0 + 181_000, 1.10200, 1.10210))
    sim = simulate([cmd("BUY", T0, sl=1.10000, tp=1.10200), cmd("CLOSE", T0 + 2 * MIN)],
                   {"EURUSD": q}, PIPS)
    (t,) = sim.trades
    assert (t.exit_reason, t.exit_time_ms, t.exit_price) == ("stop_loss", T0 + 80_000, 1.09950)
    assert t.pips == pytest.approx(-7.0, abs=1e-9)  # no improvement to the level (-2 pips)
    assert t.pnl == pytest.approx(-7.0, abs=1e-9)
    assert sim.counts["close_after_exit"] == 1


def test_a_take_profit_fills_at_the_tick_that_reaches_it() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 70_000, 1.10059, 1.10069),
               (T0 + 71_000, 1.10065, 1.10075), (T0 + 181_000, 1.10000, 1.10010))
    t = one([cmd("BUY", T0, sl=1.09900, tp=1.10060), cmd("CLOSE", T0 + 2 * MIN)], q)
    assert (t.exit_reason, t.exit_price) == ("take_profit", 1.10065)
    assert t.pips == pytest.approx(4.5, abs=1e-9)


def test_short_levels_are_checked_on_the_ask() -> None:
    q = quotes((T0 + 61_000, 1.10050, 1.10060),
               (T0 + 70_000, 1.10095, 1.10099),  # bid near the stop, ask not at it
               (T0 + 71_000, 1.10095, 1.10101), (T0 + 300_000, 1.1, 1.1))
    t = one([cmd("SELL", T0, sl=1.10100, tp=1.09900)], q)
    assert (t.exit_reason, t.exit_time_ms, t.exit_price) == ("stop_loss", T0 + 71_000, 1.10101)
    assert t.pips == pytest.approx(-5.1, abs=1e-9)


def test_stop_and_target_on_the_same_tick_is_the_stop() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 70_000, 1.10040, 1.10050),
               (T0 + 300_000, 1.1, 1.1))
    # levels that one bid crosses both ways: the stop is assumed
    t = one([cmd("BUY", T0, sl=1.10050, tp=1.10030)], q)
    assert (t.exit_reason, t.exit_price) == ("stop_loss", 1.10040)
    assert t.pips == pytest.approx(2.0, abs=1e-9)


def test_the_fill_tick_itself_does_not_trigger_a_level() -> None:
    q = quotes((T0 + 61_000, 1.09990, 1.10020), (T0 + 62_000, 1.10010, 1.10020))
    t = one([cmd("BUY", T0, sl=1.10000)], q)  # the fill tick's bid is under the stop
    assert t.exit_reason == "end_of_data" and t.exit_time_ms == T0 + 62_000


def test_end_of_data_closes_at_the_last_venue_quote() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 62_000, 1.10030, 1.10040),
               (T0 + 63_000, 1.10031, 1.10041))
    t = one([cmd("BUY", T0, sl=1.0, tp=1.2)], q)
    assert (t.exit_reason, t.exit_time_ms, t.exit_price) == ("end_of_data", T0 + 63_000,
                                                             1.10031)
    assert t.pips == pytest.approx(1.1, abs=1e-9)


def test_commands_with_no_venue_tick_after_them_are_unfilled() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 62_000, 1.10030, 1.10040))
    sim = simulate([cmd("BUY", T0), cmd("CLOSE", T0 + 5 * MIN), cmd("SELL", T0 + 10 * MIN),
                    cmd("BUY", T0, symbol="USDJPY")], {"EURUSD": q}, PIPS)
    # the CLOSE came after the last tick: the long is closed at the end of the data
    (t,) = sim.trades
    assert t.exit_reason == "end_of_data"
    assert sim.counts == {"unfilled": 3, "close_after_exit": 0, "entry_while_open": 0}


def test_an_entry_while_the_simulated_position_is_open_is_counted_and_ignored() -> None:
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 121_000, 1.10030, 1.10040),
               (T0 + 181_000, 1.10050, 1.10060))
    sim = simulate([cmd("BUY", T0), cmd("SELL", T0 + MIN), cmd("CLOSE", T0 + 2 * MIN)],
                   {"EURUSD": q}, PIPS)
    (t,) = sim.trades
    assert (t.side, t.entry_price, t.exit_price) == (1, 1.10020, 1.10050)
    assert sim.counts["entry_while_open"] == 1


def test_usdjpy_pnl_is_converted_to_usd_at_the_exit_price() -> None:
    q = quotes((T0 + 61_000, 150.010, 150.020), (T0 + 121_000, 150.070, 150.085))
    t = one([cmd("BUY", T0, symbol="USDJPY"), cmd("CLOSE", T0 + MIN, symbol="USDJPY")],
            q, "USDJPY", commission=1.0)
    assert t.pips == pytest.approx(5.0, abs=1e-9)
    # 0.1 lot = 10,000 USD; +0.05 JPY a dollar = 500 JPY = 500 / 150.07 USD, less $0.20
    assert t.pnl == pytest.approx(500 / 150.070 - 0.2, abs=1e-9)
    assert t.currency == "USD"


def test_a_cross_stays_in_its_quote_currency_and_out_of_the_usd_totals() -> None:
    q = quotes((T0 + 61_000, 0.81000, 0.81010), (T0 + 121_000, 0.81050, 0.81060))
    t = one([cmd("BUY", T0, symbol="EURGBP"), cmd("CLOSE", T0 + MIN, symbol="EURGBP")], q,
            "EURGBP")
    assert t.currency == "GBP" and t.pnl == pytest.approx(4.0, abs=1e-9)
    stats = trade_stats([t], (T0, T0 + 86_400_000))
    assert stats["pnl"] == 0 and stats["not_in_pnl"] == ["EURGBP"]
    assert stats["total_pips"] == pytest.approx(4.0, abs=1e-6)
    assert stats["symbols"]["EURGBP"]["currency"] == "GBP"


# ---- statistics on known curves ----------------------------------------------------------

def test_max_drawdown_of_a_known_curve() -> None:
    assert max_drawdown([5, -3, -4, 6, -10]) == pytest.approx(11.0)  # peak 5, trough -6
    assert max_drawdown([1, 2, 3]) == 0.0
    assert max_drawdown([]) == 0.0
    assert max_drawdown([-2, 1]) == pytest.approx(2.0)  # from the starting 0


def test_exposure_is_the_union_of_open_intervals_over_the_span() -> None:
    assert exposure([(0, 10), (5, 20), (30, 40)], (0, 100)) == pytest.approx(0.3)
    assert exposure([(-10, 10), (95, 200)], (0, 100)) == pytest.approx(0.15)
    assert exposure([(10, 20), (12, 15)], (0, 100)) == pytest.approx(0.1)
    assert exposure([], (0, 100)) == 0.0


def _trade(pips: float, exit_ms: int, reason: str = "signal", entry_ms: int | None = None,
           symbol: str = "EURUSD") -> Trade:
    entry = exit_ms - 1000 if entry_ms is None else entry_ms
    return Trade(symbol=symbol, side=1, volume=0.1, entry_command_id="e", decided_ms=entry,
                 entry_time_ms=entry, entry_price=1.0, stop_loss=None, take_profit=None,
                 exit_time_ms=exit_ms, exit_price=1.0, exit_reason=reason,
                 exit_command_id=None, pips=pips, spread_pips=1.0, pnl=pips,
                 commission=0.0, currency="USD", entry_index=0, exit_index=0)


def test_trade_stats_on_known_trades() -> None:
    day = 86_400_000
    trades = [_trade(5.0, T0 + 3_600_000, entry_ms=T0), _trade(-3.0, T0 + day + 1000,
                                                               "stop_loss"),
              _trade(-4.0, T0 + day + 5000, "stop_loss"), _trade(6.0, T0 + 3 * day, "take_profit")]
    days = ["2014-05-13", "2014-05-14", "2014-05-15", "2014-05-16"]
    s = trade_stats(trades, (T0, T0 + 4 * day), days)
    assert (s["trades"], s["wins"], s["hit_rate"]) == (4, 2, 0.5)
    assert s["total_pips"] == pytest.approx(4.0) and s["mean_pips"] == pytest.approx(1.0)
    assert s["pnl"] == pytest.approx(4.0) and s["spread_pips"] == pytest.approx(4.0)
    assert s["exit_reasons"] == {"signal": 1, "stop_loss": 2, "take_profit": 1,
                                 "max_hold": 0, "end_of_data": 0}
    daily = list(s["daily_pnl"].values())
    assert s["daily_pnl"] == {"2014-05-13": 5.0, "2014-05-14": -7.0, "2014-05-15": 0.0,
                              "2014-05-16": 6.0}
    want = np.mean(daily) / np.std(daily, ddof=1) * math.sqrt(252)
    assert s["n_days"] == 4 and s["daily_sharpe"] == pytest.approx(want, abs=1e-5)
    assert s["max_drawdown"] == pytest.approx(7.0) and s["max_drawdown_pips"] == pytest.approx(7.0)
    # open 1 h, then three 1 s trades: over a 4-day span
    assert s["exposure"] == pytest.approx((3_600_000 + 3000) / (4 * day), abs=1e-6)
    lo, hi = s["mean_pips_ci95"]
    assert -4.0 <= lo < 1.0 < hi <= 6.0
    assert trade_stats(trades, (T0, T0 + 4 * day), days) == s  # seeded: the same interval


def test_stats_of_no_trades_and_one_day() -> None:
    s = trade_stats([], (T0, T0 + 1000), ["2014-05-13"])
    assert s["trades"] == 0 and s["hit_rate"] is None and s["mean_pips"] is None
    assert s["mean_pips_ci95"] is None and s["daily_sharpe"] is None and s["n_days"] == 1
    assert s["max_drawdown"] == 0.0 and s["exposure"] == 0.0


def test_random_baseline_draws_sides_at_the_same_times() -> None:
    # the model's long makes +5 pips; the same entry short (sell at the bid, buy back at the
    # ask) makes -7: every run's pips per trade is 5 or -7
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 121_000, 1.10070, 1.10080))
    sim = simulate([cmd("BUY", T0), cmd("CLOSE", T0 + MIN)], {"EURUSD": q}, PIPS)
    base = random_baseline(sim.trades, {"EURUSD": q}, PIPS, runs=400, seed=3)
    long_share = base["p_value"]  # runs at least as good as the model: the long draws
    assert 0.4 < long_share < 0.6
    assert base["beat_fraction"] == pytest.approx(1 - long_share)
    assert base["mean_pips"] == pytest.approx(5 * long_share - 7 * (1 - long_share), abs=1e-6)
    assert (base["mean_pips_p2_5"], base["mean_pips_p97_5"]) == pytest.approx((-7.0, 5.0))
    assert random_baseline(sim.trades, {"EURUSD": q}, PIPS, runs=400, seed=3) == base


def test_random_baseline_mirrors_the_stop_and_target() -> None:
    # long: stop 2 pips under the 1.10020 fill, target 4 over; the short draw of the same
    # entry (fill 1.10010 bid) has its stop at 1.10030 and target at 1.09970 (on the ask)
    q = quotes((T0 + 61_000, 1.10010, 1.10020), (T0 + 70_000, 1.10021, 1.10031),
               (T0 + 80_000, 1.10000, 1.10010), (T0 + 181_000, 1.10050, 1.10060))
    sim = simulate([cmd("BUY", T0, sl=1.10000, tp=1.10060), cmd("CLOSE", T0 + 2 * MIN)],
                   {"EURUSD": q}, PIPS)
    (t,) = sim.trades
    assert (t.exit_reason, t.exit_price) == ("stop_loss", 1.10000)  # -2 pips at 80 s
    base = random_baseline(sim.trades, {"EURUSD": q}, PIPS, runs=50, seed=1)
    # the short is stopped at 70 s (ask 1.10031 >= 1.10030): -2.1 pips
    assert (base["mean_pips_p2_5"], base["mean_pips_p97_5"]) == pytest.approx((-2.1, -2.0))


def test_no_random_runs_or_no_trades() -> None:
    assert random_baseline([], {}, PIPS)["mean_pips"] is None
    q = quotes((T0 + 61_000, 1.1, 1.1001), (T0 + 62_000, 1.1, 1.1001))
    sim = simulate([cmd("BUY", T0)], {"EURUSD": q}, PIPS)
    assert random_baseline(sim.trades, {"EURUSD": q}, PIPS, runs=0)["p_value"] is None


# ---- errors ------------------------------------------------------------------------------

def test_a_missing_or_empty_model_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="does not exist"):
        load_models(tmp_path / "nope")
    with pytest.raises(BacktestError, match="no usable model in") as exc:
        load_models(tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "model-v1.meta.json").write_text("{not json")
    with pytest.raises(BacktestError, match="no usable model in") as exc:
        load_models(tmp_path)
    assert "\n" not in str(exc.value)


def test_no_input_is_an_error() -> None:
    with pytest.raises(BacktestError, match="either a topic or files"):
        load_ticks(None)


# ---- real ticks ----------------------------------------------------------------------------

SETTINGS = Settings.from_env(RISK, env_file=None)


@pytest.fixture(scope="module")
def two_brokers_csv(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four hours of EURUSD from OANDA and FXCM, in time order."""
    lean = shared_data / "lean"
    ticks = [t for p in ("oanda/tick/eurusd/20140513_quote.zip",
                         "fxcm/tick/eurusd/20140513_quote.zip")
             for t in read_history("lean", lean / p) if isinstance(t, Tick)]
    start = 1_399_968_000_000  # 2014-05-13 08:00 UTC
    ticks = sorted((t for t in ticks if start <= t.time_msc < start + 4 * 3_600_000),
                   key=lambda t: t.time_msc)
    path = tmp_path_factory.mktemp("backtest") / "eurusd.csv"
    with path.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("bt-model"), SETTINGS)


@pytest.mark.data
def test_the_commands_are_the_ones_process_writes(two_brokers_csv: Path, models: Path,
                                                  tmp_path: Path) -> None:
    run_process([two_brokers_csv], SETTINGS, models, tmp_path / "process", jobs=1)
    with (tmp_path / "process" / "commands.csv").open() as fh:
        rows = list(csv.reader(fh))[1:]
    ticks, _ = load_ticks(None, files=[two_brokers_csv])
    run = run_pipeline(ticks, PipelineConfig.from_settings(SETTINGS), load_models(models))
    assert len(run.commands) >= 10, "the small model should trade on these hours"
    assert [["" if v is None else str(v) for v in record_row(c)] for c in run.commands] == rows
    assert set(run.clean) == {"OANDA", "FXCM"}


@pytest.mark.data
def test_the_same_input_gives_the_same_files(two_brokers_csv: Path, models: Path,
                                             tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        ticks, _ = load_ticks(None, files=[two_brokers_csv])
        summary, trades = backtest(ticks, SETTINGS, load_models(models), commission=2.0,
                                   random_runs=50)
        out = tmp_path / f"run{i}"
        write_outputs(summary, trades, out)
        outs.append((out, summary, trades))
    (a, summary, trades), (b, _, _) = outs
    for name in ("summary.json", "trades.csv", "equity.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert summary["venue_chosen"] == "most clean ticks"
    assert summary["venue"] == max(summary["clean_ticks"], key=summary["clean_ticks"].get)
    stats = summary["stats"]
    assert stats["trades"] == len(trades) > 0
    assert stats["total_pips"] == pytest.approx(sum(t.pips for t in trades), abs=1e-5)
    assert stats["commission"] == pytest.approx(0.4 * len(trades), abs=1e-6)
    assert sum(stats["exit_reasons"].values()) == len(trades)
    entries = summary["commands"]["BUY"] + summary["commands"]["SELL"]
    fills = summary["fills"]
    assert 0 <= entries - len(trades) <= fills["unfilled"] + fills["entry_while_open"]
    with (a / "trades.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(trades)


@pytest.mark.data
def test_fills_are_at_the_chosen_venue_quotes(two_brokers_csv: Path, models: Path) -> None:
    ticks, _ = load_ticks(None, files=[two_brokers_csv])
    summary, trades = backtest(ticks, SETTINGS, load_models(models), venue="OANDA",
                               random_runs=0)
    assert summary["venue"] == "OANDA" and summary["venue_chosen"] == "given"
    oanda = {(t.time_msc, t.bid, t.ask) for t in ticks if t.broker == "OANDA"}
    for t in trades:
        assert any(tm == t.entry_time_ms and t.entry_price in (b, a) for tm, b, a in oanda)
    with pytest.raises(BacktestError, match=r"venue 'IG' has no clean ticks; brokers seen: "
                                            r"FXCM \([\d,]+ clean ticks\), OANDA"):
        backtest(ticks, SETTINGS, load_models(models), venue="IG")


@pytest.mark.data
def test_no_command_is_a_summary_with_a_note(two_brokers_csv: Path, models: Path) -> None:
    ticks, _ = load_ticks(None, files=[two_brokers_csv])
    settings = Settings.from_env({**RISK, "TICKSTREAM_RISK_MAX_POSITION_PER_SYMBOL": "0"},
                                 env_file=None)
    summary, trades = backtest(ticks, settings, load_models(models))
    assert trades == [] and summary["stats"]["trades"] == 0
    assert "no command" in summary["note"]
    assert summary["random_baseline"]["mean_pips"] is None
