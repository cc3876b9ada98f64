"""Calendar/news context and the kill switch through a live worker, across a restart.

Events go in through ``events.calendar``/``events.news`` and the kill switch through
``control``; both end up in global tables. Features must equal ``tickstream process`` with
the same events (context columns included, bit for bit), and the kill switch must hold
across a worker restart until it is lifted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pipeline_helpers import RISK, csv_rows, row, send_ticks, train_small_model

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate, simulate_events
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from offline.process import run_process, write_events
from schemas.codec import make_codec
from schemas.records import ControlMessage, FeatureVector, TradingCommand
from topology.admin import ensure_topics
from topology.settings import Settings
from topology.tables import CONTEXT, CONTROL_STATE

pytestmark = pytest.mark.integration


def test_context_and_kill_switch_survive_a_restart(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**settings_env, **RISK,
           # static membership: the restarted worker replaces the killed one at once
           "TICKSTREAM_GROUP_INSTANCE_ID": "worker-1",
           "TICKSTREAM_RISK_EVENT_BLACKOUT_MIN": "0",
           # offline has no idle timer: a slow wait here must not close a bar early online
           "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000"}
    settings = Settings.from_env(env, env_file=None)
    env["TICKSTREAM_MODEL_DIR"] = str(train_small_model(tmp_path, settings))
    settings = Settings.from_env(env, env_file=None)
    ticks = simulate(11, symbols=("EURUSD",), seconds=1800)
    events = simulate_events(11, symbols=("EURUSD",), seconds=1800, calendar_every_s=400,
                             news_every_s=45)

    # ---- offline: the same ticks and events -------------------------------------------
    src, evf, off = tmp_path / "ticks.csv", tmp_path / "events.jsonl", tmp_path / "offline"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    write_events(events, evf)
    result = run_process([src], settings, settings.model_dir, off, events=[evf])
    assert result["events_in"] == len(events)
    header = list(FeatureVector.FIELDS)
    off_features = {(r[0], r[1]): r for r in csv_rows(off / "features.csv")}
    ctx_cols = [header.index(c) for c in ("minutes_to_next_event", "news_count_1h")]
    assert any(r[ctx_cols[0]] != "" for r in off_features.values())
    assert any(r[ctx_cols[1]] not in ("", "0") for r in off_features.values())
    assert csv_rows(off / "commands.csv"), "the model must trade here, or the test proves nothing"

    # ---- online ---------------------------------------------------------------------------
    ensure_topics(settings)
    producer = RecordProducer(settings)
    codec = make_codec(None)
    for ev in events:
        topic = "events.calendar" if ev.kind == "CALENDAR" else "events.news"
        producer.send(topic, ev.currency, ev)

    def control(command: str) -> None:
        producer.send("control", "kill_switch", ControlMessage(
            command=command, reason="test", issued_by="pytest", time_ms=int(time.time() * 1000)))
        assert producer.flush() == 0

    control("kill_switch_on")
    names = {
        "context": CONTEXT.changelog(settings), "control": CONTROL_STATE.changelog(settings),
        "features": settings.topic("features"), "commands": settings.topic("trading.commands"),
    }
    reader = TopicReader(settings, sorted(names.values()))
    got: list[Message] = []

    def count(name: str) -> int:
        return sum(m.topic == names[name] for m in got)

    def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        reader.read_until(lambda _ms: predicate(), timeout_s=timeout_s, into=got)
        assert predicate(), f"timed out waiting for {what}"

    q = len(ticks) // 4
    worker = WorkerProcess(env, tmp_path / "worker1.log")
    try:
        worker.start()
        wait(lambda: count("context") >= len(events) and count("control") >= 1, 60,
             "every event and the kill switch in the global tables")
        send_ticks(producer, ticks[:q])
        wait(lambda: count("features") >= 4, 60, "features before the restart")
        # A clean restart: the worker checkpoints and exits by itself on SIGTERM, and the
        # global tables come back from their changelogs.
        assert worker.stop() == 0, "SIGTERM must stop the worker cleanly, not by SIGKILL"
        worker = WorkerProcess(env, tmp_path / "worker2.log")
        worker.start()
        send_ticks(producer, ticks[q:2 * q])
        wait(lambda: count("features") >= 12, 90, "features after the restart")
        assert count("commands") == 0, "kill switch on: no command, also after the restart"
        last_bar_while_killed = max(
            codec.decode(m.value, FeatureVector).bar_time
            for m in got if m.topic == names["features"]
        )
        control("kill_switch_off")
        wait(lambda: count("control") >= 2, 30, "the lift in the global table")
        send_ticks(producer, ticks[2 * q:])
        wait(lambda: count("commands") >= 1, 90, "a command after the lift")
    finally:
        worker.stop()
        reader.close()
        producer.flush()

    online = [codec.decode(m.value, FeatureVector) for m in got if m.topic == names["features"]]
    assert len(online) >= 12
    bar_times = [fv.bar_time for fv in online]
    assert len(set(bar_times)) == len(bar_times), "after a clean stop nothing is replayed"
    for fv in online:  # context joined as of the bar, identical to offline, before and after
        assert row(fv) == off_features[(fv.symbol, str(fv.bar_time))], fv.bar_time
    assert any(fv.news_count_1h > 0 for fv in online)
    cmds = [codec.decode(m.value, TradingCommand) for m in got if m.topic == names["commands"]]
    assert all(c.bar_time > last_bar_while_killed for c in cmds), "commands only after the lift"
