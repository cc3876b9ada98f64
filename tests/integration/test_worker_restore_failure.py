"""A symbol's state that cannot be restored stops the worker loudly (issue 10, defect 1):
one CRITICAL line naming the symbol, the partition and the offset, exit status 3 — never a
silently dead agent that leaves the worker answering "ok"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pipeline_helpers import send_ticks

from connectors.producer import RecordProducer
from devstack.kafka_io import TopicReader
from devstack.localstack import WorkerProcess
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings
from topology.tables import PIPELINE_STATE

pytestmark = pytest.mark.integration


def test_an_unreadable_stored_state_stops_the_worker_with_one_clear_line(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    env = {**settings_env, "TICKSTREAM_SYMBOLS": "EURUSD"}
    settings = Settings.from_env(env, env_file=None)
    ensure_topics(settings)
    # A state record that is not what a snapshot looks like, in the table's changelog.
    changelog = PIPELINE_STATE.changelog(settings)
    raw = Producer({**settings.confluent_config(), "partitioner": "murmur2_random"})
    raw.produce(changelog, key=b"EURUSD", value=b'{"offset": 7, "state": {"stages": {}}}')
    assert raw.flush(10) == 0
    now = int(time.time() * 1000)
    producer = RecordProducer(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    reader = TopicReader(settings, [settings.topic("ticks.clean")])
    try:
        worker.start()
        send_ticks(producer, [Tick("ICM", "EURUSD", now, 1.1, 1.1002, now * 1000)])
        assert worker.process is not None
        status = worker.process.wait(60)
        log = worker.log_text()
        assert status == 3, log[-3000:]
        critical = [ln for ln in log.splitlines() if "CRITICAL" in ln]
        assert len(critical) == 1, log[-3000:]
        assert "cannot restore the state of EURUSD" in critical[0]
        assert "partition" in critical[0] and "offset" in critical[0]
        assert "Traceback" not in log
        assert not reader.read_until(lambda ms: bool(ms), timeout_s=2)  # nothing processed
    finally:
        worker.stop()
        reader.close()
