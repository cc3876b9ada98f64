"""Pure parser of OANDA v20 pricing-stream lines (no I/O, no clock).

The stream (``GET /v3/accounts/{id}/pricing/stream``) is newline-delimited JSON::

    {"type":"PRICE","instrument":"EUR_USD","time":"2016-09-20T15:05:47.960449532Z",
     "tradeable":true,"bids":[{"price":"1.11594","liquidity":10000000}],
     "asks":[{"price":"1.11607","liquidity":10000000}],
     "closeoutBid":"1.11579","closeoutAsk":"1.11622","status":"tradeable"}
    {"type":"HEARTBEAT","time":"2016-09-20T15:05:50.163791738Z"}

:meth:`PriceParser.parse` turns one line into a :class:`~schemas.records.RawTick` (best bid
= ``bids[0]``, best ask = ``asks[0]``; prices are strings), a :class:`Heartbeat`, or a
:class:`ParseError` with a stable reason code:

* ``malformed`` — not JSON, not an object, a missing or wrong field (detail says which);
* ``not_tradeable`` — a well-formed PRICE with ``tradeable: false`` (market closed, halted):
  :class:`~schemas.records.RawTick` has no tradeable flag, so it is never emitted as a tick;
  the collector counts it and, by default, dead-letters it (``non_tradeable: reject``);
* ``unknown_type`` — a message type other than PRICE and HEARTBEAT.

Speed: one ``orjson.loads`` per line, and times are parsed by hand: the date-hour-minute
prefix (``2016-09-20T15:05``) is validated once and cached as epoch ms, so a tick costs one
dict lookup and one ``int()`` for seconds and milliseconds (the fraction is truncated: epoch
ms is the floor of the nanosecond time). Other RFC 3339 forms and OANDA's ``UNIX`` datetime
format (``"1474383947.960449532"``) take the general path. The fast path is wrapped in one
``try``; on any failure the line is re-examined slowly to name exactly what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from connectors.base.times import FieldError, day_start_ms, epoch_to_ms, iso8601_to_ms
from schemas.records import RawTick

__all__ = [
    "MALFORMED",
    "NOT_TRADEABLE",
    "UNKNOWN_TYPE",
    "Heartbeat",
    "ParseError",
    "PriceParser",
    "instrument_to_symbol",
    "symbol_to_instrument",
]

MALFORMED: Final = "malformed"
NOT_TRADEABLE: Final = "not_tradeable"
UNKNOWN_TYPE: Final = "unknown_type"

_MINUTE_CACHE_MAX: Final = 50_000
_isfinite = math.isfinite


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A HEARTBEAT message (OANDA sends one every 5 s on a healthy stream)."""

    time_msc: int


@dataclass(frozen=True, slots=True)
class ParseError:
    """A line that is not a tick: stable ``reason`` code, human ``detail``, symbol if known."""

    reason: str
    detail: str
    key: str | None = None


def instrument_to_symbol(instrument: str) -> str:
    """``EUR_USD`` → ``EURUSD``."""
    return instrument.replace("_", "").upper()


def symbol_to_instrument(symbol: str) -> str:
    """``EURUSD`` → ``EUR_USD``; an instrument already in OANDA form is returned as is."""
    s = symbol.strip().upper()
    if "_" in s:
        return s
    if len(s) == 6 and s.isalpha():
        return f"{s[:3]}_{s[3:]}"
    raise ValueError(
        f"cannot derive the OANDA instrument of {symbol!r}: write it as OANDA does (DE30_EUR)"
    )


def _tradeable(flag: Any, msg: Mapping[str, Any]) -> bool:
    """The ``tradeable`` flag; when absent (or null), the deprecated ``status`` field decides
    and a message with neither is tradeable. A flag that is not a boolean is malformed."""
    if flag is None:
        return bool(msg.get("status", "tradeable") == "tradeable")
    if not isinstance(flag, bool):
        raise FieldError(f"'tradeable' is {str(flag)[:64]!r}, not a boolean")
    return flag


