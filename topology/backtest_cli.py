"""``tickstream backtest``: the command line of :mod:`offline.backtest`.

Registered by :func:`topology.cli.build_parser` through :func:`add_parser`. The helpers it
shares with the other commands (settings, ISO times, progress bars) are imported from
:mod:`topology.cli` when called, so either module can be imported first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from offline.backtest_defaults import DEFAULT_LATENCY_MS, DEFAULT_RANDOM_RUNS, DEFAULT_SEED

DEFAULT_OUT = "var/backtest"


def non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def non_negative_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not x >= 0.0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return x


def _iso(text: str) -> int:
    from topology.cli import _iso_ms

    return _iso_ms(text)


def add_parser(sub: Any) -> None:
    """Add ``backtest`` to the ``tickstream`` subcommands (an ``add_subparsers()`` result)."""
    p = sub.add_parser(
        "backtest", help="the model and the live risk rules over history, filled at one "
        "broker's quotes: P&L, hit rate, Sharpe, drawdown against random entries",
        description="Run the worker's stages, model and risk manager over history (a topic or "
        "canonical CSV files), fill each command at one venue's own quote on the first tick "
        "after its bar closes plus the latency (ask to buy, bid to sell), simulate the "
        "stop-loss and take-profit tick by tick, and report pips and account-currency P&L "
        "net of the quoted spread and commission, against random sides at the same times. "
        "Writes summary.json, trades.csv and equity.png to --out (see docs/history.md).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--topic", help="logical topic to read, e.g. ticks.history")
    src.add_argument("--file", action="append", default=[], metavar="CSV",
                     help="canonical tick CSV (repeatable)")
    p.add_argument("--from", dest="from_ms", type=_iso, metavar="ISO",
                   help="first tick time (inclusive), e.g. 2014-05-12 (UTC)")
    p.add_argument("--to", dest="to_ms", type=_iso, metavar="ISO",
                   help="end (exclusive), e.g. 2014-05-14T12:00Z")
    p.add_argument("--symbols", nargs="+", metavar="SYM", help="only these symbols")
    p.add_argument("--model-dir", required=True, metavar="DIR",
                   help="model directory (as the worker's TICKSTREAM_MODEL_DIR)")
    p.add_argument("--venue", metavar="BROKER",
                   help="broker whose bid/ask fills the commands (default: the one with the "
                        "most clean ticks)")
    p.add_argument("--latency-ms", type=non_negative_int, default=DEFAULT_LATENCY_MS,
                   metavar="N", help="from the bar close to the order reaching the venue "
                                     f"(default {DEFAULT_LATENCY_MS})")
    p.add_argument("--commission", type=non_negative_float, default=0.0, metavar="X",
                   help="commission per lot per side in USD (default 0)")
    p.add_argument("--random-runs", type=non_negative_int, default=DEFAULT_RANDOM_RUNS,
                   metavar="N", help=f"random-side baseline runs (default {DEFAULT_RANDOM_RUNS})")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED, metavar="N",
                   help=f"seed of the bootstrap and the baseline (default {DEFAULT_SEED})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where summary.json, trades.csv, equity.png go (default {DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=cmd_backtest)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def print_summary(result: dict[str, Any]) -> None:
    s, b = result["stats"], result["random_baseline"]
    cmds = result["commands"]
    print(f"backtest of model {result['model_version']} over {result['ticks']:,} ticks at "
          f"{result['venue']} ({result['venue_chosen']}), latency {result['latency_ms']} ms: "
          f"{cmds['BUY']} BUY, {cmds['SELL']} SELL, {cmds['CLOSE']} CLOSE")
    if result.get("note"):
        print(f"  note: {result['note']}")
    ci = s["mean_pips_ci95"]
    ci_text = f" (95% CI {ci[0]:.2f} .. {ci[1]:.2f})" if ci else ""
    print(f"  trades {s['trades']}, hit rate {_fmt(s['hit_rate'], '.1%')}, "
          f"pips/trade {_fmt(s['mean_pips'])}{ci_text}, total {_fmt(s['total_pips'], '.1f')} "
          f"pips, spread paid {_fmt(s['spread_pips'], '.1f')} pips")
    print(f"  P&L {_fmt(s['pnl'])} {s['currency']} (commission {_fmt(s['commission'])}), "
          f"daily Sharpe {_fmt(s['daily_sharpe'])} over {s['n_days']} days, max drawdown "
          f"{_fmt(s['max_drawdown'])} {s['currency']} / {_fmt(s['max_drawdown_pips'], '.1f')} "
          f"pips, exposure {_fmt(s['exposure'], '.1%')}")
    reasons = ", ".join(f"{k} {v}" for k, v in s["exit_reasons"].items())
    fills = ", ".join(f"{k} {v}" for k, v in result["fills"].items())
    print(f"  exits: {reasons}; {fills}")
    if b["mean_pips"] is not None:
        print(f"  random sides ({b['runs']} runs): pips/trade {b['mean_pips']:.2f} "
              f"(95% {b['mean_pips_p2_5']:.2f} .. {b['mean_pips_p97_5']:.2f}); the model beat "
              f"{b['beat_fraction']:.0%} of runs, p = {b['p_value']:.3f}")
    skipped = {k: v for k, v in result.get("not_scored", {}).items() if v}
    if skipped:
        print("  bars the model did not score: "
              + ", ".join(f"{k} {v:,}" for k, v in skipped.items()))
    if s["not_in_pnl"]:
        print(f"  not in the USD P&L (quote currency): {', '.join(s['not_in_pnl'])}")
    out = result["outputs"]
    print(f"  equity curve {out['equity']}; trades {out['trades']}; summary {out['summary']}")


def cmd_backtest(args: argparse.Namespace) -> int:
    from connectors.history.topic import TopicReadError
    from offline.backtest import BacktestError, run_backtest
    from offline.backtest_report import write_outputs
    from topology.cli import _batch_gc, _progress, _settings

    settings = _settings()
    if args.topic:
        from topology.preflight import require_broker

        require_broker(settings)  # one line, not the client's connection warnings first
    _batch_gc(settings, model=True)
    t0 = time.perf_counter()
    try:
        with _progress(args, "read") if args.topic else nullcontext() as read_bar, \
                _progress(args, "backtest") as bar:
            summary, trades = run_backtest(
                settings, settings, Path(args.model_dir), topic=args.topic,
                files=[Path(f) for f in args.file], from_ms=args.from_ms, to_ms=args.to_ms,
                symbols=args.symbols, venue=args.venue, latency_ms=args.latency_ms,
                commission=args.commission, random_runs=args.random_runs, seed=args.seed,
                read_progress=None if read_bar is None else read_bar.update,
                progress=bar.update)
    except (BacktestError, TopicReadError) as exc:
        print(f"tickstream backtest: {exc}", file=sys.stderr)
        return 1
    try:
        outputs = write_outputs(summary, trades, Path(args.out))
    except OSError as exc:
        print(f"tickstream backtest: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    result = {**summary, "outputs": outputs, "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_summary(result)
    return 0

