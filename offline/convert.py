"""``tickstream convert``: vendor history files → one canonical tick CSV.

The same readers as ``tickstream load`` (:mod:`connectors.history.parse`): ticks are
written in input order, and every line that is not a tick is counted and reported with its
file and line number.

**All or nothing.** Every input path is checked before the output is created (a missing
one writes nothing). The output is written to a temporary file beside it and renamed into
place only when every path was read in full: a path that cannot be read at all fails the
run and leaves no file under the name asked for (nor any file an earlier run left there
replaced). ``out=None`` writes to standard output instead (``-o -``), as the rows are read.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from connectors.files import write_canonical
from connectors.history.parse import BadLine, HistoryError, Row, check_options, read_history
from offline.load import BAD_EXAMPLES, PathResult, Stream
from stages.types import Tick


def check_inputs(paths: Iterable[Path]) -> None:
    """Raise :class:`HistoryError` naming every path that is not there (before any output)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise HistoryError(f"no such file or folder: {', '.join(missing)}")


def convert_paths(
    fmt: str, paths: Iterable[Path], out: Path | None, *, broker: str | None = None,
    symbol: str | None = None, tz: str | None = None,
    progress: Callable[[int], None] | None = None, stdout: IO[str] | None = None,
) -> dict[str, Any]:
    """Convert ``paths`` into ``out`` (``None``: ``stdout``, default ``sys.stdout``); returns
    the summary ``--json`` prints. ``written`` is false when a path failed: then nothing
    was written to ``out``."""
    check_options(fmt, broker=broker, symbol=symbol, tz=tz)
    paths = list(paths)
    check_inputs(paths)
    t0 = time.perf_counter()
    results: list[PathResult] = []
    if out is None:
        _convert(fmt, paths, stdout or sys.stdout, results, broker, symbol, tz, progress)
        written = True
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                _convert(fmt, paths, fh, results, broker, symbol, tz, progress)
            written = not any(r.status == "failed" for r in results)
            if written:
                os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    total = sum(r.ticks for r in results)
    return {
        "output": "-" if out is None else str(out), "written": written, "format": fmt,
        "seconds": round(seconds, 3), "ticks": total,
        "ticks_per_s": round(total / seconds) if seconds > 0 else None,
        "bad_lines": sum(r.bad_lines for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "paths": [r.to_dict() for r in results],
    }


def _convert(fmt: str, paths: Iterable[Path], fh: IO[str], results: list[PathResult],
             broker: str | None, symbol: str | None, tz: str | None,
             progress: Callable[[int], None] | None) -> None:
    write_canonical([], fh)  # the header, once
    for path in paths:
        res = PathResult(str(path))
        results.append(res)
        try:
            rows = read_history(fmt, path, broker=broker, symbol=symbol, tz=tz)
            write_canonical(_counted(rows, res, progress), fh, header=False)
        except HistoryError as exc:
            res.status, res.detail = "failed", str(exc)
    fh.flush()


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
