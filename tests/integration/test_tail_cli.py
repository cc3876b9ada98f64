"""``tickstream tail TOPIC`` decodes any of our records, in either framing, on a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_schema_registry import FakeSchemaRegistry

from connectors.producer import RecordProducer
from schemas.codec import make_codec
from schemas.records import RawTick, TradingCommand
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def tail(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topology.cli", "tail", *args],
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_tail_decodes_every_framing_and_goes_on_past_garbage(settings_env: dict[str, str]
                                                             ) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    tick = RawTick(broker="OANDA", symbol="EURUSD", bid=1.08512, ask=1.08521,
                   time_msc=1_700_000_000_123, recv_time_us=1_700_000_000_200_000)
    command = TradingCommand(command_id="c1", action="BUY", symbol="EURUSD", volume=0.1,
                             price=1.08521, stop_loss=1.08321, take_profit=None,
                             confidence=0.61, model_version="v1", reason="demo",
                             bar_time=1_700_000_000_000, trigger_recv_time_us=1,
                             created_time_us=2)
    with FakeSchemaRegistry() as registry:
        plain = RecordProducer(settings)
        plain.send("ticks.raw", "EURUSD", tick)
        plain.send("ticks.raw", "EURUSD", command)  # one topic, two record types
        plain.send_raw(settings.topic("ticks.raw"), b"EURUSD", b"\xff\x00 not a record")
        assert plain.flush() == 0
        registered = RecordProducer(settings, codec=make_codec(registry.url))
        registered.send("ticks.raw", "EURUSD", tick)
        assert registered.flush() == 0

        done = tail(["ticks.raw", "--from-beginning", "--until-end", "--json"],
                    {**settings_env, "TICKSTREAM_SCHEMA_REGISTRY_URL": registry.url})
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["type"] for r in rows] == ["RawTick", "TradingCommand", "undecodable", "RawTick"]
    assert rows[0]["value"] == tick.to_dict() == rows[3]["value"]
    assert rows[1]["value"] == command.to_dict()
    assert rows[2]["value"]["bytes"].startswith("ff00")
    assert {r["key"] for r in rows} == {"EURUSD"}
    assert [r["offset"] for r in rows] == [0, 1, 2, 3]
    assert all(r["topic"] == settings.topic("ticks.raw") for r in rows)

    # Without the registry a Confluent-framed record says what to set, and the tail goes on.
    text = tail(["ticks.raw", "--from-beginning", "--until-end"], settings_env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 4 and "TICKSTREAM_SCHEMA_REGISTRY_URL" in lines[3]
    assert "4 records from" in text.stderr


def test_tail_of_a_topic_that_is_not_there_is_one_line(settings_env: dict[str, str]) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    done = tail(["no.such.topic", "--until-end"], settings_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "tickstream tail: no topic no.such.topic on ")
