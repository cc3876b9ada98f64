"""What the stored trading commands came to: the backtest's fills over the stored quotes.

``tickstream query commands`` counts the commands per UTC day of their bar, symbol and
action; this module
adds each row's outcome. The stored commands (``commands`` table, ``FINAL``) are filled by
:func:`offline.backtest.simulate` — the very fill rules ``tickstream backtest`` uses — at one
venue's own clean quotes from the ``ticks`` table (default: the broker with the most stored
clean ticks of those symbols), so a store the live sink filled and a store ``process --store``
filled answer alike, and the answer equals the backtest's trades over the same ticks (tested).

Per row: ``filled`` (an entry that opened a simulated position, or a CLOSE that closed one),
``open`` (entries still open at the last stored quote, marked to it), ``wins`` (trades with
pips > 0), ``net_pips`` and ``pnl`` (summed over the trades the row's entries opened, net of
the spread quoted and of ``commission``; ``currency`` says in what). A CLOSE row's trades are
counted on the entry's row, so no trade is counted twice. With no stored clean ticks after
the first command the outcome columns are empty (unknown), not zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from offline.backtest import Quotes, Trade, simulate, utc_day
from offline.backtest_defaults import DEFAULT_LATENCY_MS
from schemas.records import TradingCommand
from stages.risk import exit_code
from stages.types import MINUTE_MS
from storage.backend import Backend, Result, quote
from storage.errors import StorageError
from storage.queries import commands_per_day
from storage.schema import COMMANDS, TICKS

OUTCOME_COLUMNS = ("venue", "filled", "open", "wins", "net_pips", "pnl", "currency")
_FIELDS = ("command_id", "action", "symbol", "volume", "price", "stop_loss", "take_profit",
           "confidence", "model_version", "reason", "bar_time", "trigger_recv_time_us",
           "created_time_us")


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The per-day rows with their outcome columns, and how they were filled."""

    result: Result
    venue: str | None
    latency_ms: int
    commission: float
    trades: list[Trade]


def decided_ms(command: TradingCommand) -> int:
    """When the risk manager decided ``command``: at its tick for a stop/target/max-hold
    CLOSE (its ``bar_time``), else at its bar's close."""
    return command.bar_time if exit_code(command) is not None else command.bar_time + MINUTE_MS


def _where(symbol: str | None, start_ms: int | None, end_ms: int | None) -> str:
    where = "1"
    if start_ms is not None:
        where += f" AND bar_time >= {int(start_ms)}"
    if end_ms is not None:
        where += f" AND bar_time < {int(end_ms)}"
    if symbol:
        where += f" AND symbol = {quote(symbol)}"
    return where


def stored_commands(backend: Backend, *, symbol: str | None = None,
                    start_ms: int | None = None, end_ms: int | None = None
                    ) -> list[TradingCommand]:
    """The stored commands in the order the risk manager made them (per symbol: by the time
    each was decided, then by creation)."""
    res = backend.query(
        f"SELECT {', '.join(_FIELDS)} FROM {backend.database}.{COMMANDS.name} FINAL "
        f"WHERE {_where(symbol, start_ms, end_ms)}"
    )
    cmds = [TradingCommand(**dict(zip(res.names, row, strict=True))) for row in res.rows]
    cmds.sort(key=lambda c: (c.symbol, decided_ms(c), c.created_time_us, c.command_id))
    return cmds


def _venue(backend: Backend, symbols: Sequence[str], from_ms: int,
           venue: str | None) -> str | None:
    res = backend.query(
        f"SELECT broker, count() AS n FROM {backend.database}.{TICKS.name} FINAL "
        f"WHERE symbol IN ({', '.join(quote(s) for s in symbols)}) AND time_msc >= {from_ms} "
        "GROUP BY broker"
    )
    counts = {str(b): int(n) for b, n in res.rows}
    if venue is None:
        if not counts:
            return None  # nothing to fill at: the outcomes are unknown, not zero
        return min(counts, key=lambda b: (-counts[b], b))
    if venue not in counts:
        seen = ", ".join(f"{b} ({n:,} clean ticks)" for b, n in sorted(counts.items()))
        raise StorageError(f"venue {venue!r} has no stored clean ticks of "
                           f"{', '.join(symbols)}; brokers stored: {seen or 'none'}")
    return venue


