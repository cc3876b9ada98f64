"""``tickstream replay``: history through the live stages into a labelled feature matrix.

Input: a topic (``--topic ticks.history``, read by :mod:`connectors.history.topic`: no group,
nothing committed) or canonical CSV files (``--file``), limited to ``[--from, --to)`` and
``--symbols``. The ticks of each symbol are ordered by time (stable: equal times keep their
order in the topic partition or file), so history loaded in several runs replays as it
happened, and are run through :class:`~stages.pipeline.Pipeline` — the very stage classes
the worker runs (dedupe, validate, consolidate, bars, indicators). Every feature vector is
written as one row of a Parquet file (pyarrow) with:

* the :class:`~schemas.records.FeatureVector` fields as the worker publishes them;
* the scale-free model features of :mod:`stages.features` (the feature set is named in the
  file's metadata);
* the label of :mod:`stages.labels` (H minutes ahead, threshold = the symbol's median spread
  unless given), the future close and the threshold used; rows without a label (horizon
  past the data or into a gap) are kept out of the file and counted in the summary.

Rows are ordered by symbol, then bar time. The file carries no wall-clock value, so
replaying the same ticks twice writes the same bytes.

**From the store** (``--store URL``): the stored ``features`` table is read back (``FINAL``,
``[--from, --to)`` on the bar time, ``--symbols``) and labelled and written the same way;
the stages do not run again. That is a choice: the stored vectors are exactly what the
stages produced (the live worker's through the sink, or ``process --store``'s), calendar and
news context included, which a re-run over ticks cannot reproduce without the event stream;
and one row per bar is read instead of every tick. Re-running the stages over the stored
clean ticks would not be exact: the store keeps neither the input order within a
millisecond (its tables are ordered by key) nor the ticks the validator rejected or held,
and its jump confirmation depends on both. On the same ticks it gives the rows
``replay --file`` gives (tested on Lean ticks stored by ``process --store``). To recompute
features with changed stage code, replay the ticks (topic or files). ``tickstream train``
reads the Parquet file, so training from the store is ``replay --store`` then ``train``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any

from connectors.files import read_canonical
from connectors.history.topic import read_range
from connectors.kafka_client import KafkaClientSettings
from offline.forking import can_fork, run_forked
from schemas.codec import MalformedRecord, make_codec
from schemas.records import FeatureVector, RawTick
from stages.features import FEATURE_NAMES, FEATURE_SET, derive
from stages.labels import LABEL_DEFINITION, make_labels, typical_spread
from stages.pipeline import Outputs, Pipeline, PipelineConfig, PipelineSettings
from stages.types import Tick
from storage.errors import StorageError
from storage.url import StoreURL, parse_store_url

DEFAULT_HORIZON_MIN = 5


class ReplayError(RuntimeError):
    """Nothing to replay, or an input that cannot be used: one line."""


def ticks_from_topic(
    settings: KafkaClientSettings, topic: str, from_ms: int | None, to_ms: int | None,
    symbols: Sequence[str] | None, progress: Callable[[int], None] | None = None,
) -> tuple[list[Tick], dict[str, int]]:
    physical = settings.topic(topic)
    found = read_range(settings, physical, from_ms=from_ms, to_ms=to_ms, symbols=symbols,
                       progress=progress)
    codec = make_codec(settings.schema_registry_url.get()
                       if settings.schema_registry_url else None)
    ticks, malformed = decode_ticks(codec, [r[4] for r in found.records], physical)
    return ticks, {"records_scanned": found.scanned, "records_outside": found.outside,
                   "malformed": malformed}


_TICK_FIELDS = ("broker", "symbol", "time_msc", "bid", "ask", "recv_time_us", "seq", "last",
                "volume")


def decode_ticks(codec: Any, values: Sequence[bytes], topic: str) -> tuple[list[Tick], int]:
    """``RawTick`` records as stage ticks, in their order, and how many were malformed.

    Read column-wise (:func:`schemas.columnar.decode_columns`); a record that path declines
    is decoded on its own by the codec, so every tick is what ``decode_dict`` gives."""
    from schemas.columnar import decode_rows

    rows = decode_rows(codec, RawTick.SCHEMA, values, _TICK_FIELDS, topic)
    out: list[Tick | None] = [None if row is None else Tick(*row) for row in rows]
    malformed = 0
    for i, row in enumerate(rows):
        if row is not None:
            continue
        try:
            r = codec.decode_dict(RawTick.SCHEMA, values[i], topic)
        except MalformedRecord:
            malformed += 1
            continue
        out[i] = Tick(*(r[f] for f in _TICK_FIELDS))
    return [t for t in out if t is not None], malformed


def ticks_from_files(
    files: Iterable[Path], from_ms: int | None, to_ms: int | None,
    symbols: Sequence[str] | None,
) -> tuple[list[Tick], dict[str, int]]:
    wanted = None if symbols is None else set(symbols)
    lo = -(2**63) if from_ms is None else from_ms
    hi = 2**63 if to_ms is None else to_ms
    ticks: list[Tick] = []
    bad = outside = 0
    for path in files:
        for row in read_canonical(path):
            if not isinstance(row, Tick):
                bad += 1
            elif lo <= row.time_msc < hi and (wanted is None or row.symbol in wanted):
                ticks.append(row)
            else:
                outside += 1
    return ticks, {"records_outside": outside, "malformed": bad}


def feature_rows(ticks: Sequence[Tick], config: PipelineConfig,
                 jobs: int = 1) -> dict[str, list[FeatureVector]]:
    """The stage chain over ``ticks`` (each symbol in time order); feature vectors by symbol.

    Each symbol's ticks in a stable sort by time: the order ``sorted(ticks, key=(symbol,
    time_msc))`` gives, at half its cost. ``jobs`` > 1: the symbols are dealt out to that
    many forked processes (most ticks first, each to the one with the fewest so far), as
    ``process --jobs`` does; a symbol's vectors depend on its own ticks only, so they are
    the same for any ``jobs``."""
    groups: dict[str, list[Tick]] = {}
    for tick in ticks:
        group = groups.get(tick.symbol)
        if group is None:
            group = groups[tick.symbol] = []
        group.append(tick)
    jobs = min(jobs, len(groups))
    if jobs <= 1 or not can_fork():
        return _features_of(groups, sorted(groups), config)
    shares: list[list[str]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for symbol in sorted(groups, key=lambda s: (-len(groups[s]), s)):
        k = load.index(min(load))
        shares[k].append(symbol)
        load[k] += len(groups[symbol])
    parts = run_forked([partial(_features_of, groups, sorted(share), config)
                        for share in shares], "tickstream-replay")
    return {symbol: part[symbol] for part in parts for symbol in sorted(part)}


def _features_of(groups: Mapping[str, list[Tick]], symbols: Sequence[str],
                 config: PipelineConfig) -> dict[str, list[FeatureVector]]:
    """The feature vectors of ``symbols``, one after another through one pipeline."""
    time_of = attrgetter("time_msc")
    pipeline = Pipeline(config, checkpointed=False)
    out = Outputs()
    by_symbol: dict[str, list[FeatureVector]] = {}
    for symbol in symbols:
        for tick in sorted(groups[symbol], key=time_of):
            pipeline.on_tick(tick, out)
            if out.features:
                for fv in out.features:
                    by_symbol.setdefault(fv.symbol, []).append(fv)
            out.clear()
    pipeline.flush(out)
    for fv in out.features:
        by_symbol.setdefault(fv.symbol, []).append(fv)
    return by_symbol


def write_matrix(
    by_symbol: dict[str, list[FeatureVector]], out: Path, horizon_min: int,
    threshold: float | None, extra_meta: dict[str, Any],
) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fv_fields = list(FeatureVector.FIELDS)
    columns: dict[str, list[Any]] = {name: [] for name in fv_fields}
    for name in FEATURE_NAMES:
        columns[f"f_{name}"] = []
    columns.update({"label": [], "future_close": [], "threshold": []})
    per_symbol: dict[str, dict[str, Any]] = {}
    for symbol in sorted(by_symbol):
        rows = sorted(by_symbol[symbol], key=lambda fv: fv.bar_time)
        thr = typical_spread([fv.spread for fv in rows]) if threshold is None else threshold
        labels, future = make_labels([fv.bar_time for fv in rows], [fv.close for fv in rows],
                                     horizon_min, thr)
        kept = 0
        counts = {1: 0, 0: 0, -1: 0}
        for fv, label, fut in zip(rows, labels, future, strict=True):
            if label is None:
                continue
            kept += 1
            counts[label] += 1
            d = fv.to_dict()
            for name in fv_fields:
                columns[name].append(d[name])
            for name, value in derive(d).items():
                columns[f"f_{name}"].append(value)
            columns["label"].append(label)
            columns["future_close"].append(fut)
            columns["threshold"].append(thr)
        per_symbol[symbol] = {"bars": len(rows), "rows": kept, "unlabelled": len(rows) - kept,
                              "threshold": thr, "up": counts[1], "flat": counts[0],
                              "down": counts[-1]}
    types = {"symbol": pa.string(), "bar_time": pa.int64(), "tick_count": pa.int64(),
             "fresh_brokers": pa.int64(), "news_count_1h": pa.int64(),
             "trigger_recv_time_us": pa.int64(), "label": pa.int8(),
             "f_fresh_brokers": pa.float64(), "f_news_count_1h": pa.float64()}
    schema = pa.schema([(name, types.get(name, pa.float64())) for name in columns])
    meta = {
        "feature_set": FEATURE_SET, "feature_names": [f"f_{n}" for n in FEATURE_NAMES],
        "label_definition": LABEL_DEFINITION, "horizon_min": horizon_min,
        "threshold": "median spread per symbol" if threshold is None else threshold,
        "symbols": per_symbol, **extra_meta,
    }
    schema = schema.with_metadata({"tickstream": json.dumps(meta, sort_keys=True)})
    table = pa.Table.from_pydict(columns, schema=schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    return {"rows": table.num_rows, "symbols": per_symbol, "feature_set": FEATURE_SET}


def replay(
    settings: KafkaClientSettings | None, config_settings: PipelineSettings, *, out: Path,
    topic: str | None = None, files: Sequence[Path] = (), from_ms: int | None = None,
    to_ms: int | None = None, symbols: Sequence[str] | None = None,
    horizon_min: int = DEFAULT_HORIZON_MIN, threshold: float | None = None,
    progress: Callable[[int], None] | None = None, store: StoreURL | str | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Read, run the stages (``jobs`` processes, see :func:`feature_rows`), label, write
    ``out``; returns the summary ``--json`` prints."""
    t0 = time.perf_counter()
    if (topic is not None) + bool(files) + (store is not None) != 1:
        raise ReplayError("give one of a topic, files or a store to replay")
    if store is not None:
        return _replay_store(store, out, from_ms, to_ms, symbols, horizon_min, threshold, t0)
    if topic is not None:
        assert settings is not None
        ticks, read = ticks_from_topic(settings, topic, from_ms, to_ms, symbols, progress)
        source: dict[str, Any] = {"topic": settings.topic(topic)}
    else:
        ticks, read = ticks_from_files(files, from_ms, to_ms, symbols)
        source = {"files": [str(f) for f in files]}
    if not ticks:
        raise ReplayError(f"no ticks to replay in {source} for the range and symbols asked")
    by_symbol = feature_rows(ticks, PipelineConfig.from_settings(config_settings), jobs)
    if not by_symbol:
        raise ReplayError("the ticks made no complete bar: nothing to write")
    written = write_matrix(by_symbol, out, horizon_min, threshold, {
        "from_ms": from_ms, "to_ms": to_ms, "ticks": len(ticks),
        "first_tick_ms": min(t.time_msc for t in ticks),
        "last_tick_ms": max(t.time_msc for t in ticks),
    })
    seconds = time.perf_counter() - t0
    used = max(1, min(jobs, len(by_symbol))) if can_fork() else 1
    return {"output": str(out), **source, **read, "ticks": len(ticks), **written,
            "horizon_min": horizon_min, "jobs": used, "seconds": round(seconds, 3),
            "ticks_per_s": round(len(ticks) / seconds) if seconds > 0 else None}


