"""The store side of the offline commands: ``process --store`` writes, ``replay --store`` reads.

**Writing** (:func:`store_outputs`): ``tickstream process`` writes its outputs as CSV files
(``--out``, or a temporary directory), identical for any ``--jobs``; they are then read back
and inserted into the same tables the live sink fills, column by column through
:func:`storage.rows.column_array` (the sink's builder), one columnar insert per chunk. The
CSVs hold every value exactly (floats in their shortest round-trip form, ``None`` as an
empty field), so a stored offline row equals the row the sink stores for the same record of
the worker; wall-clock columns (a clean tick's ``processed_time_us``, a command's
``created_time_us``) differ, as they do between two runs.

Rejects: the live worker's keep the Kafka coordinates of their input
(``ticks.raw``/partition/offset) and its Avro bytes. An offline reject has no offset; its
natural key is ``source_topic = "process:<the input files>"``, partition 0 and
``source_offset`` = its position among the run's rejects (``rejected.csv`` order, the same
for any ``--jobs``), so storing the same input again collapses and other inputs never
collide. ``original`` is the input row as canonical CSV text (the malformed row's own text;
``broker,symbol,time_msc,bid,ask`` for a tick the stages rejected), ``stage`` is ``validate``
(as online) or ``parse`` (a row that is not a tick; the worker's equivalent is ``decode``),
and ``time_us`` is the tick's time (the run's start for a malformed row), so re-storing the
same run lands in the same day partitions.

**Reading** (:func:`features_from_store`): the stored ``features`` rows of a time range and
symbols, as the :class:`~schemas.records.FeatureVector` records the stages produced.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from schemas.records import FeatureVector
from storage.backend import Backend, quote
from storage.rows import column_array
from storage.schema import BARS, COMMANDS, FEATURES, REJECTS, TICKS, Column, Table

#: ``tickstream process`` output file -> the table it is stored in.
OUTPUT_TABLES: tuple[tuple[str, Table], ...] = (
    ("clean", TICKS), ("bars", BARS), ("features", FEATURES), ("commands", COMMANDS),
)
CHUNK_ROWS = 100_000
_SOURCE_MAX = 200


def _converter(column: Column) -> Callable[[str], Any]:
    base = column.base_type
    if base == "Float64":
        conv: Callable[[str], Any] = float
    elif base.startswith(("Int", "UInt")):
        conv = int
    else:
        return (lambda v: v or None) if column.nullable else str
    return lambda v: conv(v) if v != "" else None


def _chunks(path: Path, table: Table) -> Iterator[dict[str, Any]]:
    """The columns of ``table`` from a ``process`` CSV (header = the record's fields)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        if tuple(header) != table.column_names:
            raise ValueError(f"{path}: header {header} is not the {table.name} columns")
        convs = [_converter(c) for c in table.columns]
        while True:
            rows = [r for _, r in zip(range(CHUNK_ROWS), reader, strict=False)]
            if not rows:
                return
            values = list(zip(*rows, strict=True))
            yield {c.name: column_array(c, [conv(v) for v in vals])
                   for c, conv, vals in zip(table.columns, convs, values, strict=True)}


def source_name(inputs: Sequence[Path]) -> str:
    """``process:<input paths>`` (a digest of them when long): an offline reject's topic."""
    joined = ",".join(str(p.resolve()) for p in inputs)
    if len(joined) > _SOURCE_MAX:
        joined = f"sha256:{hashlib.sha256(joined.encode()).hexdigest()[:16]}"
    return f"process:{joined}"


def _reject_chunks(path: Path, source: str, started_us: int) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh)
        batch: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            tick = r["source"] == "pipeline"
            batch.append({
                "source_topic": source, "source_partition": 0, "source_offset": i,
                "reason": r["reason"],
                "detail": r["detail"] if tick else f"{r['source']}:{r['line']}: {r['detail']}",
                "stage": "validate" if tick else "parse",
                "original": (",".join((r["broker"], r["symbol"], r["time_msc"], r["bid"],
                                       r["ask"])) if tick else r["original"]).encode(),
                "key": r["symbol"].encode() if tick else None,
                "time_us": int(r["time_msc"]) * 1000 if tick else started_us,
            })
            if len(batch) >= CHUNK_ROWS:
                yield {c.name: column_array(c, [b[c.name] for b in batch])
                       for c in REJECTS.columns}
                batch = []
        if batch:
            yield {c.name: column_array(c, [b[c.name] for b in batch]) for c in REJECTS.columns}


def store_outputs(backend: Backend, out_dir: Path, inputs: Sequence[Path],
                  started_us: int | None = None) -> dict[str, int]:
    """Insert the CSV outputs of a ``process`` run in ``out_dir``; rows stored per table."""
    started = time.time_ns() // 1000 if started_us is None else started_us
    stored: dict[str, int] = {}
    for name, table in OUTPUT_TABLES:
        path = out_dir / f"{name}.csv"
        stored[table.name] = 0
        if path.exists():
            for cols in _chunks(path, table):
                stored[table.name] += backend.insert(table, cols)
    stored[REJECTS.name] = 0
    path = out_dir / "rejected.csv"
    if path.exists():
        for cols in _reject_chunks(path, source_name(inputs), started):
            stored[REJECTS.name] += backend.insert(REJECTS, cols)
    return stored


def features_from_store(
    backend: Backend, from_ms: int | None = None, to_ms: int | None = None,
    symbols: Sequence[str] | None = None,
) -> dict[str, list[FeatureVector]]:
    """Stored feature vectors with ``from_ms <= bar_time < to_ms``, by symbol, in bar order
    (read with ``FINAL``: a vector the sink stored twice counts once)."""
    where = ["1"]
    if from_ms is not None:
        where.append(f"bar_time >= {int(from_ms)}")
    if to_ms is not None:
        where.append(f"bar_time < {int(to_ms)}")
    if symbols:
        where.append(f"symbol IN ({', '.join(quote(s) for s in symbols)})")
    names = FEATURES.column_names
    result = backend.query(
        f"SELECT {', '.join(names)} FROM {backend.database}.{FEATURES.name} FINAL "
        f"WHERE {' AND '.join(where)} ORDER BY symbol, bar_time")
    nullable = [c.name for c in FEATURES.columns if c.nullable]
    by_symbol: dict[str, list[FeatureVector]] = {}
    for row in result.rows:
        d = dict(zip(names, row, strict=True))
        for name in nullable:  # a NULL may come back as NaN from a numpy column
            v = d[name]
            if v is not None and v != v:
                d[name] = None
        by_symbol.setdefault(d["symbol"], []).append(FeatureVector(**d))
    return by_symbol
