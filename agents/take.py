"""Batches of the events that are ready now: Faust's ``noack_take`` without its timer.

``Stream.noack_take(max_, within)`` yields a batch when ``max_`` events are buffered or when
``within`` seconds have passed, *counted from the previous yield*: with a 2 ms window every
event waits up to 2 ms for the timer, and an idle worker wakes 500 times a second to find
nothing. :func:`take_ready` yields as soon as the buffer stops growing: after the first
event it lets the loop run (the drain loop hands over the rest of the fetched records and
the stream's passive drainer buffers them) until a pass adds nothing, ``max_`` is reached,
or ``max_rounds`` passes were made. Under a backlog batches fill up to ``max_``; at a low
rate an event is processed as soon as the records fetched with it are in, with no timer.

Everything else is ``noack_take`` as in faust-streaming 0.15 (``faust/streams.py``): the
same buffer processor, the same hand-over protocol (nothing is added while the caller
works on a batch; a full buffer blocks the drainer until the batch is consumed), acks
disabled so the caller acks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def take_ready(stream: Any, max_: int, max_rounds: int = 64) -> AsyncIterator[list[Any]]:
    """Yield lists of events (unacked) from ``stream``: see the module docstring."""
    if max_ < 1:
        raise ValueError(f"max_ must be >= 1, got {max_}")
    buffer: list[Any] = []
    has_events = asyncio.Event()
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # the caller is working on a batch: hold this one
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            buffer.append(event)
            has_events.set()
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)  # never more than max_ in a batch
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:
            stream.log.exception("error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            if await stream.wait_for_stopped(has_events):
                break
            rounds = 0
            while not buffer_full.is_set() and rounds < max_rounds:
                size = len(buffer)
                await asyncio.sleep(0)
                rounds += 1
                if len(buffer) == size:
                    break
            if not buffer:  # pragma: no cover - has_events is only set with an event
                has_events.clear()
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(buffer)
            finally:
                buffer.clear()
                has_events.clear()
                if not consuming.done():
                    consuming.set_result(None)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
