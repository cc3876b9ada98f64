"""MetaTrader 5 tick arrays → :class:`~schemas.records.RawTick`: pure, no terminal, no Kafka.

The API is pull-only. A collector asks ``copy_ticks_from(symbol, date_from, count, flags)``
for the ticks at or after ``date_from``, which the API takes in whole **seconds**, while
ticks carry ``time_msc`` in milliseconds and several ticks can share one millisecond. So
every poll re-reads the tail of the second the previous poll ended in, and
:class:`SymbolCursor` decides, row by row, what is new:

* rows before the cursor millisecond were handled by an earlier poll: skipped;
* rows *at* the cursor millisecond are identified by their index within that millisecond
  and their content (``(time_msc, index, row bytes)``, NaN-safe): the set of those already
  handled is kept, so a tick that arrives later in the same millisecond is emitted and a
  re-read one is not;
* a row after the cursor millisecond moves the cursor and clears the set.

"Handled" includes rejected rows: a bad row is routed to the dead-letter topic once.

Quotes: a tick whose ``flags`` carry only ``BID`` (or only ``ASK``) changed one side; the
other side is carried forward from the symbol's previous quote (a feed may leave it 0).
Times: ``time_msc`` is the broker's server clock written as if it were UTC; subtracting the
server's UTC offset gives true UTC. :func:`detect_offset_ms` infers that offset from a fresh
tick and the local clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.mt5.api import TICK_FLAG_ASK, TICK_FLAG_BID, TickArray
from schemas.records import RawTick

REQUIRED_FIELDS = ("time_msc", "bid", "ask", "flags")
OPTIONAL_FIELDS = ("time", "last", "volume", "volume_real")
INTEGER_FIELDS = ("time_msc", "flags", "time")
#: RawTick.time_msc is an Avro long.
_LONG_MAX = 2**63 - 1

#: Offsets are detected to this granularity (every broker server zone is a whole or half hour).
OFFSET_GRANULARITY_MS = 1_800_000


class TickFormatError(ValueError):
    """The batch is not a tick array at all (missing fields): nothing in it can be parsed."""


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that is not a valid quote: its original content as JSON, a reason code, detail."""

    payload: str
    reason: str
    detail: str


@dataclass(slots=True)
class SymbolCursor:
    """Where polling of one symbol stands, and the quote carried forward.

    ``time_msc`` is in server time (what the terminal compares ``date_from`` with), never
    shifted to UTC.
    """

    time_msc: int
    seen: set[tuple[int, int, bytes]] = field(default_factory=set)
    out_of_order: set[tuple[int, bytes]] = field(default_factory=set)
    bid: float | None = None
    ask: float | None = None

    @property
    def request_from_s(self) -> int:
        """``date_from`` for the next poll: the start of the cursor's second."""
        return self.time_msc // 1000


@dataclass(slots=True)
class Converted:
    """The outcome of one batch, in row order."""

    items: list[RawTick | RejectedRow] = field(default_factory=list)
    new_rows: int = 0  # rows handled for the first time (emitted or rejected)

    @property
    def ticks(self) -> list[RawTick]:
        return [i for i in self.items if isinstance(i, RawTick)]

    @property
    def rejects(self) -> list[RejectedRow]:
        return [i for i in self.items if isinstance(i, RejectedRow)]


