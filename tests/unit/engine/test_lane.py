"""The lane between the consumer's drain loop and the pipeline agent (engine/lane.py):
messages in order, acks that make offsets committable, back-pressure with Faust's
thresholds, clearing when the flow resumes, and no lane for a topic two agents read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from faust_fakes import broker_less_app, close_consumer_loop
from waiting import until

from engine.lane import MessageLane, lane_topics
from engine.take import ack_all, take_ready


@pytest.fixture
def app() -> Iterator[Any]:
    a = broker_less_app("lane-test")
    yield a
    close_consumer_loop(a)


def message(app: Any, offset: int, partition: int = 0, topic: str = "t") -> ConsumerMessage:
    return ConsumerMessage(topic, partition, offset, time.time(), 0, [], b"k",
                           f"v{offset}".encode(), None, 1, 2, TP(topic, partition),
                           generation_id=app.consumer_generation_id)



def test_messages_put_in_the_lane_are_taken_in_order_tracked_and_acked(app: Any) -> None:
    lane = MessageLane("t", 1000)
    batches: list[list[Any]] = []
    topic = app.topic("t", value_serializer="raw")

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for messages in take_ready(stream, 4, lane=lane):
            assert all(m in app.consumer._unacked_messages for m in messages)
            batches.append(messages)
            ack_all(messages, app.consumer)

    async def run() -> None:
        app.topics._acking_topics.add("t")
        async with consume.test_context():
            ms = [message(app, o) for o in range(10)]
            for m in ms:  # what the drain loop does, record by record
                lane.put(m)
            assert all(m.refcount == 1 for m in ms)
            await until(lambda: sum(len(b) for b in batches) == 10)

    asyncio.run(run())
    taken = [m for b in batches for m in b]
    assert [m.offset for m in taken] == list(range(10))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert all(m.acked and m.refcount == 0 for m in taken)
    assert sorted(app.consumer._acked[TP("t", 0)]) == list(range(10))
    assert not app.consumer._unacked_messages


def test_stale_generation_messages_in_the_lane_are_skipped(app: Any) -> None:
    lane = MessageLane("t", 1000)
    got: list[int] = []

    @app.agent(app.topic("t", value_serializer="raw"))  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for messages in take_ready(stream, 100, lane=lane):
            got.extend(m.offset for m in messages)

    async def run() -> None:
        async with consume.test_context():
            stale = message(app, 1)
            stale.generation_id = app.consumer_generation_id + 3
            lane.put(stale)
            lane.put(message(app, 2))
            await until(lambda: got == [2])

    asyncio.run(run())


def test_back_pressure_pauses_a_partition_at_the_high_mark_and_resumes_at_the_low() -> None:
    full: list[Any] = []
    drop: list[Any] = []
    lane = MessageLane("t", 10, on_full=full.append, on_drop=drop.append)
    assert (lane.high, lane.low) == (8, 4)  # Faust's FlowControlQueue: /1.25 and *0.4

    class Msg:
        def __init__(self, p: int) -> None:
            self.tp, self.refcount = TP("t", p), 0

    for i in range(7):
        lane.put(Msg(i % 2))
    assert full == []
    lane.put(Msg(1))
    lane.put(Msg(0))
    assert full == [TP("t", 1), TP("t", 0)], "each partition paused once, as it arrives"
    assert lane.take(3) and drop == [] and len(lane) == 6
    lane.take(2)
    assert sorted(drop) == [TP("t", 0), TP("t", 1)] and len(lane) == 4
    assert not lane.paused


def test_the_consumer_takes_a_partition_out_of_the_fetch_set_and_back(app: Any) -> None:
    """Records come with aiokafka's TopicPartition; Faust's consumer asserts its own TP."""
    from aiokafka import TopicPartition

    consumer = app.consumer
    lane = MessageLane("t", 10, on_full=consumer.on_buffer_full,
                       on_drop=consumer.on_buffer_drop)
    consumer._active_partitions = {TP("t", 0)}
    for o in range(8):
        m = message(app, o)
        m.tp = TopicPartition("t", 0)
        lane.put(m)
    assert consumer._buffered_partitions == {TP("t", 0)}
    assert TP("t", 0) not in consumer._get_active_partitions()
    lane.take(4)
    assert not consumer._buffered_partitions
    assert TP("t", 0) in consumer._get_active_partitions()


def test_a_full_lane_makes_the_drain_loop_wait_until_room_is_taken() -> None:
    lane = MessageLane("t", 2)

    class Msg:
        tp, refcount = TP("t", 0), 0

    async def run() -> list[str]:
        order: list[str] = []
        lane.put(Msg())
        lane.put(Msg())
        assert lane.full()

        async def drain() -> None:
            await lane.wait_room()
            order.append("room")

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.01)
        order.append("taking")
        lane.take(1)
        await asyncio.wait_for(task, 5)
        return order

    assert asyncio.run(run()) == ["taking", "room"]


def test_resuming_the_flow_clears_the_lane_as_it_clears_channel_queues(app: Any) -> None:
    lane = MessageLane("t", 100)
    app.flow_control.manage_queue(lane)
    lane.put(message(app, 1))
    lane.put(message(app, 2))
    app.flow_control.suspend()
    app.flow_control.resume()
    assert len(lane) == 0


def test_no_lane_for_a_topic_that_two_agents_read(app: Any) -> None:
    shared, own = app.topic("shared", value_serializer="raw"), app.topic("own")
    app.topics.add(shared)
    app.topics.add(app.topic("shared", "other"))
    app.topics.add(own)
    app.tickstream_lanes = {"shared": MessageLane("shared", 10), "own": MessageLane("own", 10)}
    assert set(lane_topics(app)) == {"own"}


def test_maxsize_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        MessageLane("t", 1)
