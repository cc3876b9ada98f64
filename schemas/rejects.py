"""The one way a dead letter is made, for the agents and the collectors alike."""

from __future__ import annotations

import time

from schemas.records import RejectedRecord

#: Longest detail text kept in a dead letter (the original bytes are always kept whole).
MAX_DETAIL = 1000


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
    """A :class:`RejectedRecord` for input that is not passed on: its exact bytes, where it
    came from (collectors name themselves as ``collector:KIND:NAME``, partition and offset
    -1), a stable reason code and a human-readable detail."""
    return RejectedRecord(
        original=original,
        key=key,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        detail=detail[:MAX_DETAIL],
        stage=stage,
        time_us=time.time_ns() // 1000,
    )
