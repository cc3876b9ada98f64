"""The loader's column readers yield exactly what the row readers yield: the same ticks, bit
for bit and in the same order, and the same bad lines with the same numbers — on the real
samples, on damaged ones, and on generated CSV files full of what a parser trips on."""

from __future__ import annotations

import gzip
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.files import BadRow, canonical_table, parse_records
from connectors.history import batch_readers
from connectors.history.batch import TickBatch
from connectors.history.batch_readers import numbered_csv, numbered_rows, read_batches
from connectors.history.parse import BadLine, Row, read_history
from offline.convert import convert_paths
from stages.types import Tick

pytestmark = pytest.mark.data


def flat(items: Iterable[TickBatch | Row]) -> list[Row]:
    out: list[Row] = []
    for item in items:
        if isinstance(item, TickBatch):
            out.extend(item.ticks())
        else:
            out.append(item)
    return out


def bits(rows: list[Row]) -> list[object]:
    """Rows with every float as its bit pattern (``==`` would call -0.0 and 0.0 equal and
    a NaN unequal to itself)."""
    def b(x: float | None) -> str | None:
        return None if x is None else struct.pack("<d", x).hex()

    return [r if isinstance(r, BadLine) else
            (r.broker, r.symbol, r.time_msc, b(r.bid), b(r.ask), r.recv_time_us, r.seq,
             b(r.last), b(r.volume)) for r in rows]


def same(fmt: str, path: Path, **kw: str) -> list[Row]:
    fast = flat(read_batches(fmt, path, **kw))
    rows = list(read_history(fmt, path, **kw))
    assert bits(fast) == bits(rows)
    return rows


def test_real_lean_days_folder_file_and_their_canonical_csv(shared_data: Path,
                                                            tmp_path: Path) -> None:
    lean = shared_data / "lean"
    rows = same("lean", lean)
    assert len(rows) > 1_000_000  # the four days of both brokers, merged by time
    assert sum(isinstance(r, TickBatch) for r in read_batches("lean", lean)) > 1
    same("lean", lean / "fxcm/tick/nzdusd/20140513_quote.zip")
    csv = tmp_path / "eurusd.csv"
    convert_paths("lean", [lean / "oanda/tick/eurusd", lean / "fxcm/tick/eurusd"], csv)
    assert len(same("csv", csv)) > 400_000
    gz = tmp_path / "eurusd.csv.gz"
    gz.write_bytes(gzip.compress(csv.read_bytes()))
    same("csv", gz)


def test_real_dukascopy_folder_and_hour(shared_data: Path) -> None:
    duka = shared_data / "dukascopy/EURUSD"
    assert len(same("dukascopy", duka, symbol="EURUSD")) > 200_000
    assert len(same("dukascopy", duka)) > 200_000  # the symbol from the folder
    hour = sorted(duka.rglob("*.bi5"))[5]
    same("dukascopy", hour, symbol="EURUSD")
    same("dukascopy", hour, symbol="EURUSD", tz="America/New_York")


def test_damaged_empty_and_truncated_hours(shared_data: Path, tmp_path: Path) -> None:
    src = sorted((shared_data / "dukascopy/EURUSD").rglob("*.bi5"))
    day = tmp_path / "EURUSD" / "2019" / "01" / "04"
    day.mkdir(parents=True)
    (day / "00h_ticks.bi5").write_bytes(src[0].read_bytes())
    (day / "01h_ticks.bi5").write_bytes(b"")
    (day / "02h_ticks.bi5").write_bytes(b"\x5d\x00\x00garbage")
    (day / "03h_ticks.bi5").write_bytes(src[1].read_bytes())
    import lzma

    cut = lzma.decompress(src[2].read_bytes(), format=lzma.FORMAT_ALONE)[:-7]
    (day / "04h_ticks.bi5").write_bytes(lzma.compress(cut, format=lzma.FORMAT_ALONE))
    rows = same("dukascopy", tmp_path / "EURUSD")
    assert [Path(r.path).name for r in rows if isinstance(r, BadLine)] == [
        "02h_ticks.bi5", "04h_ticks.bi5"]


def lean_zip(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.name.replace(".zip", ".csv"), text)


@pytest.mark.parametrize("second", [
    "1500,1.2,1.2002\n2500,1.2001,1.2003\n",         # clean: merged by the stable sort
    "1500,1.2,1.2002\nbad,row\n2500,1.2001,1.2003\n",  # a bad line: the row reader's merge
    "2500,1.2,1.2002\n1500,1.2001,1.2003\n",         # out of time order: the same
    "1500,1.2,1.2002\r\n\r\n2500,nan,1.2003\r\n",     # CRLF, a blank line, a NaN
    "1500,1.2,1.2002\r2500,1.2001,1.2003\n",         # a lone CR: not a line break here
    "  \n1500, 1.2,1.2002\n",                        # blanks and spaces
])
def test_lean_folders_merge_as_the_row_reader_does(tmp_path: Path, second: str) -> None:
    lean_zip(tmp_path / "oanda/tick/eurusd/20140512_quote.zip",
             "1000,1.1,1.1002\n2000,1.1001,1.1003\n")
    lean_zip(tmp_path / "fxcm/tick/eurusd/20140511_quote.zip", second)
    lean_zip(tmp_path / "oanda/tick/nzdusd/20140512_quote.zip", "1000,0.8,0.8002\n")
    same("lean", tmp_path)
    same("lean", tmp_path / "fxcm/tick/eurusd/20140511_quote.zip")


HEADER = "broker,symbol,time_msc,bid,ask,last,volume,seq,recv_time_us\n"

