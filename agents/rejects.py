"""Dead-letter records: every input that is not passed on is accounted for here."""

from __future__ import annotations

import time

from schemas.records import RejectedRecord


def rejected(
    original: bytes,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    detail: str,
    stage: str,
) -> RejectedRecord:
    return RejectedRecord(
        original=original,
        key=key,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        detail=detail[:1000],
        stage=stage,
        time_us=time.time_ns() // 1000,
    )