class PriceParser:
    """Parses pricing-stream lines for one broker name; keeps only a bounded time cache."""

    def __init__(
        self,
        broker: str = "OANDA",
        symbols: Mapping[str, str] | None = None,
        source: str = "OANDA",
    ) -> None:
        self.broker = broker
        self.source = source
        self._symbols: dict[str, str] = dict(symbols or {})
        self._minutes: dict[str, int] = {}

    # ---- time --------------------------------------------------------------------------
    def _minute_ms(self, prefix: str) -> int:
        """Epoch ms of ``YYYY-MM-DDTHH:MM`` (validated, then cached)."""
        if len(prefix) != 16 or prefix[10] != "T" or prefix[13] != ":":
            raise FieldError(f"bad time {prefix!r}")
        hh, mm = prefix[11:13], prefix[14:16]
        if not (hh.isdigit() and mm.isdigit()) or hh > "23" or mm > "59":
            raise FieldError(f"bad time of day in {prefix!r}")
        ms = day_start_ms(prefix[:10]) + (int(hh) * 60 + int(mm)) * 60_000
        if len(self._minutes) >= _MINUTE_CACHE_MAX:
            self._minutes.clear()
        self._minutes[prefix] = ms
        return ms

    def time_ms(self, t: Any) -> int:
        """Epoch ms (floor) of an OANDA time value; :class:`FieldError` if invalid."""
        if not isinstance(t, str):
            raise FieldError(f"time is {t!r}, not a string")
        # fast path: YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ (what OANDA sends, 30 characters)
        if len(t) == 30 and t[29] == "Z" and t[19] == "." and t[16] == ":" and t.isascii():
            base = self._minutes.get(t[:16])
            if base is None:
                base = self._minute_ms(t[:16])
            digits = t[17:19] + t[20:29]
            if digits.isdigit() and t[17:19] <= "60":
                return base + int(digits[:5])  # SS*1000 + mmm
        if len(t) > 10 and t[10] in "Tt ":
            return iso8601_to_ms(t)
        return epoch_to_ms(t, "epoch_s")  # Accept-Datetime-Format: UNIX

    def symbol(self, instrument: Any) -> str:
        if not isinstance(instrument, str) or not instrument:
            raise FieldError(f"instrument is {instrument!r}")
        sym = self._symbols.get(instrument)
        if sym is None:
            sym = instrument_to_symbol(instrument)
            if not sym.isalnum():
                raise FieldError(f"instrument {instrument[:64]!r} is not a symbol")
            if len(self._symbols) < 10_000:
                self._symbols[instrument] = sym
        return sym

    # ---- lines -------------------------------------------------------------------------
    def parse(self, line: bytes | str, recv_time_us: int) -> RawTick | Heartbeat | ParseError:
        """One stream line (without its newline) → tick, heartbeat or parse error."""
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return ParseError(MALFORMED, f"not JSON: {exc}")
        if type(msg) is not dict:
            return ParseError(MALFORMED, f"not a JSON object but {type(msg).__name__}")
        kind = msg.get("type")
        if kind == "PRICE":
            try:
                instrument = msg["instrument"]
                sym = self._symbols.get(instrument) or self.symbol(instrument)
                time_msc = self.time_ms(msg["time"])
                tradeable = msg.get("tradeable")
                if tradeable is not True and not _tradeable(tradeable, msg):
                    return ParseError(NOT_TRADEABLE, f"{instrument} is not tradeable", sym)
                bid = float(msg["bids"][0]["price"])
                ask = float(msg["asks"][0]["price"])
                if _isfinite(bid) and _isfinite(ask):
                    return RawTick(
                        broker=self.broker, symbol=sym, bid=bid, ask=ask, last=None,
                        volume=None, time_msc=time_msc, recv_time_us=recv_time_us, seq=None,
                        source=self.source,
                    )
            except (KeyError, IndexError, TypeError, ValueError):
                pass
            return self._diagnose_price(msg)
        if kind == "HEARTBEAT":
            try:
                return Heartbeat(self.time_ms(msg.get("time")))
            except FieldError as exc:
                return ParseError(MALFORMED, f"HEARTBEAT: {exc}")
        if kind is None:
            return ParseError(MALFORMED, "message has no 'type'")
        return ParseError(UNKNOWN_TYPE, f"message type {str(kind)[:64]!r}")

    def _diagnose_price(self, msg: dict[str, Any]) -> ParseError:
        """The slow path: say precisely why a PRICE message is not a tick."""
        key: str | None = None
        try:
            if "instrument" not in msg:
                raise FieldError("PRICE has no 'instrument'")
            key = self.symbol(msg["instrument"])
            if "time" not in msg:
                raise FieldError("PRICE has no 'time'")
            self.time_ms(msg["time"])
            if not _tradeable(msg.get("tradeable"), msg):
                return ParseError(NOT_TRADEABLE, f"{msg['instrument']} is not tradeable", key)
            for side in ("bids", "asks"):
                book = msg.get(side)
                if not isinstance(book, list) or not book:
                    raise FieldError(f"'{side}' is {str(book)[:64]}, not a non-empty list")
                top = book[0]
                price = top.get("price") if isinstance(top, dict) else None
                if not isinstance(price, str | int | float) or isinstance(price, bool):
                    raise FieldError(f"{side}[0].price is {price!r}")
                try:
                    value = float(price)
                except ValueError:
                    raise FieldError(f"{side}[0].price {str(price)[:64]!r} is not a number") \
                        from None
                if not _isfinite(value):
                    raise FieldError(f"{side}[0].price is {price!r}")
        except FieldError as exc:
            return ParseError(MALFORMED, f"PRICE: {exc}", key)
        return ParseError(MALFORMED, "PRICE: unreadable", key)  # pragma: no cover
