"""The pipeline agent's parts, tested with plain values (no Faust): the partition fence,
the checkpoint protocol's order, the output router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.checkpoint import Checkpointer
from agents.fence import PartitionFence, SourceTP
from agents.routing import OutputRouter
from schemas.codec import make_codec
from schemas.records import Bar, RejectedRecord
from stages.pipeline import Outputs


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int


def test_fence_skips_replays_per_partition_only() -> None:
    f = PartitionFence()
    p0, p1 = SourceTP("raw", 0), SourceTP("raw", 1)
    assert f.admit("EURUSD", p0, 5)
    assert not f.admit("EURUSD", p0, 5) and not f.admit("EURUSD", p0, 3)
    assert f.admit("EURUSD", p1, 0), "an offset of another partition is not compared"
    assert f.admit("EURUSD", p0, 6)
    assert sorted(f.offsets("EURUSD")) == [["raw", 0, 6], ["raw", 1, 0]]


def test_fence_restores_offsets_from_a_stored_state_old_and_new() -> None:
    f = PartitionFence()
    f.restore("EURUSD", {"offset": 9, "offsets": [["raw", 2, 7]]}, SourceTP("raw", 2))
    assert not f.admit("EURUSD", SourceTP("raw", 2), 7)
    assert f.admit("EURUSD", SourceTP("raw", 2), 8)
    f.restore("GBPUSD", {"offset": 4}, SourceTP("raw", 1))  # written before per-partition
    assert not f.admit("GBPUSD", SourceTP("raw", 1), 4)
    assert f.admit("GBPUSD", SourceTP("raw", 1), 5)


def test_fence_drops_messages_of_revoked_partitions_until_assigned_back() -> None:
    f = PartitionFence()
    evs = [Msg("raw", p, o) for p, o in [(0, 1), (1, 1), (0, 2)]]
    assert f.mine(evs) is evs
    f.admit("EURUSD", SourceTP("raw", 0), 2)
    f.revoke([SourceTP("raw", 0)])
    assert f.mine(evs) == [evs[1]]
    assert f.offsets("EURUSD") == [], "offsets come back with the symbol's stored state"
    f.assign([SourceTP("raw", 0)])
    assert f.mine(evs) is evs


def test_checkpoint_waits_for_outputs_then_writes_state_then_acks() -> None:
    order: list[str] = []
    now = [0.0]

    async def delivered(name: str) -> None:
        await asyncio.sleep(0)
        order.append(f"delivered {name}")

    async def scenario() -> None:
        c = Checkpointer(1.0, lambda sym, ev: order.append(f"state {sym}@{ev}"),
                         lambda evs: order.append(f"ack {evs}"), clock=lambda: now[0])
        c.processed([1, 2], {"EURUSD": 2}, [asyncio.ensure_future(delivered("a"))])
        c.processed([3], {"EURUSD": 3, "GBPUSD": 3}, [asyncio.ensure_future(delivered("b"))])
        assert c.pending and not c.due()
        now[0] = 1.0
        assert c.due()
        await c.run()
        assert not c.pending and not c.due() and c.checkpoints == 1

    asyncio.run(scenario())
    assert order == ["delivered a", "delivered b", "state EURUSD@3", "state GBPUSD@3",
                     "ack [1, 2, 3]"]


def test_checkpoint_forgets_what_a_revocation_took() -> None:
    acked: list[list[Any]] = []
    c = Checkpointer(0.0, lambda s, e: None, acked.append)
    c.processed([1], {"EURUSD": 1}, [])
    c.forget()
    assert not c.pending
    asyncio.run(c.run())
    assert acked == [[]]


class ListPublisher:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, key, value))

    async def flush(self) -> Sequence[Awaitable[Any]]:
        return []


def test_router_publishes_each_output_to_its_topic_keyed_by_symbol() -> None:
    codec = make_codec(None)
    pub = ListPublisher()
    router = OutputRouter(pub, codec, {"ticks.clean": "p.clean", "bars.m1": "p.bars",
                                       "features": "p.features", "trading.commands": "p.cmd",
                                       "ticks.rejected": "p.rejected"})
    out = Outputs()
    bar = Bar(symbol="EURUSD", bar_time=60_000, open=1.1, high=1.2, low=1.0, close=1.15,
              bid_close=1.14, ask_close=1.16, tick_count=3, mean_spread=0.01,
              fresh_brokers=2, dispersion=0.0, trigger_recv_time_us=1)
    out.bars.append(bar)
    router.publish(out)
    dl = RejectedRecord(original=b"x", key=None, source_topic="raw", source_partition=0,
                        source_offset=1, reason="malformed", detail="", stage="decode",
                        time_us=1)
    router.dead_letter(dl, None)
    assert [(t, k) for t, k, _v in pub.records] == [("p.bars", b"EURUSD"), ("p.rejected", None)]
    assert codec.decode(pub.records[0][2], Bar) == bar
    assert router.published == {"bars.m1": 1, "ticks.rejected": 1}
