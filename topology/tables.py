"""Every Faust table, declared once: key, value, partitioning and the changelog it implies.

The declarations are plain data so that topic creation (which must create the changelog
topics explicitly, with the same partition count as the source topics) and ``describe``
see the same list as the app factory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topology.settings import Settings


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    key: str
    value: str
    doc: str
    global_: bool = False  # global tables are replicated to every worker
    single_partition: bool = False
    # Small global tables live in memory and are rebuilt from their changelog at start-up;
    # writes pick the changelog partition by key (use_partitioner), not by source event.
    memory: bool = False

    def changelog(self, settings: Settings) -> str:
        """Faust's changelog topic name: ``{app_id}-{table}-changelog``.

        Faust names changelogs after the app id alone (the topic prefix does not apply);
        the app id is what keeps two deployments on one cluster apart.
        """
        return f"{settings.app_id}-{self.name}-changelog"

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions


PIPELINE_STATE = TableSpec(
    "pipeline_state", "symbol", "SymbolState",
    "Per-symbol state of the fused stages: dedupe horizon, validator, broker quotes, "
    "open bar, indicator history, position",
)
DEDUPE_SEGMENTS = TableSpec(
    "dedupe_segments", "symbol/segment", "DedupeSegment",
    "The dedupe window in 10 s segments of event time, written only when changed; "
    "pipeline_state names each live segment and its length at the checkpoint",
)
BROKER_QUALITY = TableSpec(
    "broker_quality", "symbol", "BrokerQuality",
    "Per-broker feed quality per symbol (ticks/s, spread, latency, gaps, duplicate and "
    "reject rates, uptime, score), refreshed about once a second for health and dashboards",
)
CONTEXT = TableSpec(
    "context", "currency", "CurrencyContext",
    "Calendar events and headlines per currency (global: every worker joins every pair)",
    global_=True, single_partition=True, memory=True,
)
CONTROL_STATE = TableSpec(
    "control_state", "command", "ControlState",
    "Kill switch and announced model (global: every worker obeys it, survives restarts)",
    global_=True, single_partition=True, memory=True,
)

COLLECTOR_HEALTH = TableSpec(
    "collector_health", "collector", "CollectorHealth",
    "Latest health report of every collector (global: any worker's /health/ shows them all)",
    global_=True, single_partition=True, memory=True,
)

ALL_TABLES: tuple[TableSpec, ...] = (
    PIPELINE_STATE, DEDUPE_SEGMENTS, BROKER_QUALITY, CONTEXT, CONTROL_STATE, COLLECTOR_HEALTH,
)


def make_table(app: Any, spec: TableSpec, settings: Settings) -> Any:
    """A bytes→bytes Faust table for ``spec`` (values are JSON or Avro encoded by the agent)."""
    kwargs: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "partitions": spec.partitions(settings),
        "help": spec.doc,
    }
    if spec.memory:
        # A GlobalTable over several workers needs one partition and a recovery buffer of
        # one to avoid Faust's recovery loop (faust/tables/globaltable.py docstring).
        kwargs.update(store="memory://", use_partitioner=True, recovery_buffer_size=1)
    factory = app.GlobalTable if spec.global_ else app.Table
    return factory(spec.name, **kwargs)
