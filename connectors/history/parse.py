"""Vendor history files → ticks, parsed at the edge, every bad line reported.

``tickstream load`` and ``tickstream convert`` read these formats (``FORMATS``); each reader
yields :class:`~stages.types.Tick` objects in file order and a :class:`BadLine` for every
line that is not a tick (file, line number, text, what is wrong), so a caller counts and
reports it: a bad line is never skipped silently and never stops the file.

* ``csv``: the canonical CSV (``broker,symbol,time_msc,bid,ask,...``), epoch milliseconds;
* ``dukascopy``: the hourly ``SYMBOL/YYYY/MM/DD/HHh_ticks.bi5`` folder layout (the month
  folder is 0-based; an empty hour is a 0-byte file), one ``.bi5``, or the CSV export
  ``timestamp_utc,bid,ask,bid_volume,ask_volume``; UTC;
* ``histdata``: HistData.com ASCII ``YYYYMMDD HHMMSSfff,bid,ask,volume``; EST all year
  (``Etc/GMT+5``: UTC-5, no daylight saving, as HistData publishes it);
* ``truefx``: ``PAIR,YYYYMMDD HH:MM:SS.fff,bid,ask``; UTC;
* ``multi``: the same rows in New York time (``America/New_York``, with daylight saving):
  HistData ticks re-timed by squideyes' TickData tools ("adjusted to EST and honor
  Daylight Savings Time"), the ``*_NY17-24h`` pair files;
* ``lean``: QuantConnect Lean ``{broker}/tick/{pair}/YYYYMMDD_quote.zip``, one CSV
  ``ms_since_midnight,bid,ask`` each; OANDA counts from UTC midnight, FXCM from midnight
  UTC-5 all year (``Etc/GMT+5``: FXCM's May files line up with OANDA's at +5 h, not +4);
* ``mt5``: the MetaTrader 5 terminal's tick export, tab-separated
  ``<DATE> <TIME> <BID> <ASK> <LAST> <VOLUME> <FLAGS>``; the trade server's clock, so
  ``--tz`` is required;
* ``nautilus``: nautilus_trader's test CSVs
  ``ts_event_ns,ts_init_ns,timestamp_utc,bid,ask,bid_size,ask_size``; UTC (``timestamp_utc``
  is used: ``ts_event_ns`` is often not whole milliseconds, a float round-trip artefact).

``--tz`` (``zone``) overrides a format's clock with an IANA zone name. Dukascopy prices are
integer points: 1e-3 for JPY pairs, 1e-5 otherwise.
"""

from __future__ import annotations

import codecs
import gzip
import heapq
import io
import lzma
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stages.types import Tick

FORMATS = ("csv", "dukascopy", "histdata", "truefx", "multi", "lean", "mt5", "nautilus")

#: Every clock is an IANA zone: a vendor's local clock with daylight saving is a named
#: zone (``America/New_York``); a vendor that keeps UTC-5 all year is ``Etc/GMT+5`` (the
#: IANA name of that fixed offset; its sign is POSIX's), never a hand-made offset.
EST = ZoneInfo("Etc/GMT+5")
NEW_YORK = ZoneInfo("America/New_York")
#: The clock of each format when ``--tz`` is not given (None: the file says, or required).
DEFAULT_ZONES: dict[str, object] = {"dukascopy": UTC, "histdata": EST, "truefx": UTC,
                                     "multi": NEW_YORK, "nautilus": UTC}
LEAN_ZONES = {"oanda": UTC, "fxcm": EST}

#: The MT5 tick flags (``TICK_FLAG_*``) that say which fields a row carries.
MT5_FLAG_BID, MT5_FLAG_ASK, MT5_FLAG_LAST, MT5_FLAG_VOLUME = 2, 4, 8, 16

_BI5_RECORD = struct.Struct(">IIIff")
#: liblzma allocates the dictionary the stream header asks for (Dukascopy's hourly files ask
#: for 4 MiB): a damaged header must not make it allocate gigabytes.
_BI5_MEMLIMIT = 1 << 28
_BI5_NAME = re.compile(r"^(\d{2})h_ticks\.bi5$")
_LEAN_NAME = re.compile(r"^(\d{8})_quote\.zip$")
_SYMBOL = re.compile(r"^[A-Z0-9]{3,12}$")
MAX_LINE_TEXT = 300


