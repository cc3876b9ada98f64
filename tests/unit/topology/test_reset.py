"""``tickstream reset``, the reconnect-noise filter, the start-up state guard's reading of
Faust's RocksDB offsets and the broker watch's policy (topology/state_guard.py,
topology/log_filters.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from topology.cli import main
from topology.log_filters import RateLimitFilter, install_reconnect_filter
from topology.settings import Settings
from topology.state_guard import (
    OFFSET_KEY,
    changelog_ends,
    guard_local_state,
    internal_topics,
    local_offsets,
    stale_partitions,
)
from topology.tables import PIPELINE_STATE


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def record(msg: str, *args: object, name: str = "aiokafka.client",
           level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_rate_limit_passes_a_burst_per_kind_then_counts_what_it_dropped() -> None:
    clock = Clock()
    f = RateLimitFilter(burst=3, interval_s=30.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    passed = [f.filter(record(template, 111, f"refused {i}")) for i in range(100)]
    assert passed == [True] * 3 + [False] * 97  # the arguments differ; the kind does not
    # Another template, logger or level is another kind, with its own burst.
    assert f.filter(record("Unable to update metadata from %s", [111]))
    assert f.filter(record(template, 1, "x", name="aiokafka.conn"))
    assert f.filter(record(template, 1, "x", level=logging.WARNING))
    clock.t += 30.0
    nxt = record(template, 111, "refused again")
    assert f.filter(nxt)
    assert nxt.getMessage() == (
        "Unable connect to node with id 111: refused again "
        "(97 similar messages suppressed in the last 30 s)")
    assert f.filter(record(template, 1, "a")) and f.filter(record(template, 1, "b"))
    assert not f.filter(record(template, 1, "c"))
    clock.t += 30.0
    quiet = record(template, 1, "d")
    assert f.filter(quiet) and quiet.getMessage() == (
        "Unable connect to node with id 1: d (1 similar messages suppressed in the last 30 s)")


def test_rate_limit_rejects_a_useless_configuration() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimitFilter(burst=0)


def test_installed_filter_limits_a_flooding_client_logger_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    before = list(logger.filters)
    try:
        first = install_reconnect_filter(interval_s=3600.0)
        install_reconnect_filter()  # idempotent: the first one stays
        assert [f for f in logger.filters if isinstance(f, RateLimitFilter)] == [first]
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            for _ in range(50):
                logger.error("Group Coordinator Request failed: %s", "NodeNotReadyError")
        assert len([r for r in caplog.records if r.name == logger.name]) == 3
    finally:
        for name in logging.root.manager.loggerDict:
            lg = logging.getLogger(name)
            for f in [f for f in lg.filters if isinstance(f, RateLimitFilter)]:
                lg.removeFilter(f)
        assert logger.filters == before


def settings_for(tmp_path: Path, unique: str, **extra: str) -> Settings:
    env = {"TICKSTREAM_DATA_DIR": str(tmp_path / "worker"), "TICKSTREAM_APP_ID": f"app{unique}",
           "TICKSTREAM_TOPIC_PREFIX": f"t{unique}.", **extra}
    return Settings.from_env(env, env_file=None)


def fake_table_state(tabledir: Path, offsets: dict[str, int | None]) -> None:
    """RocksDB partitions as Faust's store leaves them: data and, once it applied a
    changelog record, its offset under ``__faust\\0offset__`` (faust/stores/rocksdb.py)."""
    tabledir.mkdir(parents=True, exist_ok=True)
    for name, offset in offsets.items():
        db = rocksdict.Rdict(str(tabledir / f"{name}.db"), options=rocksdict.Options(raw_mode=True))
        db[b"EURUSD"] = b"snapshot"
        if offset is not None:
            db[OFFSET_KEY] = str(offset).encode()
        db.close()


def test_local_offsets_reads_what_faust_persisted(tmp_path: Path) -> None:
    fake_table_state(tmp_path, {"pipeline_state-0": 7, "pipeline_state-1": None,
                                "dedupe_segments-1": 0})
    (tmp_path / "pipeline_state-backups").mkdir()
    assert local_offsets(tmp_path) == {("pipeline_state", 0): 7, ("dedupe_segments", 1): 0}
    assert local_offsets(tmp_path / "absent") == {}


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topology.cli", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def errors(stderr: str) -> list[str]:
    """The command's own error lines (a stale ``make native`` build warns on stderr too)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("tickstream")]