NUMBERS = st.sampled_from([
    "1.1", "1.10002", "-0.5", "+2", "007", "1e-3", "1E5", "1.", ".5", "nan", "NaN", "-nan",
    "inf", "-Infinity", "NA", "null", "", " 1.5", "1.5 ", "1_000", "0x10", "0X1a", "0b1",
    "0o7", "1,5", "9" * 25, "1.2.3", "abc", "\N{MINUS SIGN}1", "1d5", "99999999999999999999",
    "-0", "0.1e400", "5e-400",
])
WORDS = st.sampled_from(["OANDA", "FXCM", "IC Markets", "", " ", "EURUSD", "NZDUSD", "é",
                         "a\"b", "NA", "nan"])


@st.composite
def csv_lines(draw: st.DrawFn) -> str:
    """Good rows, some with one or two fields swapped for what a parser trips on (so a
    block is wrong in one place only), and lines that are not rows at all."""
    lines = []
    last = draw(st.sampled_from(["", "1.1001"]))  # the file's layout, mostly kept
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.integers(0, 9))
        fields = [draw(st.sampled_from(["OANDA", "FXCM"])),
                  draw(st.sampled_from(["EURUSD", "NZDUSD"])),
                  str(draw(st.integers(-10, 2**45))), "1.1", "1.1002",
                  last if kind else "1.2", "", "", ""]
        if kind >= 6:
            for _ in range(draw(st.integers(1, 2))):
                at = draw(st.integers(0, 8))
                fields[at] = draw(WORDS if at < 2 else NUMBERS)
        if kind == 9:
            lines.append(draw(st.sampled_from(["", "OANDA,EURUSD,1", "\r", "x" * 40,
                                               'OANDA,"EUR\nUSD",1,1.1,1.2,,,,'])))
        else:
            lines.append(",".join(fields))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return ending.join(lines) + draw(st.sampled_from(["", ending]))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=csv_lines(), block=st.sampled_from([64, 200, 1 << 20]))
def test_generated_csv_files_read_the_same(tmp_path: Path, body: str, block: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_readers, "BLOCK_BYTES", block)
    path = tmp_path / "gen.csv"
    path.write_bytes((HEADER + body).encode("utf-8"))
    same("csv", path)
    same_numbered(path)
    gz = tmp_path / "gen.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    same_numbered(gz)


def same_numbered(path: Path) -> None:
    """``tickstream process``'s reader gives parse_records' records: numbers, ticks to the
    bit, bad rows with their whole text and the same detail."""
    def key(rows: Iterable[tuple[int, Tick | BadRow]]) -> list[object]:
        return [(n, (r.line, r.text, r.detail) if isinstance(r, BadRow) else bits([r])[0])
                for n, r in rows]

    table = canonical_table(path)
    want = key(parse_records(*table)) if table is not None else []
    assert key(numbered_rows(numbered_csv(path))) == want


def test_blocks_of_clean_rows_are_batches_and_a_bad_block_keeps_its_line_numbers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_readers, "BLOCK_BYTES", 4096)
    rows = [f"OANDA,EURUSD,{1_000 + i},1.1,1.1002,,,," for i in range(2_000)]
    rows[1_500] = "OANDA,EURUSD,oops,1.1,1.1002,,,,"
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    items = list(read_batches("csv", path))
    assert sum(len(i) for i in items if isinstance(i, TickBatch)) > 1_800
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [(b.line, b.text) for b in bad] == [(1_502, rows[1_500])]
    assert bits(flat(items)) == bits(list(read_history("csv", path)))
    numbered = list(numbered_csv(path))
    assert sum(isinstance(b, TickBatch) for _n, b in numbered) > 1
    assert (1_502, BadRow(1_502, rows[1_500], "invalid literal for int() with base 10: 'oops'")) \
        in numbered
    same_numbered(path)


def test_a_quote_hands_the_rest_of_the_file_to_the_row_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_readers, "BLOCK_BYTES", 256)
    rows = [f"OANDA,EURUSD,{1_000 + i},1.1,1.1002,,,," for i in range(50)]
    rows[20] = '"OANDA",EURUSD,1020,1.1,1.1002,,,,'
    rows[30] = 'OANDA,"EUR\nUSD",1030,1.1,1.1002,,,,'  # a quoted field over two lines
    path = tmp_path / "q.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    assert len(same("csv", path)) == 50
    same_numbered(path)
    undecodable = tmp_path / "u.csv"
    undecodable.write_bytes(HEADER.encode() + b"OANDA,EURUSD,1,1.1,1.2,,,,\n\xff\xfe,1\n")
    with pytest.raises(Exception) as fast:
        flat(read_batches("csv", undecodable))
    with pytest.raises(Exception) as rows_err:
        list(read_history("csv", undecodable))
    assert type(fast.value) is type(rows_err.value)


def test_a_tick_batch_turns_back_into_the_ticks_it_holds() -> None:
    import numpy as np

    b = TickBatch(("A", "B"), ("X",), np.array([1, 0], np.int32), np.array([0, 0], np.int32),
                  np.array([5, 6]), np.array([1.5, 2.5]), np.array([1.6, 2.6]),
                  volume=np.array([3.0, 4.0]))
    assert list(b.ticks()) == [Tick("B", "X", 5, 1.5, 1.6, volume=3.0),
                               Tick("A", "X", 6, 2.5, 2.6, volume=4.0)]
    assert [len(c) for c in b.chunks(1)] == [1, 1]
    assert b.stream_names(int(b.stream_code()[0])) == ("B", "X")
