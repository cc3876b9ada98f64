"""The worker's ``/metrics`` (Prometheus text, parsed with prometheus_client's parser) and
``/topology`` pages during a run: every record sent is accounted for in the counters."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline_helpers import send_ticks
from prometheus_client.parser import text_string_to_metric_families

from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.localstack import WorkerProcess
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration


def _get(port: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return bytes(resp.read())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_account_for_every_record(settings_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    worker = WorkerProcess(settings_env, tmp_path / "worker.log").start()
    try:
        ticks = simulate(3, seconds=300)  # duplicates, crossed quotes, spikes included
        send_ticks(RecordProducer(settings), ticks)
        port = settings_env["TICKSTREAM_WEB_PORT"]
        deadline = time.monotonic() + 60
        while True:
            m = _samples(_get(port, "/metrics").decode())
            if m.get(("tickstream_records_in_total", ()), 0) >= len(ticks):
                break
            assert time.monotonic() < deadline, "the worker did not consume every tick"
            time.sleep(0.5)
        clean = m[("tickstream_records_out_total", (("output", "clean"),))]
        rejects = sum(v for (name, _l), v in m.items() if name == "tickstream_rejects_total")
        dupes = m.get(("tickstream_duplicates_total", ()), 0)
        assert clean > 0 and rejects > 0 and dupes > 0
        # Nothing lost: every tick is out, rejected or a duplicate, except the few the
        # validator still holds at the last price jumps (released by the next ticks).
        assert clean + rejects + dupes <= len(ticks)
        assert len(ticks) - (clean + rejects + dupes) < 20
        assert m[("tickstream_kill_switch", ())] == 0
        assert m[("tickstream_model_loaded", ())] == 0
        assert ("tickstream_batch_stage_seconds_count", (("stage", "process"),)) in m
        assert m[("tickstream_tick_to_clean_seconds_count", ())] > 0
        topo = json.loads(_get(port, "/topology"))
        names = {a["name"] for a in topo["agents"]}
        assert {"pipeline", "health"} <= names
        assert settings.topic("ticks.raw") in topo["topics"]
    finally:
        worker.stop()
