"""``take_ready``: batches of the events ready now, at most ``max_``, in order, unacked.

Run with Faust's ``agent.test_context()`` (no broker): events are put on the agent's
channel, which its stream reads exactly as it reads a topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from agents.take import take_ready


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


def test_a_lone_event_is_yielded_without_more_arriving(app: Any) -> None:
    batches: list[list[str]] = []
    topic = app.topic("t", value_type=str)

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for events in take_ready(stream, 1000):
            batches.append([e.value for e in events])

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
