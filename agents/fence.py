"""Which events the pipeline agent may process: the partition fence.

Two rules, kept here with no Faust import so they can be tested with plain values:

* **Revocation.** Events of a partition taken from this worker by a rebalance may still sit
  in a batch already taken from the stream: the partition's new owner processes them, so
  they are neither processed nor acked here (their state would go into a changelog
  partition that worker owns now). A partition assigned back is processed again.
* **Replays.** A symbol's stored state records, per source partition, the offset of the
  last event it reflects. After a restart the consumer resumes at the committed offset,
  which may be behind: events at or below the recorded offset *of the same partition* are
  replays whose outputs are already on the broker, and are skipped. Offsets of different
  partitions are never compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class SourceTP(NamedTuple):
    """A source topic-partition (Faust's ``TP`` has the same shape and compares equal)."""

    topic: str
    partition: int


class PartitionFence:
    """Revoked partitions and, per symbol, the last offset processed in each partition."""

    __slots__ = ("_offsets", "revoked")

    def __init__(self) -> None:
        self.revoked: set[tuple[str, int]] = set()
        self._offsets: dict[str, dict[Any, int]] = {}

    # ---- rebalances ---------------------------------------------------------------------
    def revoke(self, tps: Iterable[Any]) -> None:
        """Partitions taken from us: their buffered events are skipped from now on, and every
        symbol's offsets are forgotten (they come back with the symbol's stored state)."""
        self.revoked.update((tp.topic, tp.partition) for tp in tps)
        self._offsets.clear()

    def assign(self, tps: Iterable[Any]) -> None:
        """Partitions given (back) to us: their events are processed again."""
        self.revoked.difference_update((tp.topic, tp.partition) for tp in tps)

    def mine(self, messages: list[Any]) -> list[Any]:
        """``messages`` without those of revoked partitions (the list itself when none is)."""
        if not self.revoked:
            return messages
        revoked = self.revoked
        return [m for m in messages if (m.topic, m.partition) not in revoked]

    # ---- replays ------------------------------------------------------------------------
    def restore(self, symbol: str, stored: Mapping[str, Any], tp: Any) -> None:
        """Take a symbol's offsets from its stored state record.

        States written before offsets were kept per partition hold one ``offset``: it is
        the partition the symbol's events come from, the one ``tp`` is being read now.
        """
        offsets = stored.get("offsets")
        if offsets is None:
            self._offsets[symbol] = {tp: int(stored["offset"])}
        else:
            self._offsets[symbol] = {
                SourceTP(str(topic), int(part)): int(off) for topic, part, off in offsets
            }

    def admit(self, symbol: str, tp: Any, offset: int) -> bool:
        """False for a replay (at or below the symbol's last offset in ``tp``); otherwise
        the offset becomes the symbol's last one in ``tp`` and True is returned."""
        seen = self._offsets.get(symbol)
        if seen is None:
            seen = self._offsets[symbol] = {}
        elif offset <= seen.get(tp, -1):
            return False
        seen[tp] = offset
        return True

    def offsets(self, symbol: str) -> list[list[Any]]:
        """``[[topic, partition, offset], ...]`` for the symbol's stored state record."""
        return [[tp.topic, tp.partition, off] for tp, off in self._offsets.get(symbol, {}).items()]

    def forget(self) -> None:
        self._offsets.clear()
