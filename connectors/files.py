"""Tick files: the canonical CSV that ``tickstream process`` reads, and vendor formats.

Canonical CSV: header ``broker,symbol,time_msc,bid,ask`` with optional
``last,volume,seq,recv_time_us`` columns (``recv_time_us``: collector receive time, used as
the validator's clock so a replay judges staleness exactly as the live worker did), one
tick per row, in file order. A row that cannot be parsed is not skipped: it is
returned as a :class:`BadRow` so the caller can count it as a ``malformed`` reject with its
original text (nothing is lost silently).

Vendor formats (Dukascopy, HistData, TrueFX, Lean, MT5 exports) are read by
:mod:`connectors.history.parse`; ``tickstream convert`` writes them as canonical CSV.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO

from stages.types import Tick

CANONICAL_HEADER = ("broker", "symbol", "time_msc", "bid", "ask")
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
        yield from text_records(fh, path)


def text_records(fh: IO[str], path: Path | str, first: int = 1) -> Iterator[tuple[int, str]]:
    """:func:`canonical_records` of an open text stream (``newline=""``) whose first line
    is record number ``first``: a reader that took the lines before it another way goes on
    from there with the same records and numbers."""
    lines = iter(fh)
    taken: list[str] = []

    def more() -> Iterator[str]:  # lines a quoted record continues over
        for ln in lines:
            taken.append(ln)
            yield ln

    n = first - 1
    try:
        for n, line in enumerate(lines, first):
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


def data_rows(path: Path | str, chunk: int = 1 << 20) -> int | None:
    """The data records of a plain canonical CSV (lines less the header), counted fast for a
    progress bar's total; None for a compressed file (it would have to be read twice).

    A quoted field spanning lines makes it an overcount; ``write_canonical`` writes none.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return None
    lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1  # a last record without its line break
    return max(0, lines - 1)


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


def write_canonical(rows: Iterable[Tick], out: IO[str], header: bool = True) -> int:
    """Write ticks as canonical CSV, every optional column included (empty where a tick has
    no value); returns the count. ``header=False`` appends rows to a file already begun."""
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow((*CANONICAL_HEADER, *OPTIONAL_COLUMNS))
    n = 0
    for t in rows:
        w.writerow((t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask),
                    "" if t.last is None else repr(t.last),
                    "" if t.volume is None else repr(t.volume),
                    "" if t.seq is None else t.seq, t.recv_time_us or ""))
        n += 1
    return n
