"""The storage sink: ``ticks.clean``, ``bars.m1``, ``features``, ``trading.commands`` and
``ticks.rejected`` into the store, in batches, offsets committed only after the insert.

**Why a plain consumer loop and not a Faust agent.** Faust acks an event when the agent
asks for the next one, and its consumer commits acked offsets on its own timer; with
``stream.take(n, within=t)`` every event of a batch is acked while the batch is being
gathered, i.e. *before* the agent could insert it, so a crash between the commit and the
insert loses the batch. Faust also costs ~270 µs of CPU per event here (../shared/NOTES.md),
which caps a sink at a few thousand rows/s against the ≥200 k rows/s asked for. So the sink
is a confluent-kafka consumer in its own process and consumer group (``topology/sink_app.py``)
with auto-commit off: it commits, synchronously, exactly the offsets whose records are in
the store — the flush-on-commit contract of quix's ``BaseSink`` (STYLE 8).

**Batches**: up to ``batch_rows`` records or ``batch_ms`` since the first record of the
batch, whichever comes first; one columnar insert per table per batch.

**Outage**: an insert that fails because the store is unavailable is retried with
exponential backoff (``backoff_initial_s`` doubling to ``backoff_max_s``); while it is
down the consumer's partitions are paused, so nothing more is fetched (backpressure), and
the consumer keeps polling so it stays in its group. When the insert succeeds the
partitions resume. A table already inserted in a failing batch is not inserted again.
``outage_exit_s`` > 0 turns an outage longer than that into :class:`SinkOutage` (the
process exits non-zero, nothing uncommitted is lost: it is re-read on restart).
Re-delivered records (after a crash or a rebalance) are inserted again and collapse to one
row per natural key (``ReplacingMergeTree``; exact queries use ``FINAL``).

**Bad records**: a value that does not decode is stored in ``rejects`` with reason
``malformed``, stage ``sink``, its topic/partition/offset and original bytes — never dropped.
A Schema Registry that cannot be reached (Confluent framing, a writer schema id not seen
yet) is not the record's fault: the batch is decoded again after the same backoff and
pause as a store outage, and nothing is committed or rejected meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.registry import SchemaRegistryError
from storage.backend import Backend
from storage.errors import StorageError, StoreUnavailable
from storage.rows import columns_from_arrays, concat, to_columns
from storage.schema import BY_TOPIC, REJECTS, Table

log = logging.getLogger(__name__)


class SinkOutage(RuntimeError):
    """The store (or the schema registry) stayed unavailable for longer than
    ``outage_exit_s``."""


@dataclass(frozen=True, slots=True)
class SinkConfig:
    #: physical topic name -> logical topic name (``ticks.clean``, ...)
    topics: Mapping[str, str]
    batch_rows: int = 50_000
    batch_ms: int = 500
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    outage_exit_s: float = 0.0
    #: How long the last flush at stop may retry an unavailable store.
    stop_grace_s: float = 10.0


@dataclass
class SinkStats:
    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows inserted
    batches: int = 0
    commits: int = 0
    retries: int = 0
    outages: int = 0
    malformed: int = 0
    paused: bool = False
    last_error: str | None = None


class _Pending:
    """One physical topic's records of a batch, as they came (decoded at flush)."""

    __slots__ = ("keys", "offsets", "partitions", "values")

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.partitions: list[int] = []
        self.offsets: list[int] = []
        self.keys: list[bytes | None] = []


