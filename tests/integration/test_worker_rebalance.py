"""Two workers and two rebalances on the real broker: bars stay exactly the offline bars.

Worker A starts alone, worker B joins (the partitions are split between them), then A stops
cleanly (B takes everything). Ticks keep coming throughout. Every bar published must equal
the offline run's bar for its (symbol, minute): a partition that moves mid-stream must not
lose, change or double-count ticks, whatever each worker had buffered when it moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import csv_rows, row, send_ticks

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.broker import free_port
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from offline.process import run_process
from schemas.codec import make_codec
from schemas.records import Bar
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

SYMBOLS = ("EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCHF", "USDCAD")


def test_bars_survive_two_rebalances(settings_env: dict[str, str], tmp_path: Path) -> None:
    env = {**settings_env,
           # offline has no idle timer: waits for the rebalances must not close bars early
           "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000"}
    settings = Settings.from_env(env, env_file=None)
    ticks = simulate(23, symbols=SYMBOLS, seconds=540, ticks_per_s=0.5)

    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    run_process([src], settings, None, tmp_path / "offline")
    # Bars closed by the end-of-input flush (trigger 0) have no online counterpart.
    off_bars = {(r[0], r[1]): r for r in csv_rows(tmp_path / "offline" / "bars.csv")
                if r[-1] != "0"}
    assert len({s for s, _t in off_bars}) == len(SYMBOLS)

    ensure_topics(settings)
    producer = RecordProducer(settings)

    codec = make_codec(None)
    bars_topic = settings.topic("bars.m1")
    reader = TopicReader(settings, [bars_topic])
    got: list[Message] = []

    def bars() -> dict[tuple[str, str], set[tuple[Any, ...]]]:
        out: dict[tuple[str, str], set[tuple[Any, ...]]] = {}
        for m in got:
            b = codec.decode(m.value, Bar)
            out.setdefault((b.symbol, str(b.bar_time)), set()).add(row(b))
        return out

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess({**env, "TICKSTREAM_GROUP_INSTANCE_ID": name,
                              "TICKSTREAM_WEB_PORT": str(free_port()),
                              "TICKSTREAM_DATA_DIR": str(tmp_path / name)},
                             tmp_path / f"{name}.log")

    third = len(ticks) // 3
    a, b = worker("worker-a"), worker("worker-b")
    try:
        a.start()
        send_ticks(producer, ticks[:third])
        reader.read_until(lambda _ms: len(bars()) >= 6, timeout_s=60, into=got)
        b.start()  # A gives up some partitions to B
        send_ticks(producer, ticks[third:2 * third])
        reader.read_until(lambda _ms: len(bars()) >= len(off_bars) // 2, timeout_s=90,
                          into=got)
        assert a.stop() == 0, "SIGTERM must stop worker A cleanly"  # B takes everything
        send_ticks(producer, ticks[2 * third:])
        reader.read_until(lambda _ms: len(bars()) >= len(off_bars), timeout_s=120, into=got)
    finally:
        a.stop()
        b.stop()
        reader.close()

    online = bars()
    changed = {k: v for k, v in online.items() if len(v) > 1}
    assert not changed, f"a bar came out with different values: {sorted(changed)[:3]}"
    assert {k: next(iter(v)) for k, v in online.items()} == off_bars, (
        a.log_text()[-2000:] + b.log_text()[-2000:])
