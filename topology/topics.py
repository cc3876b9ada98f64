"""Every topic tickstream reads or writes, declared once with key, value, partitions, retention.

These are plain declarations (no faust import) so the CLI, the admin code that creates
topics, ``describe`` and the app factory all read the same list. The key of every tick
topic is the symbol, so every broker's quotes of one symbol land on one partition and one
worker sees them all: that is what makes the multi-broker join a local table lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from topology.settings import Settings

DAY_MS = 86_400_000
Cleanup = Literal["delete", "compact"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    value: str  # Avro record name in schemas/
    doc: str
    retention_ms: int = 7 * DAY_MS  # -1 keeps forever
    cleanup: Cleanup = "delete"
    single_partition: bool = False  # control topics: one partition keeps global order

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions

    def config(self) -> dict[str, str]:
        """Broker topic configs set explicitly (Tansu's DescribeConfigs shows only these)."""
        conf: dict[str, str] = {"cleanup.policy": self.cleanup}
        if self.cleanup == "delete":
            conf["retention.ms"] = str(self.retention_ms)
        return conf


TICKS_RAW = TopicSpec("ticks.raw", "symbol", "RawTick", "Raw quotes from every collector")
TICKS_HISTORY = TopicSpec(
    "ticks.history", "symbol", "RawTick", "Historical ticks for replay and training",
    retention_ms=-1,
)
EVENTS_CALENDAR = TopicSpec(
    "events.calendar", "currency", "MarketEvent", "Economic calendar events",
    retention_ms=90 * DAY_MS,
)
EVENTS_NEWS = TopicSpec(
    "events.news", "currency", "MarketEvent", "News headlines with sentiment",
    retention_ms=90 * DAY_MS,
)
TICKS_REJECTED = TopicSpec(
    "ticks.rejected", "symbol", "RejectedRecord",
    "Dead letters: original bytes with reason code", retention_ms=30 * DAY_MS,
)
TICKS_CLEAN = TopicSpec(
    "ticks.clean", "symbol", "CleanTick", "Validated ticks with consolidated best bid/offer"
)
BARS_M1 = TopicSpec(
    "bars.m1", "symbol", "Bar", "One-minute bars by event time", retention_ms=365 * DAY_MS
)
FEATURES = TopicSpec(
    "features", "symbol", "FeatureVector", "Indicators and context per bar",
    retention_ms=365 * DAY_MS,
)
TRADING_COMMANDS = TopicSpec(
    "trading.commands", "symbol", "TradingCommand", "Orders for the execution client",
    retention_ms=30 * DAY_MS,
)
CONTROL = TopicSpec(
    "control", "command", "ControlMessage", "Kill switch and model announcements",
    cleanup="compact", single_partition=True,
)

COLLECTORS_HEALTH = TopicSpec(
    "collectors.health", "collector", "CollectorHealth",
    "Latest health report of every collector process", cleanup="compact",
    single_partition=True,
)

COLLECTORS_POSITIONS = TopicSpec(
    "collectors.positions", "collector", "position (JSON)",
    "Last delivered position of every resumable collector (read back at start-up)",
    cleanup="compact", single_partition=True,
)

HISTORY_MANIFEST = TopicSpec(
    "history.manifest", "topic/fingerprint", "load record (JSON)",
    "What `tickstream load` put into which topic (read back to skip a file loaded before)",
    cleanup="compact", single_partition=True,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TICKS_RAW,
    TICKS_HISTORY,
    EVENTS_CALENDAR,
    EVENTS_NEWS,
    TICKS_REJECTED,
    TICKS_CLEAN,
    BARS_M1,
    FEATURES,
    TRADING_COMMANDS,
    CONTROL,
    COLLECTORS_HEALTH,
    COLLECTORS_POSITIONS,
    HISTORY_MANIFEST,
)

BY_NAME = {t.name: t for t in ALL_TOPICS}
