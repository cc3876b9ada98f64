"""Batches of the messages that are ready now, taken from the agent's lane.

Faust's ways to take batches (``Stream.take``, ``noack_take``) run every event through the
stream iterator, and the iterator (``faust/_cython/streams.pyx``, ``StreamIterator.next``)
does ``await asyncio.sleep(0)`` before *each* event: one full event-loop iteration (an epoll
poll and every ready callback) per event. With a batch of 64 that is 64 loop passes to
gather what is already in memory. Measured with an agent that only takes and acks (ad-hoc
script, method in ``docs/platform-notes.md``): 31k events/s through ``noack_take``-style
taking, 57k/s taken from the queue as here.

:func:`take_ready` reads the agent's :class:`~engine.lane.MessageLane`, which the
consumer's drain loop fills with the topic's ``ConsumerMessage`` objects (no ``Event`` is
built: see :mod:`engine.lane`). Whatever arrives on the agent's channel instead (Faust's
``agent.test_context()``, or a topic another agent reads too, which the conductor
delivers) is forwarded into the same lane as its event's message, so the agent sees one
kind of item either way. Per batch it does what the stream iterator does per event before
handing an event to its caller (``StreamIterator._prepare_event``):

* events delivered under an older consumer generation, or while the flow is suspended for
  a rebalance, are skipped (their partitions are fetched again by whoever owns them);
* each message is tracked as pending ack with the consumer (``Consumer.track_message``),
  so acking it later moves the committed offset, exactly as for a stream's own events.

* the stream's processors (``Stream.add_processor``; none in the worker, Faust's
  ``agent.test_context()`` adds one to observe consumption) see each event's value.

What it leaves out are the per-event stream sensors (``on_stream_event_in``), which only
feed Faust's monitor statistics. Acks are the caller's (:func:`ack_all`), as with
``noack_take``.

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
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import maybe_async, notify

from engine.lane import MessageLane


async def take_ready(stream: Any, max_: int, *, lane: MessageLane | None = None,
                     max_rounds: int = 64) -> AsyncIterator[list[Any]]:
    """Yield lists of messages (unacked, tracked for acking) from ``lane`` (a private
    one when ``None``) and from ``stream``'s channel: see above."""
    if max_ < 1:
        raise ValueError(f"max_ must be >= 1, got {max_}")
    app = stream.app
    if lane is None:
        lane = MessageLane(str(stream.channel), max(2, int(app.conf.stream_buffer_maxsize)))
    aiter(stream.channel)  # subscribes the agent's channel, as iterating the stream would
    stream.enable_acks = False  # the caller acks (nothing iterates the stream itself)
    forwarder = asyncio.ensure_future(_forward(stream, lane))
    flow = app.flow_control
    track = app.consumer.track_message
    acks_enabled_for = app.topics.acks_enabled_for
    processors = stream._processors
    sleep = asyncio.sleep
    try:
        while not stream.should_stop:
            await lane.wait_ready()
            if not lane.items:  # closed and drained
                return
            batch = lane.take(max_)
            rounds = 0
            while len(batch) < max_ and rounds < max_rounds:
                # Let the drain loop hand over the rest of what was fetched (up to 100
                # records per pass), then take again until a pass adds nothing.
                await sleep(0)
                rounds += 1
                if not lane.items:
                    break
                batch.extend(lane.take(max_ - len(batch)))
            generation = app.consumer_generation_id
            active = flow.is_active()
            ready = []
            for message in batch:
                if not active or message.generation_id != generation:
                    continue  # stale: delivered before a rebalance we have since gone through
                if not message.tracked and acks_enabled_for(message.topic):
                    message.tracked = True
                    track(message)
                ready.append(message)
            if processors:
                for message in ready:
                    value = message.value
                    for processor in processors:
                        value = await maybe_async(processor(value))
            if ready:
                yield ready
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwarder


async def _forward(stream: Any, lane: MessageLane) -> None:
    """Events the conductor puts on the agent's channel go into the lane as messages (the
    conductor has increfed them)."""
    queue = stream.channel.queue
    try:
        while True:
            event = await queue.get()
            if lane.full():
                await lane.wait_room()
            lane.put(event.message, incref=False)
    except StopAsyncIteration:  # the channel was closed (Faust's iterator returns too)
        lane.close()


def ack_all(messages: list[Any], consumer: Any) -> None:
    """Ack each of ``messages``: what ``Message.ack`` and, for the final holder of a
    ``ConsumerMessage``, ``Consumer.ack`` do (faust-streaming 0.15,
    ``faust/types/tuples.py`` and ``faust/transport/consumer.py``), in one loop under one
    hold of Faust's ``ack_lock``: the offset joins the partition's acked offsets (so it
    becomes committable), the message leaves the unacked set, the ack counter that drives
    ``commit_every`` moves, and a waiter for acks is woken once. ``Stream.ack`` adds the
    stream sensors (Faust's monitor statistics) and a coroutine per message; neither is
    wanted here. At a checkpoint of a backlog (tens of thousands of messages) the three
    lock holds and the calls per message were ~5% of the worker's main thread.
    ``tests/unit/engine/test_take_ready.py`` checks the consumer's state against
    ``Consumer.ack``'s."""
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    committed_of = consumer._committed_offset
    acked_index_of = consumer._acked_index
    acked_of = consumer._acked
    unacked = consumer._unacked_messages
    n_acked = 0
    with ack_lock:
        try:
            for message in messages:
                if message.acked:
                    continue
                refcount = message.refcount = max(message.refcount - 1, 0)
                if refcount:
                    continue
                if type(message) is not ConsumerMessage:
                    message.on_final_ack(consumer)  # a plain Message: marked acked
                    continue
                message.acked = True
                if acks_enabled_for(message.topic):
                    tp = message.tp
                    offset = message.offset
                    committed = committed_of[tp]
                    if committed is None or offset >= committed:
                        acked_index = acked_index_of[tp]
                        if offset not in acked_index:
                            unacked.discard(message)
                            acked_index.add(offset)
                            acked_of[tp].append(offset)
                            n_acked += 1
        finally:
            consumer._n_acked += n_acked
            notify(consumer._waiting_for_ack)
