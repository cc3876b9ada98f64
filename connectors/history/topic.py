"""Read history back from a topic: every record in a time range, nothing committed.

``tickstream replay --topic`` reads with a fresh consumer that joins no group and commits
nothing, by explicit assignment of every partition from its beginning, to the end each
Fetch response's high watermark reports (Tansu's ListOffsets reports less:
``docs/platform-notes.md``). It does not seek by time: Tansu answers OffsetsForTimes with
offset 0 for any time (checked: 100 records one second apart, every lookup → 0), and a topic
loaded in several runs need not be in time order within a partition, so a seek by time could
skip records. Records are filtered by their timestamp (the loader sets it to the tick's
time) before they are decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.kafka_client import KafkaClientSettings as Settings


class TopicReadError(RuntimeError):
    """The topic is missing or could not be read to its end in time: one line."""


@dataclass(slots=True)
class TopicRecords:
    """What a read found: the records kept, and how many were scanned and skipped."""

    #: (partition, offset, timestamp ms, key, value) in partition-then-offset order
    records: list[tuple[int, int, int, bytes | None, bytes]] = field(default_factory=list)
    scanned: int = 0
    outside: int = 0  # outside the time range or the symbols asked for


def read_range(
    settings: Settings, topic: str, *, from_ms: int | None = None, to_ms: int | None = None,
    symbols: Collection[str] | None = None, timeout_s: float = 600.0,
    progress: Callable[[int], None] | None = None,
) -> TopicRecords:
    """Every record of ``topic`` with ``from_ms <= timestamp < to_ms`` whose key is one of
    ``symbols`` (None: any)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from connectors.kafka_client import consumer_config

    consumer = Consumer({**consumer_config(settings), "enable.partition.eof": False})
    keys = None if symbols is None else {s.encode() for s in symbols}
    lo = -(2**63) if from_ms is None else from_ms
    hi = 2**63 if to_ms is None else to_ms
    out = TopicRecords()
    try:
        meta = consumer.list_topics(topic, timeout=30)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise TopicReadError(f"topic {topic} does not exist on "
                                 f"{','.join(settings.kafka_bootstrap_servers)}")
        parts = sorted(tmeta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        next_offset = dict.fromkeys(parts, 0)
        records = out.records
        deadline = time.monotonic() + timeout_s
        while True:
            batch = consumer.consume(10_000, 0.1)
            for m in batch:
                if m.error():
                    continue
                p, off = m.partition(), m.offset()
                if p is None or off is None:
                    continue
                next_offset[p] = off + 1
                out.scanned += 1
                ts = m.timestamp()[1]
                key = m.key()
                if not lo <= ts < hi or (keys is not None and key not in keys):
                    out.outside += 1
                    continue
                records.append((p, off, ts, key, m.value() or b""))
            if progress is not None and batch:
                progress(len(batch))
            if all(_at_end(consumer, TopicPartition(topic, p), next_offset[p]) for p in parts):
                return out
            if time.monotonic() > deadline:
                raise TopicReadError(f"cannot read {topic} to its end within {timeout_s:.0f} s")
    finally:
        consumer.close()


def _at_end(consumer: Any, tp: Any, next_offset: int) -> bool:
    low, high = consumer.get_watermark_offsets(tp, cached=True)
    if high is None or high < 0:
        return False
    return bool(max(next_offset, low) >= high)
