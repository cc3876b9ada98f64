"""Every history format on the real samples in ../shared/data: counts, clocks, bad lines."""

from __future__ import annotations

import gzip
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.history.parse import (
    FORMATS,
    BadLine,
    HistoryError,
    Row,
    read_history,
)
from stages.types import Tick

pytestmark = pytest.mark.data


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def split(rows: list[Row]) -> tuple[list[Tick], list[BadLine]]:
    ticks = [r for r in rows if isinstance(r, Tick)]
    return ticks, [r for r in rows if isinstance(r, BadLine)]


def test_dukascopy_folder_layout_zero_based_month_and_point_size(shared_data: Path) -> None:
    ticks, bad = split(list(read_history("dukascopy", shared_data / "dukascopy/EURUSD")))
    assert not bad
    assert len(ticks) == 266_219  # the README's count
    assert {(t.broker, t.symbol) for t in ticks} == {("DUKASCOPY", "EURUSD")}
    # folder 2019/01/04 is 4 February 2019 (0-based month), UTC
    assert ms("2019-02-04 00:00:00") <= ticks[0].time_msc < ms("2019-02-04 01:00:00")
    assert ticks[-1].time_msc < ms("2019-02-06 00:00:00")
    assert all(1.1 < t.bid < 1.2 and t.ask >= t.bid for t in ticks[:1000])
    assert [t.time_msc for t in ticks] == sorted(t.time_msc for t in ticks)


def test_dukascopy_csv_export_equals_the_bi5_files(shared_data: Path) -> None:
    csv_ticks, bad = split(list(read_history(
        "dukascopy", shared_data / "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz",
        symbol="EURUSD")))
    bi5 = [r for r in read_history("dukascopy", shared_data / "dukascopy/EURUSD")
           if isinstance(r, Tick)]
    assert not bad
    assert [(t.time_msc, t.bid, t.ask) for t in csv_ticks] == [
        (t.time_msc, t.bid, t.ask) for t in bi5]


def test_an_empty_hour_has_no_ticks_and_a_damaged_one_is_one_reported_bad_file(
        shared_data: Path, tmp_path: Path) -> None:
    src = sorted((shared_data / "dukascopy/EURUSD").rglob("*.bi5"))
    day = tmp_path / "EURUSD" / "2019" / "01" / "04"
    day.mkdir(parents=True)
    (day / "00h_ticks.bi5").write_bytes(src[0].read_bytes())
    (day / "01h_ticks.bi5").write_bytes(b"")  # an hour without ticks
    (day / "02h_ticks.bi5").write_bytes(b"\x5d\x00\x00garbage")
    ticks, bad = split(list(read_history("dukascopy", tmp_path / "EURUSD")))
    assert len(ticks) == sum(1 for r in read_history("dukascopy", src[0], symbol="EURUSD")
                             if isinstance(r, Tick))
    assert [(b.line, Path(b.path).name) for b in bad] == [(0, "02h_ticks.bi5")]
    assert "LZMA" in bad[0].detail


