"""The loader's readers: canonical CSV, Lean zips and Dukascopy hours parsed into columns.

:func:`read_batches` yields what :func:`~connectors.history.parse.read_history` yields for
the same path — the same ticks in the same order, the same bad lines — but a run of good
rows comes as one :class:`~connectors.history.batch.TickBatch` instead of one ``Tick`` each,
parsed by pyarrow's CSV reader or numpy, several times faster (``make bench``:
``history_parse_ticks_per_s``). The other formats, and any block of lines the fast path is
not sure to read exactly as the row reader does, go through the row reader itself:

* canonical CSV, in blocks of about :data:`BLOCK_BYTES`: a block is taken by pyarrow only
  when it is plain printable ASCII without a quote character (a ``\\r`` only before a
  ``\\n``), pyarrow parses every line with the header's column count, the required fields
  are all there, broker and symbol are never empty, and each optional column is filled in
  every row or in none. Anything else — a bad line, a row without ``last`` among rows with
  it — and that block is read by the row parser, with its true line numbers; a quote or
  bytes that are not UTF-8 hand the rest of the file to the row reader (a quoted field may
  span lines). Only empty strings are null (pyarrow would read ``NA`` or ``nan`` as null);
  pyarrow and Python both round a decimal to the nearest double, and where they disagree
  on what a number is, pyarrow refuses and the row parser decides — except ``0x10``, an
  integer to pyarrow and not to Python's ``int()``, so a block with ``0x`` in it goes to
  the row parser (the generated-file test found this);
* Lean: each zip's CSV by pyarrow under the same rules (blank lines skipped, as the row
  reader skips them); a folder's files are merged by a stable sort on time, which is
  exactly the row reader's ``heapq.merge`` when every file is in time order — when one is
  not, or one has a bad line, the folder is read by the row reader;
* Dukascopy ``.bi5`` hours: the decompressed records as a numpy structured array; a
  price is ``points / 10**5`` (``/ 10**3`` for JPY), the same double as the row reader's
  ``round(points * 1e-5, 6)`` (the correctly rounded quotient of two exact numbers is the
  double nearest the decimal, which is what ``round`` returns). The CSV export goes
  through the row reader.

Consecutive ticks are gathered into batches of up to :data:`BATCH_ROWS` rows.
"""

from __future__ import annotations

import gzip
import io
import string
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from connectors.files import BadRow, CanonicalColumns, TickFileError, parse_records, text_records
from connectors.history.batch import TickBatch, concat
from connectors.history.parse import (
    MAX_LINE_TEXT,
    BadLine,
    HistoryError,
    bi5_records,
    bi5_start_ms,
    bi5_truncated,
    checked_path,
    dukascopy_files,
    dukascopy_symbol,
    lean_data,
    lean_files,
    lean_meta,
    lean_rows,
    point_size,
    read_history,
    read_lean,
    symbol_of,
)
from stages.types import Tick

Item = TickBatch | Tick | BadLine

#: Rows per batch handed on (the loader encodes a batch at once: its memory is about
#: 200 bytes a row).
BATCH_ROWS = 65_536
#: Bytes of canonical CSV parsed at once.
BLOCK_BYTES = 4 << 20
#: The bytes a block may hold to be read by pyarrow (``\r`` is checked apart).
_PRINTABLE = (string.digits + string.ascii_letters + string.punctuation.replace('"', "")
              + " ").encode() + b"\n"
_BI5_DTYPE = np.dtype([("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_v", ">f4"),
                       ("bid_v", ">f4")])


def read_batches(fmt: str, path: Path | str, *, broker: str | None = None,
                 symbol: str | None = None, tz: str | None = None) -> Iterator[Item]:
    """Batches, ticks and bad lines of one path, in file order (see the module doc)."""
    path, zone = checked_path(fmt, path, broker=broker, symbol=symbol, tz=tz)
    if fmt == "csv":
        return csv_batches(path)
    if fmt == "lean":
        return lean_batches(path, symbol, broker, zone)
    if fmt == "dukascopy" and (path.is_dir() or path.suffix == ".bi5"):
        return dukascopy_batches(path, symbol, broker or "DUKASCOPY", zone or UTC)
    return read_history(fmt, path, broker=broker, symbol=symbol, tz=tz)


