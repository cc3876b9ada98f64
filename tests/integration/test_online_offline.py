"""Online equals offline, and a SIGKILLed worker recovers without losing or doubling data.

The same simulated multi-broker stream (duplicates, crossed quotes, spikes, genuine jumps,
out-of-order ticks) goes through a live worker on the real broker and through
``tickstream process``; rejects, bars, features and command ids must be identical, bit for
bit. Halfway through, the worker is killed with SIGKILL and restarted.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import RISK, row, send_ticks, train_small_model

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from schemas.codec import make_codec
from schemas.records import Bar, FeatureVector, RawTick, RejectedRecord, TradingCommand
from stages.risk import TICK_EXITS
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

def _csv_rows(path: Path, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [tuple(v for k, v in r.items() if k not in skip) for r in csv.DictReader(fh)]


def test_online_equals_offline_across_a_sigkill(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**settings_env, **RISK,
           # static membership: the restarted worker replaces the killed one at once
           "TICKSTREAM_GROUP_INSTANCE_ID": "worker-1",
           # offline has no idle timer: a slow wait here must not close a bar early online
           "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000"}
    settings = Settings.from_env(env, env_file=None)
    models = train_small_model(tmp_path, settings)
    env["TICKSTREAM_MODEL_DIR"] = str(models)
    settings = Settings.from_env(env, env_file=None)
    ticks = simulate(7, seconds=1800)

    # ---- offline ----------------------------------------------------------------------
    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    offline = tmp_path / "offline"
    subprocess.run(
        [sys.executable, "-m", "topology.cli", "process", str(src), "--model", str(models),
         "--out", str(offline), "--json"],
        check=True, capture_output=True, env={**os.environ, **env},
    )
    # Bars closed by the end-of-input flush (trigger 0) have no online counterpart yet.
    off_bars = [r for r in _csv_rows(offline / "bars.csv") if r[-1] != "0"]
    off_bar_times = {(r[0], r[1]) for r in off_bars}
    off_features = [r for r in _csv_rows(offline / "features.csv") if (r[0], r[1]) in off_bar_times]
    # A tick exit (stop-loss, take-profit, max hold) is made by a tick, not a bar: online too.
    off_cmds = [r for r in _csv_rows(offline / "commands.csv", skip=("created_time_us",))
                if (r[2], r[10]) in off_bar_times or r[9].split(":")[0] in TICK_EXITS]
    with (offline / "rejected.csv").open() as fh:
        off_rejects = Counter((r["broker"], r["symbol"], r["time_msc"], r["bid"], r["ask"],
                               r["reason"]) for r in csv.DictReader(fh))
    assert off_bars and off_cmds and off_rejects
    assert any(r[9].split(":")[0] in TICK_EXITS for r in off_cmds), "no tick exit compared"

    # ---- online, with a SIGKILL halfway --------------------------------------------------
    ensure_topics(settings)
    producer = RecordProducer(settings)
    half = len(ticks) // 2

    names = {n: settings.topic(n) for n in ("bars.m1", "features", "trading.commands",
                                            "ticks.rejected", "ticks.clean")}
    got: list[Message] = []
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log)
    reader = TopicReader(settings, sorted(names.values()))
    try:
        worker.start()
        send_ticks(producer, ticks[:half])
        reader.read_until(lambda ms: sum(m.topic == names["bars.m1"] for m in ms) >= 5,
                          timeout_s=60, into=got)
        worker.kill()
        worker = WorkerProcess(env, log)
        worker.start()
        send_ticks(producer, ticks[half:])
        codec = make_codec(None)

        def complete(ms: list[Message]) -> bool:
            # Wait for every output compared below: a bar is produced before its feature
            # vector and command, so "all bars seen" alone can stop the read too early.
            bars = {m.value for m in ms if m.topic == names["bars.m1"]}
            features = {m.value for m in ms if m.topic == names["features"]}
            cmds = {codec.decode(m.value, TradingCommand).command_id for m in ms
                    if m.topic == names["trading.commands"]}
            dead = {(r.source_partition, r.source_offset, r.reason) for r in (
                codec.decode(m.value, RejectedRecord) for m in ms
                if m.topic == names["ticks.rejected"])}
            return (len(bars) >= len(off_bars) and len(features) >= len(off_features)
                    and len(cmds) >= len(off_cmds)
                    and len(dead) >= sum(off_rejects.values()))

        reader.read_until(complete, timeout_s=120, into=got)
    finally:
        worker.stop()
        reader.close()

    on_bars: dict[tuple[str, str], tuple[Any, ...]] = {}
    for m in got:
        if m.topic == names["bars.m1"]:
            b = codec.decode(m.value, Bar)
            rw = row(b)
            assert on_bars.setdefault((b.symbol, str(b.bar_time)), rw) == rw, "a bar changed"
    on_features = {}
    for m in got:
        if m.topic == names["features"]:
            f = codec.decode(m.value, FeatureVector)
            rw = row(f)
            assert on_features.setdefault((f.symbol, str(f.bar_time)), rw) == rw
    on_cmds = {}
    for m in got:
        if m.topic == names["trading.commands"]:
            c = codec.decode(m.value, TradingCommand)
            rw = row(c, skip=("created_time_us",))
            assert on_cmds.setdefault(c.command_id, rw) == rw
    on_rejects: Counter[tuple[str, ...]] = Counter()
    seen_offsets = set()
    for m in got:
        if m.topic == names["ticks.rejected"]:
            r = codec.decode(m.value, RejectedRecord)
            if (r.source_partition, r.source_offset, r.reason) in seen_offsets:
                continue  # re-produced after the crash: same source record, same decision
            seen_offsets.add((r.source_partition, r.source_offset, r.reason))
            t = codec.decode(r.original, RawTick)
            on_rejects[(t.broker, t.symbol, str(t.time_msc), repr(t.bid), repr(t.ask),
                        r.reason)] += 1

    assert sorted(on_bars.values()) == sorted(off_bars)
    assert sorted(on_features.values()) == sorted(off_features)
    assert sorted(on_cmds.values()) == sorted(off_cmds)
    assert on_rejects == off_rejects
    text = log.read_text()
    assert "Traceback" not in text
    # Both workers read ticks.raw through the lane (engine/lane.py), not the conductor.
    lane_line = f"records of {settings.topic('ticks.raw')} go to their agent's lane"
    assert text.count(lane_line) >= 2

