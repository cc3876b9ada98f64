"""Vendor clocks are IANA zones: New York time follows daylight saving, a vendor that keeps
UTC-5 all year stays there, and a symbol comes from the data or the name, never a default."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.history.parse import (
    DEFAULT_ZONES,
    LEAN_ZONES,
    HistoryError,
    read_history,
)
from stages.types import Tick


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def ticks(fmt: str, path: Path, **kw: str) -> list[Tick]:
    return [r for r in read_history(fmt, path, **kw) if isinstance(r, Tick)]


def test_multi_is_new_york_time_with_daylight_saving(tmp_path: Path) -> None:
    f = tmp_path / "EURUSD_2012_NY17-24h.csv.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("EURUSD,20120104 17:00:00.290,1.29414,1.29431\n"   # EST: UTC-5
                 "EURUSD,20120704 17:00:00.290,1.25414,1.25431\n")  # EDT: UTC-4
    winter, summer = ticks("multi", f)
    assert winter.time_msc == ms("2012-01-04 22:00:00.290")
    assert summer.time_msc == ms("2012-07-04 21:00:00.290")
    assert (winter.broker, winter.symbol) == ("HISTDATA", "EURUSD")


def test_the_shipped_multi_files_are_the_same_day_as_the_utc_files(shared_data: Path) -> None:
    first = ticks("multi", shared_data / "multi/USDJPY_20120104_NY17-24h.csv.gz")[0]
    assert first.symbol == "USDJPY"  # from the rows, not a default
    assert first.time_msc == ms("2012-01-04 22:00:00.290")


def test_histdata_and_fxcm_keep_utc_minus_5_in_summer(tmp_path: Path) -> None:
    f = tmp_path / "DAT_ASCII_EURUSD_T_202007.csv"
    f.write_text("20200701 170000065,1.12345,1.12355,0\n")
    (t,) = ticks("histdata", f)
    assert t.time_msc == ms("2020-07-01 22:00:00.065")  # EST all year, as HistData says
    for zone in (DEFAULT_ZONES["histdata"], LEAN_ZONES["fxcm"], *DEFAULT_ZONES.values()):
        assert zone is UTC or isinstance(zone, ZoneInfo)  # a named zone, never a bare offset


@pytest.mark.parametrize(("fmt", "name", "line"), [
    ("histdata", "ticks.csv", "20200101 170000065,1.1,1.1002,0\n"),
    ("nautilus", "quotes.csv", "ts_event_ns,ts_init_ns,timestamp_utc,bid,ask,bid_size,ask_size\n"
                               "1,1,2019-01-01 23:00:00.000,1.1,1.1002,1,1\n"),
    ("dukascopy", "export.csv", "timestamp_utc,bid,ask,bid_volume,ask_volume\n"
                                "2019-01-01 23:00:00.000,1.1,1.1002,1,1\n"),
])
def test_a_file_that_does_not_name_its_symbol_needs_symbol(
        tmp_path: Path, fmt: str, name: str, line: str) -> None:
    f = tmp_path / name
    f.write_text(line)
    with pytest.raises(HistoryError, match="give --symbol"):
        ticks(fmt, f)
    assert {t.symbol for t in ticks(fmt, f, symbol="USDJPY")} == {"USDJPY"}
    named = tmp_path / f"USDJPY_{name}"
    named.write_text(line)
    if fmt != "histdata":  # HistData names its pair as DAT_ASCII_USDJPY_T_...
        assert {t.symbol for t in ticks(fmt, named)} == {"USDJPY"}
