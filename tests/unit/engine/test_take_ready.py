"""``take_ready``: batches of the events ready now, at most ``max_``, in order, unacked.

Run with Faust's ``agent.test_context()`` (no broker): events are put on the agent's
channel, which its stream reads exactly as it reads a topic.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from engine.take import ack_all, take_ready


@pytest.fixture
def app() -> Iterator[Any]:
    # test_context() never connects: the broker address is never used.
    a = faust.App("take-test", broker="kafka://127.0.0.1:9", store="memory://", web_enabled=False,
                  autodiscover=False)
    yield a
    thread = getattr(a.consumer, "_thread", None)
    if thread is not None and not thread.thread_loop.is_closed():
        thread.thread_loop.close()


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


def test_batches_hold_at_most_max_events_in_order_and_lose_none(app: Any) -> None:
    batches: list[list[int]] = []
    acked_on_yield: list[bool] = []
    topic = app.topic("t", value_type=int)

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for events in take_ready(stream, 4):
            acked_on_yield.append(any(e.message.acked for e in events))
            batches.append([e.value for e in events])
            await asyncio.sleep(0.01)  # work on the batch: nothing is added meanwhile

    async def run() -> None:
        async with consume.test_context() as agent:
            for i in range(11):
                await agent.put(i)
            await _until(lambda: sum(len(b) for b in batches) == 11)

    asyncio.run(run())
    assert [v for b in batches for v in b] == list(range(11))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert not any(acked_on_yield), "the caller acks, not take_ready"


def _recording_agent(app: Any, max_: int) -> tuple[Any, list[list[str]]]:
    """An agent on topic ``t`` that records the values of each batch ``take_ready`` yields."""
    batches: list[list[str]] = []

    @app.agent(app.topic("t", value_type=str))  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for events in take_ready(stream, max_):
            batches.append([e.value for e in events])

    return consume, batches


def test_a_lone_event_is_yielded_without_more_arriving(app: Any) -> None:
    consume, batches = _recording_agent(app, 1000)

    async def run() -> None:
        async with consume.test_context() as agent:
            await agent.put("only")
            # No timer and no fill-up: the single ready event comes out on its own.
            await _until(lambda: batches == [["only"]])
            await agent.put("next")
            await _until(lambda: batches == [["only"], ["next"]])

    asyncio.run(run())


def test_max_must_be_positive() -> None:
    async def run() -> None:
        async for _ in take_ready(object(), 0):
            pass

    with pytest.raises(ValueError, match="max_"):
        asyncio.run(run())


def test_events_of_a_stale_consumer_generation_are_skipped(app: Any) -> None:
    """Delivered before a rebalance we have since gone through: whoever owns the partition
    now takes them (as Faust's stream iterator skips them)."""
    consume, batches = _recording_agent(app, 100)

    async def run() -> None:
        async with consume.test_context() as agent:
            generation = app.consumer_generation_id
            app.consumer_generation_id = generation + 7
            await agent.put("stale", wait=False)  # its message carries generation + 7...
            app.consumer_generation_id = generation  # ...which the consumer is no longer in
            await agent.put("fresh")
            await _until(lambda: sum(len(b) for b in batches) >= 1)

    asyncio.run(run())
    assert batches == [["fresh"]]


def test_taken_events_are_tracked_and_ack_all_makes_them_committable(app: Any) -> None:
    taken: list[Any] = []
    topic = app.topic("t", value_type=str)

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for events in take_ready(stream, 100):
            taken.extend(events)
            if len(taken) == 3:
                tracked.extend(e.message in app.consumer._unacked_messages for e in taken)
                ack_all(stream, taken)

    tracked: list[bool] = []

    async def run() -> None:
        app.topics._acking_topics.add("t")  # a source topic of a running worker acks
        async with consume.test_context() as agent:
            # Records from a broker arrive as ConsumerMessages (tracked for acks); the test
            # wrapper builds plain Messages, which Faust never tracks.
            plain, offsets = agent.to_message, itertools.count(10)

            def to_consumer_message(*args: Any, **kwargs: Any) -> ConsumerMessage:
                message = ConsumerMessage.from_message(
                    plain(*args, **{**kwargs, "offset": next(offsets)}), TP("t", 1))
                message.generation_id = app.consumer_generation_id
                return message

            agent.to_message = to_consumer_message
            for i in range(3):
                await agent.put(f"v{i}", partition=1)
            await _until(lambda: len(tracked) == 3)

    asyncio.run(run())
    assert tracked == [True, True, True]
    assert all(e.message.acked for e in taken)
    assert not app.consumer._unacked_messages
    assert [e.message.offset for e in taken] == [10, 11, 12]
    assert sorted(app.consumer._acked[TP("t", 1)]) == [10, 11, 12]
