"""Retention by subscription tier: whole day partitions older than the tier's days go.

Tiers (the seeds' storage policy): free 7 days, pro 90, enterprise 365. Each table has a
tier (``TICKSTREAM_STORE_TIER`` for all, ``TICKSTREAM_STORE_TIERS`` per table). A day
partition is dropped when the whole day lies before the cutoff day (``today - days``), so
a table always keeps at least ``days`` complete days. ``ALTER TABLE ... DROP PARTITION`` is
instant and the same on 18.16 and current ClickHouse; there is deliberately no TTL (18.16
lacks it, and a tier change would have to rewrite every table's TTL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from storage.backend import Backend, quote
from storage.errors import StorageError
from storage.schema import BY_NAME, TABLES

log = logging.getLogger(__name__)

TIERS: Mapping[str, int] = {"free": 7, "pro": 90, "enterprise": 365}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_tier: str = "free"
    per_table: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tier in (self.default_tier, *self.per_table.values()):
            if tier not in TIERS:
                raise StorageError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        for table in self.per_table:
            if table not in BY_NAME:
                raise StorageError(
                    f"unknown table {table!r}; expected one of {', '.join(BY_NAME)}"
                )

    def tier(self, table: str) -> str:
        return self.per_table.get(table, self.default_tier)

    def days(self, table: str) -> int:
        return TIERS[self.tier(table)]


def cutoff_day(days: int, now_s: float) -> int:
    """``YYYYMMDD`` of the oldest day kept."""
    day = datetime.fromtimestamp(now_s, UTC).date() - timedelta(days=days)
    return day.year * 10_000 + day.month * 100 + day.day


def day_partitions(backend: Backend, table: str) -> list[int]:
    """The day partitions (``YYYYMMDD``) that hold active parts of ``table``."""
    res = backend.query(
        f"SELECT DISTINCT partition_id FROM system.parts WHERE database = "
        f"{quote(backend.database)} AND table = {quote(table)} AND active"
    )
    return sorted(int(r[0]) for r in res.rows)


def expired_partitions(backend: Backend, table: str, days: int, now_s: float) -> list[int]:
    cut = cutoff_day(days, now_s)
    return [p for p in day_partitions(backend, table) if p < cut]


def apply_retention(
    backend: Backend, policy: RetentionPolicy, now_s: float | None = None, dry_run: bool = False
) -> dict[str, list[int]]:
    """Drop every expired day partition of every table; returns table -> days dropped."""
    now = time.time() if now_s is None else now_s
    dropped: dict[str, list[int]] = {}
    for table in TABLES:
        expired = expired_partitions(backend, table.name, policy.days(table.name), now)
        for day in expired if not dry_run else ():
            backend.execute(f"ALTER TABLE {backend.database}.{table.name} DROP PARTITION {day}")
        if expired:
            log.info("retention %s (%s, %d days): %s %s", table.name, policy.tier(table.name),
                     policy.days(table.name), "would drop" if dry_run else "dropped", expired)
        dropped[table.name] = expired
    return dropped