# ---- canonical CSV -----------------------------------------------------------------------


def csv_batches(path: Path) -> Iterator[Item]:
    """:func:`numbered_csv` as the loader takes it: batches of at most :data:`BATCH_ROWS`
    rows, bad rows as :class:`BadLine`, errors as :class:`HistoryError`."""
    try:
        for _n, item in numbered_csv(path):
            if isinstance(item, TickBatch):
                yield from item.chunks(BATCH_ROWS)
            else:
                yield _row(path, item)
    except TickFileError as exc:
        raise HistoryError(str(exc)) from None


#: A canonical CSV's records parsed, with their record numbers (the header is record 1):
#: ``(n, batch)`` for a run of ticks read column-wise, records ``n .. n + len(batch) - 1``;
#: ``(n, tick_or_bad_row)`` for one record read by the row parser.
Numbered = tuple[int, TickBatch | Tick | BadRow]


def numbered_csv(path: Path | str) -> Iterator[Numbered]:
    """Every data record of a canonical CSV (``.gz`` too) with its record number: the same
    ticks, bad rows and numbers as :func:`~connectors.files.parse_records` over
    :func:`~connectors.files.canonical_table`, a block of plain rows at a time as one
    :class:`TickBatch` (``tickstream process`` keys its outputs by record number). Raises
    :class:`~connectors.files.TickFileError` for a bad header or an unreadable file."""
    path = Path(path)
    fh: Any = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")  # noqa: SIM115
    with fh:
        yield from _csv_items(path, fh)


def numbered_rows(items: Iterable[Numbered]) -> Iterator[tuple[int, Tick | BadRow]]:
    """:func:`numbered_csv`'s items one record at a time: ``parse_records``' own form."""
    for n, item in items:
        if isinstance(item, TickBatch):
            yield from zip(range(n, n + len(item)), item.ticks(), strict=True)
        else:
            yield n, item


def _csv_items(path: Path, fh: IO[bytes]) -> Iterator[Numbered]:
    first = _read(path, fh.readline, 0)
    if not first:
        return
    header = _ascii_line(first)
    if header is None:  # a quoted or unusual header: the row reader throughout
        yield from _rows_from(path, fh, b"", first, 0)
        return
    cols = CanonicalColumns.from_header(header, path)
    names = [h.strip() for h in header.split(",")]
    if len(set(names)) != len(names):
        yield from _rows_from(path, fh, b"", first, 0)
        return
    convert = _convert_options(cols)
    line = 1  # records read so far, the header included
    rest = b""
    while True:
        chunk = _read(path, lambda: fh.read(BLOCK_BYTES), line)
        data = rest + chunk
        if not data:
            return
        if chunk:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
        else:
            block, rest = data, b""
        if b'"' in block:
            yield from _rows_from(path, fh, block + rest, b"", line)
            return
        batch = _csv_block(block, cols, convert)
        if batch is not None:
            yield line + 1, batch
            line += len(batch)
            continue
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            yield from _rows_from(path, fh, block + rest, b"", line)
            return
        records = text_records(io.StringIO(text, newline=""), path, line + 1)
        for n, item in parse_records(cols, records):
            line = n
            yield n, item


def _ascii_line(raw: bytes) -> str | None:
    body = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
    if not raw.endswith(b"\n") or b'"' in body or b"\r" in body or body.translate(None, _PRINTABLE):
        return None
    return body.decode("ascii")


