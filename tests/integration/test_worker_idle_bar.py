"""A quiet market: the worker closes the last bar by its idle timer and publishes it at once.

The bar of the last minute has no later tick to close it. The worker's idle flush closes it
once the event-time estimate passes the minute's end plus the idle timeout; the bar (and its
features) must reach ``bars.m1`` then, not wait for the next tick, must equal the bar the
offline run closes at the end of its input, and must not come out again after a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import csv_rows, row, send_ticks

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from offline.process import run_process
from schemas.codec import make_codec
from schemas.records import Bar, RawTick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

START_MS = 1_700_000_000_000  # 20 s into a minute


def test_idle_bar_is_published_without_a_later_tick(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**settings_env, "TICKSTREAM_GROUP_INSTANCE_ID": "worker-1",
           "TICKSTREAM_BAR_IDLE_FLUSH_MS": "1000"}
    settings = Settings.from_env(env, env_file=None)
    # 98 s of ticks: one full minute, and a last minute whose final tick is ~2 s before its end.
    ticks = simulate(5, symbols=("EURUSD",), start_ms=START_MS, seconds=98, ticks_per_s=2)
    last_minute = max(t.time_msc for t in ticks) // 60_000 * 60_000

    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    run_process([src], settings, None, tmp_path / "offline")
    off_bars = {r[1]: r for r in csv_rows(tmp_path / "offline" / "bars.csv")}
    assert str(last_minute) in off_bars, "the offline end-of-input flush closes the last bar"

    ensure_topics(settings)
    producer = RecordProducer(settings)
    send_ticks(producer, ticks)

    codec = make_codec(None)
    bars_topic = settings.topic("bars.m1")
    reader = TopicReader(settings, [bars_topic, settings.topic("features")])
    got: list[Message] = []

    def bar_times() -> list[int]:
        return [codec.decode(m.value, Bar).bar_time for m in got if m.topic == bars_topic]

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        reader.read_until(lambda _ms: last_minute in bar_times(), timeout_s=45, into=got)
        assert last_minute in bar_times(), worker.log_text()[-3000:]
        bars = [codec.decode(m.value, Bar) for m in got if m.topic == bars_topic]
        assert [row(b) for b in bars] == [off_bars[str(b.bar_time)] for b in bars]
        features = [m for m in got if m.topic == settings.topic("features")]
        assert len(features) == len(bar_times()), "every bar closed has its feature vector"

        # A restart resumes from the checkpoint that includes the idle close: no bar again.
        assert worker.stop() == 0
        worker = WorkerProcess(env, tmp_path / "worker.log")
        worker.start()
        late = last_minute + 118_000  # in the next minute, 2 s before its end
        producer.send("ticks.raw", "EURUSD", RawTick(
            broker=ticks[-1].broker, symbol="EURUSD", bid=ticks[-1].bid, ask=ticks[-1].ask,
            time_msc=late, recv_time_us=late * 1000, source="SIMULATOR"))
        assert producer.flush() == 0
        # Nothing closes that minute but its own idle timeout: wait for that bar, then
        # check that no bar before it was published twice.
        reader.read_until(lambda _ms: last_minute + 60_000 in bar_times(), timeout_s=60,
                          into=got)
        assert last_minute + 60_000 in bar_times(), worker.log_text()[-3000:]
        times = bar_times()
        assert len(times) == len(set(times)), f"a bar was published twice: {sorted(times)}"
    finally:
        worker.stop()
        reader.close()
