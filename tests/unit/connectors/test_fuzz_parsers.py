"""Fuzzing every parser of outside input: no exception escapes but the module's typed one.

Each parser is fed arbitrary input and mutations of real samples (recorded payloads in
``tests/fixtures/standins``, lines and files from ``../shared/data``). The property is the contract
each module states:

* tick files: canonical CSV (``connectors/files.py``) yields :class:`Tick` or
  :class:`BadRow`, and raises :class:`TickFileError` for a file unreadable as a whole; every
  history format (``connectors/history/parse.py``: dukascopy CSV and ``.bi5``, histdata,
  truefx, lean, mt5, nautilus) yields :class:`Tick` or :class:`BadLine` (with its line
  number) and raises :class:`HistoryError`, one line naming the file, for a file unreadable
  as a whole;
* OANDA pricing lines: a tick, a heartbeat or a :class:`ParseError`, never an exception;
* MT5 tick arrays: ticks and rejected rows, :class:`TickFormatError` for a batch that is
  not a tick array;
* WebSocket quotes: ticks, rejections and ignored messages, never an exception;
* calendar and news documents: events/items and item errors, :class:`DocumentError` for a
  document that is unreadable as a whole.

And whatever a parser accepts must be writable: every tick or event it returns encodes
with the project codec (a collector's producer would otherwise fail on it).

Each bug the fuzzers found is kept as an explicit ``@example``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import lzma
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from fuzzing import mutated_bytes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from standins.feeds import (
    RECORDED_ATOM,
    RECORDED_FF_JSON,
    RECORDED_FF_XML,
    RECORDED_RSS,
    atom,
    ff_json,
    ff_xml,
    rss,
)
from standins.mt5 import TICK_DTYPE
from standins.oanda import START_NS, heartbeat_line, price_line
from standins.websocket_feed import polygon_quote

from connectors.calendar.parse import CalendarParse, DocumentError, parse_calendar
from connectors.files import BadRow, TickFileError, read_canonical, write_canonical
from connectors.history.parse import BadLine, HistoryError, read_bi5, read_history
from connectors.mt5.parse import RejectedRow, SymbolCursor, TickFormatError, convert
from connectors.news.parse import (
    FeedParse,
    dedupe_keys,
    news_event_id,
    news_events,
    parse_feed,
)
from connectors.oanda.parse import Heartbeat, ParseError, PriceParser
from connectors.websocket.parse import MappingSpec, QuoteMapper
from schemas.codec import Codec
from schemas.records import MarketEvent, RawTick
from stages.types import Tick

#: Examples per test: modest, so every fuzz test together runs in well under a minute;
#: TICKSTREAM_FUZZ_EXAMPLES=5000 for a long hunt.
FUZZ = settings(max_examples=int(os.environ.get("TICKSTREAM_FUZZ_EXAMPLES", "80")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CODEC = Codec()

# ---- mutators ----------------------------------------------------------------------------
#: Characters that matter to the formats: separators, quotes, signs, exponent and date
#: letters, NUL, line breaks, a non-ASCII letter and a non-ASCII digit (int() accepts it).
SPECIAL = list(",\" :.-+eETZz\x00\r\n\t/\\é٣0123456789")
CHARS = st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8"))


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with one to three edits (replace, insert, delete, truncate, repeat, digits)."""
    out = text
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "repeat",
                                   "digits"]))
        at = draw(st.integers(0, len(out)))
        if op == "replace" and out:
            at = min(at, len(out) - 1)
            out = out[:at] + draw(CHARS) + out[at + 1:]
        elif op == "insert":
            out = out[:at] + draw(st.text(CHARS, min_size=1, max_size=6)) + out[at:]
        elif op == "delete":
            out = out[:at] + out[at + draw(st.integers(1, 8)):]
        elif op == "truncate":
            out = out[:at]
        elif op == "repeat":
            out = out[:at] + out[at:at + draw(st.integers(1, 12))] * 2 + out[at:]
        else:  # a run of digits: numbers far beyond any field's range
            out = out[:at] + "9" * draw(st.sampled_from([19, 20, 40, 310, 4400])) + out[at:]
    return out




