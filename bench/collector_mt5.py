"""Sustained MetaTrader 5 collector throughput: stand-in terminal → collector → Kafka.

``measure(bootstrap, n_ticks)`` loads ``n_ticks`` into a stand-in terminal (four symbols,
several ticks per millisecond, some one-sided), starts a collector whose cursors sit before
them and times from its first ``copy_ticks_from`` until every tick has been produced and
``flush()`` confirmed delivery. It runs twice: the stand-in in process (the native module's
path) and over a real rpyc socket (the mt5linux bridge path). Topics get a unique prefix.

``python -m bench.collector_mt5 [n_ticks]`` starts a local broker and prints the figures.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = {"EURUSD": 1.085, "GBPUSD": 1.265, "USDJPY": 151.2, "AUDUSD": 0.655}
PASSWORD = "bench-password"
LOGIN = 1000


def _standins() -> Any:
    if str(REPO / "tests" / "fixtures") not in sys.path:
        sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from standins import mt5

    return mt5


def _load(terminal: Any, n_ticks: int, start_ms: int) -> None:
    """``n_ticks`` spread over the symbols, 4 ticks per millisecond, 1 in 5 one-sided."""
    mt5 = _standins()
    per = [n_ticks // len(SYMBOLS) + (i < n_ticks % len(SYMBOLS)) for i in range(len(SYMBOLS))]
    rng = np.random.default_rng(7)
    for (sym, px), n in zip(SYMBOLS.items(), per, strict=True):
        rows = np.zeros(n, dtype=mt5.TICK_DTYPE)
        t = start_ms + np.arange(n) // 4
        mid = px + np.cumsum(rng.normal(0.0, px * 1e-5, n))
        flags = np.full(n, mt5.TICK_FLAG_BID | mt5.TICK_FLAG_ASK, dtype=np.uint32)
        flags[np.arange(n) % 5 == 4] = mt5.TICK_FLAG_BID
        rows["time_msc"], rows["time"] = t, t // 1000
        rows["bid"], rows["ask"], rows["flags"] = mid, mid + px * 1e-4, flags
        terminal.add_ticks(sym, rows)


def _run_once(settings: Any, n_ticks: int, bridge: bool) -> float:
    from connectors.mt5 import build
    from connectors.producer import RecordProducer

    mt5 = _standins()
    terminal = mt5.Terminal(SYMBOLS, accounts={LOGIN: (PASSWORD, "Bench")})
    start_ms = 1_700_000_000_000
    _load(terminal, n_ticks, start_ms)
    server = mt5.serve(terminal) if bridge else None
    producer = RecordProducer(settings)
    latest = max(int(terminal.history(s)["time_msc"][-1]) for s in SYMBOLS)
    config = {
        "name": "bench-mt5", "broker": "ICM", "login": LOGIN, "server": "Bench",
        "password_env": "BENCH_MT5_PASSWORD", "symbols": list(SYMBOLS),
        "poll_interval_s": 0.001, "batch_size": 5000,
        "backfill_s": (latest - start_ms) / 1000 + 1,
    }
    collector = build(config, producer, env={"BENCH_MT5_PASSWORD": PASSWORD},
                      bridge=server.address if server else None,
                      api=None if bridge else terminal.as_module)

    async def go() -> None:
        task = asyncio.create_task(collector.run())
        while collector.health.ticks + collector.health.rejected < n_ticks:
            if task.done():
                task.result()
                raise RuntimeError("collector stopped early")
            await asyncio.sleep(0.002)
        await collector.stop()
        await task

    try:
        asyncio.run(go())
        left = producer.flush(60)
        end = time.perf_counter()
    finally:
        if server is not None:
            server.close()
    if left or collector.health.ticks != n_ticks:
        raise RuntimeError(f"delivered {collector.health.ticks} of {n_ticks}, {left} unflushed")
    return float(n_ticks / (end - terminal.first_call["copy_ticks_from"]))


def measure(bootstrap: str, n_ticks: int) -> dict[str, float]:
    """Ticks per second into Kafka: ``mt5_ticks_per_s`` (in process) and
    ``mt5_bridge_ticks_per_s`` (over the rpyc bridge)."""
    from topology.admin import ensure_topics
    from topology.settings import Settings

    out: dict[str, float] = {}
    for key, bridge in (("mt5_ticks_per_s", False), ("mt5_bridge_ticks_per_s", True)):
        settings = Settings.from_env({
            "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TICKSTREAM_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}.",
            "TICKSTREAM_PARTITIONS": "4",
        }, env_file=None)
        ensure_topics(settings)
        out[key] = round(_run_once(settings, n_ticks, bridge), 1)
    return out


def main(argv: list[str] | None = None) -> None:
    from devstack.broker import LocalBroker

    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 200_000
    broker = LocalBroker().start()
    try:
        print(measure(broker.bootstrap, n))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