def venue_quotes(backend: Backend, venue: str, symbol: str, from_ms: int) -> Quotes:
    """``venue``'s stored clean quotes of ``symbol`` from ``from_ms`` to the end of the store
    (a position opened before a query's end is followed to its exit)."""
    res = backend.query(
        f"SELECT time_msc, bid, ask FROM {backend.database}.{TICKS.name} FINAL "
        f"WHERE broker = {quote(venue)} AND symbol = {quote(symbol)} "
        f"AND time_msc >= {int(from_ms)} ORDER BY time_msc, bid, ask"
    )
    return Quotes.from_rows((int(t), float(b), float(a)) for t, b, a in res.rows)


def command_outcomes(backend: Backend, pip_sizes: Mapping[str, float], *,
                     symbol: str | None = None, start_ms: int | None = None,
                     end_ms: int | None = None, venue: str | None = None,
                     latency_ms: int = DEFAULT_LATENCY_MS, commission: float = 0.0
                     ) -> Outcomes:
    """:func:`storage.queries.commands_per_day` with the outcome columns added."""
    if latency_ms < 0:
        raise StorageError(f"latency must be >= 0 ms, got {latency_ms}")
    if not commission >= 0:
        raise StorageError(f"commission must be >= 0, got {commission}")
    counts = commands_per_day(backend, symbol=symbol, start_ms=start_ms, end_ms=end_ms)
    commands = stored_commands(backend, symbol=symbol, start_ms=start_ms, end_ms=end_ms)
    unknown = sorted({c.symbol for c in commands} - set(pip_sizes))
    if unknown:
        raise StorageError(f"no pip size for {', '.join(unknown)}: add it to "
                           "TICKSTREAM_SYMBOLS to fill its commands")
    trades: list[Trade] = []
    chosen: str | None = None
    if commands:
        symbols = sorted({c.symbol for c in commands})
        first = min(decided_ms(c) for c in commands)
        chosen = _venue(backend, symbols, first, venue)
        if chosen is not None:
            quotes = {s: venue_quotes(backend, chosen, s, first) for s in symbols}
            trades = simulate(commands, quotes, pip_sizes, latency_ms=latency_ms,
                              commission=commission).trades
    by_id = {c.command_id: c for c in commands}
    def empty() -> dict[str, Any]:
        return {"filled": 0, "open": 0, "wins": 0, "net_pips": None, "pnl": None,
                "currency": None}

    agg: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(empty)

    def row(command_id: str) -> dict[str, Any]:
        c = by_id[command_id]
        return agg[(utc_day(c.bar_time), c.symbol, c.action)]

    for t in trades:
        entry = row(t.entry_command_id)
        entry["filled"] += 1
        entry["open"] += t.exit_reason == "end_of_data"
        entry["wins"] += t.pips > 0
        entry["net_pips"] = round((entry["net_pips"] or 0.0) + t.pips, 9)
        entry["pnl"] = round((entry["pnl"] or 0.0) + t.pnl, 9)
        entry["currency"] = t.currency if entry["currency"] in (None, t.currency) else "mixed"
        if t.exit_command_id is not None:
            row(t.exit_command_id)["filled"] += 1
    names = counts.names + OUTCOME_COLUMNS
    rows = []
    for r in counts.rows:
        day, sym, action = str(r[0]), str(r[1]), str(r[2])
        o = agg.get((day, sym, action)) or empty()
        if chosen is None:
            o = dict.fromkeys(o)
        elif action == "CLOSE":
            o = {**o, "open": None, "wins": None}
        rows.append((*r, chosen, *(o[k] for k in OUTCOME_COLUMNS[1:])))
    return Outcomes(Result(names, rows), chosen, latency_ms, commission, trades)
