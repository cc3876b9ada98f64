"""The simulator's quotes as the records every venue emits (pure, no I/O).

A real venue parses its payloads into :class:`~schemas.records.RawTick`; the simulator has
nothing to parse, but its generated quotes (:class:`~stages.types.Tick`, from
:mod:`connectors.simulator.ticks`) become ``RawTick`` records here, the same way for the
collector and for anything else that wants simulated ``ticks.raw`` records.
"""

from __future__ import annotations

from schemas.records import RawTick
from stages.types import Tick

SOURCE = "SIMULATOR"


def raw_tick(tick: Tick, recv_time_us: int | None = None) -> RawTick:
    """``tick`` as a ``RawTick``, received at ``recv_time_us`` (default: its own)."""
    return RawTick(
        broker=tick.broker, symbol=tick.symbol, bid=tick.bid, ask=tick.ask,
        time_msc=tick.time_msc,
        recv_time_us=tick.recv_time_us if recv_time_us is None else recv_time_us,
        source=SOURCE,
    )
