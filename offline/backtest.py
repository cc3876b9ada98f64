"""``tickstream backtest``: the live scoring and risk code over history, filled at one venue.

Two halves:

* :func:`run_pipeline` drives :class:`~stages.pipeline.Pipeline` (the worker's stages, model
  and :class:`~stages.risk.RiskManager`) over ticks in time order, exactly as
  ``tickstream process --model DIR`` does over a time-ordered file: the commands are the
  ones ``process`` writes to ``commands.csv`` (tested). It also keeps each broker's own
  validated quotes (``ticks.clean`` per broker, not the consolidated best).
* :func:`simulate` fills those commands at one venue's quotes, tick by tick, and
  :func:`trade_stats` / :func:`random_baseline` summarise the trades. Pure functions of
  their inputs: no clock, no Kafka, seeded randomness; the same input gives the same
  summary and trades file.

Fill rules (one position per symbol, as the risk manager intends):

* a command decided at its bar's close (``bar_time + 60 s``) plus ``latency_ms`` fills at
  the first venue tick at or after that instant: BUY at the ask, SELL at the bid; CLOSE
  closes a long at the bid and a short at the ask. A CLOSE the risk manager made on a tick
  (stop-loss, take-profit, maximum holding time: :func:`stages.risk.exit_code`) was decided
  at that tick, its ``bar_time``, and fills after the latency from there; the trade's exit
  reason is its code. No tick after it: ``unfilled``.
* from the tick after the fill, every venue tick is checked against the entry's stop-loss
  and take-profit: a long exits when ``bid <= stop_loss`` or ``bid >= take_profit``, at that
  tick's bid (no price improvement to the level: a gap is slipped through honestly); a short
  when ``ask >= stop_loss`` or ``ask <= take_profit``, at that tick's ask. Both on one tick:
  the stop (conservative). The tick a CLOSE fills on is the CLOSE's, not a level's.
* a CLOSE for a position already stopped out: ``close_after_exit``, ignored; an entry while
  the simulated position is open (the risk manager never sends one): ``entry_while_open``,
  ignored. At the end of the data an open position closes at the last venue quote
  (``end_of_data``).

P&L: pips are ``side * (exit - entry) / pip_size``, net of the spread actually quoted (buy at
the ask, sell at the bid); ``spread_pips`` is the half-spread at entry plus the half-spread
at exit. In money: ``volume * 100000`` units, the quote-currency P&L converted to USD (quote
USD: as is; base USD: divided by the exit price; a cross stays in its quote currency and is
left out of the account totals, flagged per symbol), less ``commission`` per lot per side.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from connectors.kafka_client import KafkaClientSettings
from offline.backtest_defaults import DEFAULT_LATENCY_MS, DEFAULT_RANDOM_RUNS, DEFAULT_SEED
from offline.replay import ticks_from_files, ticks_from_topic
from schemas.records import TradingCommand
from stages.context import ContextBook
from stages.pipeline import Outputs, Pipeline, PipelineConfig, PipelineSettings
from stages.risk import exit_code
from stages.score import ModelError, ModelStore, require_model
from stages.types import MINUTE_MS, Tick

LOT_UNITS = 100_000
ACCOUNT_CURRENCY = "USD"
BOOTSTRAP_SAMPLES = 2000
TRADING_DAYS = 252
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "max_hold", "end_of_data")
PROGRESS_EVERY = 10_000
DAY_MS = 86_400_000


class BacktestError(RuntimeError):
    """An input the backtest cannot use (no model, no ticks, unknown venue): one line."""


# ---- the venue's quotes ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Quotes:
    """One venue's quotes of one symbol in time order (equal times keep their order)."""

    times: np.ndarray  # int64 epoch ms
    bids: np.ndarray
    asks: np.ndarray

    @classmethod
    def from_columns(cls, times: Sequence[int], bids: Sequence[float],
                     asks: Sequence[float]) -> Quotes:
        t = np.asarray(times, dtype=np.int64)
        order = np.argsort(t, kind="stable")
        return cls(t[order], np.asarray(bids, dtype=np.float64)[order],
                   np.asarray(asks, dtype=np.float64)[order])

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, float, float]]) -> Quotes:
        rows = list(rows)
        return cls.from_columns([r[0] for r in rows], [r[1] for r in rows],
                                [r[2] for r in rows])

    def __len__(self) -> int:
        return len(self.times)

    def first_at(self, t_ms: int) -> int:
        """Index of the first quote at or after ``t_ms`` (``len(self)``: none)."""
        return int(np.searchsorted(self.times, t_ms, side="left"))


