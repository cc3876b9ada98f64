"""The ticks a benchmark runs on: real two-broker Lean days by default, any canonical CSV, or
the simulator.

* ``lean`` (the default): the QuantConnect Lean quote zips in ``../shared/data/lean`` (OANDA
  and FXCM, EURUSD and NZDUSD) converted with the project's own loader (``tickstream
  convert lean``, merged by time), the first ``n`` ticks from the moment both brokers quote
  both pairs (FXCM's day file begins five hours after OANDA's: before that moment the
  input would be one broker's);
* a path: the first ``n`` ticks of that canonical CSV (``broker,symbol,time_msc,bid,ask``
  and the optional columns), so a user can benchmark on their own data;
* ``simulated``: three simulated brokers with injected anomalies (duplicates, crossed
  quotes, jumps), two symbols, as the simulator collector produces them.

Every input is also written as one canonical CSV, ``input.csv`` in the run's folder: the
file ``tickstream process`` and the Quix Streams peer read, so every figure of a run is on
the very same ticks. A tick without a receive time gets its event time plus 20 ms (a
historical replay's receive time: deterministic, so online equals offline).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from connectors.files import BadRow, TickFileError, read_canonical, write_canonical
from stages.types import Tick

LEAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "lean"
RECV_DELAY_US = 20_000


class InputError(Exception):
    """The benchmark input cannot be used (missing, empty, a bad row); one line."""


@dataclass(frozen=True)
class BenchInput:
    name: str  # "lean", "simulated" or the CSV's path
    ticks: list[Tick]
    csv: Path  # the same ticks as a canonical CSV
    description: str

    def summary(self) -> dict[str, object]:
        brokers = sorted({t.broker for t in self.ticks})
        symbols = sorted({t.symbol for t in self.ticks})
        return {"input": self.name, "input_ticks": len(self.ticks), "input_brokers": brokers,
                "input_symbols": symbols, "input_description": self.description}


def with_recv_time(ticks: list[Tick]) -> list[Tick]:
    return [t if t.recv_time_us else replace(t, recv_time_us=t.time_msc * 1000 + RECV_DELAY_US)
            for t in ticks]


def first_ticks(path: Path, n: int | None, *, from_all_streams: bool = False) -> list[Tick]:
    """The first ``n`` ticks of a canonical CSV (``from_all_streams``: from the first tick
    at which every (broker, symbol) of the first 2 million ticks has quoted)."""
    out: list[Tick] = []
    try:
        start_at = _all_streams_begun(path) if from_all_streams else None
        for item in read_canonical(path):
            if isinstance(item, BadRow):
                raise InputError(f"{path}: line {item.line}: {item.detail}")
            if start_at is not None and item.time_msc < start_at:
                continue
            out.append(item)
            if n is not None and len(out) >= n:
                break
    except (TickFileError, OSError) as exc:
        raise InputError(f"{exc} (a canonical tick CSV: broker,symbol,time_msc,bid,ask)"
                         ) from None
    if not out:
        raise InputError(f"{path}: no ticks")
    return out


def _all_streams_begun(path: Path, look: int = 2_000_000) -> int | None:
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(read_canonical(path)):
        if i >= look:
            break
        if isinstance(item, Tick):
            first.setdefault((item.broker, item.symbol), item.time_msc)
    return max(first.values()) if first else None


def lean_csv(root: Path, out: Path) -> Path:
    """Every Lean day under ``root`` as one canonical CSV (the ``convert lean`` reader)."""
    from offline.convert import convert_paths

    if not root.is_dir() or not any(root.rglob("*_quote.zip")):
        raise InputError(f"no Lean quote zips under {root}: pass --input FILE or "
                         "--input simulated")
    summary = convert_paths("lean", [root], out)
    if not summary["written"]:
        raise InputError(f"{root}: the Lean files could not be read: {summary['paths']}")
    return out


def simulated(n: int) -> list[Tick]:
    from connectors.simulator import simulate

    per = max(1, n // (2 * 3 * 600))
    return simulate(3, symbols=("EURUSD", "USDJPY"), seconds=600, ticks_per_s=per)


def load(spec: str, n: int | None, tmp: Path) -> BenchInput:
    """The input named by ``spec`` (``lean``, ``simulated`` or a CSV path), first ``n``."""
    if spec == "simulated":
        ticks = simulated(n or 60_000)
        description = f"simulated: 3 brokers, EURUSD + USDJPY, {len(ticks)} ticks"
    elif spec == "lean":
        src = lean_csv(LEAN, tmp / "lean-all.csv")
        ticks = first_ticks(src, n, from_all_streams=True)
        description = (f"real Lean quotes (OANDA + FXCM, EURUSD + NZDUSD) merged by time, "
                       f"{len(ticks)} ticks from the moment both brokers quote both pairs")
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"no such file: {spec} (a canonical tick CSV, 'lean' or "
                             "'simulated')")
        ticks = first_ticks(path, n)
        description = f"{path}, first {len(ticks)} ticks"
    ticks = with_recv_time(ticks)
    tmp.mkdir(parents=True, exist_ok=True)
    csv = tmp / "input.csv"
    with csv.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    return BenchInput(spec, ticks, csv, description)