def price(x: Any) -> float | None:
    """A usable price, or None (NaN, infinities, zero and negatives are not prices)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0.0 else None


def _payload(names: tuple[str, ...], values: tuple[Any, ...], terminal_symbol: str) -> str:
    row: dict[str, Any] = {"symbol": terminal_symbol}
    for n, v in zip(names, values, strict=True):
        row[n] = v.item() if hasattr(v, "item") else v
    return json.dumps(row, separators=(",", ":"), default=repr)


def convert(
    rows: TickArray,
    cursor: SymbolCursor,
    *,
    broker: str,
    symbol: str,
    terminal_symbol: str,
    offset_ms: int,
    recv_time_us: int,
) -> Converted:
    """Turn one polled batch into ticks and rejects, advancing ``cursor`` in place.

    Raises :class:`TickFormatError` when ``rows`` lacks the tick fields (the cursor is then
    untouched).
    """
    names = tuple(getattr(getattr(rows, "dtype", None), "names", None) or ())
    missing = [f for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise TickFormatError(
            f"{terminal_symbol}: tick array lacks field(s) {', '.join(missing)} "
            f"(dtype {getattr(rows, 'dtype', type(rows).__name__)})"
        )
    not_int = [f for f in INTEGER_FIELDS if f in names and rows.dtype[f].kind not in "iu"]
    if not_int:
        raise TickFormatError(
            f"{terminal_symbol}: tick array field(s) {', '.join(not_int)} are not integers "
            f"(dtype {rows.dtype})"
        )
    out = Converted()
    n = len(rows)
    if n == 0:
        return out
    col = {f: rows[f].tolist() for f in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS) if f in names}
    raw = rows.tobytes()
    size = rows.dtype.itemsize
    t_col: list[Any] = col["time_msc"]
    start_ms = cursor.time_msc
    index_in_ms = 0
    prev_t: int | None = None
    for i in range(n):
        t = int(t_col[i])
        if prev_t is not None and t < prev_t:
            # The API returns rows in time order; one going back is not a tick we can place.
            ooo = (t, raw[i * size:(i + 1) * size])
            if ooo not in cursor.out_of_order:
                cursor.out_of_order.add(ooo)
                out.new_rows += 1
                out.items.append(RejectedRow(
                    _payload(names, tuple(rows[i].tolist()), terminal_symbol),
                    "out_of_order", f"{terminal_symbol}: time_msc {t} precedes the previous "
                                    f"row's {prev_t}",
                ))
            continue
        index_in_ms = index_in_ms + 1 if t == prev_t else 0
        prev_t = t
        if t < start_ms:
            continue  # re-read from the start of the cursor's second: handled before
        key = (t, index_in_ms, raw[i * size:(i + 1) * size])
        if t == cursor.time_msc:
            if key in cursor.seen:
                continue
        elif t > cursor.time_msc:
            if t // 1000 != cursor.time_msc // 1000 and cursor.out_of_order:
                floor = t // 1000 * 1000
                cursor.out_of_order = {k for k in cursor.out_of_order if k[0] >= floor}
            cursor.time_msc = t
            cursor.seen = set()
        cursor.seen.add(key)
        out.new_rows += 1
        out.items.append(_row(i, t, col, names, rows, cursor, broker=broker, symbol=symbol,
                              terminal_symbol=terminal_symbol, offset_ms=offset_ms,
                              recv_time_us=recv_time_us))
    return out


def _row(
    i: int, t: int, col: Mapping[str, list[Any]], names: tuple[str, ...], rows: TickArray,
    cursor: SymbolCursor, *, broker: str, symbol: str, terminal_symbol: str, offset_ms: int,
    recv_time_us: int,
) -> RawTick | RejectedRow:
    def reject(reason: str, detail: str) -> RejectedRow:
        return RejectedRow(_payload(names, tuple(rows[i].tolist()), terminal_symbol), reason,
                           f"{terminal_symbol}: {detail}")

    if t <= 0 or t - offset_ms > _LONG_MAX:
        return reject("bad_time", f"time_msc {t} is not a time")
    if "time" in col and int(col["time"][i]) != t // 1000:
        return reject("time_mismatch",
                      f"time {col['time'][i]} disagrees with time_msc {t}")
    flags = int(col["flags"][i])
    bid = _side("bid", flags & TICK_FLAG_BID, col["bid"][i], cursor.bid)
    if isinstance(bid, str):
        return reject(*_side_reason(bid, "bid", col["bid"][i]))
    ask = _side("ask", flags & TICK_FLAG_ASK, col["ask"][i], cursor.ask)
    if isinstance(ask, str):
        return reject(*_side_reason(ask, "ask", col["ask"][i]))
    cursor.bid, cursor.ask = bid, ask
    last = price(col["last"][i]) if "last" in col else None
    volume = price(col["volume_real"][i]) if "volume_real" in col else None
    if volume is None and "volume" in col:
        volume = price(col["volume"][i])
    return RawTick(
        broker=broker, symbol=symbol, bid=bid, ask=ask, last=last, volume=volume,
        time_msc=t - offset_ms, recv_time_us=recv_time_us, seq=None, source="MT5",
    )


def _side(side: str, flagged: int, value: Any, carried: float | None) -> float | str:
    """The price of one side, or a reason code why there is none."""
    if flagged:
        v = price(value)
        return v if v is not None else "invalid_price"
    if carried is not None:
        return carried
    v = price(value)
    return v if v is not None else "missing_side"


def _side_reason(code: str, side: str, value: Any) -> tuple[str, str]:
    if code == "invalid_price":
        return code, f"{side} {value!r} flagged as changed is not a price"
    return code, f"{side} not flagged, no earlier quote to carry forward and {value!r} is unusable"


def detect_offset_ms(
    server_ms: int, utc_ms: int, *, tolerance_ms: int = 120_000,
    granularity_ms: int = OFFSET_GRANULARITY_MS,
) -> int | None:
    """The server clock's offset from UTC, from a fresh tick's server time and local UTC.

    Rounds ``server_ms - utc_ms`` to ``granularity_ms``; returns None when the remainder
    exceeds ``tolerance_ms`` (the tick is stale: market closed, symbol quiet) or the result
    is not a real zone (beyond ±14 h).
    """
    delta = server_ms - utc_ms
    offset = round(delta / granularity_ms) * granularity_ms
    if abs(delta - offset) > tolerance_ms or abs(offset) > 14 * 3_600_000:
        return None
    return int(offset)
