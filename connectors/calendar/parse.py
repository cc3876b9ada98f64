"""Parsers of the weekly economic-calendar export (ForexFactory layout), XML and JSON. Pure.

The XML export (``ff_calendar_thisweek.xml``)::

    <weeklyevents>
      <event>
        <title>Non-Farm Employment Change</title>
        <country>USD</country>
        <date><![CDATA[11-07-2025]]></date>          month-day-year
        <time><![CDATA[1:30pm]]></time>              or 'All Day', 'Tentative', 'Day 2', ''
        <impact><![CDATA[High]]></impact>            High/Medium/Low/Holiday/Non-Economic
        <forecast><![CDATA[110K]]></forecast>
        <previous><![CDATA[254K]]></previous>
        <actual><![CDATA[119K]]></actual>            when released (optional)
        <url><![CDATA[https://...]]></url>           optional
      </event>
    </weeklyevents>

Its dates and times carry no zone: they are read in the ``tz`` given (the collector's
``timezone`` setting). The JSON export (``ff_calendar_thisweek.json``) is a list of objects
with the same keys, ``date`` an ISO 8601 timestamp with its UTC offset
(``2025-11-07T08:30:00-05:00``); a timestamp without offset is read in ``tz``.

Entries without a clock time ('All Day', 'Tentative', ...) are scheduled at midnight of their
date. Every entry becomes one :class:`MarketEvent` for its ``country`` (a currency code;
``All`` becomes ``ALL``). ``event_id`` is derived from currency, title and scheduled date
(the UTC date of a timed entry, the written date of an all-day one, so the XML and JSON
exports agree), never from the position in the document: it is the same on every poll and an
update (the ``actual`` filled in) reuses it. Two entries with the same currency, title and
date (a speaker twice in a day) are told apart by their order in time.

An entry that cannot be read is returned as an :class:`ItemError` with its own serialized
bytes and a reason code; a document that cannot be read at all raises
:class:`DocumentError`. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

from connectors.base.documents import DocumentError, ItemError
from schemas.records import MarketEvent

__all__ = [
    "FORMATS",
    "CalendarEntry",
    "CalendarParse",
    "DocumentError",
    "ItemError",
    "calendar_event_id",
    "detect_format",
    "parse_calendar",
    "parse_calendar_json",
    "parse_calendar_xml",
]

#: Accepted values of the ``format`` setting.
FORMATS = ("auto", "xml", "json")

#: Feed impact label (lower case) -> MarketEvent.impact.
IMPACTS: dict[str, str] = {
    "high": "HIGH",
    "medium": "MEDIUM",
    "low": "LOW",
    "holiday": "HOLIDAY",
    "non-economic": "NONE",
    "none": "NONE",
    "": "NONE",
}

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})\s*([ap]\.?m\.?)?$", re.IGNORECASE)
# Times that name no clock time: the entry is scheduled at midnight of its date.
_NO_CLOCK = re.compile(
    r"^(|all\s*day|tentative|day\s*\d+|\d+(st|nd|rd|th)\s*-\s*\d+(st|nd|rd|th))$",
    re.IGNORECASE,
)
_MDY = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{4})$")
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


@dataclass(slots=True)
class CalendarParse:
    """What a document yielded: events in document order, and the entries that failed."""

    events: list[MarketEvent] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """One readable entry before its event id is assigned."""

    title: str
    currency: str
    day: date  # scheduled date for the event id: UTC date if timed, else as written
    event_time_ms: int
    impact: str
    forecast: str | None
    previous: str | None
    actual: str | None
    url: str | None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---- public entry points ----------------------------------------------------------------


def detect_format(payload: bytes) -> str:
    """``"xml"`` or ``"json"`` from the first significant byte; DocumentError otherwise."""
    head = payload.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"<":
        return "xml"
    if head in (b"[", b"{"):
        return "json"
    raise DocumentError("malformed_document", "neither XML nor JSON (empty or unknown body)")


def parse_calendar(
    payload: bytes,
    *,
    fmt: str = "auto",
    tz: tzinfo = UTC,
    source: str = "calendar",
    published_ms: int = 0,
) -> CalendarParse:
    """Parse an XML or JSON calendar export (``fmt``: ``auto``, ``xml`` or ``json``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    kind = detect_format(payload) if fmt == "auto" else fmt
    if kind == "xml":
        return parse_calendar_xml(payload, tz=tz, source=source, published_ms=published_ms)
    return parse_calendar_json(payload, tz=tz, source=source, published_ms=published_ms)


def parse_calendar_xml(
    payload: bytes, *, tz: tzinfo = UTC, source: str = "calendar", published_ms: int = 0
) -> CalendarParse:
    try:
        root = ET.fromstring(payload)
    except (ET.ParseError, LookupError, ValueError) as exc:  # also: an unknown encoding
        raise DocumentError("malformed_document", f"XML: {exc}") from None
    if root.tag != "weeklyevents":
        raise DocumentError(
            "unexpected_document", f"root element is <{root.tag}>, expected <weeklyevents>"
        )
    entries: list[tuple[int, CalendarEntry]] = []
    out = CalendarParse()
    for index, elem in enumerate(root.iter("event")):
        try:
            entries.append((index, _xml_entry(elem, tz)))
        except _Bad as bad:
            out.errors.append(ItemError(_element_bytes(elem), bad.reason, bad.detail))
    out.events = _events(entries, source, published_ms)
    return out


def parse_calendar_json(
    payload: bytes, *, tz: tzinfo = UTC, source: str = "calendar", published_ms: int = 0
) -> CalendarParse:
    try:
        doc = json.loads(payload)
    # ValueError: also an integer past int()'s digit limit; RecursionError: deep nesting
    except (ValueError, RecursionError) as exc:
        raise DocumentError("malformed_document", f"JSON: {str(exc)[:200]}") from None
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        doc = doc["events"]
    if not isinstance(doc, list):
        raise DocumentError(
            "unexpected_document", f"JSON top level is {type(doc).__name__}, expected a list"
        )
    entries: list[tuple[int, CalendarEntry]] = []
    out = CalendarParse()
    for index, item in enumerate(doc):
        try:
            if not isinstance(item, dict):
                raise _Bad("malformed_item", f"entry is {type(item).__name__}, expected object")
            entries.append((index, _json_entry(item, tz)))
        except _Bad as bad:
            raw = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
            out.errors.append(ItemError(raw, bad.reason, bad.detail))
    out.events = _events(entries, source, published_ms)
    return out


def calendar_event_id(currency: str, title: str, day: date, occurrence: int = 1) -> str:
    """Stable id: ``cal-YYYYMMDD-CUR-<hash of the normalised title>`` (+ ``-n`` for the
    n-th entry with the same currency, title and date)."""
    norm = " ".join(title.split()).casefold()
    digest = hashlib.sha1(f"{currency}|{norm}|{day.isoformat()}".encode()).hexdigest()[:12]
    base = f"cal-{day:%Y%m%d}-{currency}-{digest}"
    return base if occurrence <= 1 else f"{base}-{occurrence}"


# ---- entries ----------------------------------------------------------------------------


def _xml_entry(elem: ET.Element, tz: tzinfo) -> CalendarEntry:
    def text(tag: str) -> str:
        return (elem.findtext(tag) or "").strip()

    title = _required(text("title"), "title")
    currency = _currency(text("country"))
    day = _xml_date(_required(text("date"), "date"))
    clock = _xml_time(text("time"))
    when = datetime.combine(day, clock or time(0), tzinfo=tz)
    try:
        utc_day = day if clock is None else when.astimezone(UTC).date()
    except OverflowError:  # 9999-12-31 west of UTC, 0001-01-01 east of it
        raise _Bad("bad_date", f"date {text('date')!r} {text('time')!r} is out of range "
                               "in UTC") from None
    return CalendarEntry(
        title=title,
        currency=currency,
        day=utc_day,
        event_time_ms=_epoch_ms(when),
        impact=_impact(text("impact")),
        forecast=_value(text("forecast")),
        previous=_value(text("previous")),
        actual=_value(text("actual")),
        url=_value(text("url")),
    )


def _json_entry(item: Mapping[str, Any], tz: tzinfo) -> CalendarEntry:
    title = _required(_json_text(item, "title"), "title")
    currency = _currency(_json_text(item, "country") or _json_text(item, "currency"))
    stamp = _required(_json_text(item, "date"), "date")
    try:
        if "T" in stamp or " " in stamp:
            when = datetime.fromisoformat(stamp)
            if when.tzinfo is None:
                when = when.replace(tzinfo=tz)
            timed = when.timetz().replace(tzinfo=None) != time(0)
        else:
            written = date.fromisoformat(stamp)
            clock = _xml_time(_json_text(item, "time"))
            when = datetime.combine(written, clock or time(0), tzinfo=tz)
            timed = clock is not None
        # Midnight local time is how the export writes an all-day entry: keep its date.
        day = when.astimezone(UTC).date() if timed else when.date()
    except (ValueError, OverflowError) as exc:  # OverflowError: out of range in UTC
        raise _Bad("bad_date", f"date {stamp!r}: {exc}") from None
    return CalendarEntry(
        title=title,
        currency=currency,
        day=day,
        event_time_ms=_epoch_ms(when),
        impact=_impact(_json_text(item, "impact")),
        forecast=_value(_json_text(item, "forecast")),
        previous=_value(_json_text(item, "previous")),
        actual=_value(_json_text(item, "actual")),
        url=_value(_json_text(item, "url")),
    )


def _events(
    entries: Iterable[tuple[int, CalendarEntry]], source: str, published_ms: int
) -> list[MarketEvent]:
    """Assign ids (occurrence order by time, then position) and build events in doc order."""
    groups: dict[tuple[str, str, date], list[tuple[int, int]]] = {}
    listed = list(entries)
    for index, e in listed:
        key = (e.currency, " ".join(e.title.split()).casefold(), e.day)
        groups.setdefault(key, []).append((e.event_time_ms, index))
    occurrence: dict[int, int] = {}
    for members in groups.values():
        for n, (_, index) in enumerate(sorted(members), start=1):
            occurrence[index] = n
    return [
        MarketEvent(
            event_id=calendar_event_id(e.currency, e.title, e.day, occurrence[index]),
            kind="CALENDAR",
            currency=e.currency,
            currencies=[e.currency],
            title=e.title,
            event_time_ms=e.event_time_ms,
            published_ms=published_ms,
            impact=e.impact,
            forecast=e.forecast,
            previous=e.previous,
            actual=e.actual,
            sentiment=None,
            source=source,
            url=e.url,
        )
        for index, e in listed
    ]


# ---- fields -----------------------------------------------------------------------------


def _required(value: str, name: str) -> str:
    if not value:
        raise _Bad("missing_field", f"entry has no {name}")
    return value


def _currency(value: str) -> str:
    if not value:
        raise _Bad("missing_field", "entry has no country/currency")
    if not _CURRENCY.match(value):
        raise _Bad("bad_currency", f"country {value!r} is not a 3-letter currency code")
    return value.upper()


def _impact(value: str) -> str:
    impact = IMPACTS.get(value.strip().casefold())
    if impact is None:
        raise _Bad("bad_impact", f"impact {value!r} is not one of High/Medium/Low/Holiday")
    return impact


def _value(value: str) -> str | None:
    return value or None


def _json_text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad("malformed_item", f"{key} is {type(value).__name__}, expected text")
    return str(value).strip()


def _xml_date(value: str) -> date:
    m = _MDY.match(value)
    try:
        if m:
            return date(int(m[3]), int(m[1]), int(m[2]))
        m = _YMD.match(value)
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise _Bad("bad_date", f"date {value!r}: {exc}") from None
    raise _Bad("bad_date", f"date {value!r} is not MM-DD-YYYY")


def _xml_time(value: str) -> time | None:
    """Clock time, or None for 'All Day', 'Tentative', 'Day 2' and empty."""
    value = value.strip()
    if _NO_CLOCK.match(value):
        return None
    m = _CLOCK.match(value)
    if not m:
        raise _Bad("bad_time", f"time {value!r} is neither a clock time nor All Day/Tentative")
    hour, minute, half = int(m[1]), int(m[2]), m[3]
    if half:
        if not 1 <= hour <= 12:
            raise _Bad("bad_time", f"time {value!r}: hour out of range")
        hour = hour % 12 + (12 if half[0].lower() == "p" else 0)
    if hour > 23 or minute > 59:
        raise _Bad("bad_time", f"time {value!r}: out of range")
    return time(hour, minute)


def _epoch_ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _element_bytes(elem: ET.Element) -> bytes:
    """The entry serialized on its own (tail whitespace dropped)."""
    tail, elem.tail = elem.tail, None
    try:
        return bytes(ET.tostring(elem, encoding="utf-8"))
    finally:
        elem.tail = tail
