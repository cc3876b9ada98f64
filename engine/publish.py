"""Batched publishing straight into the Faust app's aiokafka producer.

Profiling the worker showed Faust's ``Topic.send`` as the largest cost per output record
(a ``FutureMessage``, sensors, callbacks and a task per message: about half the agent's
time). The pipeline's outputs are plain bytes to known topics, so they are appended to one
aiokafka record batch per (topic, partition) and submitted with ``send_batch``: the same
producer (so Faust's flush-before-commit still covers them), the same murmur2 partitioning
as Faust and the collectors, one delivery future per batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Faust/aiokafka's default partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class BatchPublisher:
    """Collects records per (topic, partition); :meth:`flush` sends them as record batches."""

    def __init__(self, app: Any, partitions: dict[str, int]) -> None:
        self._app = app
        self._partitions = partitions  # physical topic -> partition count
        self._cache: dict[tuple[str, bytes], int] = {}
        self._pending: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        ck = (topic, key or b"")
        p = self._cache.get(ck)
        if p is None:  # a record without a key (an unkeyed dead letter) goes to partition 0
            p = self._cache[ck] = partition_for(key, self._partitions[topic]) if key else 0
        tp = (topic, p)
        lst = self._pending.get(tp)
        if lst is None:
            lst = self._pending[tp] = []
        lst.append((key, value))

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Submit everything added; returns the delivery futures (await them before state)."""
        if not self._pending:
            return []
        producer = await self._app.maybe_start_producer()
        aio = producer._ensure_producer()
        futures: list[asyncio.Future[Any]] = []
        pending, self._pending = self._pending, {}
        for (topic, partition), records in pending.items():
            batch = aio.create_batch()
            for key, value in records:
                while batch.append(key=key, value=value, timestamp=None) is None:
                    batch.close()
                    futures.append(await aio.send_batch(batch, topic, partition=partition))
                    batch = aio.create_batch()
            batch.close()
            futures.append(await aio.send_batch(batch, topic, partition=partition))
        return futures
