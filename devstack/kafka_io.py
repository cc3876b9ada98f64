"""Small synchronous helpers to read topics end to end (smoke runs, tests, benchmarks)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from connectors.kafka_client import KafkaClientSettings as Settings
from connectors.kafka_client import consumer_config


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0  # the record's timestamp (CreateTime)


class TopicReader:
    """Reads whole physical topics from the beginning by explicit assignment (no group join)."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(consumer_config(settings))
        meta = self._consumer.list_topics(timeout=10)
        assignment = []
        for t in topics:
            if t not in meta.topics:
                raise KeyError(f"topic {t} does not exist")
            assignment += [
                TopicPartition(t, p, OFFSET_BEGINNING) for p in meta.topics[t].partitions
            ]
        self._consumer.assign(assignment)

    def poll(self, timeout_s: float = 0.2, max_messages: int = 10_000) -> list[Message]:
        out = []
        for m in self._consumer.consume(max_messages, timeout_s):
            if m.error():
                continue
            out.append(
                Message(
                    m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(),
                    m.value() or b"", m.timestamp()[1],
                )
            )
        return out

    def read_until(
        self, predicate: Any, timeout_s: float, into: list[Message] | None = None
    ) -> list[Message]:
        """Poll until ``predicate(messages)`` holds or the deadline passes; returns all read."""
        got = [] if into is None else into
        deadline = time.monotonic() + timeout_s
        while not predicate(got) and time.monotonic() < deadline:
            got += self.poll()
        return got

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
