"""Dead-letter records: every input that is not passed on is accounted for here."""

from __future__ import annotations

from typing import Any

from schemas.rejects import rejected


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
