"""A live feed on a long log: the worker processes every tick, and a stall is reported.

At live rates every tick is its own record batch, and the local broker's reading gets
slower with the number of batches in a partition: past some ten thousand of them a Fetch
with the default 5 ms wait comes back empty although the partition has records, and a
worker sat at that offset for good, "healthy" (issue 10). Both tests build that log
quickly (tens of thousands of single-record batches in one partition) and then feed ticks
one batch each at a live rate.

* With the defaults the worker must process every tick: clean and rejected counts equal
  to what the pipeline gives offline for the same ticks, in the same order.
* With the adaptive wait off (``TICKSTREAM_FETCH_WAIT_MAX_MS`` = the wait) the worker
  stalls; ``/health/`` must name the partition and its lag, and the watchdog must stop
  the worker with its exit status and one ERROR line.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline_helpers import send_ticks

from agents.watchdog import STALL_EXIT_CODE
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.kafka_io import consumer_config
from devstack.localstack import WorkerProcess
from schemas.records import RawTick
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

#: Single-record batches written before the live feed: well past the point where a 5 ms
#: Fetch comes back empty on this broker (about 15,000 in the probes of the notes).
PREFILL = 30_000
#: With a 1 ms wait that may not widen, fewer batches stall the worker.
STALL_PREFILL = 15_000
LIVE_RATE = 200  # ticks/s
LIVE_TICKS = 1_200
ONE_PER_BATCH: dict[str, Any] = {"linger.ms": 0, "batch.num.messages": 1}
#: For the pre-fill only: without idempotence (acks=all, five in flight) writing
#: single-record batches is several times faster on this broker. Order holds on loopback
#: (librdkafka reorders only when it retries a failed request).
FAST: dict[str, Any] = {**ONE_PER_BATCH, "enable.idempotence": False, "acks": 1}


def _ticks(seed: int, n: int) -> list[Tick]:
    ticks = simulate(seed, symbols=("EURUSD",), brokers=("ICM", "PEP"), seconds=n // 10 + 60,
                     ticks_per_s=6)
    assert len(ticks) >= n
    return ticks[:n]


def _env(settings_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**settings_env, "TICKSTREAM_PARTITIONS": "1",  # one long partition
            "TICKSTREAM_GROUP_INSTANCE_ID": "worker-1",
            "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000",
            **{f"TICKSTREAM_{k}": v for k, v in extra.items()}}


def _prefill(settings: Settings, ticks: list[Tick]) -> threading.Thread:
    """Write ``ticks`` one batch each, in a thread (while the worker starts); join it."""
    failed: list[BaseException] = []

    def write() -> None:
        try:
            producer = RecordProducer(settings, **FAST)
            for t in ticks:
                producer.send("ticks.raw", t.symbol, RawTick(
                    broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask,
                    time_msc=t.time_msc, recv_time_us=t.recv_time_us, source="SIMULATOR"))
            left = producer.flush(120)
            if left:
                failed.append(AssertionError(f"{left} pre-fill records not delivered"))
        except BaseException as exc:  # reported by the joiner
            failed.append(exc)

    class Writer(threading.Thread):
        def join(self, timeout: float | None = None) -> None:
            super().join(timeout)
            assert not self.is_alive(), "pre-fill still running"
            if failed:
                raise failed[0]

    thread = Writer(target=write, daemon=True)
    thread.start()
    return thread


def _send_paced(producer: RecordProducer, ticks: list[Tick], rate: float) -> None:
    """One tick every ``1/rate`` s, each flushed on its own (a live collector)."""
    start = time.monotonic()
    for i, t in enumerate(ticks):
        due = start + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        send_ticks(producer, [t])


def _count(settings: Settings, topics: list[str], want: int, timeout_s: float) -> dict[str, int]:
    """Records in each of ``topics`` (read from the beginning) once they total ``want``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings, **{"fetch.wait.max.ms": 200}))
    consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
    counts = dict.fromkeys(topics, 0)
    deadline = time.monotonic() + timeout_s
    try:
        while sum(counts.values()) < want and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.5):
                if not m.error():
                    counts[m.topic() or ""] += 1
    finally:
        consumer.close()
    return counts


def _health(port: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=5) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


def test_live_feed_on_a_long_log_is_processed_completely(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(settings_env)
    settings = Settings.from_env(env, env_file=None)
    ticks = _ticks(21, PREFILL + LIVE_TICKS)

    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    out = Outputs()
    clean = rejected = 0
    for t in ticks:
        pipeline.on_tick(t, out)
        clean += len(out.clean)
        rejected += len(out.rejects)
        out.clear()
    assert clean and rejected

    ensure_topics(settings)
    prefill = _prefill(settings, ticks[:PREFILL])
    producer = RecordProducer(settings, **ONE_PER_BATCH)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        prefill.join(150)
        _send_paced(producer, ticks[PREFILL:], LIVE_RATE)
        names = [settings.topic("ticks.clean"), settings.topic("ticks.rejected")]
        counts = _count(settings, names, clean + rejected, timeout_s=45)
        log = worker.log_text()
        assert (counts[names[0]], counts[names[1]]) == (clean, rejected), (
            counts, clean, rejected, log[-1500:])
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop()
    assert "Traceback" not in log
    assert "partition stalled" not in log


def test_a_stalled_partition_is_reported_and_the_worker_exits(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    # A 1 ms wait that may not widen: the old behaviour, which stalls on this log.
    env = _env(settings_env, FETCH_WAIT_MS="1", FETCH_WAIT_MAX_MS="1", PRODUCER_LINGER_MS="0",
               STALL_WARN_S="2", STALL_EXIT_S="12")
    settings = Settings.from_env(env, env_file=None)
    ticks = _ticks(22, STALL_PREFILL)
    ensure_topics(settings)
    _prefill(settings, ticks).join(150)  # all of it before the worker reads
    raw = settings.topic("ticks.raw")

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        deadline = time.monotonic() + 30
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            report = _health(env["TICKSTREAM_WEB_PORT"])
            if f"stalled {raw}[0]" in report["worker"]["problems"]:
                break
            time.sleep(0.2)
        problem = report["worker"]["problems"].get(f"stalled {raw}[0]")
        assert problem is not None, (report, worker.log_text()[-3000:])
        assert report["ok"] is False
        assert (problem["topic"], problem["partition"]) == (raw, 0)
        assert problem["lag"] > 0 and problem["highwater"] == STALL_PREFILL
        assert problem["lag"] == problem["highwater"] - problem["position"]
        assert report["worker"]["partition_lag"][f"{raw}[0]"] > 0

        assert worker.process is not None
        code = worker.process.wait(40)
    finally:
        worker.stop()
    assert code == STALL_EXIT_CODE
    errors = [ln for ln in (tmp_path / "worker.log").read_text().splitlines()
              if "worker stalled, exiting" in ln]
    assert len(errors) == 1 and f"{raw}[0]" in errors[0] and "ERROR" in errors[0], errors