# ---- trades ----------------------------------------------------------------------------

@dataclass(slots=True)
class Trade:
    """One simulated round trip (``side`` +1 long, -1 short)."""

    symbol: str
    side: int
    volume: float
    entry_command_id: str
    decided_ms: int
    entry_time_ms: int
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    exit_time_ms: int
    exit_price: float
    exit_reason: str
    exit_command_id: str | None
    pips: float
    spread_pips: float
    pnl: float  # account currency (``currency``), net of commission
    commission: float
    currency: str
    entry_index: int = field(repr=False)
    exit_index: int = field(repr=False)

    FIELDS = ("symbol", "side", "volume", "entry_command_id", "decided_ms", "entry_time_ms",
              "entry_price", "stop_loss", "take_profit", "exit_time_ms", "exit_price",
              "exit_reason", "exit_command_id", "pips", "spread_pips", "pnl", "commission",
              "currency")

    def row(self) -> tuple[Any, ...]:
        """The CSV row (``csv.writer`` writes None as an empty field, floats as repr)."""
        return (self.symbol, "long" if self.side > 0 else "short", self.volume,
                self.entry_command_id, self.decided_ms, self.entry_time_ms, self.entry_price,
                self.stop_loss, self.take_profit, self.exit_time_ms, self.exit_price,
                self.exit_reason, self.exit_command_id, self.pips, self.spread_pips, self.pnl,
                self.commission, self.currency)


@dataclass(slots=True)
class Simulation:
    trades: list[Trade]
    counts: Counter[str]  # unfilled, close_after_exit, entry_while_open


def money(symbol: str, pnl_quote: float, exit_price: float) -> tuple[float, str]:
    """A quote-currency amount in the account currency, or as is with its currency."""
    base, quote = symbol[:3], symbol[3:6]
    if quote == ACCOUNT_CURRENCY:
        return pnl_quote, ACCOUNT_CURRENCY
    if base == ACCOUNT_CURRENCY:
        return pnl_quote / exit_price, ACCOUNT_CURRENCY
    return pnl_quote, quote


def _exit_scan(q: Quotes, side: int, start: int, stop: int, sl: float | None,
               tp: float | None) -> tuple[int, str] | None:
    """First quote in ``(start, stop)`` where the stop or the target is hit, and which."""
    if (sl is None and tp is None) or stop <= start + 1:
        return None
    px = q.bids[start + 1:stop] if side > 0 else q.asks[start + 1:stop]
    no = np.zeros(len(px), dtype=bool)
    if side > 0:
        hit_sl = px <= sl if sl is not None else no
        hit_tp = px >= tp if tp is not None else no
    else:
        hit_sl = px >= sl if sl is not None else no
        hit_tp = px <= tp if tp is not None else no
    hits = np.flatnonzero(hit_sl | hit_tp)
    if not len(hits):
        return None
    k = int(hits[0])
    return start + 1 + k, "stop_loss" if hit_sl[k] else "take_profit"


def _round_trip(symbol: str, q: Quotes, pip: float, side: int, volume: float, i: int, k: int,
                commission: float) -> tuple[float, float, float, float, float, str]:
    """(entry price, exit price, pips, spread pips, pnl, currency) entering at quote ``i``
    and leaving at quote ``k``."""
    entry = float(q.asks[i] if side > 0 else q.bids[i])
    exit_ = float(q.bids[k] if side > 0 else q.asks[k])
    pips = side * (exit_ - entry) / pip
    spread = ((q.asks[i] - q.bids[i]) + (q.asks[k] - q.bids[k])) / 2.0 / pip
    value, currency = money(symbol, side * (exit_ - entry) * volume * LOT_UNITS, exit_)
    fee = commission * volume * 2.0
    # 1e-9 of a pip or of a dollar is float noise (0.09999999999954 pips is 0.1)
    return entry, exit_, round(pips, 9), round(float(spread), 9), round(value - fee, 9), currency


@dataclass(slots=True)
class _Open:
    cmd: TradingCommand
    side: int
    index: int


