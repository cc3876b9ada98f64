"""Every Faust table, declared once: key, value, partitioning and the changelog it implies.

The declarations are plain data so that topic creation (which must create the changelog
topics explicitly, with the same partition count as the source topics) and ``describe``
see the same list as the app factory.
"""

from __future__ import annotations

from dataclasses import dataclass

from topology.settings import Settings


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    key: str
    value: str
    doc: str
    global_: bool = False  # global tables are replicated to every worker
    single_partition: bool = False

    def changelog(self, settings: Settings) -> str:
        """Faust's changelog topic name: ``{app_id}-{table}-changelog``."""
        return f"{settings.topic_prefix}{settings.app_id}-{self.name}-changelog"

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions


PIPELINE_STATE = TableSpec(
    "pipeline_state", "symbol", "SymbolState",
    "Per-symbol state of the fused stages: dedupe horizon, validator, broker quotes, "
    "open bar, indicator history, position",
)
BROKER_QUALITY = TableSpec(
    "broker_quality", "symbol", "BrokerQuality", "Per-broker feed quality statistics"
)
CONTEXT = TableSpec(
    "context", "currency", "CurrencyContext",
    "Calendar events and headlines per currency (global)", global_=True,
)
CONTROL_STATE = TableSpec(
    "control_state", "command", "ControlMessage",
    "Kill switch and current model (global)", global_=True, single_partition=True,
)

ALL_TABLES: tuple[TableSpec, ...] = (PIPELINE_STATE, BROKER_QUALITY, CONTEXT, CONTROL_STATE)
