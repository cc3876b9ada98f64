"""Recovery's end offsets are the partition's real end, on the real local broker.

The broker reports ListOffsets(latest) as the first offset of the last record batch + 1;
``engine.high_watermarks`` raises it to the Fetch high watermark, so a table whose changelog
ends in a batch of several records is recovered completely under the default producer
settings.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.broker import LocalBroker
from engine.high_watermarks import exact_end_offsets

pytestmark = pytest.mark.integration


async def _write_batches(bootstrap: str, topic: str, batches: int, size: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        for _ in range(batches):
            sent = [await producer.send(topic, b"%d" % i, partition=0) for i in range(size)]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_end_offsets_reach_the_last_record_of_a_multi_record_batch(
        broker: LocalBroker, unique: str) -> None:
    topic = f"{unique}-changelog"

    Ends = dict[TopicPartition, int | None]

    async def scenario() -> tuple[Ends, Ends]:
        await _write_batches(broker.bootstrap, topic, batches=3, size=5)
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            reported = dict(await reader.end_offsets([tp0, tp1]))
        finally:
            await reader.stop()
        exact = await exact_end_offsets(
            lambda: AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                                     enable_auto_commit=False), reported)
        return reported, exact

    reported, exact = asyncio.run(scenario())
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    # 15 records in 3 batches of 5: the real end is 15 whatever the broker reports.
    assert exact[tp0] == 15, (reported, exact)
    assert exact[tp1] == 0  # an empty partition stays at 0 and is not fetched
    assert (exact[tp0] or 0) >= (reported[tp0] or 0)


def test_a_probe_that_cannot_start_keeps_the_reported_ends() -> None:
    class Refuses:
        async def start(self) -> None:
            raise ConnectionError("refused")

        async def stop(self) -> None:
            return None

    reported = {TopicPartition("t", 0): 11}
    assert asyncio.run(exact_end_offsets(Refuses, reported)) == reported
