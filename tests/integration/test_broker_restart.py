"""A broker that restarts empty under a running worker (topology/state_guard.py).

The test runs its OWN local broker on a free port (never the session broker): it is
stopped and a new one started on the same port. Tansu keeps everything in memory, so the
new one has no topics, no committed offsets and no changelogs, like a broker that lost its
storage. Both situations of the defect happen in this one run (two worker starts are most
of the time it takes):

1. the running worker must notice (``/health/`` not-ok while the broker is down, a bounded
   log), and exit with one line when the broker is back without its topics;
2. restarted, it starts with RocksDB table state from the old broker against the new one:
   persisted changelog offsets past the new, empty changelogs, which Faust's recovery used
   to refuse with ``ConsistencyError`` at every start. It must discard that state with one
   WARNING, rebuild and process new ticks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import send_ticks

from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.broker import LocalBroker, free_port
from devstack.kafka_io import TopicReader
from devstack.localstack import WorkerProcess
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings
from topology.state_guard import (
    EXIT_BROKER_LOST,
    LOCAL_STATE_PROBLEM,
    UNREACHABLE_PROBLEM,
    changelog_ends,
    local_offsets,
)
from topology.tables import PIPELINE_STATE

pytestmark = pytest.mark.integration

#: While the broker is down the worker must stay below this many log lines a second,
#: averaged over the window below. Before the rate limit it wrote 75-110 a second (every
#: failed connect, metadata refresh, fetch and coordinator lookup of its aiokafka clients);
#: with it, each kind of message passes three times per 30 s, a handful of lines. The bound
#: is on the amount of output, not on how fast anything happens.
MAX_LINES_PER_S = 5.0
DOWN_WINDOW_S = 8.0


def env_for(broker: LocalBroker, unique: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "TICKSTREAM_TOPIC_PREFIX": f"t{unique}.",
        "TICKSTREAM_APP_ID": f"app{unique}",
        "TICKSTREAM_PARTITIONS": "2",
        "TICKSTREAM_DATA_DIR": str(tmp / "worker"),
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_WEB_PORT": str(free_port()),
        # the restarted worker takes over its predecessor's membership at once
        "TICKSTREAM_GROUP_INSTANCE_ID": f"w{unique}",
        "TICKSTREAM_SESSION_TIMEOUT_S": "6",  # group joins are held for half of it
        **extra,
    }


def health(env: dict[str, str]) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{env['TICKSTREAM_WEB_PORT']}/health/"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def wait_for(what: str, cond: Callable[[], Any], timeout_s: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s\n{log()[-3000:]}")


def producer(settings: Settings) -> RecordProducer:
    # No auto-creation: a replacement broker would get ticks.raw with its default partition
    # count from this producer's metadata refreshes, before the worker recreates it.
    # Its own reconnect errors while the broker is down are expected: kept off stderr.
    return RecordProducer(settings, None, **{"allow.auto.create.topics": False,
                                             "log_level": 2})


def clean_count(settings: Settings, expected: int) -> int:
    with TopicReader(settings, [settings.topic("ticks.clean")]) as reader:
        return len(reader.read_until(lambda got: len(got) >= expected, timeout_s=30))


def ticks(seed: int, n: int) -> list[Tick]:
    return simulate(seed, symbols=("EURUSD",), seconds=n * 2, ticks_per_s=1)[:n]


def test_broker_restarted_empty_stops_the_worker_and_its_restart_rebuilds_and_processes(
    unique: str, tmp_path: Path
) -> None:
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    # RocksDB tables keep their changelog offsets on disk (default producer settings: the
    # recovery reads changelog ends from Fetch responses, engine/high_watermarks.py).
    env = env_for(broker, unique, tmp_path, TICKSTREAM_TABLE_STORE="rocksdb://")
    settings = Settings.from_env(env, env_file=None)
    tabledir = tmp_path / "worker" / "v1" / "tables"
    changelog = PIPELINE_STATE.changelog(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    again = WorkerProcess(env, tmp_path / "worker-again.log")
    try:
        ensure_topics(settings)
        worker.start()
        prod = producer(settings)
        rounds = iter(range(1, 100))

        def checkpointed_thrice() -> bool:
            # One symbol, so one partition; a round of ticks ends in a checkpoint when the
            # input goes quiet: one changelog record of the symbol's snapshot.
            send_ticks(prod, ticks(next(rounds), 3))
            ends = changelog_ends(settings, [(changelog, p) for p in range(2)])
            return max(ends.values()) >= 3

        wait_for("pipeline_state checkpoints", checkpointed_thrice, 60, worker.log_text)
        wait_for("health ok", lambda: (health(env) or {}).get("ok"), 30, worker.log_text)

        lines_before = len(worker.log_text().splitlines())
        broker.stop()
        stopped = time.monotonic()
        report = wait_for(
            "health not ok with the broker down",
            lambda: (h := health(env)) is not None and not h["ok"] and h, 30, worker.log_text)
        assert UNREACHABLE_PROBLEM in report["worker"]["problems"], report
        time.sleep(max(0.0, DOWN_WINDOW_S - (time.monotonic() - stopped)))
        lines = len(worker.log_text().splitlines()) - lines_before
        rate = lines / (time.monotonic() - stopped)
        assert rate < MAX_LINES_PER_S, (rate, worker.log_text()[-3000:])
        # The state that Faust's recovery would refuse against the new broker: persisted
        # offsets past its (empty) changelogs, and not 0, which Faust's check lets through.
        assert max(local_offsets(tabledir).values()) >= 1

        broker.start()  # same port, nothing on it
        assert worker.process is not None
        wait_for("worker exit", lambda: worker.process.poll() is not None,  # type: ignore[union-attr]
                 60, worker.log_text)
        assert worker.process.returncode == EXIT_BROKER_LOST, worker.log_text()[-3000:]
        text = worker.log_text()
        lost = [ln for ln in text.splitlines() if "lost this worker's topics" in ln]
        assert len(lost) == 1 and "tickstream reset" in lost[0], text[-3000:]
        assert "Traceback" not in text, text[-3000:]

        again.start()  # as its supervisor would
        text = again.log_text()
        assert "ConsistencyError" not in text and "Traceback" not in text, text[-3000:]
        warned = [ln for ln in text.splitlines() if "ahead of the changelogs" in ln]
        assert len(warned) == 1 and "WARNING" in warned[0], text[-3000:]
        send_ticks(producer(settings), ticks(200, 15))
        assert clean_count(settings, 15) == 15, again.log_text()[-3000:]
        wait_for("health ok after the rebuild",
                 lambda: (h := health(env)) is not None and h["ok"]
                 and LOCAL_STATE_PROBLEM not in h["worker"]["problems"], 30, again.log_text)

        # The manual way out, for what the worker cannot decide alone: stopped, the worker's
        # local state is removed by `tickstream reset`.
        assert again.stop() == 0
        reset = subprocess.run([sys.executable, "-m", "topology.cli", "reset", "--json"],
                               env={**os.environ, **env}, capture_output=True, text=True,
                               timeout=60, check=False)
        assert reset.returncode == 0, reset.stderr
        removed = json.loads(reset.stdout)["removed"]
        assert [r["path"] for r in removed] == [str(tmp_path / "worker" / "v1")]
        assert not tabledir.exists()
    finally:
        worker.kill()
        again.kill()
        broker.stop()
