"""Tick files: the canonical CSV that ``tickstream process`` reads, and vendor formats.

Canonical CSV: header ``broker,symbol,time_msc,bid,ask`` with optional
``last,volume,seq,recv_time_us`` columns (``recv_time_us``: collector receive time, used as
the validator's clock so a replay judges staleness exactly as the live worker did), one
tick per row, in file order. A row that cannot be parsed is not skipped: it is
returned as a :class:`BadRow` so the caller can count it as a ``malformed`` reject with its
original text (nothing is lost silently).

Vendor converters turn the formats under ``../shared/data`` (Dukascopy ``.bi5`` and its
decoded CSV, HistData ASCII, TrueFX, the nautilus "multi" files) into canonical rows, with
each vendor's time zone applied, so real data runs through the same code as live ticks.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import lzma
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import IO

from stages.types import Tick

CANONICAL_HEADER = ("broker", "symbol", "time_msc", "bid", "ask")
VENDOR_FORMATS = ("dukascopy-csv", "histdata", "truefx", "multi", "multi-ns")
OPTIONAL_COLUMNS = ("last", "volume", "seq", "recv_time_us")


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that is not a tick: its line number, original text and what was wrong."""

    line: int
    text: str
    detail: str


class TickFileError(ValueError):
    """The file as a whole is unusable (missing header columns, not text, a vendor row that
    cannot be read)."""


_BI5_RECORD = struct.Struct(">IIIff")
#: liblzma allocates the dictionary the stream header asks for (Dukascopy's hourly files ask
#: for 4 MiB): a damaged header must not make it allocate gigabytes.
_BI5_MEMLIMIT = 1 << 28


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


@dataclass(frozen=True, slots=True)
class CanonicalColumns:
    """Where each field sits in a canonical CSV's rows (-1: optional column absent)."""

    width: int
    broker: int
    symbol: int
    time_msc: int
    bid: int
    ask: int
    last: int
    volume: int
    seq: int
    recv_time_us: int

    @classmethod
    def from_header(cls, header: str, path: Path | str) -> CanonicalColumns:
        try:
            cols = [h.strip() for h in csv_fields(header)]
        except csv.Error as exc:
            raise TickFileError(f"{path}: unreadable header: {exc}") from None
        missing = [c for c in CANONICAL_HEADER if c not in cols]
        if missing:
            raise TickFileError(f"{path}: header lacks {', '.join(missing)} (have {cols})")

        def at(name: str) -> int:
            return cols.index(name) if name in cols else -1

        return cls(len(cols), *(cols.index(c) for c in CANONICAL_HEADER),
                   *(at(c) for c in OPTIONAL_COLUMNS))


def csv_fields(text: str) -> list[str]:
    """The fields of one record's text exactly as the ``csv`` module reads them."""
    if '"' not in text:
        return text.split(",") if text else []
    return next(csv.reader([text]), [])


def canonical_records(path: Path | str) -> Iterator[tuple[int, str]]:
    """Every record of a canonical CSV as (record number, text); record 1 is the header.

    The text is the record (without its line terminator unless it holds a quote), so
    :func:`parse_records` reads it exactly as ``csv.reader`` reads the file. A record with a
    quote character goes through the ``csv`` module, so a quoted field may hold commas or
    span lines; the rest (every row ``write_canonical`` writes for ordinary broker and
    symbol names) is split on commas, about three times faster.
    """
    with _open_text(Path(path)) as fh:
        lines = iter(fh)
        taken: list[str] = []

        def more() -> Iterator[str]:  # lines a quoted record continues over
            for ln in lines:
                taken.append(ln)
                yield ln

        n = 0
        try:
            for n, line in enumerate(lines, 1):
                if '"' in line:
                    taken.clear()
                    with suppress(csv.Error):  # parse_records reports it as a malformed row
                        next(csv.reader(chain((line,), more())))
                    # kept whole: csv reads a quote left open at the end of the file up to
                    # and including the line break
                    yield n, line + "".join(taken)
                else:
                    yield n, line.rstrip("\r\n")
        except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise TickFileError(f"{path}: after record {n}: unreadable: {exc}") from None


def parse_records(
    cols: CanonicalColumns, records: Iterable[tuple[int, str]]
) -> Iterator[tuple[int, Tick | BadRow]]:
    """(record number, :class:`Tick` or :class:`BadRow`) for every record of ``records``."""
    ib, isym, it, ibid, iask = cols.broker, cols.symbol, cols.time_msc, cols.bid, cols.ask
    il, iv, iq, ir, width = cols.last, cols.volume, cols.seq, cols.recv_time_us, cols.width
    for line, text in records:
        if '"' in text:
            try:
                row = csv_fields(text)
            except csv.Error as exc:
                yield line, BadRow(line, text, f"unreadable CSV: {exc}")
                continue
        else:
            row = text.split(",") if text else []
        if len(row) != width:
            yield line, BadRow(line, ",".join(row), f"expected {width} fields, got {len(row)}")
            continue
        try:
            bid = float(row[ibid])
            ask = float(row[iask])
            tick = Tick(
                row[ib], row[isym], int(row[it]), bid, ask,
                int(row[ir]) if ir >= 0 and row[ir] else 0,
                int(row[iq]) if iq >= 0 and row[iq] else None,
                float(row[il]) if il >= 0 and row[il] else None,
                float(row[iv]) if iv >= 0 and row[iv] else None,
            )
        except ValueError as exc:
            yield line, BadRow(line, ",".join(row), str(exc))
            continue
        if not tick.broker or not tick.symbol:
            yield line, BadRow(line, ",".join(row), "empty broker or symbol")
            continue
        yield line, tick


