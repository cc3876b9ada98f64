"""``tickstream load``: vendor history into a Kafka topic, once.

Each path (a file, or a folder for ``dukascopy`` and ``lean``) is parsed at the edge
(:mod:`connectors.history.parse`) and produced to ``ticks.history`` (or ``--topic``) with
the collectors' producer path: idempotent, acks=all, murmur2 partitioning, key = symbol,
record timestamp = the tick's time, value = a ``RawTick`` with ``source=HISTORY`` and the
tick's time as its receive time (history has no receive clock).

**Once.** A path's fingerprint (SHA-256 of its bytes; of every file's name, size and bytes
for a folder) is looked up in the compacted manifest topic ``history.manifest`` before it
is loaded, and a path already loaded into the same topic is skipped (``--force`` loads it
again). The manifest entry — fingerprint, format, broker/symbol streams with their counts
and time ranges, bad lines, the partitions and offsets its records went to — is written
only after the broker acknowledged every record of the path, so a path whose load did not
finish (a crash, a refused record) is not in the manifest and is loaded again in full on
the next run: the topic may then hold part of it twice, which the stages' dedupe counts
as duplicates on replay. A refused record stops the load with one line, and the path is
not recorded.

**Nothing lost.** A line that is not a tick is counted and reported with its file and line
number (the first :data:`BAD_EXAMPLES` per path are listed), never skipped silently and never
fatal; a path that cannot be read at all (missing, not this format) is reported and the
others are loaded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from connectors.history.batch import TickBatch
from connectors.history.batch_readers import Item, read_batches
from connectors.history.manifest import HistoryManifest, ManifestEntry
from connectors.history.parse import BadLine, HistoryError, check_options
from connectors.kafka_client import KafkaClientSettings
from connectors.producer import RecordProducer
from offline.load_encoding import encode_batch, history_encoder
from stages.types import Tick

__all__ = ["DEFAULT_TOPIC", "LoadError", "history_encoder", "load_paths"]

#: Bad lines listed per path (all are counted).
BAD_EXAMPLES = 20
#: Records produced between two services of the delivery reports.
POLL_EVERY = 512
DEFAULT_TOPIC = "ticks.history"


class LoadError(RuntimeError):
    """The load cannot go on (the broker refused records): one line for the user."""


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def fingerprint(path: Path) -> str:
    """SHA-256 of a file's bytes; of every file's relative name, size and bytes for a
    folder (in name order), so the same history has the same fingerprint wherever it is."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class Stream:
    """One broker's ticks of one symbol in one path."""

    broker: str
    symbol: str
    ticks: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, time_msc: int) -> None:
        self.ticks += 1
        if self.first_ms is None or time_msc < self.first_ms:
            self.first_ms = time_msc
        if self.last_ms is None or time_msc > self.last_ms:
            self.last_ms = time_msc

    def to_dict(self) -> dict[str, Any]:
        return {"broker": self.broker, "symbol": self.symbol, "ticks": self.ticks,
                "first": iso(self.first_ms), "last": iso(self.last_ms),
                "first_ms": self.first_ms, "last_ms": self.last_ms}


@dataclass(slots=True)
class PathResult:
    path: str
    status: str = "loaded"  # loaded | skipped | failed
    fingerprint: str | None = None
    ticks: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)
    streams: dict[tuple[str, str], Stream] = field(default_factory=dict)
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last]
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "status": self.status, "fingerprint": self.fingerprint,
            "ticks": self.ticks, "bad_lines": self.bad_lines, "bad_examples": self.bad_examples,
            "streams": [s.to_dict() for _, s in sorted(self.streams.items())],
            "offsets": {str(p): v for p, v in sorted(self.offsets.items())},
            "detail": self.detail,
        }


class _Deliveries:
    """Delivery reports of one path: the offsets its records went to, the first error."""

    def __init__(self, result: PathResult) -> None:
        self.result = result
        self.error: str | None = None
        self.delivered = 0

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            if self.error is None:
                self.error = str(err)
            return
        self.delivered += 1
        p, off = msg.partition(), msg.offset()
        span = self.result.offsets.get(p)
        if span is None:
            self.result.offsets[p] = [off, off]
        elif off > span[1]:
            span[1] = off
        elif off < span[0]:
            span[0] = off


