"""Seeded multi-broker tick simulator and its collector (``tickstream collect simulate``).

Several brokers quote the same symbols from one random walk per symbol, each with its own
spread, latency and noise, with duplicates, crossed quotes, one-tick spikes, genuine jumps,
out-of-order ticks and stalls injected at configurable rates; plus calendar events and
headlines (:mod:`connectors.simulator.ticks`, :mod:`connectors.simulator.events`). Plain
Python, no Kafka, and seeded: the same seed gives the same ticks. The collector's file is
read by :mod:`connectors.simulator.config`; :mod:`connectors.simulator.parse` turns the
generated quotes into ``RawTick`` records.

Tests and the offline tools call :func:`simulate` / :func:`simulate_events` directly;
:class:`~connectors.simulator.collector.SimulatorCollector` streams the same kind of data
through the producer path every real collector uses. :func:`build` is what the CLI calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.simulator.events import EventStream, simulate_events
from connectors.simulator.ticks import (
    BASE_PRICES,
    DEFAULT_PRICES,
    Anomalies,
    BrokerProfile,
    Stalls,
    SymbolWalk,
    TickStream,
    simulate,
)

if TYPE_CHECKING:
    from connectors.base.collector import RecordSink
    from connectors.simulator.collector import SimulatorCollector

__all__ = [
    "BASE_PRICES",
    "DEFAULT_PRICES",
    "Anomalies",
    "BrokerProfile",
    "EventStream",
    "Stalls",
    "SymbolWalk",
    "TickStream",
    "build",
    "simulate",
    "simulate_events",
]


def build(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> SimulatorCollector:
    """A :class:`~connectors.simulator.collector.SimulatorCollector` from a config mapping.

    Raises :class:`~connectors.base.collector.CollectorConfigError` naming the file and the field.
    """
    from connectors.simulator.collector import SimulatorCollector
    from connectors.simulator.config import load_config

    return SimulatorCollector(load_config(config, config_path=config_path), sink)
