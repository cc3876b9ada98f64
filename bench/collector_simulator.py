"""Simulator collector throughput: SimulatorCollector (realtime off) → RecordProducer → broker.

Ten symbols quoted by three brokers with the default anomaly rates, stalls, calendar events
and headlines, generated and sent as fast as the producer takes them into a real broker
under a unique topic prefix. The clock runs from ``collector.run()`` until ``max_ticks``
ticks were emitted and ``sink.flush()`` returned (all delivered).
``simulator_generate_only_ticks_per_s`` is the same collector into a sink that drops
records (generation and record building alone). Run
``python -m bench.collector_simulator [--bootstrap HOST:PORT] [--ticks N]`` (without
``--bootstrap`` a private local broker is started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.producer import RecordProducer
from connectors.simulator import build
from schemas.records import Record
from topology.admin import ensure_topics
from topology.settings import Settings

CONFIG: dict[str, Any] = {
    "name": "simulator-bench",
    "seed": 42,
    "realtime": False,
    "start_ms": 1_700_000_000_000,
    "symbols": ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURJPY",
                "GBPJPY", "EURGBP"],
    "ticks_per_s": 10,
    "anomalies": {"stall_every_s": 900},
}


class _NullSink:
    def send(self, topic: str, key: str | bytes, record: Record) -> None:
        return None

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0


def _run(sink: Any, n_ticks: int) -> tuple[float, int]:
    collector = build({**CONFIG, "max_ticks": n_ticks}, sink)

    async def go() -> None:
        await asyncio.wait_for(collector.run(), max(60.0, n_ticks / 2000))

    t0 = time.perf_counter()
    asyncio.run(go())
    remaining = collector.flush(60)
    elapsed = time.perf_counter() - t0
    if remaining:
        raise RuntimeError(f"{remaining} records undelivered after flush")
    if collector.health.ticks != n_ticks:
        raise RuntimeError(f"expected {n_ticks} ticks: {collector.health_dict()}")
    return elapsed, collector.health.events


def measure(bootstrap: str, n_ticks: int) -> dict[str, float]:
    """Ticks per second end to end into the broker, and for generation alone."""
    settings = Settings.from_env(
        {
            "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TICKSTREAM_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}.",
            "TICKSTREAM_PARTITIONS": "4",
        },
        env_file=None,
    )
    ensure_topics(settings)
    generate_s, _ = _run(_NullSink(), n_ticks)
    elapsed, _events = _run(RecordProducer(settings), n_ticks)
    return {
        "simulator_ticks_per_s": n_ticks / elapsed,
        "simulator_generate_only_ticks_per_s": n_ticks / generate_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--bootstrap", help="broker host:port (default: start a local one)")
    ap.add_argument("--ticks", type=int, default=200_000)
    args = ap.parse_args(argv)
    if args.bootstrap:
        print(json.dumps(measure(args.bootstrap, args.ticks), indent=2))
        return 0
    from devstack.broker import LocalBroker

    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            print(json.dumps(measure(broker.bootstrap, args.ticks), indent=2))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