def load_paths(
    settings: KafkaClientSettings, fmt: str, paths: Iterable[Path], *,
    broker: str | None = None, symbol: str | None = None, tz: str | None = None,
    topic: str = DEFAULT_TOPIC, force: bool = False,
    progress: Callable[[int], None] | None = None,
    manifest: HistoryManifest | None = None, producer: RecordProducer | None = None,
) -> dict[str, Any]:
    """Load every path; returns the summary (what ``--json`` prints)."""
    check_options(fmt, broker=broker, symbol=symbol, tz=tz)
    t0 = time.perf_counter()
    producer = producer or RecordProducer(settings)
    manifest = manifest or HistoryManifest(settings, producer)
    physical = settings.topic(topic)
    producer.acquire_producer_id(physical)  # not 500 ms after the first record
    encode = history_encoder(producer.codec, physical)
    results: list[PathResult] = []
    for path in paths:
        res = PathResult(str(path))
        results.append(res)
        try:
            res.fingerprint = fingerprint(path) if path.exists() else None
            rows = read_batches(fmt, path, broker=broker, symbol=symbol, tz=tz)
        except (HistoryError, OSError) as exc:
            res.status, res.detail = "failed", str(exc)
            continue
        done = manifest.get(physical, res.fingerprint or "")
        if done is not None and not force:
            res.status = "skipped"
            res.detail = (f"already loaded into {physical} at {done.loaded_at} "
                          f"({done.ticks:,} ticks); --force loads it again")
            continue
        deliveries = _Deliveries(res)
        try:
            _produce(rows, res, producer, physical, encode, deliveries, progress)
        except HistoryError as exc:  # the file became unreadable part-way (truncated gzip)
            res.status, res.detail = "failed", str(exc)
        left = producer.flush(120.0)
        if deliveries.error is not None or left:
            why = deliveries.error or f"{left} records not acknowledged in 120 s"
            res.status = "failed"
            res.detail = f"the broker did not take every record ({why}); not recorded"
            raise LoadError(f"{path}: {res.detail}")
        if res.status == "loaded":
            manifest.record(ManifestEntry.of(physical, fmt, res))
    manifest.flush()
    seconds = time.perf_counter() - t0
    ticks = sum(r.ticks for r in results if r.status == "loaded")
    return {
        "topic": physical, "format": fmt, "seconds": round(seconds, 3), "ticks": ticks,
        "ticks_per_s": round(ticks / seconds) if seconds > 0 else None,
        "bad_lines": sum(r.bad_lines for r in results),
        "loaded": sum(r.status == "loaded" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "paths": [r.to_dict() for r in results],
    }


def _produce(rows: Iterable[Item], res: PathResult, producer: RecordProducer, topic: str,
             encode: Callable[[Tick], bytes], deliveries: _Deliveries,
             progress: Callable[[int], None] | None) -> None:
    send = producer.raw_sender(topic, deliveries)
    send_many = producer.raw_batch_sender(topic, deliveries, POLL_EVERY)
    poll = producer.poll
    streams = res.streams
    keys: dict[str, bytes] = {}
    n = bad = shown = 0
    for row in rows:
        if isinstance(row, TickBatch):
            _count_batch(row, streams)
            values = encode_batch(producer.codec, topic, row)
            table = [keys.get(s) or keys.setdefault(s, s.encode()) for s in row.symbols]
            send_many([table[c] for c in row.symbol_code.tolist()], values,
                      row.time_msc.tolist())
            n += len(row)
        elif isinstance(row, BadLine):
            bad += 1
            if len(res.bad_examples) < BAD_EXAMPLES:
                res.bad_examples.append(str(row))
            continue
        else:
            symbol, t = row.symbol, row.time_msc
            st = streams.get((row.broker, symbol))
            if st is None:
                st = streams[(row.broker, symbol)] = Stream(row.broker, symbol)
            st.add(t)
            key = keys.get(symbol)
            if key is None:
                key = keys[symbol] = symbol.encode()
            send(key, encode(row), t)
            n += 1
            if not n % POLL_EVERY:  # delivery reports, in bulk
                poll(0)
        if progress is not None and n - shown >= 10_240:
            progress(n - shown)
            shown = n
    poll(0)
    if progress is not None and n > shown:
        progress(n - shown)
    res.ticks, res.bad_lines = n, bad


def _count_batch(batch: TickBatch, streams: dict[tuple[str, str], Stream]) -> None:
    """Each stream's tick count and time range, over a batch at once."""
    codes = batch.stream_code()
    present = np.unique(codes)
    for code in present.tolist():
        times = batch.time_msc if len(present) == 1 else batch.time_msc[codes == code]
        name = batch.stream_names(code)
        st = streams.get(name)
        if st is None:
            st = streams[name] = Stream(*name)
        lo, hi = int(times.min()), int(times.max())
        st.ticks += len(times)
        st.first_ms = lo if st.first_ms is None else min(st.first_ms, lo)
        st.last_ms = hi if st.last_ms is None else max(st.last_ms, hi)