class Batch:
    """Records per topic plus the next offset per (topic, partition); no I/O.

    Records are kept as bytes and decoded when the batch is flushed, column by column
    (:func:`schemas.columnar.decode_columns`); a record that path declines is decoded on
    its own by the codec, and one that does not decode is a ``malformed`` reject.
    """

    def __init__(self, codec: Any, topics: Mapping[str, str],
                 clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.codec = codec
        self.tables: dict[str, Table] = {p: BY_TOPIC[lt] for p, lt in topics.items()}
        self.clock_us = clock_us
        self.pending: dict[str, _Pending] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.count = 0
        self.started = 0.0
        self.malformed = 0
        self._columns: dict[str, Any] | None = None

    def add(self, topic: str, partition: int, offset: int, key: bytes | None,
            value: bytes | None) -> None:
        p = self.pending.get(topic) or self._pending(topic)
        if self.count == 0:
            self.started = time.monotonic()
        p.values.append(value or b"")
        p.partitions.append(partition)
        p.offsets.append(offset)
        p.keys.append(key)
        self.offsets[(topic, partition)] = offset + 1
        self.count += 1
        self._columns = None

    def _pending(self, topic: str) -> _Pending:
        if topic not in self.tables:
            raise KeyError(topic)
        p = self.pending[topic] = _Pending()
        return p

    def add_messages(self, messages: Sequence[Any]) -> tuple[int, list[Any]]:
        """:meth:`add` for each consumed message without an error (the loop inlined: this is
        the sink's per-record cost); returns (records added, the errors among them)."""
        errors = []
        added = 0
        offsets = self.offsets
        pending = self.pending
        last_topic, p = None, None
        for m in messages:
            if m.error() is not None:
                errors.append(m.error())
                continue
            topic = m.topic()
            if topic != last_topic:
                p = pending.get(topic) or self._pending(topic)
                last_topic = topic
            assert p is not None
            partition, offset = m.partition(), m.offset()
            p.values.append(m.value() or b"")
            p.partitions.append(partition)
            p.offsets.append(offset)
            p.keys.append(m.key())
            offsets[(topic, partition)] = offset + 1
            added += 1
        if added:
            if self.count == 0:
                self.started = time.monotonic()
            self.count += added
            self._columns = None
        return added, errors

    def due(self, batch_rows: int, batch_ms: int) -> bool:
        if self.count == 0:
            return False
        return self.count >= batch_rows or (time.monotonic() - self.started) * 1000 >= batch_ms

    def columns(self) -> dict[str, Any]:
        """table name -> columns, for every table with records (decoded once per batch)."""
        if self._columns is None:
            self._columns = self._decode()
        return dict(self._columns)

    def _decode(self) -> dict[str, Any]:
        import numpy as np

        from schemas.columnar import decode_columns

        parts: dict[str, list[Any]] = {}
        rejects: list[dict[str, Any]] = []
        for topic, p in self.pending.items():
            table = self.tables[topic]
            cols, done = decode_columns(self.codec, table.record, p.values, topic)
            if len(done):
                parts.setdefault(table.name, []).append(columns_from_arrays(table, cols))
            if len(done) == len(p.values):
                continue
            left = np.ones(len(p.values), dtype=bool)
            left[done] = False
            records = []
            int32 = [c.name for c in table.columns if c.base_type == "Int32"]
            for i in np.flatnonzero(left).tolist():
                value = p.values[i]
                try:
                    rec = self.codec.decode_dict(table.record, value, topic)
                    for name in int32:  # an Avro int is 32 bits; a varint need not be
                        v = rec[name]
                        if v is not None and not -(1 << 31) <= v < (1 << 31):
                            raise ValueError(f"{name}: {v} does not fit an Avro int")
                    records.append(rec)
                except SchemaRegistryError:
                    raise  # the registry, not the record: the flush decodes the batch again
                except Exception as exc:  # MalformedRecord, or anything it could not read
                    rejects.append({
                        "source_topic": topic, "source_partition": p.partitions[i],
                        "source_offset": p.offsets[i], "reason": "malformed",
                        "detail": str(getattr(exc, "detail", exc))[:300], "stage": "sink",
                        "original": value, "key": p.keys[i], "time_us": self.clock_us(),
                    })
            if records:
                parts.setdefault(table.name, []).append(to_columns(table, records))
        if rejects:
            self.malformed += len(rejects)
            parts.setdefault(REJECTS.name, []).append(to_columns(REJECTS, rejects))
        return {name: concat(cols) for name, cols in parts.items()}

    def drop(self) -> None:
        """Forget everything (a revoked assignment: the next owner re-reads it)."""
        self.pending.clear()
        self.offsets.clear()
        self.count = 0
        self._columns = None


class Sink:
    """The consume -> batch -> insert -> commit loop (see the module docstring).

    ``consumer`` is a confluent-kafka ``Consumer`` (or anything with its ``subscribe``,
    ``consume``, ``pause``, ``resume``, ``assignment``, ``commit`` and ``close``).
    """

    def __init__(self, consumer: Any, backend: Backend, codec: Any, config: SinkConfig) -> None:
        self.consumer = consumer
        self.backend = backend
        self.config = config
        self.batch = Batch(codec, config.topics)
        self.stats = SinkStats()
        self.stopping = threading.Event()
        self._flushing = False
        self._revoked = False
        #: Records that arrived while a flush was retrying: they join the next batch.
        self._held: list[tuple[str, int, int, bytes | None, bytes | None]] = []

    # -- consumer callbacks -------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("sink assigned %d partitions", len(partitions))
        if self.stats.paused:  # assigned during an outage: do not fetch until it ends
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("sink revoked %d partitions", len(partitions))
        if self._flushing:
            # Inside a retry of a failing flush: abandon the batch; not committed, so the
            # partitions' next owner re-reads it (duplicates collapse on merge).
            self._revoked = True
            return
        try:
            self.flush(deadline_s=self.config.stop_grace_s)
        except (StorageError, SchemaRegistryError) as exc:
            log.warning("sink: batch abandoned at rebalance, to be re-read: %s", exc)
            self.batch.drop()
            self._held.clear()

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> SinkStats:
        """Consume until :meth:`stop`; flushes and commits what it holds before returning."""
        cfg = self.config
        self.consumer.subscribe(list(cfg.topics), on_assign=self._on_assign,
                                on_revoke=self._on_revoke)
        try:
            while not self.stopping.is_set():
                room = max(1, min(10_000, cfg.batch_rows - self.batch.count))
                added, errors = self.batch.add_messages(self.consumer.consume(room, 0.05))
                self.stats.records += added
                for err in errors:
                    if err.code() != -191:  # _PARTITION_EOF
                        log.warning("sink consumer: %s", err)
                if self.batch.due(cfg.batch_rows, cfg.batch_ms):
                    self.flush()
            self.flush(deadline_s=cfg.stop_grace_s)
        finally:
            self.consumer.close()
        return self.stats

    def stop(self) -> None:
        self.stopping.set()

    # -- flush --------------------------------------------------------------------------
    def flush(self, deadline_s: float | None = None) -> bool:
        """Insert the batch, then commit its offsets. Retries an unavailable store with
        backoff (pausing consumption meanwhile) until it answers, the sink is stopped past
        ``deadline_s``, or ``outage_exit_s`` passes. Returns whether the batch was stored."""
        if self.batch.count == 0:
            return True
        cfg = self.config
        self._flushing, self._revoked = True, False
        pending: dict[str, Any] | None = None  # decoded on the first pass
        delay, down_since, down_what = cfg.backoff_initial_s, None, "store"
        start = time.monotonic()
        try:
            while pending is None or pending:
                try:
                    if pending is None:
                        pending = self.batch.columns()
                        continue
                    from storage.schema import BY_NAME

                    name, cols = next(iter(pending.items()))
                    n = self.backend.insert(BY_NAME[name], cols)
                    self.stats.rows[name] = self.stats.rows.get(name, 0) + n
                    del pending[name]
                    continue
                except (StoreUnavailable, SchemaRegistryError) as exc:
                    what = "store" if isinstance(exc, StoreUnavailable) else "schema registry"
                    self.stats.retries += 1
                    self.stats.last_error = str(exc)
                    now = time.monotonic()
                    if down_since is None:
                        down_since, down_what = now, what
                        self.stats.outages += 1
                        log.warning("%s unavailable, pausing consumption: %s", what, exc)
                    self._pause()
                    if cfg.outage_exit_s and now - down_since > cfg.outage_exit_s:
                        raise SinkOutage(f"{what} down for over {cfg.outage_exit_s:g}s: {exc}"
                                         ) from exc
                    if deadline_s is not None and now - start > deadline_s:
                        raise
                    self._wait(delay)
                    if self._revoked:
                        log.warning("sink: partitions revoked during the outage; "
                                    "batch left to their next owner")
                        self.batch.drop()
                        self._held.clear()
                        return False
                    delay = min(cfg.backoff_max_s, delay * 2)
            self._commit()
            self.stats.batches += 1
            self.stats.malformed += self.batch.malformed
            self.batch.malformed = 0
            self.batch.drop()
            self._take_held()
            if down_since is not None:
                log.warning("%s back after %.1fs; resuming", down_what,
                            time.monotonic() - down_since)
            self._resume()
            return True
        finally:
            self._flushing = False

    def _wait(self, delay_s: float) -> None:
        """Sleep for the backoff while serving the consumer (group membership, rebalance
        callbacks); paused partitions deliver nothing, anything else is kept."""
        end = time.monotonic() + delay_s
        while (left := end - time.monotonic()) > 0:
            for m in self.consumer.consume(100, min(left, 0.1)):
                if m.error() is None:  # fetched before the pause took effect
                    self._held.append((m.topic(), m.partition(), m.offset(), m.key(),
                                       m.value()))

    def _take_held(self) -> None:
        held, self._held = self._held, []
        for topic, partition, offset, key, value in held:
            self.batch.add(topic, partition, offset, key, value)
            self.stats.records += 1

    def _pause(self) -> None:
        if not self.stats.paused:
            self.consumer.pause(self.consumer.assignment())
            self.stats.paused = True

    def _resume(self) -> None:
        if self.stats.paused:
            self.consumer.resume(self.consumer.assignment())
            self.stats.paused = False

    def _commit(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in self.batch.offsets.items()]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            # The rows are stored; an uncommitted offset only means they are re-read and
            # collapse on merge.
            log.warning("sink: commit failed (rows stored; will be re-read): %s", exc)
