"""Batches of the events that are ready now, taken straight from the stream's channel queue.

Faust's ways to take batches (``Stream.take``, ``noack_take``) run every event through the
stream iterator, and the iterator (``faust/_cython/streams.pyx``, ``StreamIterator.next``)
does ``await asyncio.sleep(0)`` before *each* event: one full event-loop iteration (an epoll
poll and every ready callback) per event. With a batch of 64 that is 64 loop passes to
gather what is already in memory. Measured with an agent that only takes and acks (ad-hoc
script, method in ``docs/platform-notes.md``): 31k events/s through ``noack_take``-style
taking, 57k/s taken from the queue as here.

:func:`take_ready` reads the agent's channel queue (the ``ThrowableQueue`` the conductor
fills) itself and does, per batch, what the stream iterator does per event before handing
an event to its caller (``StreamIterator._prepare_event``):

* events delivered under an older consumer generation, or while the flow is suspended for
  a rebalance, are skipped (their partitions are fetched again by whoever owns them);
* each message is tracked as pending ack with the consumer (``Consumer.track_message``),
  so acking it later moves the committed offset, exactly as for a stream's own events.

* the stream's processors (``Stream.add_processor``; none in the worker, Faust's
  ``agent.test_context()`` adds one to observe consumption) see each event's value.

What it leaves out are the per-event stream sensors (``on_stream_event_in``), which only
feed Faust's monitor statistics. Acks are the caller's (``await stream.ack(event)``), as
with ``noack_take``.

Batching: it waits for one event, takes whatever else is queued, then lets the loop run
(the drain loop hands over the rest of the fetched records, up to 100 per pass) and takes
again, until a pass adds nothing, ``max_`` is reached or ``max_rounds`` passes were made.
Under a backlog batches fill up to ``max_``; at a low rate an event is yielded as soon as
the records fetched with it are in, with no timer. Nothing is taken while the caller
works on a batch: the queue (bounded by the stream buffer size, with Faust's pressure
callbacks pausing the partition when it fills) holds the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from mode.utils.futures import maybe_async


async def take_ready(stream: Any, max_: int, max_rounds: int = 64) -> AsyncIterator[list[Any]]:
    """Yield lists of events (unacked, tracked for acking) from ``stream``: see above."""
    if max_ < 1:
        raise ValueError(f"max_ must be >= 1, got {max_}")
    app = stream.app
    aiter(stream.channel)  # subscribes the agent's channel, as iterating the stream would
    queue = stream.channel.queue
    flow = app.flow_control
    track = app.consumer.track_message
    acks_enabled_for = app.topics.acks_enabled_for
    stream.enable_acks = False  # the caller acks (nothing iterates the stream itself)
    processors = stream._processors
    sleep = asyncio.sleep
    while not stream.should_stop:
        try:
            batch = [await queue.get()]
        except StopAsyncIteration:  # the channel was closed (Faust's iterator returns too)
            return
        rounds = 0
        while True:
            room = max_ - len(batch)
            try:
                while room and not queue.empty():
                    batch.append(queue.get_nowait())
                    room -= 1
            except StopAsyncIteration:
                room = 0  # closed after these: hand them over, then stop at the next get
            if not room or rounds >= max_rounds:
                break
            await sleep(0)
            rounds += 1
            if queue.empty():
                break
        generation = app.consumer_generation_id
        active = flow.is_active()
        ready = []
        for event in batch:
            message = event.message
            if not active or message.generation_id != generation:
                continue  # stale: delivered before a rebalance we have since gone through
            if not message.tracked and acks_enabled_for(message.topic):
                message.tracked = True
                track(message)
            ready.append(event)
        if processors:
            for event in ready:
                value = event.value
                for processor in processors:
                    value = await maybe_async(processor(value))
        if ready:
            yield ready


def ack_all(stream: Any, events: list[Any]) -> None:
    """``await stream.ack(event)`` for each of ``events``, without a coroutine per event.

    ``Stream.ack`` (faust-streaming 0.15) awaits nothing: it acks the event's message (the
    offset becomes committable once every stream holding it has acked) and calls the stream
    sensors. This is that body in a loop; at a checkpoint of 20k events the coroutine per
    event was most of the ack cost.
    """
    on_event_out = stream._on_stream_event_out
    on_message_out = stream._on_message_out
    for event in events:
        message = event.message
        last = event.ack()
        on_event_out(message.tp, message.offset, stream, event)
        if last:
            on_message_out(message.tp, message.offset, message)
