"""``tickstream convert``: vendor history files → one canonical tick CSV.

The same readers as ``tickstream load`` (:mod:`connectors.history.parse`): ticks are
written in input order, every line that is not a tick is counted and reported with its
file and line number, and a path that cannot be read at all is reported without stopping
the others. The output is written to a temporary file beside it and renamed into place
when complete, so a failed run never leaves half a file under the name asked for.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from connectors.files import write_canonical
from connectors.history.parse import BadLine, HistoryError, Row, check_options, read_history
from offline.load import BAD_EXAMPLES, PathResult, Stream
from stages.types import Tick


def convert_paths(
    fmt: str, paths: Iterable[Path], out: Path, *, broker: str | None = None,
    symbol: str | None = None, tz: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    check_options(fmt, broker=broker, symbol=symbol, tz=tz)
    t0 = time.perf_counter()
    results: list[PathResult] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            header = True
            for path in paths:
                res = PathResult(str(path))
                results.append(res)
                try:
                    rows = read_history(fmt, path, broker=broker, symbol=symbol, tz=tz)
                    ticks = _counted(rows, res, progress)
                    write_canonical(ticks, fh, header=header)
                    header = False
                except HistoryError as exc:
                    res.status, res.detail = "failed", str(exc)
            if header:  # nothing written yet: still a valid, empty canonical file
                write_canonical([], fh)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    total = sum(r.ticks for r in results)
    return {
        "output": str(out), "format": fmt, "seconds": round(seconds, 3), "ticks": total,
        "ticks_per_s": round(total / seconds) if seconds > 0 else None,
        "bad_lines": sum(r.bad_lines for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "paths": [r.to_dict() for r in results],
    }


def _counted(rows: Iterable[Row], res: PathResult,
             progress: Callable[[int], None] | None) -> Iterable[Tick]:
    streams = res.streams
    n = 0
    for row in rows:
        if isinstance(row, BadLine):
            res.bad_lines += 1
            if len(res.bad_examples) < BAD_EXAMPLES:
                res.bad_examples.append(str(row))
            continue
        key = (row.broker, row.symbol)
        st = streams.get(key)
        if st is None:
            st = streams[key] = Stream(row.broker, row.symbol)
        st.add(row.time_msc)
        n += 1
        if progress is not None and not n % 10_000:
            progress(10_000)
        yield row
    if progress is not None:
        progress(n % 10_000)
    res.ticks += n