class HistoryError(ValueError):
    """A file or folder cannot be read at all (missing, not this format, no symbol): one
    line for the user; a bad *line* is a :class:`BadLine`, not this."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line (or a whole hourly file) that is not a tick."""

    path: str
    line: int  # 1-based; 0 for a whole file (a damaged .bi5)
    text: str
    detail: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.detail}: {self.text[:80]!r}"


Row = Tick | BadLine


def zone_of(name: str | None) -> object | None:
    """An IANA zone name (``Europe/Athens``, ``UTC``, ``Etc/GMT+5``) → tzinfo."""
    if name is None:
        return None
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HistoryError(f"unknown time zone {name!r}: give an IANA name such as UTC, "
                           "Europe/London or America/New_York") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(local: datetime, zone: object) -> int:
    """Milliseconds since the epoch of a naive wall-clock time in ``zone`` (exact)."""
    return (local.replace(tzinfo=zone) - _EPOCH) // _MS  # type: ignore[arg-type]


def _text(raw: str) -> str:
    return raw.rstrip("\r\n")[:MAX_LINE_TEXT]


def _open_text(path: Path) -> IO[str]:
    """Text of a plain or gzipped file; UTF-16 (MT5 exports) and UTF-8 by their BOM."""
    raw: Any = (gzip.open(path, "rb") if path.suffix == ".gz"  # noqa: SIM115
                else path.open("rb"))  # the wrapper returned owns and closes it
    head = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    else:
        encoding = "utf-8"
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file; an undecodable or truncated stream ends
    in one :class:`HistoryError` naming the line."""
    n = 0
    try:
        with _open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                yield n, line
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise HistoryError(f"{path}: line {n + 1}: unreadable: {exc}") from None


def symbol_of(value: str | None, path: Path) -> str:
    if value is None:
        raise HistoryError(f"{path}: the file does not name its symbol: give --symbol")
    sym = value.replace("/", "").replace("_", "").replace("-", "").upper()
    if not _SYMBOL.match(sym):
        raise HistoryError(f"{path}: {value!r} is not a symbol (e.g. EURUSD)")
    return sym


# ---- canonical CSV -----------------------------------------------------------------------


def read_csv(path: Path) -> Iterator[Row]:
    from connectors.files import BadRow, TickFileError, read_canonical

    try:
        for row in read_canonical(path):
            if isinstance(row, BadRow):
                yield BadLine(str(path), row.line, row.text[:MAX_LINE_TEXT], row.detail)
            else:
                yield row
    except TickFileError as exc:
        raise HistoryError(str(exc)) from None


# ---- Dukascopy ---------------------------------------------------------------------------


def point_size(symbol: str) -> float:
    return 1e-3 if symbol.endswith("JPY") else 1e-5


def bi5_hour_start_ms(path: Path) -> int:
    """``.../YYYY/MM/DD/HHh_ticks.bi5`` with a 0-based month folder, in UTC."""
    m = _BI5_NAME.match(path.name)
    try:
        if m is None:
            raise ValueError(path.name)
        day, month0, year = (int(path.parent.name), int(path.parent.parent.name),
                             int(path.parent.parent.parent.name))
        return epoch_ms(datetime(year, month0 + 1, day, int(m.group(1))), UTC)
    except ValueError:
        raise HistoryError(f"{path}: not in Dukascopy's SYMBOL/YYYY/MM/DD/HHh_ticks.bi5 "
                           "layout (0-based month)") from None


def bi5_start_ms(path: Path, zone: object = UTC, hour_start_ms: int | None = None) -> int:
    """The epoch ms of an hourly file's first millisecond: its folder layout's UTC hour
    (or ``hour_start_ms``), read as that wall-clock hour in ``zone`` when it is not UTC."""
    start = bi5_hour_start_ms(path) if hour_start_ms is None else hour_start_ms
    if zone is not UTC:
        # the folder layout names the UTC hour; another zone shifts it by the zone's offset
        local = datetime.fromtimestamp(start / 1000, UTC).replace(tzinfo=None)
        start = epoch_ms(local, zone)
    return start


def bi5_records(path: Path) -> bytes | BadLine:
    """An hourly file's decompressed records (b"" for an hour without ticks), or the
    :class:`BadLine` that reports a damaged file."""
    raw = path.read_bytes()
    if not raw:
        return b""  # an hour without ticks
    try:
        return lzma.decompress(raw, format=lzma.FORMAT_ALONE, memlimit=_BI5_MEMLIMIT)
    except lzma.LZMAError as exc:
        return BadLine(str(path), 0, f"{len(raw)} bytes", f"not an LZMA-alone stream: {exc}")


def bi5_truncated(path: Path, data: bytes) -> BadLine | None:
    """The :class:`BadLine` for a last record cut short, if it is."""
    whole = len(data) - len(data) % _BI5_RECORD.size
    if whole == len(data):
        return None
    return BadLine(str(path), 0, f"{len(data) - whole} bytes",
                   f"{len(data)} bytes decompressed: the last record is truncated")


def read_bi5(path: Path, symbol: str, broker: str, zone: object = UTC,
             hour_start_ms: int | None = None) -> Iterator[Row]:
    """One hourly file: an LZMA-alone stream of 20-byte big-endian records
    ``ms_from_hour, ask_points, bid_points, ask_volume, bid_volume``. A damaged file is one
    :class:`BadLine` (line 0): its hour is reported missing, the rest of the folder loads.
    The hour comes from the folder layout unless ``hour_start_ms`` is given."""
    start = bi5_start_ms(path, zone, hour_start_ms)
    data = bi5_records(path)
    if isinstance(data, BadLine):
        yield data
        return
    whole = len(data) - len(data) % _BI5_RECORD.size
    point = point_size(symbol)
    for ms, ask_p, bid_p, ask_v, bid_v in _BI5_RECORD.iter_unpack(data[:whole]):
        yield Tick(broker, symbol, start + ms, round(bid_p * point, 6), round(ask_p * point, 6),
                   volume=float(ask_v + bid_v))
    truncated = bi5_truncated(path, data)
    if truncated is not None:
        yield truncated


def dukascopy_files(path: Path) -> list[Path]:
    """The ``.bi5`` files under a folder, in time order (their path order is time order)."""
    return sorted(path.rglob("*_ticks.bi5"))


def dukascopy_symbol(path: Path) -> str | None:
    """The symbol folder above ``YYYY/MM/DD/HHh_ticks.bi5``, when it looks like one."""
    for parent in (path, *path.parents):
        if _SYMBOL.match(parent.name) and not parent.name.isdigit():
            return parent.name
    return None


def read_dukascopy(path: Path, symbol: str | None, broker: str, zone: object) -> Iterator[Row]:
    if path.is_dir() or path.suffix == ".bi5":
        files = dukascopy_files(path) if path.is_dir() else [path]
        if not files:
            raise HistoryError(f"{path}: no HHh_ticks.bi5 files under this folder")
        for f in files:  # a folder may hold several symbols: each file's own folder names it
            yield from read_bi5(f, symbol_of(symbol or dukascopy_symbol(f), f), broker, zone)
        return
    # the CSV export: timestamp_utc,bid,ask,bid_volume,ask_volume (header first)
    sym = symbol_of(symbol or dukascopy_symbol(path.parent) or _name_symbol(path), path)
    for n, line in _lines(path):
        if n == 1 and line[:1].isalpha():
            continue
        try:
            cols = line.rstrip("\r\n").split(",")
            local = datetime.fromisoformat(cols[0].strip().replace(" ", "T").rstrip("Z"))
            volume = float(cols[3]) + float(cols[4]) if len(cols) >= 5 else None
            yield Tick(broker, sym, epoch_ms(local, zone), float(cols[1]), float(cols[2]),
                       volume=volume)
        except (ValueError, IndexError) as exc:
            yield BadLine(str(path), n, _text(line), f"not a Dukascopy CSV tick ({exc})")


#: Currency (and metal) codes a file name may start with, for a symbol read from the name.
CURRENCIES = frozenset((
    "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "HKD", "SGD",
    "MXN", "ZAR", "TRY", "PLN", "CZK", "HUF", "CNH", "CNY", "RUB", "INR", "KRW", "THB", "ILS",
    "XAU", "XAG", "XPT", "XPD",
))


def _name_symbol(path: Path) -> str | None:
    """``EURUSD_...``, ``usdjpy-...``: a pair of currency codes at the start of a file name."""
    m = re.match(r"^([A-Za-z]{3})([A-Za-z]{3})(?:[_\-.]|$)", path.name)
    if m is None or not {m.group(1).upper(), m.group(2).upper()} <= CURRENCIES:
        return None
    return (m.group(1) + m.group(2)).upper()


# ---- HistData, TrueFX --------------------------------------------------------------------


def read_histdata(path: Path, symbol: str | None, broker: str, zone: object) -> Iterator[Row]:
    """``YYYYMMDD HHMMSSfff,bid,ask,volume``; the file name carries the pair
    (``DAT_ASCII_EURUSD_T_...``)."""
    m = re.search(r"_([A-Za-z]{6})_T_", path.name)
    sym = symbol_of(symbol or (m.group(1) if m else None), path)
    for n, line in _lines(path):
        try:
            f = line.rstrip("\r\n").split(",")
            d, t = f[0].split(" ")
            if len(d) != 8 or len(t) != 9:
                raise ValueError(f"time {f[0]!r} is not YYYYMMDD HHMMSSfff")
            local = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(t[:2]), int(t[2:4]),
                             int(t[4:6]), int(t[6:9]) * 1000)
            vol = float(f[3]) if len(f) > 3 and f[3].strip() else None
            yield Tick(broker, sym, epoch_ms(local, zone), float(f[1]), float(f[2]), volume=vol)
        except (ValueError, IndexError) as exc:
            yield BadLine(str(path), n, _text(line), f"not a HistData tick ({exc})")


def read_truefx(path: Path, symbol: str | None, broker: str, zone: object) -> Iterator[Row]:
    """``PAIR,YYYYMMDD HH:MM:SS.fff,bid,ask`` (the pair in every row, e.g. ``USD/JPY``)."""
    for n, line in _lines(path):
        try:
            f = line.rstrip("\r\n").split(",")
            # a tick on a whole second is written without its ".000"
            local = datetime.strptime(f[1], "%Y%m%d %H:%M:%S.%f" if "." in f[1]
                                      else "%Y%m%d %H:%M:%S")
            sym = symbol or f[0].replace("/", "").upper()
            if not _SYMBOL.match(sym):
                raise ValueError(f"pair {f[0]!r}")
            yield Tick(broker, sym, epoch_ms(local, zone), float(f[2]), float(f[3]))
        except (ValueError, IndexError) as exc:
            yield BadLine(str(path), n, _text(line), f"not a TrueFX tick ({exc})")


# ---- QuantConnect Lean -------------------------------------------------------------------


def lean_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*_quote.zip"))


def read_lean(path: Path, symbol: str | None, broker: str | None,
              zone: object | None) -> Iterator[Row]:
    """``{broker}/tick/{pair}/YYYYMMDD_quote.zip`` files (one, or every one under a folder):
    each holds one CSV ``ms_since_midnight,bid,ask`` whose day and clock are the file name's
    date at midnight in the broker's zone (OANDA UTC, FXCM UTC-5; ``zone`` overrides).

    The files of a folder are merged by time (each file is in time order), so the brokers'
    quotes of a symbol come out interleaved as they happened: a topic partition, and a
    replay of it, then holds one symbol's quotes of every broker in time order, which is
    what consolidation needs."""
    files = lean_files(path)
    if not files:
        raise HistoryError(f"{path}: no YYYYMMDD_quote.zip files here")
    if len(files) == 1:
        return _lean_file(files[0], symbol, broker, zone)
    streams = [_lean_file(f, symbol, broker, zone) for f in files]
    return heapq.merge(*streams, key=_merge_key)


def _merge_key(row: Row) -> int:
    # a bad line has no time: it is passed on as soon as it is read
    return row.time_msc if type(row) is Tick else -1


def _lean_file(f: Path, symbol: str | None, broker: str | None,
               zone: object | None) -> Iterator[Row]:
    name, sym, midnight = lean_meta(f, symbol, broker, zone)
    yield from lean_rows(f, lean_data(f), name, sym, midnight)


def lean_meta(f: Path, symbol: str | None, broker: str | None,
              zone: object | None) -> tuple[str, str, int]:
    """A Lean quote file's broker name, symbol and the epoch ms of its day's midnight in
    the broker's clock (``{broker}/tick/{pair}/YYYYMMDD_quote.zip``)."""
    m = _LEAN_NAME.match(f.name)
    if m is None:
        raise HistoryError(f"{f}: not a Lean quote file (YYYYMMDD_quote.zip)")
    vendor = f.parent.parent.parent.name.lower()  # {broker}/tick/{pair}/file
    sym = symbol_of(symbol or f.parent.name, f)
    name = broker or vendor.upper()
    clock = zone if zone is not None else LEAN_ZONES.get(vendor)
    if clock is None:
        raise HistoryError(f"{f}: Lean broker folder {vendor!r} has no known clock: "
                           "give --tz")
    day = m.group(1)
    midnight = epoch_ms(datetime(int(day[:4]), int(day[4:6]), int(day[6:8])), clock)
    return name, sym, midnight


