"""Dead-letter records: every input that is not passed on is accounted for here."""

from __future__ import annotations

import time
from typing import Any

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


class DeadLetters:
    """Sends a Faust event that an agent cannot use to ``ticks.rejected``, bytes intact."""

    def __init__(self, topic: Any, physical: str, codec: Any, stage: str) -> None:
        self.topic = topic
        self.physical = physical
        self.codec = codec
        self.stage = stage

    async def send(self, event: Any, reason: str, detail: str) -> None:
        m = event.message
        rec = rejected(event.value, event.key, m.topic, m.partition, m.offset, reason, detail,
                       self.stage)
        await self.topic.send(key=event.key, value=self.codec.encode(rec, self.physical))
