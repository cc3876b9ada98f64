"""Baseline: a bare Faust agent that forwards every record (``faust -A bench.faust_passthrough``).

Configured from ``BENCH_*`` variables by :mod:`bench.topology`; same broker, partitions,
session timeouts, producer linger and stream buffer size as the tickstream worker, one
``await topic.send`` per message, no table — the cost of Faust itself.
"""

from __future__ import annotations

import os
from typing import Any

import faust

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-passthrough"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=10,
    broker_rebalance_timeout=10,
    broker_heartbeat_interval=3,
    producer_linger=float(os.environ.get("BENCH_LINGER_MS", "5")) / 1000.0,
    stream_buffer_maxsize=int(os.environ.get("BENCH_STREAM_BUFFER", "4096")),
    web_enabled=False,
    autodiscover=False,
)
source = app.topic(os.environ.get("BENCH_SRC", "src"), key_type=bytes, value_type=bytes)
sink = app.topic(os.environ.get("BENCH_DST", "dst"), key_type=bytes, value_type=bytes)


@app.agent(source)  # type: ignore[untyped-decorator]
async def passthrough(stream: Any) -> None:
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value)