def lean_data(f: Path) -> bytes:
    """The one CSV inside a Lean quote zip."""
    try:
        with zipfile.ZipFile(f) as z:
            members = [i for i in z.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise HistoryError(f"{f}: expected one CSV in the zip, found "
                                   f"{len(members)}")
            data = z.read(members[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise HistoryError(f"{f}: not a readable zip: {exc}") from None
    return data


def lean_rows(path: Path, data: bytes, broker: str, symbol: str,
               midnight: int) -> Iterator[Row]:
    where = str(path)
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            ms, bid, ask = raw.split(b",")
            yield Tick(broker, symbol, midnight + int(ms), float(bid), float(ask))
        except ValueError as exc:
            yield BadLine(where, n, _text(raw.decode("utf-8", "replace")),
                          f"not a Lean quote ({exc})")


# ---- MetaTrader 5 export -----------------------------------------------------------------


MT5_HEADER = ("<DATE>", "<TIME>", "<BID>", "<ASK>", "<LAST>", "<VOLUME>", "<FLAGS>")


def read_mt5(path: Path, symbol: str | None, broker: str, zone: object | None) -> Iterator[Row]:
    """The terminal's tick export (Symbols → Ticks → Export): tab-separated, header
    ``<DATE> <TIME> <BID> <ASK> <LAST> <VOLUME> <FLAGS>``, date ``YYYY.MM.DD``, time
    ``HH:MM:SS.fff`` in the trade server's clock. A row carries only the fields its flags
    name (``TICK_FLAG_BID`` 2, ``TICK_FLAG_ASK`` 4, ``LAST`` 8, ``VOLUME`` 16); the other side
    is carried forward from the last row that had it. Rows before both sides are known are
    reported (they are not a quote yet)."""
    if zone is None:
        raise HistoryError(f"{path}: MT5 exports are in the trade server's clock: give --tz "
                           "(for most brokers Europe/Athens, i.e. UTC+2/+3 with US DST)")
    sym = symbol_of(symbol or _name_symbol(path), path)
    bid = ask = None
    for n, line in _lines(path):
        f = line.rstrip("\r\n").split("\t")
        if n == 1 and f[0].strip().upper() == "<DATE>":
            if tuple(x.strip().upper() for x in f[:7]) != MT5_HEADER:
                raise HistoryError(f"{path}: header {line.strip()!r} is not the MT5 tick "
                                   f"export's ({' '.join(MT5_HEADER)})")
            continue
        try:
            if len(f) < 7:
                raise ValueError(f"{len(f)} fields, expected 7")
            local = datetime.strptime(f"{f[0]} {f[1]}", "%Y.%m.%d %H:%M:%S.%f")
            flags = int(f[6])
            if flags & MT5_FLAG_BID or f[2]:
                bid = float(f[2])
            if flags & MT5_FLAG_ASK or f[3]:
                ask = float(f[3])
            last = float(f[4]) if f[4] else None
            volume = float(f[5]) if f[5] else None
        except (ValueError, IndexError) as exc:
            yield BadLine(str(path), n, _text(line), f"not an MT5 tick row ({exc})")
            continue
        if bid is None or ask is None:
            side = "ASK" if ask is None else "BID"
            yield BadLine(str(path), n, _text(line), f"no {side} known yet (the export "
                          "starts with one side only)")
            continue
        yield Tick(broker, sym, epoch_ms(local, zone), bid, ask, last=last, volume=volume)


def read_nautilus(path: Path, symbol: str | None, broker: str, zone: object) -> Iterator[Row]:
    """``ts_event_ns,ts_init_ns,timestamp_utc,bid,ask,bid_size,ask_size`` with a header."""
    sym = symbol_of(symbol or _name_symbol(path), path)
    for n, line in _lines(path):
        if n == 1 and line[:1].isalpha():
            continue
        try:
            f = line.rstrip("\r\n").split(",")
            local = datetime.fromisoformat(f[2].strip().replace(" ", "T").rstrip("Z"))
            yield Tick(broker, sym, epoch_ms(local, zone), float(f[3]), float(f[4]))
        except (ValueError, IndexError) as exc:
            yield BadLine(str(path), n, _text(line), f"not a nautilus quote row ({exc})")


# ---- dispatch ----------------------------------------------------------------------------


def check_options(fmt: str, *, broker: str | None = None, symbol: str | None = None,
                  tz: str | None = None) -> None:
    """Raise :class:`HistoryError` for options that cannot work with ``fmt`` (checked once,
    before any file is read)."""
    if fmt not in FORMATS:
        raise HistoryError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    zone_of(tz)
    if fmt == "csv" and (tz or symbol or broker):
        raise HistoryError("the canonical CSV names broker, symbol and UTC times itself: "
                           "--broker, --symbol and --tz do not apply")
    if fmt == "mt5" and broker is None:
        raise HistoryError("mt5 exports do not name their broker: give --broker (the "
                           "terminal's broker)")
    if fmt == "mt5" and tz is None:
        raise HistoryError("mt5 exports are in the trade server's clock: give --tz (for "
                           "most brokers Europe/Athens, i.e. UTC+2/+3 with US DST)")


def checked_path(fmt: str, path: Path | str, *, broker: str | None, symbol: str | None,
                 tz: str | None) -> tuple[Path, object | None]:
    """What every reader checks first: the options (:func:`check_options`) and that the
    path is there; the path and the zone ``tz`` names. Raises :class:`HistoryError`."""
    path = Path(path)
    check_options(fmt, broker=broker, symbol=symbol, tz=tz)
    if not path.exists():
        raise HistoryError(f"{path}: no such file or folder")
    return path, zone_of(tz)


def read_history(
    fmt: str, path: Path | str, *, broker: str | None = None, symbol: str | None = None,
    tz: str | None = None,
) -> Iterator[Row]:
    """Ticks and bad lines of one path (a file, or a folder for ``dukascopy`` and ``lean``)."""
    path, zone = checked_path(fmt, path, broker=broker, symbol=symbol, tz=tz)
    if fmt == "csv":
        return read_csv(path)
    if fmt == "lean":
        return read_lean(path, symbol, broker, zone)
    name = broker or {"dukascopy": "DUKASCOPY", "histdata": "HISTDATA",
                      "truefx": "TRUEFX", "multi": "HISTDATA", "mt5": "",
                      "nautilus": "DUKASCOPY"}[fmt]
    readers: dict[str, Callable[..., Iterator[Row]]] = {
        "dukascopy": read_dukascopy, "histdata": read_histdata, "truefx": read_truefx,
        "multi": read_truefx,
        "mt5": read_mt5, "nautilus": read_nautilus,
    }
    clock = zone if zone is not None else DEFAULT_ZONES.get(fmt)
    return readers[fmt](path, symbol, name, clock)
