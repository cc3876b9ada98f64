"""A key produced by a collector (confluent-kafka) lands where Faust would put it."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from connectors.producer import RecordProducer
from topology.admin import ensure_topics
from topology.app import create_app
from topology.settings import Settings

pytestmark = pytest.mark.integration

KEYS = [f"SYM{i:03d}" for i in range(60)] + ["EURUSD", "USDJPY", "GBPUSD", "XAUUSD"]


def _recorder() -> tuple[dict[str, int], object]:
    out: dict[str, int] = {}

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        out[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    return out, on_delivery


def _collector_partitions(settings: Settings, topic: str) -> dict[str, int]:
    """Through the producer path every collector uses."""
    out, on_delivery = _recorder()
    producer = RecordProducer(settings)
    for k in KEYS:
        producer.send_raw(topic, k, b"x", on_delivery=on_delivery)  # type: ignore[arg-type]
    assert producer.flush(15) == 0
    return out


def _librdkafka_default_partitions(settings: Settings, topic: str) -> dict[str, int]:
    out, on_delivery = _recorder()
    p = Producer(settings.confluent_config())
    for k in KEYS:
        p.produce(topic, key=k, value=b"x", on_delivery=on_delivery)
    assert p.flush(15) == 0
    return out


async def _faust_partitions(settings: Settings, topic: str) -> dict[str, int]:
    app = create_app(settings, web_enabled=False)
    app.producer_only = True
    await app.producer.start()
    try:
        t = app.topic(topic, key_type=bytes, value_type=bytes)
        futs = [await t.send(key=k.encode(), value=b"x") for k in KEYS]
        metas = await asyncio.gather(*futs)
        return {k: m.partition for k, m in zip(KEYS, metas, strict=True)}
    finally:
        await app.producer.stop()


def test_murmur2_matches_faust(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings)
    topic = kafka_settings.topic("ticks.raw")
    confluent = _collector_partitions(kafka_settings, topic)
    faust_side = asyncio.run(_faust_partitions(kafka_settings, topic))
    assert confluent == faust_side
    assert len(set(confluent.values())) == 4  # the keys spread over every partition
    # librdkafka's default partitioner disagrees: the setting is what makes parity hold.
    default = _librdkafka_default_partitions(kafka_settings, topic)
    assert default != faust_side
