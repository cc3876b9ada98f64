"""``RawBytes``: an agent on a topic with this schema gets the record's bytes unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust_fakes import broker_less_app, close_consumer_loop

from engine.raw_schema import RawBytes


@pytest.fixture
def app() -> Iterator[Any]:
    a = broker_less_app("raw-schema-test")
    yield a
    close_consumer_loop(a)


def test_agent_receives_key_and_value_bytes_as_sent(app: Any) -> None:
    seen: list[tuple[Any, Any]] = []
    topic = app.topic("raw", schema=RawBytes())

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def consume(stream: Any) -> None:
        async for event in stream.events():
            seen.append((event.key, event.value))

    payloads = [(b"EURUSD", b"\xc3\x01\x00\xff avro"), (None, b"unkeyed"), (b"k", b"")]

    async def run() -> None:
        async with consume.test_context() as agent:
            for key, value in payloads:
                message = agent.to_message(key, value)
                event = await agent.channel.decode(message)  # the conductor's call
                await agent.channel.put(event)
            deadline = asyncio.get_running_loop().time() + 10
            while len(seen) < len(payloads):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.005)

    asyncio.run(run())
    assert seen == payloads
    assert all(type(v) is bytes for _, v in seen)


def test_loads_returns_the_message_bytes_without_a_serializer() -> None:
    class Msg:
        key = b"\x00\x01"
        value = b"\x80binary"

    schema = RawBytes()
    assert schema.loads_key(None, Msg(), loads=None) is Msg.key
    assert schema.loads_value(None, Msg(), loads=None) is Msg.value
