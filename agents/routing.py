"""Where the pipeline agent's outputs go: records per output topic, dead letters.

Encoders are bound once per output (header and writer), keys are cached per symbol, and
everything is appended to the :class:`~engine.publish.BatchPublisher` (one record batch
per topic-partition, sent by :meth:`OutputRouter.flush`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from schemas.records import Record

#: Output name -> the ``Outputs`` field holding its records, in publishing order.
OUTPUT_FIELDS = (("ticks.clean", "clean"), ("bars.m1", "bars"), ("features", "features"),
                 ("trading.commands", "commands"))
DEAD_LETTERS = "ticks.rejected"


class Publisher(Protocol):
    def add(self, topic: str, key: bytes | None, value: bytes) -> None: ...
    async def flush(self) -> Sequence[Awaitable[Any]]: ...


class OutputRouter:
    """Encodes records for their physical topics and hands them to the publisher."""

    __slots__ = ("_codec", "_encoders", "_physical", "_publisher", "keys", "published")

    def __init__(self, publisher: Publisher, codec: Any, physical: Mapping[str, str]) -> None:
        self._publisher = publisher
        self._codec = codec
        self._physical = dict(physical)  # output name -> physical topic name
        self._encoders: dict[str, Callable[[Record], bytes]] = {}
        #: symbol -> its record key (bytes), shared with the agent's key check
        self.keys: dict[str, bytes] = {}
        #: records handed to the publisher per output name
        self.published: dict[str, int] = {}

    def key(self, symbol: str) -> bytes:
        k = self.keys.get(symbol)
        if k is None:
            k = self.keys[symbol] = symbol.encode()
        return k

    def publish(self, out: Any) -> None:
        """Every record in ``out`` (a ``stages.pipeline.Outputs``) but its rejects."""
        add = self._publisher.add
        keys = self.keys
        for name, attr in OUTPUT_FIELDS:
            records = getattr(out, attr)
            if not records:
                continue
            physical = self._physical[name]
            encode = self._encoders.get(name)
            if encode is None:
                encode = self._encoders[name] = self._codec.encoder(records[0].SCHEMA, physical)
            for rec in records:
                symbol = rec.symbol
                key = keys.get(symbol)
                if key is None:
                    key = keys[symbol] = symbol.encode()
                add(physical, key, encode(rec))
            self.published[name] = self.published.get(name, 0) + len(records)

    def dead_letter(self, record: Record, key: bytes | None) -> None:
        physical = self._physical[DEAD_LETTERS]
        self._publisher.add(physical, key, self._codec.encode(record, physical))
        self.published[DEAD_LETTERS] = self.published.get(DEAD_LETTERS, 0) + 1

    async def flush(self) -> Sequence[Awaitable[Any]]:
        """Send what was added; the delivery futures are awaited at the next checkpoint."""
        return await self._publisher.flush()