#: JSON values as a decoder hands them out (orjson: integers within 64 bits).
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(CHARS, max_size=12),
    st.sampled_from(["", "1" * 20, "9" * 4400, "1e999", "NaN", "-0", "2025-11-07T08:30:00Z",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated_json(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one entry somewhere inside replaced, removed or added."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        op = draw(st.sampled_from(["replace", "remove", "deeper"]))
        if op == "remove":
            del out[key]
        elif op == "deeper":
            out[key] = draw(mutated_json(value[key]))
        else:
            out[key] = draw(JSON_VALUES)
        return out
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], draw(mutated_json(value[at])), *value[at + 1:]]
    return draw(JSON_VALUES)


def encodes(record: RawTick | MarketEvent) -> None:
    """What a parser accepts, the producer can write."""
    CODEC.decode(CODEC.encode(record, "fuzz"), type(record), "fuzz")


# ---- tick files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-files-") as d:
        yield Path(d)


_names = itertools.count()


def write(scratch: Path, data: bytes, gz: bool, suffix: str = ".csv") -> Path:
    """A file holding ``data``; with ``gz`` a ``.gz`` file, compressed unless ``data``
    already starts like a gzip stream (a broken one, then)."""
    path = scratch / f"f{next(_names)}{suffix}{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data, mtime=0) if gz and data[:2] != b"\x1f\x8b" else data)
    return path


#: The first rows of each vendor file under ../shared/data (real samples, also read from the
#: files themselves by the test below).
VENDOR_SAMPLES: dict[str, list[str]] = {
    "dukascopy-csv": ["timestamp_utc,bid,ask,bid_volume,ask_volume",
                      "2019-02-04 00:00:00.994,1.14543,1.14545,2.06,1.00",
                      "2019-02-04 00:00:01.271,1.14544,1.14546,1.00,1.00"],
    "histdata": ["20200101 170000065,1.121200,1.121720,0",
                 "20200101 170010447,1.121200,1.121920,0"],
    "truefx": ["USD/JPY,20130101 22:00:00.295,86.655,86.728",
               "USD/JPY,20130101 22:02:35.907,86.657,86.728"],
    "multi": ["EURUSD,20120104 17:00:00.290,1.29414,1.29431",
              "EURUSD,20120104 17:00:00.633,1.29413,1.29430"],
    "multi-ns": ["ts_event_ns,ts_init_ns,timestamp_utc,bid,ask,bid_size,ask_size",
                 "1546383600078000128,1546383600078000128,2019-01-01 23:00:00.078,1.14605,"
                 "1.14643,1000000,1000000",
                 "1546383600180000000,1546383600180000000,2019-01-01 23:00:00.180,1.14608,"
                 "1.14663,1000000,1000000"],
    "mt5": ["<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>",
            "2024.03.01\t09:00:00.250\t1.08011\t1.08013\t\t\t6",
            "2024.03.01\t09:00:00.900\t\t1.08015\t\t\t4",
            "2024.03.01\t09:00:01.000\t1.08012\t\t\t\t2"],
}
VENDOR_FILES = {
    "dukascopy-csv": "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz",
    "histdata": "histdata/DAT_ASCII_EURUSD_T_20200101.csv",
    "truefx": "truefx/USDJPY-2013-01-01.csv",
    "multi": "multi/EURUSD_20120104_NY17-24h.csv.gz",
    "multi-ns": "multi/USDJPY_dukascopy_20190101T23.csv",
}


@st.composite
def vendor_file(draw: st.DrawFn, samples: dict[str, list[str]]) -> tuple[str, bytes, bool]:
    """(format, file content, gzipped) from a format's sample rows, mutated."""
    fmt = draw(st.sampled_from(sorted(samples)))
    lines = list(samples[fmt])
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = draw(mutated_text(lines[at]))
    data = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode()
    if draw(st.integers(0, 4)) == 0:
        data = draw(mutated_bytes(data))
    return fmt, data, draw(st.booleans())


#: Each sample's history format and options (the samples' file names do not name a symbol).
SAMPLE_READERS: dict[str, tuple[str, dict[str, str]]] = {
    "dukascopy-csv": ("dukascopy", {"symbol": "EURUSD"}),
    "histdata": ("histdata", {"symbol": "EURUSD"}),
    "truefx": ("truefx", {}),
    "multi": ("truefx", {"tz": "America/New_York"}),
    "multi-ns": ("nautilus", {"symbol": "EURUSD"}),
    "mt5": ("mt5", {"symbol": "EURUSD", "tz": "Europe/Athens"}),
}


def read_sample(path: Path, sample: str) -> list[Tick | BadLine]:
    fmt, kw = SAMPLE_READERS[sample]
    return list(read_history(fmt, path, broker="FZ", **kw))


def check_vendor(path: Path, fmt: str) -> None:
    try:
        rows = read_sample(path, fmt)
    except HistoryError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert all(type(r) in (Tick, BadLine) for r in rows)
        assert all(r.line >= 1 and "\n" not in str(r) for r in rows if type(r) is BadLine)
        for t in rows:
            if type(t) is Tick:
                CODEC.encode(RawTick(broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask,
                                     last=t.last, volume=t.volume, time_msc=t.time_msc,
                                     recv_time_us=t.time_msc * 1000, source="HISTORY"))


@FUZZ
@given(vendor_file(VENDOR_SAMPLES))
# an empty file of a format with a header row: StopIteration turned RuntimeError
@example(("dukascopy-csv", b"", False))
@example(("multi-ns", b"", False))
@example(("histdata", b"20200101 170000065,1.121200\n", False))  # IndexError
@example(("truefx", b"USD/JPY,20130101 22:00:00.295,86.655,x\n", False))  # ValueError
@example(("multi", b"EURUSD,20120104 17:00:00.290,\xff,1.2\n", False))  # UnicodeDecodeError
@example(("truefx", b"USD/JPY,2013\x000101,1,2\n", False))  # a NUL in the date: ValueError
@example(("histdata", b"\x1f\x8b\x08\x00garbage", True))  # a broken gzip stream
# a quoted field spanning lines: the error message must still be one line
@example(("truefx", b'USD/JPY,"0130101 22:02:35.907,86.6\nUSD/JPY,20130101 22:02:35.9,1,2\n',
          False))
def test_vendor_files_yield_ticks_and_bad_lines_or_raise_history_error(
    scratch: Path, case: tuple[str, bytes, bool],
) -> None:
    fmt, data, gz = case
    check_vendor(write(scratch, data, gz), fmt)


@pytest.mark.data
@FUZZ
@given(st.data())
def test_real_vendor_files_mutated(scratch: Path, shared_data: Path, data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(sorted(VENDOR_FILES)))
    with gzip.open(shared_data / VENDOR_FILES[fmt], "rt") if VENDOR_FILES[fmt].endswith(".gz") \
            else open(shared_data / VENDOR_FILES[fmt]) as fh:
        head = [next(fh).rstrip("\n") for _ in range(40)]
    start = data.draw(st.integers(0, 30))
    rows = ([head[0]] if fmt in ("dukascopy-csv", "multi-ns") else []) + head[1 + start:][:8]
    fmt_, blob, gz = data.draw(vendor_file({fmt: rows}))
    path = write(scratch, blob, gz)
    check_vendor(path, fmt_)


def test_unmutated_vendor_samples_read_whole(scratch: Path) -> None:
    for fmt, lines in VENDOR_SAMPLES.items():
        rows = read_sample(write(scratch, "\n".join(lines).encode(), False), fmt)
        assert all(type(r) is Tick for r in rows), rows
        assert len(rows) == len(lines) - (fmt in ("dukascopy-csv", "multi-ns", "mt5"))


def test_unknown_vendor_format_is_a_history_error(scratch: Path) -> None:
    with pytest.raises(HistoryError, match="unknown format"):
        list(read_history("nope", write(scratch, b"", False)))


CANONICAL_SAMPLE = (
    "broker,symbol,time_msc,bid,ask,seq,recv_time_us\n"
    "ICM,EURUSD,1717171200123,1.08512,1.08515,7,1717171200123456\n"
    'PEP,"USD,JPY",1717171200124,157.301,157.305,,\n'
    "FXCM,GBPUSD,1717171200125,1.2701,1.2703,9,\n"
)


@st.composite
def canonical_file(draw: st.DrawFn) -> tuple[bytes, bool]:
    lines = CANONICAL_SAMPLE.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = draw(mutated_text(lines[at]))
    data = "\n".join(lines).encode()
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutated_bytes(data))
    return data, draw(st.booleans())