def _trade(symbol: str, q: Quotes, pip: float, pos: _Open, k: int, reason: str,
           exit_cmd: TradingCommand | None, commission: float) -> Trade:
    entry, exit_, pips, spread, pnl, currency = _round_trip(
        symbol, q, pip, pos.side, pos.cmd.volume, pos.index, k, commission)
    return Trade(
        symbol=symbol, side=pos.side, volume=pos.cmd.volume,
        entry_command_id=pos.cmd.command_id, decided_ms=pos.cmd.bar_time + MINUTE_MS,
        entry_time_ms=int(q.times[pos.index]), entry_price=entry,
        stop_loss=pos.cmd.stop_loss, take_profit=pos.cmd.take_profit,
        exit_time_ms=int(q.times[k]), exit_price=exit_, exit_reason=reason,
        exit_command_id=None if exit_cmd is None else exit_cmd.command_id,
        pips=pips, spread_pips=spread, pnl=pnl, commission=commission * pos.cmd.volume * 2.0,
        currency=currency, entry_index=pos.index, exit_index=k)


def simulate(commands: Sequence[TradingCommand], quotes: Mapping[str, Quotes],
             pip_sizes: Mapping[str, float], *, latency_ms: int = DEFAULT_LATENCY_MS,
             commission: float = 0.0) -> Simulation:
    """Fill ``commands`` (in emission order) at the venue's ``quotes`` (see module doc).

    ``commission`` is per lot per side, in the account currency. Trades come out ordered
    by entry time (then symbol).
    """
    counts: Counter[str] = Counter(unfilled=0, close_after_exit=0, entry_while_open=0)
    trades: list[Trade] = []
    by_symbol: dict[str, list[TradingCommand]] = {}
    for c in commands:
        by_symbol.setdefault(c.symbol, []).append(c)
    empty = Quotes.from_rows(())
    for symbol, cmds in by_symbol.items():
        q = quotes.get(symbol, empty)
        pip = pip_sizes[symbol]
        n = len(q)
        pos: _Open | None = None
        for c in cmds:
            code = exit_code(c)
            decided = c.bar_time if code is not None else c.bar_time + MINUTE_MS
            j = q.first_at(decided + latency_ms)
            if pos is not None:
                hit = _exit_scan(q, pos.side, pos.index, j, pos.cmd.stop_loss,
                                 pos.cmd.take_profit)
                if hit is not None:
                    trades.append(_trade(symbol, q, pip, pos, *hit, None, commission))
                    pos = None
            if c.action == "CLOSE":
                if j >= n:
                    counts["unfilled"] += 1  # stays open: closed at the end of the data
                elif pos is None:
                    counts["close_after_exit"] += 1
                else:
                    trades.append(_trade(symbol, q, pip, pos, j, code or "signal", c,
                                         commission))
                    pos = None
            elif j >= n:
                counts["unfilled"] += 1
            elif pos is not None:
                counts["entry_while_open"] += 1
            else:
                pos = _Open(c, 1 if c.action == "BUY" else -1, j)
        if pos is not None:
            hit = _exit_scan(q, pos.side, pos.index, n, pos.cmd.stop_loss, pos.cmd.take_profit)
            k, reason = hit if hit is not None else (n - 1, "end_of_data")
            trades.append(_trade(symbol, q, pip, pos, k, reason, None, commission))
    trades.sort(key=attrgetter("entry_time_ms", "symbol"))
    return Simulation(trades, counts)


# ---- statistics ------------------------------------------------------------------------

