"""The fused per-symbol pipeline agent: ``ticks.raw`` in, clean ticks and dead letters out.

This foundation version decodes every record and routes undecodable bytes to
``ticks.rejected`` with reason ``malformed``; decoded ticks are published on ``ticks.clean``
with the broker's own quote. The stage chain (dedupe, validate, consolidate, bars, ...)
plugs in here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents import AgentSpec
from agents.rejects import rejected
from schemas.codec import MalformedRecord, make_codec
from schemas.records import CleanTick, RawTick
from topology.settings import Settings

log = logging.getLogger(__name__)

SPEC = AgentSpec(
    name="pipeline",
    source="ticks.raw",
    stages=("decode",),
    outputs=("ticks.clean", "ticks.rejected"),
)


def register(app: Any, settings: Settings, topics: dict[str, Any]) -> None:
    registry = settings.schema_registry_url.get() if settings.schema_registry_url else None
    codec = make_codec(registry)
    raw_topic = topics["ticks.raw"]
    clean_topic = topics["ticks.clean"]
    rejected_topic = topics["ticks.rejected"]
    clean_name = settings.topic("ticks.clean")
    rejected_name = settings.topic("ticks.rejected")

    @app.agent(raw_topic, name="pipeline")  # type: ignore[untyped-decorator]
    async def pipeline(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                tick = codec.decode(event.value, RawTick, msg.topic)
            except MalformedRecord as exc:
                dead = rejected(
                    event.value, event.key, msg.topic, msg.partition, msg.offset,
                    exc.reason, exc.detail, "decode",
                )
                await rejected_topic.send(
                    key=event.key, value=codec.encode(dead, rejected_name)
                )
                continue
            mid = (tick.bid + tick.ask) / 2
            clean = CleanTick(
                broker=tick.broker, symbol=tick.symbol, time_msc=tick.time_msc,
                recv_time_us=tick.recv_time_us, bid=tick.bid, ask=tick.ask, mid=mid,
                spread=tick.ask - tick.bid, best_bid=tick.bid, best_ask=tick.ask,
                best_bid_broker=tick.broker, best_ask_broker=tick.broker, fresh_brokers=1,
                dispersion=0.0, seq=tick.seq, processed_time_us=time.time_ns() // 1000,
            )
            await clean_topic.send(key=event.key, value=codec.encode(clean, clean_name))
