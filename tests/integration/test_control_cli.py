"""``tickstream control`` on the real local broker: the kill switch set with the command
stops a live worker's commands and shows in its ``/health/``; lifted, commands resume; a
model announcement shows there too."""

from __future__ import annotations

import csv
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
from pipeline_helpers import RISK, send_ticks, train_small_model

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from offline.process import run_process
from schemas.codec import make_codec
from schemas.records import FeatureVector, TradingCommand
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration


def control(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "topology.control_cli", *args, "--json"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def health(env: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{env['TICKSTREAM_WEB_PORT']}/health/"
    with urllib.request.urlopen(url, timeout=5) as resp:
        page: dict[str, Any] = json.loads(resp.read())
    return page


def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_switch_and_model_through_the_command(settings_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    env = {**settings_env, **RISK, "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000"}
    env["TICKSTREAM_MODEL_DIR"] = str(train_small_model(
        tmp_path, Settings.from_env(env, env_file=None)))
    settings = Settings.from_env(env, env_file=None)
    ensure_topics(settings)
    ticks = simulate(11, symbols=("EURUSD",), seconds=1800)
    producer = RecordProducer(settings)
    codec = make_codec(None)
    names = {"features": settings.topic("features"),
             "commands": settings.topic("trading.commands")}
    reader = TopicReader(settings, sorted(names.values()))
    got: list[Message] = []

    def count(name: str) -> int:
        return sum(m.topic == names[name] for m in got)

    def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        reader.read_until(lambda _ms: predicate(), timeout_s=timeout_s, into=got)
        assert predicate(), f"timed out waiting for {what}"

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        assert health(env)["kill_switch"] == {"on": False}
        sent = control(env, "kill-switch", "on", "--reason", "drill", "--issued-by", "pytest")
        assert sent["command"] == "kill_switch_on" and sent["topic"] == names["commands"].replace(
            "trading.commands", "control")
        eventually(lambda: health(env)["kill_switch"].get("on") is True, 60,
                   "the kill switch in /health/")
        ks = health(env)["kill_switch"]
        assert (ks["reason"], ks["issued_by"], ks["time_ms"]) == ("drill", "pytest",
                                                                  sent["time_ms"])
        # Past the warm-up, into bars the model trades on (offline, below): no command.
        cut = len(ticks) * 2 // 3
        send_ticks(producer, ticks[:cut])
        wait(lambda: count("features") >= 19, 90, "features while the switch is on")
        assert count("commands") == 0, "kill switch on: no command"
        stopped = health(env)["worker"]
        assert stopped["ok"], stopped
        last_bar = max(codec.decode(m.value, FeatureVector).bar_time
                       for m in got if m.topic == names["features"])

        control(env, "model", "v1", "--reason", "pin")
        eventually(lambda: (health(env).get("model_announced") or {}).get("version") == "v1",
                   60, "the announcement in /health/")
        assert health(env)["model"]["version"] == "v1"

        lifted = control(env, "kill-switch", "off")
        assert lifted["command"] == "kill_switch_off"
        eventually(lambda: health(env)["kill_switch"]["on"] is False, 60, "the lift")
        assert health(env)["kill_switch"]["time_ms"] == lifted["time_ms"]
        send_ticks(producer, ticks[cut:])
        wait(lambda: count("commands") >= 1, 90, "a command after the lift")
    finally:
        worker.stop()
        reader.close()
        producer.flush()
    cmds = [codec.decode(m.value, TradingCommand) for m in got if m.topic == names["commands"]]
    assert all(c.bar_time > last_bar for c in cmds), "commands only after the lift"
    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    run_process([src], settings, settings.model_dir, tmp_path / "offline")
    with (tmp_path / "offline" / "commands.csv").open() as fh:
        offline = [int(r["bar_time"]) for r in csv.DictReader(fh)]
    assert any(t <= last_bar for t in offline), "without the switch it would have traded"
    assert "Traceback" not in worker.log_text()


def test_a_broker_that_does_not_answer_is_one_line_and_exit_1(settings_env: dict[str, str],
                                                              ) -> None:
    from devstack.broker import free_port

    env = {**settings_env, "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "topology.control_cli", "kill-switch", "on", "--timeout", "2"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False)
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("tickstream control:")]
    assert len(lines) == 1 and "not acknowledged" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
