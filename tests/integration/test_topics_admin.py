from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from topology.admin import TopicMismatchError, ensure_topics, planned_topics
from topology.settings import Settings
from topology.tables import ALL_TABLES
from topology.topics import ALL_TOPICS

pytestmark = pytest.mark.integration


def test_creates_every_declared_topic_with_its_partitions(kafka_settings: Settings) -> None:
    created = ensure_topics(kafka_settings)
    plan = planned_topics(kafka_settings)
    assert sorted(created) == sorted(p.name for p in plan)
    assert len(plan) == len(ALL_TOPICS) + len(ALL_TABLES)
    meta = AdminClient(kafka_settings.confluent_config()).list_topics(timeout=10)
    for p in plan:
        assert len(meta.topics[p.name].partitions) == p.partitions, p.name
    assert len(meta.topics[kafka_settings.topic("control")].partitions) == 1
    assert len(meta.topics[kafka_settings.topic("ticks.raw")].partitions) == 4
    assert ensure_topics(kafka_settings) == []  # idempotent


def test_partition_mismatch_is_a_clear_startup_error(kafka_settings: Settings) -> None:
    admin = AdminClient(kafka_settings.confluent_config())
    wrong = kafka_settings.topic("ticks.clean")
    admin.create_topics([NewTopic(wrong, num_partitions=2, replication_factor=1)])[wrong].result(10)
    with pytest.raises(TopicMismatchError) as err:
        ensure_topics(kafka_settings)
    assert wrong in str(err.value)
    assert "has 2 partitions, declared 4" in str(err.value)
