"""A producer stand-in for Faust's ``agent.test_context()`` (no broker).

Faust's testing guide runs agents with ``test_context()``; outputs and changelog writes still
go through ``app.producer``, which needs a broker. :class:`RecordingProducer` takes its place
and records every message, so broker-less agent tests can assert what an agent published.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: float | None) -> int:
        self.records.append((key, value))
        return len(self.records)

    def close(self) -> None:
        return None


class RecordingProducer:
    """Implements the parts of ``faust.types.ProducerT`` that topics and tables call."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self._offsets: dict[str, int] = {}

    def by_topic(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        return [(k, v) for t, k, v in self.sent if t == topic]

    def _record(self, topic: str, key: Any, value: Any, partition: int | None) -> RecordMetadata:
        self.sent.append((topic, key, value))
        offset = self._offsets[topic] = self._offsets.get(topic, -1) + 1
        p = partition or 0
        return RecordMetadata(topic, p, TopicPartition(topic, p), offset, 0, 0, 0)

    async def maybe_start(self) -> None:
        return None

    def key_partition(self, topic: str, key: bytes | None) -> TopicPartition:
        return TopicPartition(topic, 0)

    async def send(self, topic: str, key: Any, value: Any, partition: int | None,
                   timestamp: float | None, headers: Any, *,
                   transactional_id: str | None = None) -> asyncio.Future[RecordMetadata]:
        fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        fut.set_result(self._record(topic, key, value, partition))
        return fut

    async def send_and_wait(self, topic: str, key: Any, value: Any, partition: int | None,
                            timestamp: float | None, headers: Any, *,
                            transactional_id: str | None = None) -> RecordMetadata:
        return self._record(topic, key, value, partition)

    # The aiokafka producer API the batch publisher uses (engine/publish.py).
    def _ensure_producer(self) -> RecordingProducer:
        return self

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *,
                         partition: int) -> asyncio.Future[RecordMetadata]:
        fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        meta = None
        for key, value in batch.records:
            meta = self._record(topic, key, value, partition)
        fut.set_result(meta)  # type: ignore[arg-type]
        return fut

    def send_soon(self, fut: Any) -> None:
        m = fut.message
        fut.set_result(self._record(m.channel.get_topic_name(), m.key, m.value, m.partition))
