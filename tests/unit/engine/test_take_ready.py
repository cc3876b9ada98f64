"""``take_ready``: batches of the messages ready now, at most ``max_``, in order, unacked.

Run with Faust's ``agent.test_context()`` (no broker): events are put on the agent's
channel and forwarded into the agent's lane as their messages; the drain loop's way in
(messages put straight into the lane) is tested in tests/unit/engine/test_lane.py.
The topics are raw, as the pipeline's ``ticks.raw`` is: a message's value is the record's
bytes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from faust_fakes import broker_less_app, close_consumer_loop
from waiting import until

from engine.take import ack_all, take_ready


@pytest.fixture
def app() -> Iterator[Any]:
    a = broker_less_app("take-test")
    yield a
    close_consumer_loop(a)


def test_batches_hold_at_most_max_events_in_order_and_lose_none(app: Any) -> None:
    batches: list[list[int]] = []
    acked_on_yield: list[bool] = []
    topic = app.topic("t", value_serializer="raw")

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for messages in take_ready(stream, 4):
            acked_on_yield.append(any(m.acked for m in messages))
            batches.append([int(m.value) for m in messages])
            await asyncio.sleep(0.01)  # work on the batch: nothing is added meanwhile

    async def run() -> None:
        async with consume.test_context() as agent:
            for i in range(11):
                await agent.put(str(i).encode())
            await until(lambda: sum(len(b) for b in batches) == 11)

    asyncio.run(run())
    assert [v for b in batches for v in b] == list(range(11))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert not any(acked_on_yield), "the caller acks, not take_ready"


def _recording_agent(app: Any, max_: int) -> tuple[Any, list[list[str]]]:
    """An agent on topic ``t`` that records the values of each batch ``take_ready`` yields."""
    batches: list[list[str]] = []

    @app.agent(app.topic("t", value_serializer="raw"))  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for messages in take_ready(stream, max_):
            batches.append([m.value.decode() for m in messages])

    return consume, batches


def test_a_lone_event_is_yielded_without_more_arriving(app: Any) -> None:
    consume, batches = _recording_agent(app, 1000)

    async def run() -> None:
        async with consume.test_context() as agent:
            await agent.put(b"only")
            # No timer and no fill-up: the single ready event comes out on its own.
            await until(lambda: batches == [["only"]])
            await agent.put(b"next")
            await until(lambda: batches == [["only"], ["next"]])

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
            await agent.put(b"stale", wait=False)  # its message carries generation + 7...
            app.consumer_generation_id = generation  # ...which the consumer is no longer in
            await agent.put(b"fresh")
            await until(lambda: sum(len(b) for b in batches) >= 1)

    asyncio.run(run())
    assert batches == [["fresh"]]


def test_taken_messages_are_tracked_and_ack_all_makes_them_committable(app: Any) -> None:
    taken: list[Any] = []
    topic = app.topic("t", value_serializer="raw")

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for messages in take_ready(stream, 100):
            taken.extend(messages)
            if len(taken) == 3:
                tracked.extend(m in app.consumer._unacked_messages for m in taken)
                ack_all(taken, app.consumer)

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
                await agent.put(f"v{i}".encode(), partition=1)
            await until(lambda: len(tracked) == 3)

    asyncio.run(run())
    assert tracked == [True, True, True]
    assert all(m.acked for m in taken)
    assert not app.consumer._unacked_messages
    assert [m.offset for m in taken] == [10, 11, 12]
    assert sorted(app.consumer._acked[TP("t", 1)]) == [10, 11, 12]


def test_ack_all_leaves_the_consumer_as_faust_s_own_acks_do(app: Any) -> None:
    """``ack_all`` inlines ``Message.ack`` and ``Consumer.ack``: the same acked offsets,
    index, unacked set, ack count and flags as acking each message the Faust way, over
    messages of two partitions, one held twice, one acked already, one below the committed
    offset, one of a topic without acks and a plain Message."""
    from faust.types.tuples import Message

    def scenario() -> tuple[Any, list[Any]]:
        consumer = app.consumer
        consumer._acked.clear()
        consumer._acked_index.clear()
        consumer._unacked_messages.clear()
        consumer._committed_offset.clear()
        consumer._n_acked = 0
        consumer._committed_offset[TP("t", 1)] = 5
        app.topics._acking_topics.add("t")
        ms: list[Any] = []
        for p, o in [(0, 1), (0, 2), (1, 4), (1, 6), (0, 3), (1, 7)]:
            m = ConsumerMessage("t", p, o, 0.0, 0, [], b"k", b"v", None, 1, 1, TP("t", p))
            m.refcount = 1
            consumer.track_message(m)
            ms.append(m)
        ms[1].refcount = 2  # held by two streams: not final
        ms[4].acked = True  # acked already
        other = ConsumerMessage("u", 0, 9, 0.0, 0, [], b"k", b"v", None, 1, 1, TP("u", 0))
        other.refcount = 1
        plain = Message("t", 3, 0, 0.0, 0, [], b"k", b"v", None)
        return consumer, [*ms, other, plain]

    def state(consumer: Any, ms: list[Any]) -> tuple[Any, ...]:
        return ({tp: sorted(v) for tp, v in consumer._acked.items()},
                {tp: sorted(v) for tp, v in consumer._acked_index.items()},
                sorted(m.offset for m in consumer._unacked_messages), consumer._n_acked,
                [(m.acked, m.refcount) for m in ms])

    async def run() -> tuple[Any, Any]:
        consumer, ms = scenario()
        for m in ms:
            m.ack(consumer)
        faust_way = state(consumer, ms)
        consumer, ms = scenario()
        ack_all(ms, consumer)
        return faust_way, state(consumer, ms)

    faust_way, ours = asyncio.run(run())
    assert ours == faust_way
    assert faust_way[0] == {TP("t", 0): [1], TP("t", 1): [6, 7]}, "the scenario acks some"
