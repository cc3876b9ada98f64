"""Shared benchmark plumbing: a private broker, preloading, timed reads.

Throughput is measured from the broker's own record timestamps (CreateTime, stamped by the
producing client when it sends): for a stage that emits one record per input, the span
between its first and last output record is the time it took to process the whole input,
without the group-join time before it or our reading time after it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from topology.settings import Settings


def bench_env(bootstrap: str, data_dir: str, **extra: str) -> dict[str, str]:
    """Environment of a private app (unique prefix and app id) on ``bootstrap``."""
    u = uuid.uuid4().hex[:8]
    from devstack.broker import free_port

    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TICKSTREAM_TOPIC_PREFIX": f"b{u}.",
        "TICKSTREAM_APP_ID": f"bench{u}",
        "TICKSTREAM_PARTITIONS": "4",
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_DATA_DIR": data_dir,
        "TICKSTREAM_WEB_PORT": str(free_port()),
        **extra,
    }


def producer(settings: Settings, **overrides: Any) -> Any:
    from confluent_kafka import Producer

    from connectors.producer import producer_config

    return Producer(producer_config(settings, **overrides))


def produce_all(p: Any, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
    n = 0
    for key, value in items:
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.01)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise RuntimeError("preload not delivered")
    return n


@dataclass
class Span:
    count: int
    first_ms: int
    last_ms: int

    @property
    def seconds(self) -> float:
        return max(1e-3, (self.last_ms - self.first_ms) / 1000.0)


def consumer(settings: Settings, **overrides: Any) -> Any:
    from confluent_kafka import Consumer

    from devstack.kafka_io import consumer_config

    return Consumer(consumer_config(settings, **overrides))


def assign_from(c: Any, topics: list[str], start: str = "beginning") -> None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    meta = c.list_topics(timeout=10)
    pos = OFFSET_BEGINNING if start == "beginning" else OFFSET_END
    c.assign([TopicPartition(t, p, pos) for t in topics for p in meta.topics[t].partitions])


def read_span(
    settings: Settings, topics: list[str], expected: int, timeout_s: float,
    on_message: Callable[[Any], None] | None = None,
) -> Span:
    """Read ``topics`` from the beginning until ``expected`` records; their time span."""
    c = consumer(settings)
    try:
        assign_from(c, topics)
        n, first, last = 0, None, None
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.2):
                if m.error():
                    continue
                n += 1
                ts = m.timestamp()[1]
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
                if on_message is not None:
                    on_message(m)
        if n < expected or first is None or last is None:
            raise TimeoutError(f"read {n} of {expected} records from {topics} in {timeout_s}s")
        return Span(n, first, last)
    finally:
        c.close()


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    s = sorted(samples_ms)

    def q(p: float) -> float:
        return s[min(len(s) - 1, round(p * (len(s) - 1)))]

    return {"p50": round(q(0.5), 2), "p99": round(q(0.99), 2), "max": round(s[-1], 2),
            "n": len(s)}
