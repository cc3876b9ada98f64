"""Tick files: the canonical CSV, and the history readers on the real files in shared/data."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.files import (
    CANONICAL_HEADER,
    BadRow,
    TickFileError,
    data_rows,
    read_canonical,
    write_canonical,
)
from connectors.history.parse import bi5_hour_start_ms, read_bi5, read_history
from stages.types import Tick


def _utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_canonical_round_trip_and_bad_rows(tmp_path: Path) -> None:
    ticks = [Tick("A", "EURUSD", 1_700_000_000_123, 1.08501, 1.08503, 1_700_000_000_150_000, 7),
             Tick("B", "USDJPY", 1_700_000_000_124, 151.2, 151.203)]
    buf = io.StringIO()
    assert write_canonical(ticks, buf) == 2
    path = tmp_path / "t.csv"
    path.write_text(buf.getvalue() + "A,EURUSD,later,1.1,1.2,,,,\nA,EURUSD,1\n")
    got = list(read_canonical(path))
    assert got[:2] == ticks
    assert isinstance(got[2], BadRow) and got[2].line == 4 and "later" in got[2].text
    assert isinstance(got[3], BadRow) and "expected 9 fields" in got[3].detail


def test_canonical_needs_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("broker,symbol,bid,ask\nA,EURUSD,1.1,1.2\n")
    with pytest.raises(TickFileError, match="time_msc"):
        list(read_canonical(path))


@pytest.mark.data
def test_vendor_time_zones(shared_data: Path) -> None:
    multi = next(iter(read_history("truefx", shared_data / "multi/EURUSD_20120104_NY17-24h.csv.gz",
                                   broker="H", tz="America/New_York")))
    assert isinstance(multi, Tick)
    assert multi.time_msc == _utc_ms(2012, 1, 4, 22, 0, 0) + 290  # New York, UTC-5
    hist = next(iter(read_history("histdata",
                                  shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv")))
    assert isinstance(hist, Tick)
    assert hist.time_msc == _utc_ms(2020, 1, 1, 22, 0, 0) + 65  # EST all year
    tfx = next(iter(read_history("truefx", shared_data / "truefx/USDJPY-2013-01-01.csv")))
    assert isinstance(tfx, Tick)
    assert (tfx.symbol, tfx.time_msc) == ("USDJPY", _utc_ms(2013, 1, 1, 22, 0, 0) + 295)
    ns = next(iter(read_history("nautilus", shared_data / "multi/EURUSD_dukascopy_20190101T23.csv",
                                symbol="EURUSD")))
    assert isinstance(ns, Tick)
    assert ns.time_msc == _utc_ms(2019, 1, 1, 23, 0, 0) + 78


@pytest.mark.data
def test_bi5_decodes_like_the_vendor_csv(shared_data: Path) -> None:
    hour = shared_data / "dukascopy/EURUSD/2019/01/04/00h_ticks.bi5"
    start = bi5_hour_start_ms(hour)
    assert start == _utc_ms(2019, 2, 4, 0, 0, 0)  # the month folder is 0-based
    raw = [t for t in read_bi5(hour, "EURUSD", "D") if isinstance(t, Tick)]
    csv_path = shared_data / "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz"
    decoded = [t for t in read_history("dukascopy", csv_path, broker="D", symbol="EURUSD")
               if isinstance(t, Tick) and t.time_msc < start + 3_600_000]
    assert raw and [(t.time_msc, t.bid, t.ask) for t in raw] == [
        (t.time_msc, t.bid, t.ask) for t in decoded
    ]


def _reference_canonical(path: Path) -> list[Tick | BadRow]:
    """The canonical reader as first written: every record through ``csv.reader``."""
    out: list[Tick | BadRow] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        cols = [h.strip() for h in next(reader)]
        width = len(cols)
        ib, isym, it, ibid, iask = (cols.index(c) for c in CANONICAL_HEADER)
        iq = cols.index("seq") if "seq" in cols else -1
        for line, row in enumerate(reader, 2):
            if len(row) != width:
                out.append(BadRow(line, ",".join(row), f"expected {width} fields, got {len(row)}"))
                continue
            try:
                bid = float(row[ibid])
                ask = float(row[iask])
                tick = Tick(row[ib], row[isym], int(row[it]), bid, ask,
                            0, int(row[iq]) if iq >= 0 and row[iq] else None)
            except ValueError as exc:
                out.append(BadRow(line, ",".join(row), str(exc)))
                continue
            if not tick.broker or not tick.symbol:
                out.append(BadRow(line, ",".join(row), "empty broker or symbol"))
                continue
            out.append(tick)
    return out


# Fields a file may hold: ordinary values, and the characters that decide how CSV splits.
_FIELD = st.one_of(
    st.sampled_from(["HD", "EURUSD", "1700000000123", "1.08501", "", " 7", "x"]),
    st.text(alphabet='ab1.,"\r\n ', max_size=6),
)
_ROW = st.lists(_FIELD, min_size=0, max_size=7)
_SEP = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(_ROW, _SEP), max_size=8), quoted=st.booleans())
def test_fast_reader_reads_what_the_csv_module_reads(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[list[str], str]], quoted: bool
) -> None:
    """Rows split on commas and rows with quotes (commas or line breaks inside a field, an
    unbalanced quote, blank lines, any line ending) give the same ticks, bad rows, details
    and row numbers as ``csv.reader`` over the file."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL)
    w.writerow(["broker", "symbol", "time_msc", "bid", "ask", "seq"])
    for fields, sep in rows:
        # Half the rows as csv.writer writes them, half raw (possibly malformed) text.
        if len(fields) % 2:
            w.writerow(fields)
        else:
            buf.write(",".join(fields) + sep)
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_bytes(buf.getvalue().encode())
    assert list(read_canonical(path)) == _reference_canonical(path)


def test_quoted_fields_keep_their_commas_and_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('broker,symbol,time_msc,bid,ask\n"Big, Bank",EURUSD,5,1.1,1.2\n'
                    '"two\nlines",EURUSD,6,1.1,1.2\nHD,EURUSD,7,1.1,1.2\nHD,EURUSD,"8,9",1,2\n',
                    newline="")
    got = list(read_canonical(path))
    assert got[:3] == [Tick("Big, Bank", "EURUSD", 5, 1.1, 1.2),
                       Tick("two\nlines", "EURUSD", 6, 1.1, 1.2), Tick("HD", "EURUSD", 7, 1.1, 1.2)]
    assert isinstance(got[3], BadRow) and got[3].line == 5 and "8,9" in got[3].detail


@pytest.mark.parametrize(("text", "rows"), [
    ("broker,symbol,time_msc,bid,ask\n", 0),
    ("broker,symbol,time_msc,bid,ask\nHD,EURUSD,5,1.1,1.2\nHD,EURUSD,6,1.1,1.2\n", 2),
    ("broker,symbol,time_msc,bid,ask\nHD,EURUSD,5,1.1,1.2\nHD,EURUSD,6,1.1,1.2", 2),
    ("broker,symbol,time_msc,bid,ask\r\nHD,EURUSD,5,1.1,1.2\r\n", 1),
    ("", 0),
])
def test_data_rows_counts_the_records_after_the_header(tmp_path: Path, text: str,
                                                        rows: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    assert data_rows(path, chunk=7) == rows  # records across chunk boundaries too
    assert data_rows(path) == rows == sum(1 for _ in read_canonical(path))


def test_data_rows_of_a_compressed_file_is_unknown(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"broker,symbol,time_msc,bid,ask\nHD,EURUSD,5,1.1,1.2\n"))
    assert data_rows(path) is None