def _replay_store(store: StoreURL | str, out: Path, from_ms: int | None, to_ms: int | None,
                  symbols: Sequence[str] | None, horizon_min: int, threshold: float | None,
                  t0: float) -> dict[str, Any]:
    """The stored feature vectors, labelled and written (see the module docstring)."""
    from offline.store import features_from_store
    from storage.backend import open_backend
    from storage.migrations import current_version

    try:
        url = parse_store_url(store) if isinstance(store, str) else store
        backend = open_backend(url)
        try:
            if current_version(backend) == 0:
                raise ReplayError(f"the store {url} holds no tables (nothing was stored yet)")
            by_symbol = features_from_store(backend, from_ms, to_ms, symbols)
        finally:
            backend.close()
    except StorageError as exc:
        raise ReplayError(str(exc)) from None
    if not by_symbol:
        raise ReplayError(f"no stored feature vectors in {url} for the range and symbols asked")
    bars = [fv.bar_time for rows in by_symbol.values() for fv in rows]
    written = write_matrix(by_symbol, out, horizon_min, threshold, {
        "from_ms": from_ms, "to_ms": to_ms, "first_bar_ms": min(bars), "last_bar_ms": max(bars),
    })
    # "ticks": the clean ticks the stored bars were built from (their tick counts)
    ticks = sum(fv.tick_count for rows in by_symbol.values() for fv in rows)
    seconds = time.perf_counter() - t0
    return {"output": str(out), "store": str(url), "ticks": ticks, **written,
            "feature_vectors": len(bars), "horizon_min": horizon_min,
            "seconds": round(seconds, 3),
            "ticks_per_s": round(ticks / seconds) if seconds > 0 else None}
