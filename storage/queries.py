"""Analytics over the stored stream: OHLC by timeframe, broker quality, commands per day.

Every query reads with ``FINAL``, so a batch the sink delivered twice (at-least-once) counts
once even before the background merge ran: the answers are exact, not eventually exact.
OHLC for 5m..1d is rolled up from the stored one-minute bars (open of the first minute,
close of the last, max of highs, min of lows, summed tick counts), bucketed in UTC by
integer division of the bar's epoch milliseconds — the same SQL on 18.16 (which lacks
``toStartOfInterval``) and on current ClickHouse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from storage.backend import Backend, Result, quote
from storage.errors import StorageError
from storage.schema import BARS, COMMANDS, TICKS

TIMEFRAMES_MS: dict[str, int] = {
    "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000,
}
_SYMBOL = re.compile(r"^[A-Z0-9._]{1,20}$")


def timeframe_ms(name: str) -> int:
    try:
        return TIMEFRAMES_MS[name]
    except KeyError:
        raise StorageError(
            f"unknown timeframe {name!r}; expected one of {', '.join(TIMEFRAMES_MS)}"
        ) from None


def _symbol(symbol: str) -> str:
    if not _SYMBOL.match(symbol):
        raise StorageError(f"bad symbol {symbol!r}: expected e.g. EURUSD")
    return quote(symbol)


def _between(column: str, start_ms: int | None, end_ms: int | None, scale: int = 1) -> str:
    cond = []
    if start_ms is not None:
        cond.append(f"{column} >= {int(start_ms) * scale}")
    if end_ms is not None:
        cond.append(f"{column} < {int(end_ms) * scale}")
    return "".join(f" AND {c}" for c in cond)


def ohlc(backend: Backend, symbol: str, timeframe: str = "1m", *,
         start_ms: int | None = None, end_ms: int | None = None,
         limit: int | None = None) -> Result:
    """Bars of ``symbol`` at ``timeframe`` from the stored one-minute bars, oldest first.
    Columns: bar_time (epoch ms, start of the bucket), open, high, low, close, tick_count,
    minutes (one-minute bars in the bucket)."""
    step = timeframe_ms(timeframe)
    where = f"symbol = {_symbol(symbol)}" + _between("bar_time", start_ms, end_ms)
    lim = f" LIMIT {int(limit)}" if limit else ""
    return backend.query(
        f"SELECT intDiv(bar_time, {step}) * {step} AS bucket, "
        "argMin(open, bar_time) AS open, max(high) AS high, min(low) AS low, "
        "argMax(close, bar_time) AS close, sum(tick_count) AS tick_count, "
        "count() AS minutes "
        f"FROM {backend.database}.{BARS.name} FINAL WHERE {where} "
        f"GROUP BY bucket ORDER BY bucket{lim}"
    )


def broker_quality(backend: Backend, *, bucket: str = "1h", symbols: Sequence[str] = (),
                   start_ms: int | None = None, end_ms: int | None = None) -> Result:
    """Per broker and time bucket: clean ticks, mean own spread, mean cross-broker
    dispersion, share of ticks where it quoted the best bid / best ask, and mean
    collector-to-cleaner latency (ms)."""
    step = timeframe_ms(bucket)
    where = "1" + _between("time_msc", start_ms, end_ms)
    if symbols:
        where += f" AND symbol IN ({', '.join(_symbol(s) for s in symbols)})"
    return backend.query(
        f"SELECT intDiv(time_msc, {step}) * {step} AS bucket, broker, count() AS ticks, "
        "avg(ask - bid) AS mean_spread, avg(dispersion) AS mean_dispersion, "
        "countIf(best_bid_broker = broker) / count() AS best_bid_share, "
        "countIf(best_ask_broker = broker) / count() AS best_ask_share, "
        "avg(processed_time_us - recv_time_us) / 1000 AS mean_latency_ms "
        f"FROM {backend.database}.{TICKS.name} FINAL WHERE {where} "
        "GROUP BY bucket, broker ORDER BY bucket, broker"
    )


def commands_per_day(backend: Backend, *, symbol: str | None = None,
                     start_ms: int | None = None, end_ms: int | None = None) -> Result:
    """Commands per UTC day of their bar (event time: the same for the live worker's and
    ``process --store``'s commands), symbol and action; ``start_ms``/``end_ms`` bound the
    bar time. Their outcomes: :func:`offline.outcomes.command_outcomes`."""
    where = "1" + _between("bar_time", start_ms, end_ms)
    if symbol:
        where += f" AND symbol = {_symbol(symbol)}"
    return backend.query(
        "SELECT toString(toDate(time)) AS day, symbol, action, count() AS commands, "
        "avg(confidence) AS mean_confidence "
        f"FROM {backend.database}.{COMMANDS.name} FINAL WHERE {where} "
        "GROUP BY day, symbol, action ORDER BY day, symbol, action"
    )


def count(backend: Backend, table: str, *, final: bool = True) -> int:
    """Rows of ``table`` (after de-duplication with ``final``)."""
    fin = " FINAL" if final else ""
    return int(backend.query(f"SELECT count() FROM {backend.database}.{table}{fin}").scalar())
