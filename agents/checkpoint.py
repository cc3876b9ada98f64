"""The pipeline agent's checkpoint protocol: outputs safe, then state, then acks.

Per batch the agent sends its outputs without waiting and tells the :class:`Checkpointer`
what it processed. At most every ``interval_s`` (and when the input goes quiet, and at a
graceful stop) :meth:`Checkpointer.run`:

1. waits for the broker's acknowledgement of every output sent since the last checkpoint;
2. writes each touched symbol's state (``write_state(symbol, its last event)``);
3. only then acks the events processed since the last checkpoint.

So committed offsets never run ahead of the state, and the state never runs ahead of the
outputs: after a crash, what follows the last checkpoint is processed again and produces
the same outputs (at-least-once, identical re-emissions). No Faust import: the agent passes
the two callables that touch Faust.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any


class Checkpointer:
    """What was processed since the last checkpoint, and the order in which it is made safe."""

    __slots__ = ("_ack", "_clock", "_write_state", "at", "checkpoints", "dirty", "in_flight",
                 "interval_s", "publish_wait_s", "seconds", "unacked")

    def __init__(
        self,
        interval_s: float,
        write_state: Callable[[str, Any], None],
        ack: Callable[[list[Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._write_state = write_state
        self._ack = ack
        self._clock = clock
        self.at = clock()
        #: symbol -> its last event since the last checkpoint
        self.dirty: dict[str, Any] = {}
        #: events processed but not yet covered by a checkpoint
        self.unacked: list[Any] = []
        #: delivery futures of outputs sent since the last checkpoint
        self.in_flight: list[Awaitable[Any]] = []
        self.checkpoints = 0
        self.seconds = 0.0
        self.publish_wait_s = 0.0

    def processed(
        self, events: list[Any], last_event_of_symbol: Mapping[str, Any],
        deliveries: Iterable[Awaitable[Any]],
    ) -> None:
        """A batch went through the stages and its outputs were sent."""
        self.in_flight.extend(deliveries)
        self.dirty.update(last_event_of_symbol)
        self.unacked.extend(events)

    def sent(self, deliveries: Iterable[Awaitable[Any]], touched: Mapping[str, Any]) -> None:
        """Outputs sent outside a batch (idle bar closes): their symbols' state changed."""
        self.in_flight.extend(deliveries)
        self.dirty.update(touched)

    @property
    def pending(self) -> bool:
        return bool(self.unacked or self.dirty)

    def due(self) -> bool:
        return self._clock() - self.at >= self.interval_s

    async def run(self) -> None:
        """Make everything processed so far safe, in the order of the module docstring."""
        t0 = time.perf_counter()
        if self.in_flight:
            futures, self.in_flight = self.in_flight, []
            await asyncio.gather(*futures)
        self.publish_wait_s += time.perf_counter() - t0
        for symbol, event in self.dirty.items():
            self._write_state(symbol, event)
        self.dirty.clear()
        unacked, self.unacked = self.unacked, []
        self._ack(unacked)
        self.at = self._clock()
        self.checkpoints += 1
        self.seconds += time.perf_counter() - t0

    def forget(self) -> None:
        """Partitions revoked: nothing processed so far is ours to checkpoint any more
        (its next owner processes it again). Outputs already sent stay in flight."""
        self.dirty.clear()
        self.unacked.clear()