def _convert_options(cols: CanonicalColumns) -> pacsv.ConvertOptions:
    words = pa.dictionary(pa.int32(), pa.string())
    types: dict[str, pa.DataType] = {f"c{i}": pa.string() for i in range(cols.width)}
    for i, kind in ((cols.broker, words), (cols.symbol, words), (cols.time_msc, pa.int64()),
                    (cols.bid, pa.float64()), (cols.ask, pa.float64()),
                    (cols.last, pa.float64()), (cols.volume, pa.float64()),
                    (cols.seq, pa.int64()), (cols.recv_time_us, pa.int64())):
        if i >= 0:
            types[f"c{i}"] = kind
    return pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False,
                                quoted_strings_can_be_null=False)


def _parse(block: bytes, names: list[str], convert: pacsv.ConvertOptions,
           skip_blank: bool) -> pa.Table | None:
    """pyarrow's reading of a block that passes the byte checks; None where it refuses."""
    if block.translate(None, _PRINTABLE + b"\r") or b"0x" in block or b"0X" in block:
        return None  # (pyarrow reads 0x10 as 16, Python's int() refuses it)
    crs = block.count(b"\r")
    if crs and crs != block.count(b"\r\n"):
        return None  # a lone \r: a line break to pyarrow, not to the row readers
    try:
        return pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                           block_size=len(block) + 1),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=skip_blank),
            convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowException):
        return None


def _csv_block(block: bytes, cols: CanonicalColumns,
               convert: pacsv.ConvertOptions) -> TickBatch | None:
    table = _parse(block, [f"c{i}" for i in range(cols.width)], convert, skip_blank=False)
    if table is None:
        return None
    rows = table.num_rows
    if rows != block.count(b"\n") + (not block.endswith(b"\n")):
        return None

    def column(i: int) -> Any:
        return table.column(f"c{i}").combine_chunks()

    for i in (cols.time_msc, cols.bid, cols.ask):
        if column(i).null_count:
            return None
    codes = []
    for i in (cols.broker, cols.symbol):
        words = column(i)
        names = words.dictionary.to_pylist()
        if "" in names:
            return None
        codes.append((tuple(names), _numpy(words.indices).astype(np.int32)))
    optional: list[Any] = []
    for i in (cols.last, cols.volume, cols.seq, cols.recv_time_us):
        values = None if i < 0 else column(i)
        if values is None or values.null_count == rows:
            optional.append(None)
        elif values.null_count:
            return None
        else:
            optional.append(_numpy(values))
    (brokers, bcode), (symbols, scode) = codes
    return TickBatch(brokers, symbols, bcode, scode, _numpy(column(cols.time_msc)),
                     _numpy(column(cols.bid)), _numpy(column(cols.ask)), *optional)


def _numpy(values: pa.Array) -> npt.NDArray[Any]:
    """A primitive Arrow array without nulls as a read-only numpy view of its buffer.

    What ``values.to_numpy()`` gives, without its first call's import of pandas (0.2-0.3 s
    here, before a loader's first record or a process shard's first tick)."""
    if values.null_count:
        raise ValueError("an array with nulls has no plain numpy view")
    dtype = np.dtype(values.type.to_pandas_dtype())
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                         offset=values.offset * dtype.itemsize)


def _row(path: Path, item: Tick | BadRow) -> Tick | BadLine:
    if isinstance(item, BadRow):
        return BadLine(str(path), item.line, item.text[:MAX_LINE_TEXT], item.detail)
    return item


def _rows_from(path: Path, fh: IO[bytes], head: bytes, header: bytes,
               line: int) -> Iterator[Numbered]:
    """The row reader from here on: ``header`` (when not yet parsed) and ``head``, then the
    rest of ``fh``; ``line`` records were read before them."""
    stream = io.TextIOWrapper(io.BufferedReader(_Joined(header + head, fh)),
                              encoding="utf-8", errors="strict", newline="")
    records = text_records(stream, path, line + 1)
    if header:
        first = next(records, None)
        if first is None:
            return
        cols = CanonicalColumns.from_header(first[1], path)
    else:
        cols = _header_cols(path)
    yield from parse_records(cols, records)


