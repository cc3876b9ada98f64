"""Vendor time values to epoch milliseconds, shared by the venue parsers. Pure (no I/O).

* :func:`iso8601_to_ms` — RFC 3339 / ISO 8601 date-times: any fraction length, ``Z`` or a
  numeric offset, no offset meaning UTC; the day starts are cached (:func:`day_start_ms`);
* :func:`epoch_to_ms` — a number or numeric string of epoch seconds, ms, µs or ns (exact
  for decimal strings, floored), refused when it does not fit an Avro long.

Every failure is a :class:`FieldError` (``reason`` ``malformed``) whose message says what is
wrong; a venue's own error may be this class (``connectors.websocket.parse.MappingError``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

__all__ = [
    "LONG_MAX",
    "LONG_MIN",
    "MALFORMED",
    "FieldError",
    "day_start_ms",
    "epoch_to_ms",
    "iso8601_to_ms",
]

MALFORMED: Final = "malformed"

#: Times and sequence numbers are Avro longs: a value beyond 64 bits is not one.
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1
#: Integer digits a time may have (epoch nanoseconds have 19): more is not a time, and
#: int() refuses strings past 4,300 digits with a plain ValueError.
_MAX_TIME_DIGITS: Final = 24
_EPOCH_DIVISORS: Final[dict[str, int]] = {
    "epoch_ms": 1, "epoch_us": 1_000, "epoch_ns": 1_000_000,
}


class FieldError(ValueError):
    """One value or record cannot be mapped; the message says which field and why."""

    reason: str = MALFORMED


_DAY_MS: dict[str, int] = {}
_DAY_CACHE_MAX: Final = 4096
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2})?)?"
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def day_start_ms(date: str) -> int:
    """Epoch ms of 00:00 UTC of ``YYYY-MM-DD`` (cached); :class:`FieldError` if invalid."""
    ms = _DAY_MS.get(date)
    if ms is not None:
        return ms
    if len(date) != 10 or date[4] != "-" or date[7] != "-":
        raise FieldError(f"bad date {date!r}")
    y, m, d = date[0:4], date[5:7], date[8:10]
    if not (y.isascii() and y.isdigit() and m.isascii() and m.isdigit()
            and d.isascii() and d.isdigit()):
        raise FieldError(f"bad date {date!r}")
    yi, mi, di = int(y), int(m), int(d)
    leap = yi % 4 == 0 and (yi % 100 != 0 or yi % 400 == 0)
    if not (1 <= mi <= 12 and 1 <= di <= _MONTH_DAYS[mi - 1]) or (
        mi == 2 and di == 29 and not leap
    ):
        raise FieldError(f"bad date {date!r}")
    ms = _days_from_civil(yi, mi, di) * 86_400_000
    if len(_DAY_MS) >= _DAY_CACHE_MAX:
        _DAY_MS.clear()
    _DAY_MS[date] = ms
    return ms


def iso8601_to_ms(text: str) -> int:
    """Epoch ms (floor) of an RFC 3339 / ISO 8601 date-time; no offset means UTC.

    Accepts ``T``, ``t`` or a space between date and time, optional seconds, a fraction of
    any length (``.`` or ``,``), and ``Z`` or ``±HH:MM`` / ``±HHMM`` / ``±HH``.
    """
    m = _ISO.fullmatch(text)
    if m is None:
        raise FieldError(f"not an ISO 8601 time: {text[:64]!r}")
    _, _, _, hh, mm, ss, frac, _z, sign, oh, om = m.groups()
    h, mi, s = int(hh), int(mm), int(ss or 0)
    if h > 23 or mi > 59 or s > 60:
        raise FieldError(f"time of day out of range: {text[:64]!r}")
    ms = day_start_ms(text[:10]) + ((h * 60 + mi) * 60 + s) * 1000
    if frac:
        ms += int(frac[:3].ljust(3, "0"))
    if sign:
        ohi, omi = int(oh), int(om or 0)
        if ohi > 23 or omi > 59:
            raise FieldError(f"offset out of range: {text[:64]!r}")
        offset = (ohi * 60 + omi) * 60_000
        ms = ms - offset if sign == "+" else ms + offset
    return ms


def _decimal_str_to_ms(text: str, scale_digits: int) -> int:
    """Exact floor of ``text * 10**scale_digits`` for a plain decimal string."""
    t = text.strip()
    neg = t.startswith("-")
    if neg or t.startswith("+"):
        t = t[1:]
    whole, _, frac = t.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (frac and not (frac.isascii()
                                                                    and frac.isdigit())):
        raise FieldError(f"not a number: {text[:64]!r}")
    if len(whole) > _MAX_TIME_DIGITS:
        raise FieldError(f"time {text[:64]!r} has {len(whole)} integer digits")
    frac_part = frac[:scale_digits].ljust(scale_digits, "0")
    value = int(whole) * int(10**scale_digits) + (int(frac_part) if frac_part else 0)
    rest = frac[scale_digits:].strip("0")
    if neg:
        return -value - (1 if rest else 0)
    return value


def epoch_to_ms(value: Any, fmt: str) -> int:
    """Epoch ms (floor) from a number or numeric string in unit ``fmt`` (``epoch_*``);
    :class:`FieldError` when it is not one or does not fit a long."""
    ms = _epoch_to_ms(value, fmt)
    if not LONG_MIN <= ms <= LONG_MAX:
        raise FieldError(f"time {str(value)[:64]!r} ({fmt}) is out of range")
    return ms


def _epoch_to_ms(value: Any, fmt: str) -> int:
    if isinstance(value, bool) or value is None:
        raise FieldError(f"time is {value!r}, not a number")
    if isinstance(value, int):
        if fmt == "epoch_s":
            return value * 1000
        return value // _EPOCH_DIVISORS[fmt]
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > 1e300:  # * 1000.0 must stay finite
            raise FieldError(f"time is {value!r}")
        if fmt == "epoch_s":
            # 1e-3 ms absorbs the binary representation error of decimal seconds
            return math.floor(value * 1000.0 + 1e-3)
        return math.floor(value / _EPOCH_DIVISORS[fmt] + 1e-9)
    if isinstance(value, str):
        if fmt == "epoch_s":
            return _decimal_str_to_ms(value, 3)
        whole = _decimal_str_to_ms(value, 0)
        return whole // _EPOCH_DIVISORS[fmt]
    raise FieldError(f"time is a {type(value).__name__}, not a number")
