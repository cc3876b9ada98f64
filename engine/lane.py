"""A topic's fetched records handed straight to its one agent: no Event, no conductor.

For every record Faust's drain loop awaits the conductor's handler, which takes the flow
control, checks the producer buffer (a settings lookup per record), decodes key and value
through the serializer registry, builds an ``Event`` and puts it on the agent's channel
queue; the agent later acks the event, which calls the stream sensors. py-spy of a worker
catching up on real ticks put that machinery at about a quarter of the worker's main
thread (``docs/platform-notes.md``). For a topic that only the pipeline agent reads, whose
records are raw bytes, none of it does anything the agent needs.

A :class:`MessageLane` is registered for such a topic (``app.tickstream_lanes``); the
consumer's drain loop (:mod:`engine.transport`) appends the topic's ``ConsumerMessage``
objects to it instead of calling the conductor, and :func:`engine.take.take_ready` hands
them to the agent in batches. What the conductor did that matters is kept:

* **flow control** — nothing enters the lane while the consumer's flow is suspended (a
  rebalance or a seek), as the drain loop's ``wait_first`` abandons the conductor's call
  then; the lane is managed by ``app.flow_control`` and cleared when the flow resumes, as
  the channel queues are;
* **back-pressure** — past ``maxsize / 1.25`` records the partition is taken out of the
  fetch set (``Consumer.on_buffer_full``) and put back once the lane is down to
  ``maxsize * 0.4`` (``on_buffer_drop``), the thresholds of Faust's ``FlowControlQueue``;
  at ``maxsize`` the drain loop waits for room, as it waits on a full channel queue;
* **reference counting** — each message is increfed once, so acking it (``Message.ack``)
  makes its offset committable exactly as acking its event did;
* **the producer buffer** — checked once per handed-over run of records, not per record.

The lane is only used when the agent's topic has no other subscriber in the app
(:func:`lane_topics`); otherwise the conductor delivers as before.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from faust.transport.consumer import ensure_TP

#: Faust's ``FlowControlQueue`` thresholds (``mode/utils/queues.py``).
PRESSURE_HIGH_RATIO = 1.25
PRESSURE_DROP_RATIO = 0.40


class MessageLane:
    """A bounded FIFO of consumer messages between the drain loop and one agent."""

    def __init__(self, topic: str, maxsize: int,
                 on_full: Callable[[Any], None] | None = None,
                 on_drop: Callable[[Any], None] | None = None) -> None:
        if maxsize < 2:
            raise ValueError(f"lane maxsize must be at least 2, got {maxsize}")
        self.topic = topic
        self.maxsize = maxsize
        self.high = math.floor(maxsize / PRESSURE_HIGH_RATIO)
        self.low = math.floor(maxsize * PRESSURE_DROP_RATIO)
        self.on_full = on_full
        self.on_drop = on_drop
        self.items: deque[Any] = deque()
        self.paused: set[Any] = set()  # partitions taken out of the fetch set by us
        self._ready: asyncio.Future[None] | None = None  # the taker waits on it
        self._room: asyncio.Future[None] | None = None  # the drain loop waits on it
        #: Messages handed over so far (diagnostics and tests).
        self.put_count = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self.items)

    def full(self) -> bool:
        return len(self.items) >= self.maxsize

    def put(self, message: Any, incref: bool = True) -> None:
        """Append ``message``, increfed once (its ack is the agent's) unless it comes from
        the conductor, which has increfed it already. Never blocks; the caller awaits
        :meth:`wait_room` when :meth:`full`."""
        if incref:
            message.refcount += 1
        items = self.items
        items.append(message)
        self.put_count += 1
        if len(items) >= self.high:
            tp = ensure_TP(message.tp)  # Faust's TP: the consumer asserts that type
            if tp not in self.paused:
                self.paused.add(tp)
                if self.on_full is not None:
                    self.on_full(tp)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def close(self) -> None:
        """No more messages will come (the agent's channel was closed)."""
        self.closed = True
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def wait_ready(self) -> None:
        """Until the lane holds a message, or is closed."""
        while not self.items and not self.closed:
            fut = self._ready = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._ready = None

    async def wait_room(self) -> None:
        """Until the lane is below ``maxsize`` (the drain loop, on a full lane)."""
        while self.full():
            fut = self._room = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._room = None

    def take(self, most: int) -> list[Any]:
        """Up to ``most`` messages, oldest first; wakes a waiting drain loop and puts
        partitions back in the fetch set once the lane is down to the low mark."""
        items = self.items
        n = min(most, len(items))
        popleft = items.popleft
        out = [popleft() for _ in range(n)]
        self._after_take()
        return out

    def clear(self) -> None:
        """Drop what is held (``app.flow_control`` calls this when the flow resumes, as it
        clears the channel queues). Like a cleared queue, it fires no drop callback: the
        consumer's seek puts the partitions held for a full buffer back
        (:meth:`engine.transport._Consumer.perform_seek`)."""
        self.items.clear()
        self.paused.clear()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _after_take(self) -> None:
        room = self._room
        if room is not None and not room.done() and not self.full():
            room.set_result(None)
        if self.paused and len(self.items) <= self.low:
            paused = list(self.paused)
            self.paused.clear()
            if self.on_drop is not None:
                for tp in paused:
                    self.on_drop(tp)


def lane_topics(app: Any) -> dict[str, MessageLane]:
    """The registered lanes whose topic no other channel of ``app`` subscribes to.

    A topic read by two agents must go through the conductor (it delivers to every
    subscriber); a lane there would starve the others, so it is left out (and the agent
    gets the topic's events from its channel, as without lanes).
    """
    lanes: dict[str, MessageLane] = getattr(app, "tickstream_lanes", None) or {}
    if not lanes:
        return {}
    readers: dict[str, int] = {}
    for channel in list(app.topics):
        for name in getattr(channel, "topics", ()) or ():
            readers[name] = readers.get(name, 0) + 1
    return {t: lane for t, lane in lanes.items() if readers.get(t, 0) == 1}