def canonical_table(
    path: Path | str,
) -> tuple[CanonicalColumns, Iterator[tuple[int, str]]] | None:
    """A canonical CSV's columns (from its header) and its data records; None when empty."""
    records = canonical_records(path)
    first = next(records, None)
    if first is None:
        return None
    return CanonicalColumns.from_header(first[1], path), records


def read_canonical(path: Path | str) -> Iterator[Tick | BadRow]:
    """Yield a :class:`Tick` or :class:`BadRow` for every data row of a canonical CSV."""
    table = canonical_table(path)
    if table is not None:
        for _line, item in parse_records(*table):
            yield item


def write_canonical(rows: Iterable[Tick], out: IO[str]) -> int:
    """Write ticks as canonical CSV (with ``seq`` when any tick has one); returns the count."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow((*CANONICAL_HEADER, "seq", "recv_time_us"))
    n = 0
    for t in rows:
        w.writerow((t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask),
                    "" if t.seq is None else t.seq, t.recv_time_us or ""))
        n += 1
    return n


# ---- vendor formats -------------------------------------------------------------------

def _ms(dt_utc: datetime) -> int:
    return calendar.timegm(dt_utc.timetuple()) * 1000 + dt_utc.microsecond // 1000


def read_dukascopy_bi5(path: Path, hour_start_ms: int, symbol: str, broker: str) -> list[Tick]:
    """One Dukascopy hourly ``.bi5`` file: LZMA-alone stream of 20-byte big-endian records."""
    raw = path.read_bytes()
    if not raw:
        return []
    try:
        data = lzma.decompress(raw, format=lzma.FORMAT_ALONE, memlimit=_BI5_MEMLIMIT)
    except lzma.LZMAError as exc:
        raise TickFileError(f"{path}: not an LZMA-alone stream: {exc}") from None
    if len(data) % _BI5_RECORD.size:
        raise TickFileError(f"{path}: {len(data)} bytes decompressed, not a whole number of "
                            f"{_BI5_RECORD.size}-byte tick records")
    point = 1e-3 if symbol.endswith("JPY") else 1e-5
    out = []
    for ms, ask_p, bid_p, _av, _bv in _BI5_RECORD.iter_unpack(data):
        out.append(Tick(broker, symbol, hour_start_ms + ms, round(bid_p * point, 6),
                        round(ask_p * point, 6)))
    return out


def dukascopy_hour_start_ms(path: Path) -> int:
    """``.../SYMBOL/YYYY/MM/DD/HHh_ticks.bi5`` with a 0-based month folder."""
    hour = int(path.name[:2])
    day, month0, year = int(path.parent.name), int(path.parent.parent.name), int(
        path.parent.parent.parent.name
    )
    return _ms(datetime(year, month0 + 1, day, hour))


def read_vendor(
    path: Path | str, fmt: str, broker: str, symbol: str | None = None
) -> Iterator[Tick]:
    """Ticks from a vendor file. ``fmt``: dukascopy-csv, histdata, truefx, multi, multi-ns.

    A row that cannot be read stops the conversion with :class:`TickFileError` naming the
    file and the line (a vendor file is converted whole or not at all).
    """
    path = Path(path)
    if fmt not in VENDOR_FORMATS:
        raise TickFileError(f"unknown vendor format {fmt!r}")
    sym = symbol or "EURUSD"
    if fmt == "dukascopy-csv":  # timestamp_utc,bid,ask,bid_volume,ask_volume
        def tick(row: list[str]) -> Tick:
            return Tick(broker, sym, _parse_iso_ms(row[0]), float(row[1]), float(row[2]))
    elif fmt == "histdata":  # YYYYMMDD HHMMSSfff,bid,ask,volume ; EST (UTC-5) all year
        def tick(row: list[str]) -> Tick:
            d, t = row[0].split(" ")
            dt = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(t[:2]), int(t[2:4]),
                          int(t[4:6]), int(t[6:9]) * 1000)
            return Tick(broker, sym, _ms(dt) + 5 * 3_600_000, float(row[1]), float(row[2]))
    elif fmt in ("truefx", "multi"):  # PAIR,YYYYMMDD HH:MM:SS.fff,bid,ask
        offset = 0 if fmt == "truefx" else 5 * 3_600_000  # multi: New York, UTC-5 (Jan)

        def tick(row: list[str]) -> Tick:
            dt = datetime.strptime(row[1], "%Y%m%d %H:%M:%S.%f")
            return Tick(broker, symbol or row[0].replace("/", ""), _ms(dt) + offset,
                        float(row[2]), float(row[3]))
    else:  # multi-ns: ts_event_ns,ts_init_ns,timestamp_utc,bid,ask,...
        def tick(row: list[str]) -> Tick:
            return Tick(broker, sym, _parse_iso_ms(row[2]), float(row[3]), float(row[4]))
    with _open_text(path) as fh:
        r = csv.reader(fh)
        try:
            if fmt in ("dukascopy-csv", "multi-ns"):
                next(r, None)  # header
            for row in r:
                try:
                    t = tick(row)
                except (ValueError, IndexError) as exc:
                    detail = str(exc).replace("\n", "\\n")[:200]  # one line, also for a
                    raise TickFileError(  # quoted field spanning lines
                        f"{path}: line {r.line_num}: {detail}: {row!r:.200}") from None
                yield t
        except (csv.Error, UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise TickFileError(f"{path}: line {r.line_num + 1}: unreadable: {exc}") from None


def _parse_iso_ms(text: str) -> int:
    text = text.strip().replace("T", " ").rstrip("Z")
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return _ms(datetime.strptime(text, fmt))