def test_reset_removes_the_local_table_state_and_says_what(
    tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "worker"
    fake_table_state(data / "v1" / "tables", {"pipeline_state-0": 3})
    (data / "notes.txt").write_text("not Faust's")  # left alone
    monkeypatch.setenv("TICKSTREAM_DATA_DIR", str(data))
    monkeypatch.setenv("TICKSTREAM_APP_ID", f"app{unique}")
    assert main(["reset", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kafka"] is None and out["data_dir"] == str(data)
    [removed] = out["removed"]
    assert removed["path"] == str(data / "v1") and removed["files"] > 0 and removed["bytes"] > 0
    assert not (data / "v1").exists() and (data / "notes.txt").exists()
    assert main(["reset"]) == 0
    assert capsys.readouterr().out == f"no local table state in {data}\n"


def test_reset_refuses_while_a_worker_holds_the_state(
    tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tabledir = tmp_path / "worker" / "v1" / "tables"
    fake_table_state(tabledir, {"pipeline_state-0": 3})
    db = rocksdict.Rdict(str(tabledir / "pipeline_state-0.db"),
                         options=rocksdict.Options(raw_mode=True))  # as a running worker
    try:
        res = run_cli(["reset"], {"TICKSTREAM_DATA_DIR": str(tmp_path / "worker"),
                                  "TICKSTREAM_APP_ID": f"app{unique}"})
    finally:
        db.close()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert errors(res.stderr) == [
        f"tickstream reset: a running worker holds the table state in {tmp_path / 'worker'} "
        "(pipeline_state-0.db): stop it, then run 'tickstream reset' again"]
    assert tabledir.exists()


def test_reset_topics_needs_yes_and_a_broker_it_can_reach(
    tmp_path: Path, unique: str,
) -> None:
    env = {"TICKSTREAM_DATA_DIR": str(tmp_path / "worker"), "TICKSTREAM_APP_ID": f"app{unique}",
           "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    res = run_cli(["reset", "--topics"], env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert errors(res.stderr) == [
        f"tickstream reset: --topics deletes consumer group 'app{unique}' and the app's "
        "changelog topics on 127.0.0.1:1; add --yes to confirm"]
    res = run_cli(["reset", "--topics", "--yes"], env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    [line] = errors(res.stderr)
    assert line.startswith("tickstream reset: broker 127.0.0.1:1 does not answer (")
    assert line.endswith("): start it or set TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS")


@pytest.mark.integration
def test_reset_topics_deletes_the_group_and_internal_topics_only(
    settings_env: dict[str, str], kafka_settings: Settings,
) -> None:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from topology.admin import ensure_topics

    ensure_topics(kafka_settings)
    res = run_cli(["reset", "--topics", "--yes", "--json"], settings_env)
    assert res.returncode == 0, res.stderr
    kafka = json.loads(res.stdout)["kafka"]
    changelogs = sorted(t for t in internal_topics(kafka_settings) if t.endswith("-changelog"))
    assert kafka["topics_deleted"] == changelogs and kafka["topics_failed"] == {}
    assert kafka["consumer_group"]["name"] == kafka_settings.app_id
    left = AdminClient(kafka_settings.confluent_config()).list_topics(timeout=10).topics
    assert not set(changelogs) & set(left)
    assert kafka_settings.topic("ticks.raw") in left  # the app's data topics stay


@pytest.mark.integration
def test_guard_discards_state_ahead_of_the_changelog_and_keeps_state_behind_it(
    kafka_settings: Settings, tmp_path: Path,
) -> None:
    from confluent_kafka import Producer

    from topology.admin import ensure_topics

    ensure_topics(kafka_settings)  # changelogs exist and are empty: they end at 0
    tabledir = tmp_path / "tables"
    fake_table_state(tabledir, {"pipeline_state-1": None})
    assert stale_partitions(kafka_settings, tabledir) == []  # never applied a record: fine
    assert guard_local_state(kafka_settings, tabledir).stale == [] and tabledir.exists()
    fake_table_state(tabledir, {"pipeline_state-0": 4})
    [stale] = guard_local_state(kafka_settings, tabledir).stale
    assert (stale.table, stale.partition, stale.local_offset, stale.changelog_end) == (
        PIPELINE_STATE.name, 0, 4, 0)
    assert not tabledir.exists()

    # Three changelog records in one batch (offsets 0-2): Tansu's ListOffsets reports the
    # first offset of the last batch + 1, i.e. 1, which Faust's check would compare with.
    changelog = PIPELINE_STATE.changelog(kafka_settings)
    producer = Producer({**kafka_settings.confluent_config(), "linger.ms": 500})
    for i in range(3):
        producer.produce(changelog, value=b"snapshot", key=b"EURUSD%d" % i, partition=1)
    assert producer.flush(30) == 0
    fake_table_state(tabledir, {"pipeline_state-1": 2})  # applied all three: sound
    check = guard_local_state(kafka_settings, tabledir)
    assert check.stale == [] and tabledir.exists()
    # Tansu's ListOffsets says 1; the end the guard (and the worker's recovery) uses is the
    # Fetch high watermark, 3, so the sound state is not taken for stale.
    assert changelog_ends(kafka_settings, [(changelog, 1)]) == {(changelog, 1): 3}
    fake_table_state(tabledir, {"pipeline_state-1": 3})  # claims a record that is not there
    [stale] = guard_local_state(kafka_settings, tabledir).stale
    assert (stale.partition, stale.local_offset) == (1, 3) and not tabledir.exists()


class FakeWatchConsumer:
    """What BrokerWatch asks of its aiokafka consumer, with a broker we can break."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
        self.ends: dict[tuple[str, int], int] = {}
        self.down = False

    async def topics(self) -> set[str]:
        if self.down:
            raise ConnectionError("Unable to get cluster metadata over all known brokers")
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        known = {tp for tp in tps if tp.topic in self.partitions
                 and tp.partition < self.partitions[tp.topic]}
        if len(known) < len(tps):
            raise TimeoutError("no leader for an unknown partition")
        return {tp: self.ends.get((tp.topic, tp.partition), 0) for tp in tps}

    async def stop(self) -> None:
        pass


async def test_broker_watch_reports_unreachable_and_exits_once_topics_are_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents.worker_status import WorkerStatus
    from topology import state_guard
    from topology.admin import PlannedTopic

    plan = [PlannedTopic("t.ticks.raw", 2, {}), PlannedTopic("app-x-changelog", 1, {})]
    recreated: list[Settings] = []

    def ensure_topics(settings: Settings, timeout_s: float) -> list[str]:
        recreated.append(settings)
        return []

    monkeypatch.setattr(state_guard, "ensure_topics", ensure_topics)
    exits: list[int] = []
    status = WorkerStatus()
    watch = state_guard.BrokerWatch(Settings.from_env({}, env_file=None), status,
                                    exit=exits.append, plan=plan)
    fake = FakeWatchConsumer({"t.ticks.raw": 2, "app-x-changelog": 1})
    watch._consumer = fake
    fake.ends = {("t.ticks.raw", 0): 5, ("app-x-changelog", 0): 2}
    assert await watch.check() == "ok" and status.ok
    fake.down = True
    assert await watch.check() == "unreachable"
    assert await watch.check() == "unreachable"
    assert list(status.problems) == [state_guard.UNREACHABLE_PROBLEM] and not exits
    fake.down = False
    assert await watch.check() == "ok" and status.ok  # back, with everything it had
    fake.ends[("t.ticks.raw", 0)] = 7
    assert await watch.check() == "ok"

    # Back empty: the changelog is gone and ticks.raw was auto-created, empty.
    fake.partitions = {"t.ticks.raw": 2}
    fake.ends = {}
    assert await watch.check() == "lost"
    assert exits == [state_guard.EXIT_BROKER_LOST] and len(recreated) == 1
    detail = status.problems[state_guard.LOST_PROBLEM]["detail"]
    assert "missing: app-x-changelog" in detail and "offsets went back: t.ticks.raw" in detail
    assert "tickstream reset" in detail and "\n" not in detail


async def test_broker_watch_sees_a_topic_with_another_partition_count() -> None:
    from agents.worker_status import WorkerStatus
    from topology import state_guard
    from topology.admin import PlannedTopic

    exits: list[int] = []
    status = WorkerStatus()
    watch = state_guard.BrokerWatch(Settings.from_env({}, env_file=None), status,
                                    exit=exits.append, plan=[PlannedTopic("t.a", 2, {})])
    fake = FakeWatchConsumer({"t.a": 2})
    watch._consumer = fake
    fake.ends = {("t.a", 0): 3}
    assert await watch.check() == "ok"
    fake.partitions = {"t.a": 1}  # asking for partition 1's end would fail: not asked
    assert await watch.check() == "lost"
    assert "other partition counts: t.a" in status.problems[state_guard.LOST_PROBLEM]["detail"]
    assert exits == [state_guard.EXIT_BROKER_LOST]
