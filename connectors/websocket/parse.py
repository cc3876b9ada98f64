"""Pure mapping of vendor JSON quotes to :class:`~schemas.records.RawTick` (no I/O).

A vendor quote is a JSON object (or array) somewhere inside a WebSocket message. A
:class:`MappingSpec` says where the quotes are (``records``: a path to a list or object; a
top-level list is always iterated), which of them are quotes (``match``: field → accepted
values; anything else is a control message and is ignored, not rejected), and where each
field is (``fields``: dotted paths, list indices as numbers: ``data.2``). Times are read in
one of :data:`TIME_FORMATS`; vendor symbols are mapped (``symbols``) or normalised
(``EUR/USD``, ``eur_usd`` → ``EURUSD``). The ``mapping`` section of a config file becomes a
:class:`MappingSpec` in :func:`connectors.websocket.config.spec_from_config`.

Times are read by :mod:`connectors.base.times`, whose :func:`iso8601_to_ms` and
:func:`epoch_to_ms` are re-exported here; its :class:`~connectors.base.times.FieldError` is
:class:`MappingError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from connectors.base.times import LONG_MAX, LONG_MIN, FieldError, epoch_to_ms, iso8601_to_ms
from schemas.records import RawTick

__all__ = [
    "TIME_FORMATS",
    "FieldPath",
    "MapResult",
    "MappingError",
    "MappingSpec",
    "QuoteMapper",
    "Rejection",
    "UnknownSymbol",
    "epoch_to_ms",
    "iso8601_to_ms",
    "normalise_symbol",
    "time_parser",
]

TimeFormat = Literal["epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601", "rfc3339"]
TIME_FORMATS: Final[tuple[str, ...]] = (
    "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601", "rfc3339",
)
UNKNOWN_SYMBOL: Final = "unknown_symbol"

#: One value or record cannot be mapped; the message says which field and why (the time
#: helpers of :mod:`connectors.base.times` raise it too).
MappingError = FieldError


class UnknownSymbol(MappingError):
    """The vendor symbol is not in the symbol map (with ``only_mapped_symbols``)."""

    reason = UNKNOWN_SYMBOL


# ---- time ----------------------------------------------------------------------------------
def time_parser(fmt: str) -> Callable[[Any], int]:
    """The function turning a raw time value into epoch ms for ``fmt``."""
    if fmt in ("iso8601", "rfc3339"):
        def parse_iso(value: Any) -> int:
            if not isinstance(value, str):
                raise MappingError(f"time is {value!r}, not an ISO 8601 string")
            return iso8601_to_ms(value)

        return parse_iso
    if fmt in ("epoch_s", "epoch_ms", "epoch_us", "epoch_ns"):
        def parse_epoch(value: Any) -> int:
            return epoch_to_ms(value, fmt)

        return parse_epoch
    raise ValueError(f"time format must be one of {', '.join(TIME_FORMATS)}, not {fmt!r}")


# ---- fields --------------------------------------------------------------------------------
_MISSING: Final = object()
#: What :meth:`QuoteMapper.is_quote` reads for an absent match field (equal to no value;
#: ``_MISSING`` as the default would mean "no default" and raise).
_ABSENT: Final = object()


class FieldPath:
    """A compiled dotted path (``data.0.bid``); integer parts index lists."""

    __slots__ = ("keys", "text")

    def __init__(self, text: str) -> None:
        if not text or any(not p for p in text.split(".")):
            raise ValueError(f"bad field path {text!r}")
        self.text = text
        self.keys: tuple[str | int, ...] = tuple(
            int(p) if p.lstrip("-").isdigit() else p for p in text.split(".")
        )

    def get(self, obj: Any, default: Any = _MISSING) -> Any:
        cur = obj
        for k in self.keys:
            try:
                if isinstance(k, int):
                    if isinstance(cur, list):
                        cur = cur[k]
                        continue
                    if isinstance(cur, dict):
                        cur = cur[str(k)]
                        continue
                elif isinstance(cur, dict):
                    cur = cur[k]
                    continue
            except (KeyError, IndexError):
                pass
            if default is _MISSING:
                raise MappingError(f"missing field {self.text!r}")
            return default
        return cur

    def __repr__(self) -> str:
        return f"FieldPath({self.text!r})"


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def normalise_symbol(vendor: str) -> str:
    """``EUR/USD``, ``eur_usd``, ``C:EURUSD`` → ``EURUSD`` (upper case, separators removed).

    A ``prefix:`` (as in Polygon's ``C:EURUSD``) is dropped first.
    """
    _, sep, rest = vendor.rpartition(":")
    return _NON_ALNUM.sub("", rest if sep else vendor).upper()


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise MappingError(f"{name} is {value!r}, not a number")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MappingError(f"{name} is {str(value)[:64]!r}, not a number") from None
    if not math.isfinite(out):
        raise MappingError(f"{name} is {value!r}")
    return out


# ---- the mapping ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MappingSpec:
    """Where the quotes are in a vendor message and how to read them (see module doc)."""

    symbol: str
    bid: str
    ask: str
    time: str
    time_format: str = "epoch_ms"
    last: str | None = None
    volume: str | None = None
    seq: str | None = None
    records: str | None = None
    match: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    symbols: Mapping[str, str] = field(default_factory=dict)
    only_mapped_symbols: bool = False

    def __post_init__(self) -> None:
        time_parser(self.time_format)  # validates the format name


@dataclass(frozen=True, slots=True)
class Rejection:
    """A quote that could not be mapped: a reason code, a detail, the symbol if known."""

    reason: str
    detail: str
    key: str | None = None


@dataclass(slots=True)
class MapResult:
    ticks: list[RawTick] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    ignored: int = 0


class QuoteMapper:
    """Turns one decoded vendor message into ticks, rejections and ignored control messages."""

    def __init__(self, spec: MappingSpec, broker: str, source: str = "WEBSOCKET") -> None:
        self.spec = spec
        self.broker = broker
        self.source = source
        self._symbol = FieldPath(spec.symbol)
        self._bid = FieldPath(spec.bid)
        self._ask = FieldPath(spec.ask)
        self._time = FieldPath(spec.time)
        self._last = FieldPath(spec.last) if spec.last else None
        self._volume = FieldPath(spec.volume) if spec.volume else None
        self._seq = FieldPath(spec.seq) if spec.seq else None
        self._records = FieldPath(spec.records) if spec.records else None
        self._match = [(FieldPath(k), tuple(v)) for k, v in spec.match.items()]
        self._parse_time = time_parser(spec.time_format)
        self._symbols = dict(spec.symbols)
        self._norm_cache: dict[str, str] = {}

    def candidates(self, message: Any) -> Iterable[Any]:
        """The elements of ``message`` that may be quotes (before ``match``)."""
        if self._records is not None:
            inner = self._records.get(message, None)
            if inner is None:
                return ()
            message = inner
        if isinstance(message, list):
            return message
        return (message,)

    def is_quote(self, element: Any) -> bool:
        return all(path.get(element, _ABSENT) in accepted for path, accepted in self._match)

    def symbol_of(self, vendor: Any) -> str:
        if not isinstance(vendor, str) or not vendor:
            raise MappingError(f"symbol is {vendor!r}, not a string")
        mapped = self._symbols.get(vendor)
        if mapped is not None:
            return mapped
        if self.spec.only_mapped_symbols:
            raise UnknownSymbol(f"symbol {vendor[:64]!r} is not in the symbol map")
        norm = self._norm_cache.get(vendor)
        if norm is None:
            norm = normalise_symbol(vendor)
            if not norm:
                raise MappingError(f"symbol {vendor[:64]!r} is empty after normalising")
            if len(self._norm_cache) < 10_000:
                self._norm_cache[vendor] = norm
        return norm

    def tick(self, element: Any, recv_time_us: int) -> RawTick:
        """Map one quote element; raises :class:`MappingError` (symbol errors: reason
        ``unknown_symbol`` via :meth:`map`)."""
        if not isinstance(element, dict | list):
            raise MappingError(f"quote is a {type(element).__name__}, not an object")
        symbol = self.symbol_of(self._symbol.get(element))
        bid = _number(self._bid.get(element), "bid")
        ask = _number(self._ask.get(element), "ask")
        time_msc = self._parse_time(self._time.get(element))
        last = volume = None
        seq: int | None = None
        if self._last is not None:
            raw = self._last.get(element, None)
            last = None if raw is None else _number(raw, "last")
        if self._volume is not None:
            raw = self._volume.get(element, None)
            volume = None if raw is None else _number(raw, "volume")
        if self._seq is not None:
            raw = self._seq.get(element, None)
            if raw is not None:
                if isinstance(raw, bool) or not isinstance(raw, int | str):
                    raise MappingError(f"seq is {raw!r}, not an integer")
                try:
                    seq = int(raw)
                except ValueError:
                    raise MappingError(f"seq is {str(raw)[:64]!r}, not an integer") from None
                if not LONG_MIN <= seq <= LONG_MAX:
                    raise MappingError(f"seq {str(raw)[:64]!r} does not fit 64 bits")
        return RawTick(
            broker=self.broker, symbol=symbol, bid=bid, ask=ask, last=last, volume=volume,
            time_msc=time_msc, recv_time_us=recv_time_us, seq=seq, source=self.source,
        )

    def _key_of(self, element: Any) -> str | None:
        """The symbol of a rejected quote when it can be read (mapped if possible)."""
        if not isinstance(element, dict | list):
            return None
        vendor = self._symbol.get(element, None)
        if not isinstance(vendor, str) or not vendor:
            return None
        try:
            return self.symbol_of(vendor)
        except MappingError:
            return vendor[:64]

    def map(self, message: Any, recv_time_us: int) -> MapResult:
        out = MapResult()
        elements = list(self.candidates(message))
        many = len(elements) > 1
        for i, element in enumerate(elements):
            if self._match and not self.is_quote(element):
                out.ignored += 1
                continue
            try:
                out.ticks.append(self.tick(element, recv_time_us))
            except MappingError as exc:
                key = self._key_of(element)
                where = f"record {i} of {len(elements)}: " if many else ""
                out.rejections.append(Rejection(exc.reason, where + str(exc), key))
        if not elements:
            out.ignored += 1
        return out
