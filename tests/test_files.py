"""Tick files: the canonical CSV and the vendor readers, on the real files in shared/data."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.files import (
    BadRow,
    TickFileError,
    dukascopy_hour_start_ms,
    read_canonical,
    read_dukascopy_bi5,
    read_vendor,
    write_canonical,
)
from stages.types import Tick


def _utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_canonical_round_trip_and_bad_rows(tmp_path: Path) -> None:
    ticks = [Tick("A", "EURUSD", 1_700_000_000_123, 1.08501, 1.08503, 1_700_000_000_150_000, 7),
             Tick("B", "USDJPY", 1_700_000_000_124, 151.2, 151.203)]
    buf = io.StringIO()
    assert write_canonical(ticks, buf) == 2
    path = tmp_path / "t.csv"
    path.write_text(buf.getvalue() + "A,EURUSD,later,1.1,1.2,,\nA,EURUSD,1\n")
    got = list(read_canonical(path))
    assert got[:2] == ticks
    assert isinstance(got[2], BadRow) and got[2].line == 4 and "later" in got[2].text
    assert isinstance(got[3], BadRow) and "expected 7 fields" in got[3].detail


def test_canonical_needs_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("broker,symbol,bid,ask\nA,EURUSD,1.1,1.2\n")
    with pytest.raises(TickFileError, match="time_msc"):
        list(read_canonical(path))


@pytest.mark.data
def test_vendor_time_zones(shared_data: Path) -> None:
    multi = next(read_vendor(shared_data / "multi/EURUSD_20120104_NY17-24h.csv.gz", "multi", "H"))
    assert multi.time_msc == _utc_ms(2012, 1, 4, 22, 0, 0) + 290  # New York, UTC-5
    hist = next(read_vendor(shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv",
                            "histdata", "H"))
    assert hist.time_msc == _utc_ms(2020, 1, 1, 22, 0, 0) + 65  # EST all year
    tfx = next(read_vendor(shared_data / "truefx/USDJPY-2013-01-01.csv", "truefx", "T"))
    assert (tfx.symbol, tfx.time_msc) == ("USDJPY", _utc_ms(2013, 1, 1, 22, 0, 0) + 295)
    ns = next(read_vendor(shared_data / "multi/EURUSD_dukascopy_20190101T23.csv", "multi-ns",
                          "D", "EURUSD"))
    assert ns.time_msc == _utc_ms(2019, 1, 1, 23, 0, 0) + 78


@pytest.mark.data
def test_bi5_decodes_like_the_vendor_csv(shared_data: Path) -> None:
    hour = shared_data / "dukascopy/EURUSD/2019/01/04/00h_ticks.bi5"
    start = dukascopy_hour_start_ms(hour)
    assert start == _utc_ms(2019, 2, 4, 0, 0, 0)  # the month folder is 0-based
    raw = read_dukascopy_bi5(hour, start, "EURUSD", "D")
    csv_path = shared_data / "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz"
    decoded = [t for t in read_vendor(csv_path, "dukascopy-csv", "D", "EURUSD")
               if t.time_msc < start + 3_600_000]
    assert raw and [(t.time_msc, t.bid, t.ask) for t in raw] == [
        (t.time_msc, t.bid, t.ask) for t in decoded
    ]