@FUZZ
@given(canonical_file())
@example((CANONICAL_SAMPLE.encode() + b"ICM,EURUSD,1,\xff,2\n", False))  # UnicodeDecodeError
@example((gzip.compress(CANONICAL_SAMPLE.encode())[:-9], True))  # truncated gzip: EOFError
def test_canonical_csv_yields_ticks_and_bad_rows_or_raises_tick_file_error(
    scratch: Path, case: tuple[bytes, bool],
) -> None:
    data, gz = case
    path = write(scratch, data, gz)
    try:
        rows = list(read_canonical(path))
    except TickFileError as exc:
        assert str(path) in str(exc)
        return
    assert all(type(r) in (Tick, BadRow) for r in rows)
    # what reads as ticks writes back as canonical CSV and reads back the same
    ticks = [r for r in rows if type(r) is Tick]
    out = scratch / f"c{next(_names)}.csv"
    with open(out, "w", newline="") as fh:
        write_canonical(ticks, fh)
    again = list(read_canonical(out))
    assert len(again) == len(ticks) and all(type(r) is Tick for r in again)


@st.composite
def bi5_blob(draw: st.DrawFn) -> bytes:
    """An LZMA-alone stream of whole or partial 20-byte records, or garbage, or mutated."""
    kind = draw(st.sampled_from(["records", "garbage", "mutated"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    payload = draw(st.binary(max_size=100))
    blob = lzma.compress(payload, format=lzma.FORMAT_ALONE)
    return blob if kind == "records" else draw(mutated_bytes(blob))


@FUZZ
@given(bi5_blob())
@example(b"not an lzma stream")  # LZMAError
@example(lzma.compress(b"\x00" * 7, format=lzma.FORMAT_ALONE))  # struct.error: 7 bytes
def test_bi5_yields_ticks_or_raises_tick_file_error(scratch: Path, blob: bytes) -> None:
    path = write(scratch, blob, False, suffix=".bi5")
    try:
        rows = list(read_bi5(path, "EURUSD", "DUKA", hour_start_ms=1_546_300_800_000))
    except HistoryError as exc:
        assert str(path) in str(exc)
    else:
        assert all(type(r) in (Tick, BadLine) for r in rows)
        assert all(r.line == 0 for r in rows if type(r) is BadLine)  # the whole hour


LEAN_SAMPLE = b"289,1.37131,1.37146\n1777,1.37133,1.37147\n2003,1.37132,1.37146\n"


@FUZZ
@given(st.one_of(
    st.builds(lambda d: ("csv", d), mutated_bytes(LEAN_SAMPLE)),
    st.builds(lambda d: ("zip", d), st.binary(max_size=200)),
))
@example(("csv", b"1,2\n"))  # too few fields
@example(("zip", b"PK\x03\x04garbage"))  # a damaged zip
def test_lean_quote_zips_yield_ticks_and_bad_lines_or_raise_history_error(
    scratch: Path, case: tuple[str, bytes],
) -> None:
    kind, data = case
    folder = scratch / f"lean{next(_names)}" / "oanda" / "tick" / "eurusd"
    folder.mkdir(parents=True)
    path = folder / "20140512_quote.zip"
    if kind == "csv":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("20140512_eurusd_tick_quote.csv", data)
    else:
        path.write_bytes(data)
    try:
        rows = list(read_history("lean", path))
    except HistoryError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert all(type(r) in (Tick, BadLine) for r in rows)
        assert all(r.line >= 1 for r in rows if type(r) is BadLine)


@pytest.mark.data
@FUZZ
@given(st.data())
def test_real_bi5_files_mutated(scratch: Path, shared_data: Path, data: st.DataObject) -> None:
    files = sorted(p for p in (shared_data / "dukascopy").rglob("*.bi5") if p.stat().st_size)
    real = data.draw(st.sampled_from(files[:6])).read_bytes()
    blob = data.draw(st.one_of(
        mutated_bytes(real),
        # a valid stream around damaged records
        st.builds(lambda raw: lzma.compress(raw, format=lzma.FORMAT_ALONE),
                  mutated_bytes(lzma.decompress(real, format=lzma.FORMAT_ALONE)[:400])),
    ))
    path = write(scratch, blob, False, suffix=".bi5")
    try:
        rows = list(read_bi5(path, "EURUSD", "DUKA", hour_start_ms=1_546_300_800_000))
    except HistoryError as exc:
        assert str(path) in str(exc)
    else:
        assert all(type(r) in (Tick, BadLine) for r in rows)
        assert all(r.line == 0 for r in rows if type(r) is BadLine)  # the whole hour


# ---- OANDA pricing lines ------------------------------------------------------------------
OANDA_SAMPLES = [
    price_line("EUR_USD", START_NS, 1.08512, 1.08515).rstrip(b"\n"),
    price_line("USD_JPY", START_NS + 7_000_000, 157.301, 157.305, digits=3).rstrip(b"\n"),
    price_line("EUR_USD", START_NS, 1.1, 1.2, tradeable=False).rstrip(b"\n"),
    heartbeat_line(START_NS).rstrip(b"\n"),
    b'{"type":"PRICE","instrument":"EUR_USD","time":"1474383947.960449532",'
    b'"bids":[{"price":"1.11594","liquidity":10000000}],'
    b'"asks":[{"price":"1.11607","liquidity":10000000}]}',
]
PRICE_PARSER = PriceParser()


@st.composite
def oanda_line(draw: st.DrawFn) -> bytes:
    sample = draw(st.sampled_from(OANDA_SAMPLES))
    kind = draw(st.sampled_from(["json", "bytes", "text", "arbitrary"]))
    if kind == "json":
        return orjson.dumps(draw(mutated_json(orjson.loads(sample))))
    if kind == "bytes":
        return draw(mutated_bytes(sample))
    if kind == "text":
        return draw(mutated_text(sample.decode())).encode("utf-8", "surrogatepass")
    return orjson.dumps(draw(JSON_VALUES))


@FUZZ
@given(oanda_line())
# a time of 5,000 digits: int() raised ValueError past its digit limit (in the slow path
# of PRICE and for HEARTBEAT), out of epoch_to_ms
@example(b'{"type":"HEARTBEAT","time":"' + b"1" * 5000 + b'"}')
@example(b'{"type":"PRICE","instrument":"EUR_USD","time":"' + b"1" * 5000 + b'"}')
# a UNIX time whose epoch ms does not fit Avro's long: accepted, then unwritable
@example(b'{"type":"PRICE","instrument":"EUR_USD","time":"' + b"9" * 20 + b'",'
         b'"bids":[{"price":"1.1"}],"asks":[{"price":"1.2"}]}')
def test_oanda_lines_are_ticks_heartbeats_or_parse_errors(line: bytes) -> None:
    for item in (line, line.decode("utf-8", "replace")):
        out = PRICE_PARSER.parse(item, 1_700_000_000_000_000)
        assert type(out) in (RawTick, Heartbeat, ParseError)
        if isinstance(out, RawTick):
            encodes(out)
        elif isinstance(out, ParseError):
            assert out.reason in ("malformed", "not_tradeable", "unknown_type") and out.detail


# ---- WebSocket quote mapping --------------------------------------------------------------
SPECS = [
    MappingSpec(symbol="p", bid="b", ask="a", time="t", match={"ev": ("C",)}),
    MappingSpec(symbol="s", bid="q.b", ask="q.a", time="ts", time_format="epoch_s",
                last="q.l", volume="q.v", seq="n", records="data"),
    MappingSpec(symbol="0", bid="1", ask="2", time="3", time_format="iso8601",
                symbols={"EUR/USD": "EURUSD"}, only_mapped_symbols=True),
    MappingSpec(symbol="p", bid="b", ask="a", time="t", time_format="epoch_ns", seq="x"),
    MappingSpec(symbol="p", bid="b", ask="a", time="t", time_format="epoch_us"),
]
MAPPERS = [QuoteMapper(spec, "WS") for spec in SPECS]


def ws_samples() -> list[Any]:
    q = polygon_quote("EUR/USD", 3)
    return [
        q,
        [q, polygon_quote("USD/JPY", 4), {"ev": "status", "status": "connected"}],
        {"data": [{"s": "EUR/USD", "q": {"b": "1.1", "a": "1.2", "l": 1.15, "v": 3},
                   "ts": "1700000000.123", "n": "42"}]},
        ["EUR/USD", 1.1, 1.2, "2023-11-14T22:13:20.123Z"],
        {**q, "t": q["t"] * 1_000_000, "x": 17},
        {**q, "t": q["t"] * 1000},
    ]


@st.composite
def ws_message(draw: st.DrawFn) -> Any:
    sample = draw(st.sampled_from(ws_samples()))
    kind = draw(st.sampled_from(["json", "json", "text", "arbitrary"]))
    if kind == "json":
        return draw(mutated_json(sample))
    if kind == "text":
        try:
            return orjson.loads(draw(mutated_text(orjson.dumps(sample).decode())))
        except orjson.JSONDecodeError:
            return None  # the collector dead-letters undecodable frames before mapping
    return draw(JSON_VALUES)


@FUZZ
@given(ws_message())
# a message without the match field (a control message): is_quote passed the "no default"
# sentinel as the default, so the missing field raised MappingError out of map()
@example({"status": "connected"})
# a time of 5,000 digits: int() raised ValueError past its digit limit
@example({"ev": "C", "p": "EUR/USD", "b": 1.1, "a": 1.2, "t": "1" * 5000})
# epoch seconds so large that seconds * 1000 overflowed to inf: OverflowError from floor()
@example({"data": [{"s": "EUR/USD", "q": {"b": 1.1, "a": 1.2}, "ts": 1e308}]})
# epoch ms beyond Avro's long: accepted, then unwritable
@example({"ev": "C", "p": "EUR/USD", "b": 1.1, "a": 1.2, "t": 2**64 - 1})
def test_websocket_messages_map_to_ticks_rejections_or_nothing(message: Any) -> None:
    for mapper in MAPPERS:
        out = mapper.map(message, 1_700_000_000_000_000)
        for tick in out.ticks:
            encodes(tick)
        assert all(r.reason in ("malformed", "unknown_symbol") and r.detail
                   for r in out.rejections)


# ---- MT5 tick arrays ----------------------------------------------------------------------
T0 = 1_700_000_000_000
PRICES = st.one_of(st.floats(1.0, 200.0), st.floats(), st.sampled_from([0.0, -1.0]))
TIMES_MS = st.one_of(st.integers(T0, T0 + 5_000), st.integers(-(2**63), 2**63 - 1),
                     st.sampled_from([0, 1, 2**63 - 1, -(2**63)]))


@st.composite
def tick_rows(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        t = draw(TIMES_MS)
        rows.append((
            draw(st.one_of(st.just(t // 1000), st.integers(-(2**63), 2**63 - 1))),
            draw(PRICES), draw(PRICES), draw(PRICES),
            draw(st.integers(0, 2**64 - 1)), t,
            draw(st.one_of(st.sampled_from([2, 4, 6, 8, 16, 0, 0x7E]),
                           st.integers(0, 2**32 - 1))),
            draw(PRICES),
        ))
    return np.array(rows, dtype=TICK_DTYPE)


#: Arrays that are not MT5 tick arrays: fields missing, or the right names with other types.
ODD_DTYPES = [
    np.dtype([("time_msc", "<i8"), ("bid", "<f8")]),
    np.dtype([("time_msc", "<f8"), ("bid", "<f8"), ("ask", "<f8"), ("flags", "<f8")]),
    np.dtype([("time_msc", "<i8"), ("bid", "<i8"), ("ask", "<i8"), ("flags", "|u1")]),
]


@st.composite
def odd_rows(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(st.sampled_from(ODD_DTYPES))
    values = {"<i8": st.integers(-(2**63), 2**63 - 1), "<f8": st.floats(),
              "|u1": st.integers(0, 255)}
    rows = [tuple(draw(values[dtype[name].str]) for name in dtype.names or ())
            for _ in range(draw(st.integers(1, 4)))]
    return np.array(rows, dtype=dtype)


def check_mt5(rows: np.ndarray[Any, Any], cursor: SymbolCursor, offset_ms: int) -> None:
    try:
        out = convert(rows, cursor, broker="MT5X", symbol="EURUSD", terminal_symbol="EURUSD.r",
                      offset_ms=offset_ms, recv_time_us=1_700_000_000_000_000)
    except TickFormatError as exc:
        assert "EURUSD.r" in str(exc)
        return
    for item in out.items:
        assert type(item) in (RawTick, RejectedRow)
        if isinstance(item, RawTick):
            encodes(item)
        else:
            assert json.loads(item.payload)["symbol"] == "EURUSD.r" and item.reason


@FUZZ
@given(st.lists(st.one_of(tick_rows(), odd_rows()), min_size=1, max_size=3),
       st.one_of(st.integers(T0 - 2_000, T0 + 2_000), TIMES_MS),
       st.sampled_from([0, 7_200_000, -18_000_000, 50_400_000]))
# a float time_msc of NaN: int() raised ValueError (inf: OverflowError)
@example([np.array([(float("nan"), 1.1, 1.2, 6.0)], dtype=ODD_DTYPES[1])], T0, 0)
# time_msc at int64's end shifted by the server offset: beyond Avro's long
@example([np.array([(2**63 // 1000, 1.1, 1.2, 1.15, 1, 2**63 - 1, 6, 1.0)],
                   dtype=TICK_DTYPE)], T0, -18_000_000)
def test_mt5_batches_are_ticks_and_rejects_or_a_tick_format_error(
    batches: list[np.ndarray[Any, Any]], start_ms: int, offset_ms: int,
) -> None:
    cursor = SymbolCursor(time_msc=start_ms)
    for rows in batches:  # successive polls share the cursor, as in the collector
        check_mt5(rows, cursor, offset_ms)


# ---- economic calendar --------------------------------------------------------------------
ZONES: list[tzinfo] = [UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo"),
                       timezone(timedelta(hours=-12)), timezone(timedelta(hours=14))]
FF_EVENT = {"title": "Non-Farm Employment Change", "country": "USD", "date": "11-07-2025",
            "time": "1:30pm", "impact": "High", "forecast": "110K", "previous": "254K",
            "actual": "119K", "url": "https://example.invalid/nfp"}
CAL_TEXT = st.one_of(
    st.text(CHARS, max_size=14),
    st.sampled_from(["12-31-9999", "01-01-0001", "9999-12-31", "0001-01-01", "02-29-2025",
                     "11:59pm", "12:00am", "0:00", "23:59", "All Day", "Day 2", "1st-3rd",
                     "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:00:00", "0001-01-01T00:30:00", "High", "Holiday"]),
)


@st.composite
def calendar_document(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["xml", "json", "bytes", "arbitrary"]))
    if kind == "xml":
        events = [dict(FF_EVENT) for _ in range(draw(st.integers(1, 3)))]
        for ev in events:
            for key in draw(st.lists(st.sampled_from(sorted(FF_EVENT)), max_size=3)):
                if draw(st.booleans()):
                    ev[key] = draw(CAL_TEXT).replace("]]>", "").replace("\r", "")
                else:
                    ev.pop(key, None)
        text = ff_xml(events, encoding="utf-8").decode()
        # only characters XML 1.0 allows survive, or the document is refused as a whole
        return "".join(c for c in text if c in "\t\n" or 0x20 <= ord(c) < 0xD800
                       or 0xE000 <= ord(c) <= 0xFFFD).encode()
    if kind == "json":
        doc = json.loads(RECORDED_FF_JSON)
        for _ in range(draw(st.integers(1, 3))):
            doc = draw(mutated_json(doc))
        if isinstance(doc, list) and doc and isinstance(doc[0], dict):
            doc[0] = {**doc[0], "date": draw(CAL_TEXT)}
        return ff_json(doc if isinstance(doc, list) else [doc])
    if kind == "bytes":
        return draw(mutated_bytes(draw(st.sampled_from([RECORDED_FF_XML, RECORDED_FF_JSON]))))
    return json.dumps(draw(JSON_VALUES)).encode()


def check_calendar(doc: bytes, tz: tzinfo) -> None:
    for fmt in ("auto", "xml", "json"):
        try:
            out = parse_calendar(doc, fmt=fmt, tz=tz, source="fuzz", published_ms=T0)
        except DocumentError as exc:
            assert exc.reason in ("malformed_document", "unexpected_document") and exc.detail
            continue
        assert type(out) is CalendarParse
        for ev in out.events:
            encodes(ev)
        assert all(e.reason and e.detail and isinstance(e.raw, bytes) for e in out.errors)


@FUZZ
@given(calendar_document(), st.sampled_from(ZONES))
# a JSON integer of 5,000 digits: json.loads raised ValueError, not JSONDecodeError
@example(b"[" + b"1" * 5000 + b"]", UTC)
# nesting deeper than the recursion limit: RecursionError
@example(b"[" * 100_000, UTC)
# the last day of year 9999 west of UTC, the first of year 1 east: OverflowError when
# converted to UTC
@example(ff_json([{**FF_EVENT, "date": "9999-12-31T23:00:00-12:00"}]), UTC)
@example(ff_json([{**FF_EVENT, "date": "9999-12-31", "time": "11:00pm"}]),
         timezone(timedelta(hours=-12)))
@example(ff_xml([{**FF_EVENT, "date": "01-01-0001", "time": "12:30am"}], encoding="utf-8"),
         timezone(timedelta(hours=14)))
# an XML declaration naming an encoding Python has no codec for
@example(RECORDED_FF_XML.replace(b"windows-1252", b"x-no-such-codec"), UTC)
def test_calendar_documents_are_events_item_errors_or_a_document_error(
    doc: bytes, tz: tzinfo,
) -> None:
    check_calendar(doc, tz)


# ---- news feeds ---------------------------------------------------------------------------
RSS_ITEM = {"title": "ECB holds rates; EUR/USD steady", "link": "https://news.example/a?utm_x=1",
            "guid": "a-1", "pubDate": "Fri, 07 Nov 2025 13:30:00 GMT",
            "description": "<p>The <b>euro</b> &amp; rates</p>"}
ATOM_ENTRY = {"title": "Fed minutes", "link": "https://fed.example/m", "id": "urn:x:1",
              "published": "2025-11-07T14:00:00Z", "summary": "USD outlook"}
NEWS_TEXT = st.one_of(
    st.text(CHARS, max_size=16),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
                     "Fri, 31 Dec 9999 23:59:59 -1200", "Mon, 01 Jan 0001 00:00:00 +1400",
                     "Tue, 07 Nov 2025 13:30:00 +9999", "Fri, 07 Nov 25 13:30:00 EST",
                     "http://[::1", "https://a.example/?a=1&utm_source=x#f", ""]),
)


def _xml_chars(text: str) -> str:
    return "".join(c for c in text if c in "\t\n" or 0x20 <= ord(c) < 0xD800
                   or 0xE000 <= ord(c) <= 0xFFFD)


@st.composite
def news_document(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["rss", "atom", "bytes", "arbitrary"]))
    if kind in ("rss", "atom"):
        base = RSS_ITEM if kind == "rss" else ATOM_ENTRY
        items = [dict(base) for _ in range(draw(st.integers(1, 3)))]
        for it in items:
            for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
                if draw(st.booleans()):
                    it[key] = _xml_chars(draw(NEWS_TEXT)).replace("\r", "")
                else:
                    it.pop(key, None)
        return (rss if kind == "rss" else atom)(items)
    if kind == "bytes":
        return draw(mutated_bytes(draw(st.sampled_from([RECORDED_RSS, RECORDED_ATOM]))))
    return draw(st.binary(max_size=40))


def check_news(doc: bytes) -> None:
    try:
        out = parse_feed(doc)
    except DocumentError as exc:
        assert exc.reason in ("malformed_document", "unexpected_document") and exc.detail
        return
    assert type(out) is FeedParse
    for item in out.items:
        assert dedupe_keys(item, "fuzz")
        event_id = news_event_id(item, "fuzz")
        for ev in news_events(item, event_id=event_id, currencies=["EUR", "USD"],
                              sentiment=0.1, source="fuzz", published_ms=T0):
            encodes(ev)
    assert all(e.reason and e.detail and isinstance(e.raw, bytes) for e in out.errors)


@FUZZ
@given(news_document())
# a publication date that is a valid ISO time but whose epoch falls outside datetime's
# range once in UTC: OverflowError from timestamp(), ValueError from fromtimestamp()
@example(rss([{**RSS_ITEM, "pubDate": "0001-01-01T00:00:00+14:00"}]))
@example(rss([{**RSS_ITEM, "pubDate": "9999-12-31T23:59:59-12:00"}]))
@example(atom([{**ATOM_ENTRY, "published": "Mon, 01 Jan 0001 00:00:00 +1400"}]))
# a link that urlsplit refuses (ValueError: Invalid IPv6 URL) in dedupe_keys
@example(rss([{**RSS_ITEM, "link": "http://[::1"}]))
# an XML declaration naming an encoding Python has no codec for: LookupError
@example(RECORDED_RSS.replace(b"UTF-8", b"x-no-such-codec", 1))
def test_news_feeds_are_items_item_errors_or_a_document_error(doc: bytes) -> None:
    check_news(doc)
