"""Read a compacted topic back to its end: the last value of every key.

"The end" is the high watermark each Fetch response carries (librdkafka's cached
watermarks), not ListOffsets(latest): Tansu answers that with the first offset of the last
record batch + 1, which would stop short of the newest records
(``docs/platform-notes.md``). A partition is read when its next offset reaches that high
watermark (or it is empty). Used for the collector positions and the history manifest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.kafka_client import KafkaClientSettings as Settings


class CompactedReadError(RuntimeError):
    """The topic is missing, or could not be read to its end in time."""


def read_compacted(settings: Settings, topic: str, timeout_s: float) -> dict[str, bytes]:
    """Every key's last value on ``topic`` (a tombstone removes the key)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from connectors.kafka_client import consumer_config

    consumer = Consumer(consumer_config(settings))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise CompactedReadError(f"topic {topic} does not exist")
        parts = sorted(tmeta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        next_offset = dict.fromkeys(parts, 0)
        out: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for m in consumer.consume(10_000, 0.05):
                if m.error():
                    continue
                p, off = m.partition(), m.offset()
                if p is None or off is None:
                    continue
                next_offset[p] = max(next_offset[p], off + 1)
                raw_key = m.key()
                if raw_key is None:
                    continue
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                value = m.value()
                if value:
                    out[key] = bytes(value)
                else:
                    out.pop(key, None)
            if all(_read_to_end(consumer, TopicPartition(topic, p), next_offset[p])
                   for p in parts):
                return out
            if time.monotonic() > deadline:
                raise CompactedReadError(
                    f"cannot read {topic} to its end within {timeout_s:.0f} s")
    finally:
        consumer.close()


def _read_to_end(consumer: Any, tp: Any, next_offset: int) -> bool:
    low, high = consumer.get_watermark_offsets(tp, cached=True)
    if high is None or high < 0:  # no Fetch response for this partition yet
        return False
    return bool(max(next_offset, low) >= high)
