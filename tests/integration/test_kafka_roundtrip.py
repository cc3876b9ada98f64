"""One record of every type through the real broker, encoded and decoded by the codec."""

from __future__ import annotations

import pytest

from connectors.producer import RecordProducer
from devstack.kafka_io import TopicReader
from schemas.codec import make_codec
from schemas.records import (
    Bar,
    CleanTick,
    ControlMessage,
    FeatureVector,
    MarketEvent,
    RawTick,
    Record,
    RejectedRecord,
    TradingCommand,
)
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
SAMPLES: list[tuple[str, str, Record]] = [
    ("ticks.raw", "EURUSD", RawTick(broker="ICM", symbol="EURUSD", bid=1.08501, ask=1.08503,
                                    last=None, volume=2.0, time_msc=T, recv_time_us=T * 1000 + 7,
                                    seq=42, source="MT5")),
    ("ticks.history", "USDJPY", RawTick(broker="DUKA", symbol="USDJPY", bid=151.201,
                                        ask=151.204, time_msc=T, recv_time_us=T * 1000,
                                        source="HISTORY")),
    ("ticks.clean", "EURUSD", CleanTick(broker="ICM", symbol="EURUSD", time_msc=T,
                                        recv_time_us=T * 1000, bid=1.085, ask=1.0851,
                                        mid=1.08505, spread=0.0001, best_bid=1.08502,
                                        best_ask=1.08507, best_bid_broker="PEP",
                                        best_ask_broker="ICM", fresh_brokers=3,
                                        dispersion=1.2e-5, seq=None,
                                        processed_time_us=T * 1000 + 900)),
    ("bars.m1", "EURUSD", Bar(symbol="EURUSD", bar_time=T - T % 60000, open=1.0850, high=1.0856,
                              low=1.0849, close=1.0853, bid_close=1.08525, ask_close=1.08535,
                              tick_count=311, mean_spread=0.00011, fresh_brokers=3,
                              dispersion=1e-5, trigger_recv_time_us=T * 1000)),
    ("features", "EURUSD", FeatureVector(symbol="EURUSD", bar_time=T - T % 60000, close=1.0853,
                                         sma_20=1.0851, ema_12=None, rsi_14=55.5,
                                         spread=0.0001, tick_count=311, dispersion=1e-5,
                                         fresh_brokers=3, minutes_to_next_event=42.0,
                                         news_count_1h=2, news_sentiment_1h=-0.25,
                                         trigger_recv_time_us=T * 1000)),
    ("trading.commands", "EURUSD", TradingCommand(command_id="c-1", action="BUY",
                                                  symbol="EURUSD", volume=0.1, price=1.0853,
                                                  stop_loss=1.0830, take_profit=1.0890,
                                                  confidence=0.71, model_version="v3",
                                                  reason="p_up=0.71>0.60", bar_time=T,
                                                  trigger_recv_time_us=T * 1000,
                                                  created_time_us=T * 1000 + 5)),
    ("events.calendar", "USD", MarketEvent(event_id="nfp-2024-01", kind="CALENDAR", currency="USD",
                                           currencies=["USD"], title="Non-Farm Payrolls",
                                           event_time_ms=T, published_ms=T - 86_400_000,
                                           impact="HIGH", forecast="180K", previous="199K",
                                           actual=None, source="calendar")),
    ("events.news", "EUR", MarketEvent(event_id="n-1", kind="NEWS", currency="EUR",
                                       currencies=["EUR", "USD"], title="ECB holds rates",
                                       event_time_ms=T, published_ms=T, sentiment=0.1,
                                       source="rss", url="https://example.invalid/ecb")),
    ("ticks.rejected", "EURUSD", RejectedRecord(original=b"\xc3\x01garbage", key=b"EURUSD",
                                                source_topic="ticks.raw", source_partition=3,
                                                source_offset=17, reason="malformed",
                                                detail="bad fingerprint", stage="decode",
                                                time_us=T * 1000)),
    ("control", "kill_switch", ControlMessage(command="kill_switch_on", reason="test",
                                              issued_by="ops", time_ms=T)),
]


def test_every_record_type_round_trips_through_kafka(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings)
    producer = RecordProducer(kafka_settings)
    for topic, key, record in SAMPLES:
        producer.send(topic, key, record)
    assert producer.flush() == 0
    names = {kafka_settings.topic(t) for t, _, _ in SAMPLES}
    with TopicReader(kafka_settings, sorted(names)) as reader:
        got = reader.read_until(lambda ms: len(ms) >= len(SAMPLES), timeout_s=20)
    assert len(got) == len(SAMPLES)
    codec = make_codec(None)
    by_topic = {m.topic: m for m in got}
    for topic, key, record in SAMPLES:
        m = by_topic[kafka_settings.topic(topic)]
        assert m.key == key.encode()
        assert codec.decode(m.value, type(record), m.topic) == record


def test_a_producer_never_creates_a_topic_and_delivers_once_it_exists(
        kafka_settings: Settings) -> None:
    # A broker that auto-creates would make ticks.raw with its own default partition count
    # (4 here), which the worker cannot use: the record must wait for the declared topic.
    from confluent_kafka.admin import AdminClient

    producer = RecordProducer(kafka_settings)
    topic, key, record = SAMPLES[0]
    producer.send(topic, key, record)
    assert producer.flush(timeout_s=3) == 1, "nothing to deliver to before the topic exists"
    admin = AdminClient(kafka_settings.confluent_config())
    assert kafka_settings.topic(topic) not in admin.list_topics(timeout=10).topics
    ensure_topics(kafka_settings)
    assert producer.flush(timeout_s=30) == 0
    parts = admin.list_topics(timeout=10).topics[kafka_settings.topic(topic)].partitions
    assert len(parts) == kafka_settings.partitions
    with TopicReader(kafka_settings, [kafka_settings.topic(topic)]) as reader:
        got = reader.read_until(lambda ms: len(ms) >= 1, timeout_s=20)
    assert [m.key for m in got] == [key.encode()]
