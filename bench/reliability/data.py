"""Real ticks for the reliability suite: QuantConnect Lean quote zips from two brokers.

``../shared/data/lean/{oanda,fxcm}/tick/{eurusd,nzdusd}/YYYYMMDD_quote.zip``: one CSV per
zip, ``ms_since_midnight,bid,ask`` with no header. OANDA counts from UTC midnight, FXCM from
midnight of UTC-5 (fixed, no daylight saving), so FXCM's times are shifted by +5 h here.
``tickstream convert`` has no Lean format (yet); this reader is the suite's own.

Two ways to put the ticks on the wire:

* *historical*: the vendor's event times are kept and the receive time is the event time
  plus a fixed 20 ms (deterministic, so a replay can go faster than real time and still
  build real minute bars, features and commands);
* *live*: each tick is re-timed as it is sent (event time = receive time = the wall clock),
  so ``recv_time_us`` → clean-tick arrival is a true end-to-end latency.
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from stages.types import Tick

DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lean"
# folder -> (broker name on the wire, offset of the file's clock from UTC in ms)
BROKERS = {"oanda": ("OANDA", 0), "fxcm": ("FXCM", 5 * 3_600_000)}
SYMBOLS = ("eurusd", "nzdusd")
HISTORICAL_RECV_DELAY_US = 20_000


def read_lean_zip(path: Path, broker: str, symbol: str, offset_ms: int) -> list[Tick]:
    """Every quote of one Lean day file, event time in epoch ms UTC."""
    day = datetime.strptime(path.name[:8], "%Y%m%d").replace(tzinfo=UTC)
    base = int(day.timestamp()) * 1000 + offset_ms
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if len(names) != 1:
            raise ValueError(f"{path}: expected one CSV, found {names}")
        text = z.read(names[0]).decode("ascii")
    out = []
    for line in text.splitlines():
        if not line:
            continue
        ms, bid, ask = line.split(",")
        out.append(Tick(broker, symbol, base + int(ms), float(bid), float(ask)))
    return out


@lru_cache(maxsize=4)
def lean_day(root: Path, day: str) -> tuple[Tick, ...]:
    """Both brokers' quotes of both pairs on ``day`` (YYYYMMDD of each file's own clock),
    merged by event time, starting where every broker/pair stream has begun."""
    streams: list[list[Tick]] = []
    for folder, (broker, offset) in BROKERS.items():
        for sym in SYMBOLS:
            path = root / folder / "tick" / sym / f"{day}_quote.zip"
            if not path.exists():
                raise FileNotFoundError(f"Lean data file {path} is missing")
            streams.append(read_lean_zip(path, broker, sym.upper(), offset))
    start = max(s[0].time_msc for s in streams if s)
    merged = sorted((t for s in streams for t in s if t.time_msc >= start),
                    key=lambda t: t.time_msc)  # stable: same-ms order of each stream kept
    return tuple(merged)


def lean_days(root: Path) -> list[str]:
    folder = root / "oanda" / "tick" / SYMBOLS[0]
    return sorted(p.name[:8] for p in folder.glob("*_quote.zip"))


def historical(ticks: list[Tick] | tuple[Tick, ...]) -> list[Tick]:
    """Keep event times; receive time = event time + 20 ms."""
    return [replace(t, recv_time_us=t.time_msc * 1000 + HISTORICAL_RECV_DELAY_US)
            for t in ticks]


def real_slice(root: Path, n: int, skip: int = 0, day_index: int = 0) -> list[Tick]:
    """``n`` real ticks (both brokers, both pairs, merged by time) of one Lean day."""
    days = lean_days(root)
    ticks = lean_day(root, days[day_index % len(days)])
    if skip + n > len(ticks):
        raise ValueError(f"only {len(ticks)} ticks on day {days[day_index]}, asked {skip + n}")
    return list(ticks[skip:skip + n])
