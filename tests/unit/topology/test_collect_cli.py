"""``tickstream collect``: health reports, clean SIGTERM stop with exact counts, failures.

The supervisor is tested in-process with small collectors; the command itself runs as a
subprocess against the real broker (the simulator, and the OANDA collector against its
stand-in with a wrong token for a fatal error)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import yaml
from conftest import REPO_ROOT
from sinks import ListSink
from standins.oanda import OandaStandIn

from connectors.base.collector import Collector
from connectors.base.resilience import Backoff, CircuitBreaker, FatalCollectorError
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import CollectorHealth, MarketEvent, RawTick
from topology.admin import ensure_topics
from topology.collect import KINDS, CollectFailed, health_record, run_collector, supervise
from topology.settings import Settings

CODEC = make_codec(None)
SECRET = "s3cret-token-0042"


class Scripted(Collector):
    """Fails every session (optionally fatally), or emits ``n`` ticks and stops itself."""

    kind: ClassVar[str] = "scripted"

    def __init__(self, sink: Any, *, ticks: int = 0, fatal: bool = False) -> None:
        super().__init__(
            "scripted", sink, backoff=Backoff(base_s=0.001, cap_s=0.001, max_attempts=2),
            breaker=CircuitBreaker(threshold=100), secrets=[SECRET],
        )
        self.n, self.fatal = ticks, fatal

    async def _connect(self) -> None:
        if self.fatal:
            raise FatalCollectorError(f"login refused for token {SECRET}")
        if not self.n:
            raise ConnectionError(f"refused (sent Bearer {SECRET})")

    async def _stream(self) -> None:
        for i in range(self.n):
            self.emit_tick(RawTick(broker="X", symbol="EURUSD", bid=1.0, ask=1.0001,
                                   time_msc=i, recv_time_us=i * 1000))
            self.mark_alive()
            await asyncio.sleep(0.001)
        await self.stop()


# ---- the supervisor, in-process -----------------------------------------------------------
async def test_clean_stop_publishes_a_final_report_after_the_last_tick() -> None:
    sink = ListSink()
    c = Scripted(sink, ticks=50)
    assert await supervise(c, sink, interval_s=0.01, install_signals=False) == 0
    assert sink.flushes == 1
    topics = [t for t, _k, _r in sink.sent]
    assert topics[-1] == "collectors.health" and topics.count("ticks.raw") == 50
    final = sink.health()[-1]
    assert (final.state, final.ticks, final.name, final.kind) == ("STOPPED", 50, "scripted",
                                                                   "scripted")
    assert final.pid == os.getpid() and final.interval_s == 0.01 and not final.connected
    assert all(h.state == "RUNNING" for h in sink.health()[:-1]) and len(sink.health()) >= 2
    assert {k for t, k, _r in sink.sent if t == "collectors.health"} == {"scripted"}


@pytest.mark.parametrize(("fatal", "error"), [(True, "FatalCollectorError"),
                                              (False, "ReconnectExhausted")])
async def test_failures_end_in_a_failed_report_and_a_redacted_one_line_error(
    fatal: bool, error: str
) -> None:
    sink = ListSink()
    with pytest.raises(CollectFailed) as info:
        await supervise(Scripted(sink, fatal=fatal), sink, interval_s=0.01,
                        install_signals=False)
    message = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in message
    assert message.startswith(f"scripted: {error}: ") and "***" in message
    assert SECRET not in message
    final = sink.health()[-1]
    assert final.state == "FAILED" and SECRET not in (final.last_error or "")
    assert error in (final.last_error or "")
    assert sink.flushes == 1


def test_venue_counters_go_to_detail_redacted() -> None:
    c = Scripted(ListSink())
    c.health_dict = lambda: {**Collector.health_dict(c), "echo": SECRET}  # type: ignore[method-assign]
    rec = health_record(c, "RUNNING", started_ms=1, interval_s=5.0, now_ms=10)
    assert rec.detail is not None and orjson.loads(rec.detail) == {"echo": "***"}
    assert (rec.time_ms, rec.started_ms, rec.circuit) == (10, 1, "closed")


def test_procfile_runs_every_kind_with_a_shipped_config() -> None:
    repo = REPO_ROOT
    lines = [ln.split(":", 1) for f in ("Procfile", "Procfile.dev")
             for ln in (repo / f).read_text().splitlines() if ln and not ln.startswith("#")]
    # Procfile.dev waits for the broker first: the collector is what it finally execs
    collect = {name: cmd.rsplit("exec ", 1)[-1].split() for name, cmd in lines
               if name.startswith("collect-")}
    kinds = set()
    for argv in collect.values():
        assert argv[:2] == ["tickstream", "collect"] and argv[3] == "--config", argv
        kinds.add(argv[2])
        assert isinstance(yaml.safe_load((repo / argv[4]).read_text()), dict)
    assert kinds == set(KINDS)
    shipped = {f"config/collectors/{p.name}" for p in (repo / "config/collectors").glob("*.yaml")}
    assert {argv[4] for argv in collect.values()} == shipped


# ---- the command, as a subprocess ----------------------------------------------------------
def tickstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "topology.cli", *args]


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_configuration_error_is_one_clear_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"name": "sim", "colour": "red"})
    env = {**os.environ, "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # never reached
    out = subprocess.run(tickstream("collect", "simulate", "--config", str(path)),
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"tickstream collect simulate: configuration error: {path}: colour: unknown setting "
        "(known: anomalies, brokers, events, max_ticks, name, position_every, "
        "position_interval_s, prices, realtime, seed, start_ms, symbols, ticks_per_s)")
    missing = subprocess.run(
        tickstream("collect", "oanda", "--config", str(tmp_path / "nope.yaml")),
        capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "nope.yaml: cannot read" in missing.stderr
    assert "Traceback" not in out.stderr + missing.stderr


def test_bridge_is_for_mt5_only(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"name": "sim"})
    assert run_collector("simulate", path, Settings.from_env({}, env_file=None),
                         bridge="127.0.0.1:18812") == 2


@pytest.fixture
def health_reader(kafka_settings: Settings) -> Iterator[TopicReader]:
    ensure_topics(kafka_settings)
    with TopicReader(kafka_settings, [kafka_settings.topic("collectors.health")]) as r:
        yield r


def read_health_until(
    reader: TopicReader, seen: list[Message], done: Callable[[CollectorHealth], bool],
    timeout_s: float = 60.0,
) -> CollectorHealth:
    deadline = time.monotonic() + timeout_s
    while True:
        for m in seen:
            rec = CODEC.decode(m.value, CollectorHealth, m.topic)
            if done(rec):
                return rec
        assert time.monotonic() < deadline, "no such health report before the deadline"
        seen += reader.poll(timeout_s=0.2)


def count_exactly(settings: Settings, topics: list[str], n: int) -> list[Message]:
    with TopicReader(settings, [settings.topic(t) for t in topics]) as reader:
        msgs = reader.read_until(lambda ms: len(ms) >= n, timeout_s=60)
        msgs += reader.poll(timeout_s=0.5)  # anything beyond the expected count shows up
    return msgs


@pytest.mark.integration
def test_simulate_runs_reports_health_and_stops_cleanly_on_sigterm(
    tmp_path: Path, settings_env: dict[str, str], kafka_settings: Settings,
    health_reader: TopicReader,
) -> None:
    name = f"sim-cli-{settings_env['TICKSTREAM_APP_ID']}"
    path = write_config(tmp_path, {
        "name": name, "seed": 5, "symbols": ["EURUSD", "USDJPY"], "ticks_per_s": 20,
        "events": {"calendar_every_s": 5, "news_every_s": 2}, "health_interval_s": 0.2,
    })
    env = {**os.environ, **settings_env}
    proc = subprocess.Popen(tickstream("collect", "simulate", "--config", str(path)),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[Message] = []
        running = read_health_until(
            health_reader, seen, lambda h: h.state == "RUNNING" and h.ticks > 0 and h.events > 0)
        assert running.name == name and running.kind == "simulate" and running.connected
        assert running.pid == proc.pid and running.interval_s == 0.2
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    final = read_health_until(health_reader, seen, lambda h: h.state != "RUNNING")
    assert final.state == "STOPPED" and not final.connected and final.ticks >= running.ticks
    assert all(m.key == name.encode() and m.partition == 0 for m in seen)

    ticks = count_exactly(kafka_settings, ["ticks.raw"], final.ticks)
    assert len(ticks) == final.ticks
    assert all(m.key == CODEC.decode(m.value, RawTick, m.topic).symbol.encode() for m in ticks)
    events = count_exactly(kafka_settings, ["events.calendar", "events.news"], final.events)
    assert len(events) == final.events
    assert all(m.key == CODEC.decode(m.value, MarketEvent, m.topic).currency.encode()
               for m in events)


@pytest.mark.integration
async def test_fatal_error_exits_non_zero_with_a_clear_redacted_message(
    tmp_path: Path, settings_env: dict[str, str], health_reader: TopicReader,
) -> None:
    async with OandaStandIn() as oanda:  # expects its own token, not ours: HTTP 401
        path = write_config(tmp_path, {
            "name": "oanda-cli", "account_id": oanda.account_id, "stream_url": oanda.url,
            "instruments": oanda.instruments, "token_env": "TEST_OANDA_TOKEN",
            "health_interval_s": 0.2,
        })
        env = {**os.environ, **settings_env, "TEST_OANDA_TOKEN": SECRET}
        proc = await asyncio.create_subprocess_exec(
            *tickstream("collect", "oanda", "--config", str(path)), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            _out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    err = err_bytes.decode()
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("tickstream collect oanda: oanda-cli: FatalCollectorError: ")
    assert "HTTP 401" in last
    assert SECRET not in err and "Traceback" not in err
    final = read_health_until(health_reader, [], lambda h: h.state != "RUNNING")
    assert final.state == "FAILED" and final.name == "oanda-cli"
    assert "HTTP 401" in (final.last_error or "") and SECRET not in (final.last_error or "")