def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def utc_day(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d")


def max_drawdown(steps: Sequence[float]) -> float:
    """Largest fall from a peak of the running sum of ``steps`` (starting at 0), >= 0."""
    equity = np.concatenate(([0.0], np.cumsum(np.asarray(steps, dtype=np.float64))))
    return float(np.max(np.maximum.accumulate(equity) - equity))


def exposure(intervals: Iterable[tuple[int, int]], span: tuple[int, int]) -> float:
    """Fraction of ``span`` (ms) covered by at least one of ``intervals`` (clipped)."""
    lo, hi = span
    if hi <= lo:
        return 0.0
    covered = 0
    end = lo
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= end:
            continue
        covered += b - max(a, end)
        end = b
    return covered / (hi - lo)


def bootstrap_ci(values: Sequence[float], seed: int,
                 samples: int = BOOTSTRAP_SAMPLES) -> list[float] | None:
    """95% percentile bootstrap interval of the mean (None with fewer than 2 values)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def _group(trades: Sequence[Trade]) -> dict[str, Any]:
    n = len(trades)
    wins = sum(t.pips > 0 for t in trades)
    total = sum(t.pips for t in trades)
    return {"trades": n, "wins": wins, "hit_rate": _r(wins / n) if n else None,
            "total_pips": _r(total), "mean_pips": _r(total / n) if n else None}


def trade_stats(trades: Sequence[Trade], span: tuple[int, int], days: Sequence[str] = (),
                seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The statistics of ``trades`` over the backtest's ``span`` (epoch ms).

    Money figures count only trades in the account currency. The daily P&L is booked on
    each trade's exit day (UTC) over ``days`` (the days the venue quoted; days with a
    trade are added); the equity curve and its drawdowns are of closed trades.
    """
    acct = [t for t in trades if t.currency == ACCOUNT_CURRENCY]
    by_exit = sorted(acct, key=attrgetter("exit_time_ms", "entry_time_ms", "symbol"))
    daily: dict[str, float] = dict.fromkeys(days, 0.0)
    for t in by_exit:
        day = utc_day(t.exit_time_ms)
        daily[day] = daily.get(day, 0.0) + t.pnl
    daily = dict(sorted(daily.items()))
    d = np.array(list(daily.values()), dtype=np.float64)
    sd = float(d.std(ddof=1)) if len(d) >= 2 else 0.0
    sharpe = float(d.mean() / sd * math.sqrt(TRADING_DAYS)) if len(d) >= 2 and sd > 0 else None
    ci = bootstrap_ci([t.pips for t in trades], seed)
    reasons = Counter(t.exit_reason for t in trades)
    per_symbol: dict[str, Any] = {}
    for sym in sorted({t.symbol for t in trades}):
        ts = [t for t in trades if t.symbol == sym]
        per_symbol[sym] = {**_group(ts), "pnl": _r(sum(t.pnl for t in ts)),
                           "currency": ts[0].currency}
    return {
        **_group(trades),
        "mean_pips_ci95": None if ci is None else [_r(v) for v in ci],
        "pnl": _r(sum(t.pnl for t in acct)),
        "currency": ACCOUNT_CURRENCY,
        "not_in_pnl": sorted({t.symbol for t in trades if t.currency != ACCOUNT_CURRENCY}),
        "commission": _r(sum(t.commission for t in acct)),
        "spread_pips": _r(sum(t.spread_pips for t in trades)),
        "exposure": _r(exposure(((t.entry_time_ms, t.exit_time_ms) for t in trades), span)),
        "daily_pnl": {k: _r(v) for k, v in daily.items()},
        "n_days": len(daily),
        "daily_sharpe": _r(sharpe),
        "max_drawdown": _r(max_drawdown([t.pnl for t in by_exit])),
        "max_drawdown_pips": _r(max_drawdown(
            [t.pips for t in sorted(trades, key=attrgetter("exit_time_ms", "entry_time_ms",
                                                           "symbol"))])),
        "exit_reasons": {r: reasons.get(r, 0) for r in EXIT_REASONS},
        "symbols": per_symbol,
    }


def random_baseline(trades: Sequence[Trade], quotes: Mapping[str, Quotes],
                    pip_sizes: Mapping[str, float], *, runs: int = DEFAULT_RANDOM_RUNS,
                    seed: int = DEFAULT_SEED, commission: float = 0.0) -> dict[str, Any]:
    """Random sides at the model's entry times: the distribution of pips per trade.

    Each trade is re-entered at its entry quote on a side drawn at random (seeded), with its
    stop and target at the same signed distances from the fill, mirrored by side, and left at
    the first level hit before the model's exit quote or else at that quote. ``p_value`` is
    the fraction of runs whose pips per trade are at least the model's; ``beat_fraction``
    those strictly below it.
    """
    n = len(trades)
    if runs <= 0 or n == 0:
        return {"runs": runs if n else 0, "mean_pips": None, "mean_pips_p2_5": None,
                "mean_pips_p97_5": None, "mean_pnl": None, "beat_fraction": None,
                "p_value": None}
    pips = np.zeros((2, n))  # row 0: short, row 1: long
    pnl = np.zeros((2, n))
    for col, t in enumerate(trades):
        q = quotes[t.symbol]
        real_fill = t.entry_price
        for row, side in ((0, -1), (1, 1)):
            fill = float(q.asks[t.entry_index] if side > 0 else q.bids[t.entry_index])
            sl = None if t.stop_loss is None else \
                fill - side * t.side * (real_fill - t.stop_loss)
            tp = None if t.take_profit is None else \
                fill + side * t.side * (t.take_profit - real_fill)
            hit = _exit_scan(q, side, t.entry_index, t.exit_index, sl, tp)
            k = t.exit_index if hit is None else hit[0]
            _e, _x, p, _s, money_, currency = _round_trip(
                t.symbol, q, pip_sizes[t.symbol], side, t.volume, t.entry_index, k, commission)
            pips[row, col] = p
            pnl[row, col] = money_ if currency == ACCOUNT_CURRENCY else 0.0
    rng = np.random.default_rng(seed)
    sides = rng.integers(0, 2, size=(runs, n))
    cols = np.arange(n)
    means = pips[sides, cols].mean(axis=1)
    model = float(np.mean([t.pips for t in trades]))
    lo, hi = np.percentile(means, [2.5, 97.5])
    eps = 1e-9  # equal means (e.g. the same sides drawn) are ties, not float noise
    return {
        "runs": runs,
        "mean_pips": _r(float(means.mean())),
        "mean_pips_p2_5": _r(float(lo)),
        "mean_pips_p97_5": _r(float(hi)),
        "mean_pnl": _r(float(pnl[sides, cols].sum(axis=1).mean())),
        "beat_fraction": _r(float(np.mean(means < model - eps))),
        "p_value": _r(float(np.mean(means >= model - eps))),
    }


# ---- reading and the pipeline ----------------------------------------------------------

def load_models(model_dir: Path) -> ModelStore:
    """A model store with a usable model, or :class:`BacktestError` saying why not."""
    try:
        return require_model(model_dir)
    except ModelError as exc:
        raise BacktestError(str(exc)) from None


def load_ticks(
    kafka: KafkaClientSettings | None, *, topic: str | None = None, files: Sequence[Path] = (),
    from_ms: int | None = None, to_ms: int | None = None,
    symbols: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
) -> tuple[list[Tick], dict[str, Any]]:
    """The ticks in ``[from_ms, to_ms)`` in time order (stable), and what was read."""
    if (topic is None) == (not files):
        raise BacktestError("give either a topic or files to backtest")
    if topic is not None:
        if kafka is None:
            raise BacktestError("reading a topic needs the Kafka settings")
        ticks, read = ticks_from_topic(kafka, topic, from_ms, to_ms, symbols, progress)
        source: dict[str, Any] = {"topic": kafka.topic(topic)}
    else:
        ticks, read = ticks_from_files(files, from_ms, to_ms, symbols)
        source = {"files": [str(f) for f in files]}
    if not ticks:
        raise BacktestError(f"no ticks in {source} for the range and symbols asked")
    ticks.sort(key=attrgetter("time_msc"))
    return ticks, {**source, **read, "from_ms": from_ms, "to_ms": to_ms}


@dataclass(slots=True)
class PipelineRun:
    commands: list[TradingCommand]
    #: broker -> symbol -> (times, bids, asks) of that broker's clean ticks
    clean: dict[str, dict[str, tuple[array[int], array[float], array[float]]]]
    ticks: int
    blocked: dict[str, int]
    not_scored: dict[str, int]
    model_version: str | None


def run_pipeline(ticks: Sequence[Tick], config: PipelineConfig, models: ModelStore,
                 progress: Callable[[int], None] | None = None) -> PipelineRun:
    """The worker's stages, model and risk manager over ``ticks`` in the order given.

    As ``tickstream process``: one pipeline, decisions in the order the bars close, the
    open bars flushed at the end symbol by symbol, no calendar/news events.
    """
    pipeline = Pipeline(config, models=models, context=ContextBook(prune_lag_ms=None),
                        checkpointed=False)
    out = Outputs()
    commands: list[TradingCommand] = []
    clean: dict[str, dict[str, tuple[array[int], array[float], array[float]]]] = {}

    def drain() -> None:
        for c in out.clean:
            per = clean.get(c.broker)
            if per is None:
                per = clean[c.broker] = {}
            cols = per.get(c.symbol)
            if cols is None:
                cols = per[c.symbol] = (array("q"), array("d"), array("d"))
            cols[0].append(c.time_msc)
            cols[1].append(c.bid)
            cols[2].append(c.ask)
        commands.extend(out.commands)
        out.clear()

    for n, t in enumerate(ticks, 1):
        pipeline.on_tick(t, out)
        if out.clean or out.commands:
            drain()
        else:
            out.clear()
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    pipeline.flush(out)
    drain()
    if progress is not None:
        progress(len(ticks) % PROGRESS_EVERY)
    model = models.current
    return PipelineRun(commands, clean, len(ticks), dict(pipeline.risk.blocked_by_reason),
                       dict(getattr(pipeline, "not_scored", {})),
                       None if model is None else model.version)


def venue_quotes(run: PipelineRun, venue: str | None) -> tuple[str, dict[str, Quotes]]:
    """The venue (default: the broker with the most clean ticks) and its quotes."""
    counts = {b: sum(len(c[0]) for c in per.values()) for b, per in run.clean.items()}
    if not counts:
        raise BacktestError("no tick passed validation: no venue quotes to fill at")
    if venue is None:
        venue = min(counts, key=lambda b: (-counts[b], b))
    elif venue not in counts:
        seen = ", ".join(f"{b} ({n:,} clean ticks)" for b, n in sorted(counts.items()))
        raise BacktestError(f"venue {venue!r} has no clean ticks; brokers seen: {seen}")
    quotes = {sym: Quotes.from_columns(*c) for sym, c in run.clean[venue].items()}
    return venue, quotes


def backtest(
    ticks: Sequence[Tick], settings: PipelineSettings, models: ModelStore, *,
    venue: str | None = None, latency_ms: int = DEFAULT_LATENCY_MS, commission: float = 0.0,
    random_runs: int = DEFAULT_RANDOM_RUNS, seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[Trade]]:
    """Run the pipeline over ``ticks`` and simulate its commands: (summary, trades).

    The summary holds no wall-clock value: the same input gives the same summary.
    """
    if latency_ms < 0:
        raise BacktestError(f"latency must be >= 0 ms, got {latency_ms}")
    if not (commission >= 0 and math.isfinite(commission)):
        raise BacktestError(f"commission must be a finite amount >= 0, got {commission}")
    config = PipelineConfig.from_settings(settings)
    run = run_pipeline(ticks, config, models, progress)
    chosen, quotes = venue_quotes(run, venue)
    pip_sizes = {s: spec.pip_size for s, spec in config.symbols.items()}
    sim = simulate(run.commands, quotes, pip_sizes, latency_ms=latency_ms,
                   commission=commission)
    all_times = [int(q.times[i]) for q in quotes.values() if len(q) for i in (0, -1)]
    span = (min(all_times), max(all_times))
    days = sorted({utc_day(int(d) * DAY_MS) for q in quotes.values()
                   for d in np.unique(q.times // DAY_MS)})
    stats = trade_stats(sim.trades, span, days, seed)
    baseline = random_baseline(sim.trades, quotes, pip_sizes, runs=random_runs, seed=seed,
                               commission=commission)
    actions = Counter(c.action for c in run.commands)
    brokers = {b: sum(len(c[0]) for c in per.values()) for b, per in sorted(run.clean.items())}
    summary: dict[str, Any] = {
        "model_version": run.model_version,
        "ticks": run.ticks,
        "clean_ticks": brokers,
        "venue": chosen,
        "venue_chosen": "given" if venue is not None else "most clean ticks",
        "span": {"from_ms": span[0], "to_ms": span[1]},
        "latency_ms": latency_ms,
        "commission_per_lot_side": commission,
        "lot_units": LOT_UNITS,
        "account_currency": ACCOUNT_CURRENCY,
        "commands": {a: actions.get(a, 0) for a in ("BUY", "SELL", "CLOSE")},
        "fills": dict(sorted(sim.counts.items())),
        "risk_blocked": run.blocked,
        "not_scored": run.not_scored,
        "stats": stats,
        "random_baseline": baseline,
        "seed": seed,
    }
    if not run.commands:
        summary["note"] = ("the model and risk rules made no command over these ticks: "
                           "no trades to report")
    return summary, sim.trades


def run_backtest(
    settings: PipelineSettings, kafka: KafkaClientSettings | None, model_dir: Path, *,
    topic: str | None = None, files: Sequence[Path] = (), from_ms: int | None = None,
    to_ms: int | None = None, symbols: Sequence[str] | None = None, venue: str | None = None,
    latency_ms: int = DEFAULT_LATENCY_MS, commission: float = 0.0,
    random_runs: int = DEFAULT_RANDOM_RUNS, seed: int = DEFAULT_SEED,
    read_progress: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[Trade]]:
    """Everything but the output files: model check, read, pipeline, simulation, stats."""
    models = load_models(model_dir)
    ticks, read = load_ticks(kafka, topic=topic, files=files, from_ms=from_ms, to_ms=to_ms,
                             symbols=symbols, progress=read_progress)
    summary, trades = backtest(ticks, settings, models, venue=venue, latency_ms=latency_ms,
                               commission=commission, random_runs=random_runs, seed=seed,
                               progress=progress)
    return {"source": read, "model_dir": str(model_dir), **summary}, trades