def _header_cols(path: Path) -> CanonicalColumns:
    from connectors.files import canonical_table

    table = canonical_table(path)
    assert table is not None  # a header was read before
    return table[0]


def _read(path: Path, read: Any, line: int) -> bytes:
    try:
        data: bytes = read()
        return data
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise TickFileError(f"{path}: after record {line}: unreadable: {exc}") from None


class _Joined(io.RawIOBase):
    """Bytes already read, then the rest of a binary stream."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if len(self._head):
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# ---- Lean --------------------------------------------------------------------------------

_LEAN_CONVERT = pacsv.ConvertOptions(
    column_types={"ms": pa.int64(), "bid": pa.float64(), "ask": pa.float64()},
    null_values=[""])


def lean_batches(path: Path, symbol: str | None, broker: str | None,
                 zone: object | None) -> Iterator[Item]:
    files = lean_files(path)
    if not files:
        raise HistoryError(f"{path}: no YYYYMMDD_quote.zip files here")
    batches: list[TickBatch] = []
    for f in files:
        name, sym, midnight = lean_meta(f, symbol, broker, zone)
        data = lean_data(f)
        batch = _lean_file(data, name, sym, midnight)
        if batch is None or (len(files) > 1 and bool(np.any(np.diff(batch.time_msc) < 0))):
            if len(files) == 1:
                yield from lean_rows(f, data, name, sym, midnight)
            else:  # a bad line, or a file out of time order: the row reader's merge
                yield from read_lean(path, symbol, broker, zone)
            return
        batches.append(batch)
    merged = concat(batches)
    if len(files) > 1:
        merged = merged.take(np.argsort(merged.time_msc, kind="stable"))
    yield from merged.chunks(BATCH_ROWS)


def _lean_file(data: bytes, broker: str, symbol: str, midnight: int) -> TickBatch | None:
    table = _parse(data, ["ms", "bid", "ask"], _LEAN_CONVERT, skip_blank=True)
    if table is None or any(c.null_count for c in table.columns):
        return None
    lines = sum(1 for raw in data.split(b"\n") if raw.strip())
    if table.num_rows != lines:
        return None
    ms, bid, ask = (_numpy(c.combine_chunks()) for c in table.columns)
    return TickBatch.of_stream(broker, symbol, ms + midnight, bid, ask)


# ---- Dukascopy ---------------------------------------------------------------------------

def dukascopy_batches(path: Path, symbol: str | None, broker: str,
                      zone: object) -> Iterator[Item]:
    files = dukascopy_files(path) if path.is_dir() else [path]
    if not files:
        raise HistoryError(f"{path}: no HHh_ticks.bi5 files under this folder")
    pending: list[TickBatch] = []
    rows = 0
    for f in files:
        sym = symbol_of(symbol or dukascopy_symbol(f), f)
        if pending and pending[-1].symbols[0] != sym:
            yield concat(pending)
            pending, rows = [], 0
        start = bi5_start_ms(f, zone)
        data = bi5_records(f)
        if isinstance(data, BadLine):
            if pending:
                yield concat(pending)
                pending, rows = [], 0
            yield data
            continue
        rec = np.frombuffer(data, _BI5_DTYPE, count=len(data) // _BI5_DTYPE.itemsize)
        if len(rec):
            scale = float(round(1 / point_size(sym)))
            pending.append(TickBatch.of_stream(
                broker, sym, rec["ms"].astype(np.int64) + start,
                rec["bid"].astype(np.float64) / scale, rec["ask"].astype(np.float64) / scale,
                volume=rec["ask_v"].astype(np.float64) + rec["bid_v"].astype(np.float64)))
            rows += len(rec)
        truncated = bi5_truncated(f, data)
        if truncated is not None:
            if pending:
                yield concat(pending)
                pending, rows = [], 0
            yield truncated
        elif rows >= BATCH_ROWS:
            yield concat(pending)
            pending, rows = [], 0
    if pending:
        yield concat(pending)

