"""Explicit topic creation and verification at start-up.

Topics are never left to broker auto-creation: an auto-created topic gets the broker's
default partition count, which breaks co-partitioning of ``ticks.raw`` with the table
changelogs (Faust then fails with PartitionsMismatch deep inside a rebalance). We create
every declared topic with its declared partition count and configs, and refuse to start if
an existing topic disagrees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from topology.settings import Settings
from topology.tables import ALL_TABLES
from topology.topics import ALL_TOPICS

log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """An existing topic has a different partition count than declared."""


@dataclass(frozen=True, slots=True)
class PlannedTopic:
    name: str
    partitions: int
    config: dict[str, str]


def planned_topics(settings: Settings) -> list[PlannedTopic]:
    """Every physical topic the deployment needs: declared topics plus table changelogs."""
    plan = [
        PlannedTopic(settings.topic(t.name), t.partitions(settings), t.config())
        for t in ALL_TOPICS
    ]
    plan += [
        PlannedTopic(t.changelog(settings), t.partitions(settings), {"cleanup.policy": "compact"})
        for t in ALL_TABLES
    ]
    return plan


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics, verify existing ones. Returns the names created.

    Raises :class:`TopicMismatchError` naming every topic whose partition count differs.
    """
    return create_planned(settings, planned_topics(settings), timeout_s)


def create_planned(
    settings: Settings, plan: list[PlannedTopic], timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics of ``plan`` and verify the partition counts of the rest."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from connectors.kafka_tls import check_broker_tls

    check_broker_tls(settings)  # a CA that cannot work: one clear error, not a log flood
    from connectors.kafka_log import with_client_logging

    admin = AdminClient(with_client_logging(settings.confluent_config()))
    existing = admin.list_topics(timeout=timeout_s).topics
    mismatched = [
        f"{p.name}: has {len(existing[p.name].partitions)} partitions, declared {p.partitions}"
        for p in plan
        if p.name in existing and len(existing[p.name].partitions) != p.partitions
    ]
    if mismatched:
        raise TopicMismatchError(
            "existing topics disagree with the declared partition counts "
            "(delete them or set TICKSTREAM_PARTITIONS to match): " + "; ".join(mismatched)
        )
    missing = [p for p in plan if p.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                p.name,
                num_partitions=p.partitions,
                replication_factor=settings.replication_factor,
                config=p.config,
            )
            for p in missing
        ],
        request_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() != "TOPIC_ALREADY_EXISTS":  # a concurrent worker won the race
                raise
    for name in created:
        log.info("created topic %s", name)
    return created