def test_histdata_is_est_all_year(shared_data: Path) -> None:
    ticks, bad = split(list(read_history(
        "histdata", shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv")))
    assert not bad and len(ticks) == 9_500
    assert ticks[0].symbol == "EURUSD"  # from the file name
    # 2020-01-01 17:00 EST is 22:00 UTC
    assert ms("2020-01-01 22:00:00") <= ticks[0].time_msc < ms("2020-01-01 22:01:00")


def test_truefx_whole_second_times_are_ticks_too(shared_data: Path) -> None:
    ticks, bad = split(list(read_history("truefx", shared_data / "truefx/USDJPY-2013-01-01.csv")))
    assert not bad and len(ticks) == 1_000
    assert {t.symbol for t in ticks} == {"USDJPY"}
    assert ms("2013-01-01 22:00:00") <= ticks[0].time_msc < ms("2013-01-01 23:00:00")
    # line 116 is written "20130101 22:09:27" (no milliseconds): still a tick
    assert ticks[115].time_msc == ms("2013-01-01 22:09:27")


def test_lean_two_brokers_each_on_its_own_clock(shared_data: Path) -> None:
    rows = list(read_history("lean", shared_data / "lean"))
    ticks, bad = split(rows)
    assert not bad
    counts = Counter((t.broker, t.symbol) for t in ticks)
    assert set(counts) == {("OANDA", "EURUSD"), ("OANDA", "NZDUSD"),
                           ("FXCM", "EURUSD"), ("FXCM", "NZDUSD")}
    assert counts[("FXCM", "EURUSD")] > 2 * counts[("OANDA", "EURUSD")]
    # OANDA counts from UTC midnight, FXCM from midnight UTC-5: the same day's files of
    # the two brokers agree on the mid price when FXCM's clock is +5 h.
    oanda = [t for t in ticks if t.broker == "OANDA" and t.symbol == "EURUSD"]
    fxcm = [t for t in ticks if t.broker == "FXCM" and t.symbol == "EURUSD"]
    assert oanda[0].time_msc >= ms("2014-05-12 00:00:00")
    assert fxcm[0].time_msc >= ms("2014-05-12 05:00:00")
    # a folder's files are merged by time: each symbol's quotes of both brokers interleave
    for sym in ("EURUSD", "NZDUSD"):
        times = [t.time_msc for t in ticks if t.symbol == sym]
        assert times == sorted(times), sym
    probe = oanda[len(oanda) // 2]
    near = min(fxcm, key=lambda t: abs(t.time_msc - probe.time_msc))
    assert abs(near.time_msc - probe.time_msc) < 60_000
    assert abs((near.bid + near.ask) - (probe.bid + probe.ask)) / 2 < 0.0005


def test_lean_bad_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    day = tmp_path / "oanda" / "tick" / "eurusd"
    day.mkdir(parents=True)
    with zipfile.ZipFile(day / "20140512_quote.zip", "w") as z:
        z.writestr("20140512_eurusd_tick_quote.csv",
                   "1000,1.1,1.1002\nbad,row\n2000,1.1001,1.1003\n")
    ticks, bad = split(list(read_history("lean", tmp_path)))
    assert [t.time_msc for t in ticks] == [ms("2014-05-12 00:00:01"),
                                           ms("2014-05-12 00:00:02")]
    assert [(b.line, b.text) for b in bad] == [(2, "bad,row")]


MT5_EXPORT = (
    "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n"
    "2024.03.01\t09:00:00.120\t1.08010\t\t\t\t2\n"          # BID only: no ask known yet
    "2024.03.01\t09:00:00.250\t1.08011\t1.08013\t\t\t6\n"
    "2024.03.01\t09:00:00.900\t\t1.08015\t\t\t4\n"          # ASK only: bid carried forward
    "2024.03.01\t09:00:01.000\t1.08012\t\t\t\t2\n"          # BID only: ask carried forward
    "2024.03.01\tnot a time\t1.08012\t\t\t\t2\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_mt5_export_carries_the_missing_side_forward_in_server_time(
        tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "EURUSD_202403010900_202403010901.csv"
    path.write_text(MT5_EXPORT, encoding=encoding)
    ticks, bad = split(list(read_history("mt5", path, broker="ICM", tz="Europe/Athens")))
    # Athens is UTC+2 on 1 March
    assert [(t.time_msc, t.bid, t.ask) for t in ticks] == [
        (ms("2024-03-01 07:00:00.250"), 1.08011, 1.08013),
        (ms("2024-03-01 07:00:00.900"), 1.08011, 1.08015),
        (ms("2024-03-01 07:00:01.000"), 1.08012, 1.08015),
    ]
    assert {(t.broker, t.symbol) for t in ticks} == {("ICM", "EURUSD")}
    assert [b.line for b in bad] == [2, 6]
    assert "no ASK known yet" in bad[0].detail


def test_mt5_needs_the_server_zone_and_a_broker(tmp_path: Path) -> None:
    path = tmp_path / "EURUSD.csv"
    path.write_text(MT5_EXPORT)
    with pytest.raises(HistoryError, match="--tz"):
        list(read_history("mt5", path, broker="ICM"))
    with pytest.raises(HistoryError, match="--broker"):
        list(read_history("mt5", path, tz="UTC"))


def test_canonical_csv_bad_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("broker,symbol,time_msc,bid,ask\nA,EURUSD,1000,1.1,1.1002\nA,EURUSD,x,1,2\n")
    ticks, bad = split(list(read_history("csv", path)))
    assert len(ticks) == 1 and [b.line for b in bad] == [3]


def test_mistakes_are_one_clear_error(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(HistoryError, match="no such file"):
        read_history("truefx", tmp_path / "missing.csv")
    with pytest.raises(HistoryError, match="unknown format"):
        read_history("metastock", tmp_path)
    with pytest.raises(HistoryError, match="unknown time zone"):
        read_history("truefx", shared_data / "truefx/USDJPY-2013-01-01.csv", tz="Mars/Olympus")
    export = tmp_path / "export.csv"
    export.write_text("timestamp_utc,bid,ask,bid_volume,ask_volume\n")
    with pytest.raises(HistoryError, match="--symbol"):
        list(read_history("dukascopy", export))
    assert set(FORMATS) == {"csv", "dukascopy", "histdata", "truefx", "multi", "lean", "mt5",
                            "nautilus"}
