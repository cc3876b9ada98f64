"""``tickstream process``: the stage chain in-process over tick files, no Kafka.

The very same :class:`~stages.pipeline.Pipeline` the worker drives. Every input row is
accounted for: ``ticks_in == clean + duplicates + sum(rejected)`` (malformed rows count as
``malformed`` rejects).
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from connectors.files import BadRow, read_canonical
from schemas.records import MarketEvent, Record
from stages.context import ContextBook
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.score import ModelStore
from stages.types import MALFORMED, Tick
from topology.settings import Settings

FLUSH_EVERY = 4096


class _CsvSink:
    def __init__(self, out_dir: Path | None) -> None:
        self.files: dict[str, IO[str]] = {}
        self.writers: dict[str, Any] = {}
        self.out_dir = out_dir

    def write(self, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        if self.out_dir is None:
            return
        w = self.writers.get(name)
        if w is None:
            fh = self.files[name] = open(self.out_dir / f"{name}.csv", "w", newline="")  # noqa: SIM115
            w = self.writers[name] = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
        w.writerows(rows)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: bit-exact comparisons stay possible
    return v


def record_rows(records: Sequence[Record]) -> tuple[Sequence[str], list[list[Any]]]:
    if not records:
        return (), []
    fields = type(records[0]).FIELDS
    return fields, [[_fmt(getattr(r, f)) for f in fields] for r in records]


REJECT_HEADER = ("source", "line", "broker", "symbol", "time_msc", "bid", "ask", "reason",
                 "detail", "original")


def read_events(path: Path) -> list[MarketEvent]:
    """MarketEvents from a JSON-lines file (one ``MarketEvent.to_dict()`` per line)."""
    events = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(MarketEvent.from_dict(orjson.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{n}: not a MarketEvent: {exc}") from None
    return events


def write_events(events: Iterable[MarketEvent], path: Path) -> int:
    n = 0
    with path.open("wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev.to_dict()) + b"\n")
            n += 1
    return n


def run_process(
    files: Sequence[Path], settings: Settings, model_dir: Path | None, out_dir: Path | None,
    events: Sequence[Path] = (),
) -> dict[str, Any]:
    """Run the stages over ``files``; calendar/news ``events`` are joined as of each bar.

    Every event is loaded first: the book answers as of each bar's time with only what was
    published by then, so the result equals the worker's, where events stream in live.
    """
    started = time.perf_counter()
    models = ModelStore(model_dir) if model_dir is not None else None
    if models is not None:
        models.latest()
    book = ContextBook(prune_lag_ms=None)
    n_events = 0
    for path in events:
        for ev in read_events(path):
            book.add(ev)
            n_events += 1
    pipeline = Pipeline(PipelineConfig.from_settings(settings), models=models, context=book)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    sink = _CsvSink(out_dir)
    out = Outputs()
    counts: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    ticks_in = 0

    def drain() -> None:
        counts["clean"] += len(out.clean)
        counts["duplicates"] += out.duplicates
        counts["bars"] += len(out.bars)
        counts["features"] += len(out.features)
        for c in out.commands:
            actions[c.action] += 1
        for _t, rej in out.rejects:
            rejected[rej.reason] += 1
        if out_dir is not None:
            for name, recs in (("clean", out.clean), ("bars", out.bars),
                               ("features", out.features), ("commands", out.commands)):
                if recs:
                    header, rows = record_rows(recs)
                    sink.write(name, header, rows)
            if out.rejects:
                sink.write("rejected", REJECT_HEADER, [
                    ["pipeline", "", t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask),
                     rej.reason, rej.detail, ""] for t, rej in out.rejects
                ])
        out.clear()

    try:
        for path in files:
            for i, item in enumerate(read_canonical(path)):
                ticks_in += 1
                if isinstance(item, BadRow):
                    rejected[MALFORMED] += 1
                    sink.write("rejected", REJECT_HEADER, [[str(path), item.line, "", "", "", "",
                                                            "", MALFORMED, item.detail,
                                                            item.text]])
                    continue
                pipeline.on_tick(item, out)
                if i % FLUSH_EVERY == 0:
                    drain()
        pipeline.flush(out)
        drain()
    finally:
        sink.close()
    elapsed = time.perf_counter() - started
    return {
        "ticks_in": ticks_in,
        "events_in": n_events,
        "clean": counts["clean"],
        "duplicates": counts["duplicates"],
        "rejected": dict(sorted(rejected.items())),
        "bars": counts["bars"],
        "features": counts["features"],
        "commands": {a: actions.get(a, 0) for a in ("BUY", "SELL", "CLOSE")},
        "model_version": (models.current.version if models and models.current else None),
        "seconds": round(elapsed, 3),
        "ticks_per_s": round(ticks_in / elapsed) if elapsed > 0 else None,
    }


def train_from_files(
    files: Sequence[Path], settings: Settings, out_dir: Path, version: str, horizon: int
) -> dict[str, Any]:
    """Replay tick files through the same pipeline, then train the model on its features.

    Rows are grouped per symbol (a label never spans two symbols) and concatenated.
    """
    from stages.train import train_model

    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    out = Outputs()
    by_symbol: dict[str, list[Any]] = {}
    for path in files:
        for item in read_canonical(path):
            if isinstance(item, Tick):
                pipeline.on_tick(item, out)
                for fv in out.features:
                    by_symbol.setdefault(fv.symbol, []).append(fv)
                out.clear()
    pipeline.flush(out)
    for fv in out.features:
        by_symbol.setdefault(fv.symbol, []).append(fv)
    feats: list[dict[str, Any]] = []
    closes: list[float] = []
    times: list[int] = []
    for rows in by_symbol.values():
        for fv in rows:
            feats.append(fv.to_dict())
            closes.append(fv.close)
            times.append(fv.bar_time)
    if not feats:
        raise ValueError("no feature rows: the files produced no bars")
    meta = train_model(feats, closes, horizon, out_dir, version, (min(times), max(times)))
    return {"meta": str(meta), "rows": len(feats), "symbols": sorted(by_symbol)}


def process_ticks(ticks: Iterable[Tick], pipeline: Pipeline) -> Outputs:
    """Run ``ticks`` through ``pipeline`` and return everything produced (tests, training)."""
    out = Outputs()
    for t in ticks:
        pipeline.on_tick(t, out)
    pipeline.flush(out)
    return out

