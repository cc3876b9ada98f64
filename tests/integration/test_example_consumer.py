"""``examples/consume_commands.py`` against the local broker: commands produced with the
project's own producer and codec, in both framings (single-object and Confluent through a
Schema Registry) and from an older schema version, printed exactly, as text and as JSON;
an undecodable record is one line on stderr; Ctrl-C stops it with its offsets committed."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import fastavro
import pytest
from fake_schema_registry import FakeSchemaRegistry

from connectors.producer import RecordProducer
from schemas import avro
from schemas.codec import make_codec
from schemas.records import TradingCommand
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consume_commands.py"
BAR = 1_789_995_240_000  # 2026-09-21T12:54:00Z


def commands(n0: int) -> list[TradingCommand]:
    return [
        TradingCommand(command_id=f"c{n0}-buy", action="BUY", symbol="EURUSD", volume=0.1,
                       price=1.08512, stop_loss=1.08312, take_profit=1.08912,
                       confidence=0.7125, model_version="v1", reason="p_up 0.71 >= 0.55",
                       bar_time=BAR, trigger_recv_time_us=BAR * 1000 + 60_000_123,
                       created_time_us=BAR * 1000 + 60_004_000),
        TradingCommand(command_id=f"c{n0}-sell", action="SELL", symbol="USDJPY", volume=0.2,
                       price=151.234, stop_loss=151.534, take_profit=None, confidence=0.6,
                       model_version="v2@ab12", reason="p_up 0.40 ≤ 0.45", bar_time=BAR + 60_000,
                       trigger_recv_time_us=1, created_time_us=2),
        TradingCommand(command_id=f"c{n0}-close", action="CLOSE", symbol="EURUSD", volume=0.1,
                       price=1.0861, confidence=0.0, model_version="v1", reason="stop_loss",
                       bar_time=BAR + 61_234, trigger_recv_time_us=3, created_time_us=4),
    ]


def expected_line(c: TradingCommand) -> str:
    """The documented text format, written out independently of the example."""
    stamps = {BAR: "2026-09-21T12:54:00.000Z", BAR + 60_000: "2026-09-21T12:55:00.000Z",
              BAR + 61_234: "2026-09-21T12:55:01.234Z"}
    sl = "-" if c.stop_loss is None else repr(c.stop_loss)
    tp = "-" if c.take_profit is None else repr(c.take_profit)
    return (f"{stamps[c.bar_time]} {c.action:<5} {c.symbol} vol={c.volume!r} "
            f"price={c.price!r} sl={sl} tp={tp} conf={c.confidence:.3f} "
            f"model={c.model_version} id={c.command_id} reason={c.reason}")


def v1_record(c: TradingCommand) -> bytes:
    """A command as a worker of schema version 1 (no take_profit) framed it."""
    old = next(s for s in avro.history("TradingCommand") if "take_profit" not in
               {f["name"] for f in s["fields"]})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old, {k: v for k, v in c.to_dict().items()
                                           if k != "take_profit"})
    return b"\xc3\x01" + avro.fingerprint(old) + body.getvalue()


#: The local broker holds a group join for half the session timeout (docs/platform-notes.md).
FAST_JOIN = ["-X", "session.timeout.ms=6000"]


def run(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *FAST_JOIN, *args],
                          capture_output=True,
                          text=True, timeout=timeout_s, check=False,
                          env={**os.environ, "PYTHONPATH": ""}, cwd="/")


def read_lines(stream: IO[bytes], n: int, timeout_s: float) -> list[str]:
    """The first ``n`` lines the process writes, read from the pipe itself (a buffered
    reader would hold lines the selector no longer sees)."""
    fd = stream.fileno()
    data = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while data.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {data!r}"
            if sel.select(left):
                chunk = os.read(fd, 65536)
                assert chunk, f"the example exited after {data!r}"
                data += chunk
    finally:
        sel.close()
    return data.decode().splitlines()[:n]


def test_example_prints_every_command_in_both_framings(settings_env: dict[str, str],
                                                       unique: str) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    topic = settings.topic("trading.commands")
    bootstrap = settings_env["TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    # Version 1 has no take_profit: it reads back as the default, None.
    plain, confluent = commands(1), commands(2)
    old = dataclasses.replace(commands(3)[0], take_profit=None)
    with FakeSchemaRegistry() as registry:
        producer = RecordProducer(settings)
        for c in plain:
            producer.send("trading.commands", c.symbol, c)
        producer.send_raw(topic, b"EURUSD", b"not a command")
        producer.send_raw(topic, old.symbol.encode(), v1_record(old))
        assert producer.flush() == 0
        registered = RecordProducer(settings, codec=make_codec(registry.url))
        for c in confluent:
            registered.send("trading.commands", c.symbol, c)
        assert registered.flush() == 0
        sent = [*plain, old, *confluent]  # the order produced

        text = run(["--bootstrap", bootstrap, "--topic", topic, "--group", f"g{unique}",
                    "--from-beginning", "--schema-registry", registry.url,
                    "--max", str(len(sent))])
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert sorted(lines) == sorted(expected_line(c) for c in sent)
        # Within a partition (one symbol) in the order produced.
        for symbol in ("EURUSD", "USDJPY"):
            mine = [ln for ln in lines if f" {symbol} " in ln]
            assert mine == [expected_line(c) for c in sent if c.symbol == symbol]
        assert "skipped" in text.stderr and "unknown framing 6e6f" in text.stderr
        assert f"{len(sent)} command(s)" in text.stderr

        as_json = run(["--bootstrap", bootstrap, "--topic", topic, "--group", f"j{unique}",
                       "--from-beginning", "--schema-registry", registry.url, "--json",
                       "--max", str(len(sent))])
        assert as_json.returncode == 0, as_json.stderr
        got = sorted((json.loads(ln) for ln in as_json.stdout.splitlines()),
                     key=lambda d: d["command_id"])
        assert got == sorted((c.to_dict() for c in sent), key=lambda d: d["command_id"])
        assert next(d for d in got if d["command_id"] == old.command_id)["take_profit"] is None

    # Without the registry a Confluent-framed record is skipped with the reason, not a crash.
    nore = run(["--bootstrap", bootstrap, "--topic", topic, "--group", f"n{unique}",
                "--from-beginning", "--max", str(len(plain) + 1)])
    assert nore.returncode == 0, nore.stderr
    assert sorted(nore.stdout.splitlines()) == sorted(expected_line(c) for c in [*plain, old])


def test_ctrl_c_stops_it_cleanly_with_its_offsets_committed(settings_env: dict[str, str],
                                                            unique: str) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    topic = settings.topic("trading.commands")
    bootstrap = settings_env["TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    producer = RecordProducer(settings)
    first, later = commands(1), commands(2)[0]
    for c in first:
        producer.send("trading.commands", c.symbol, c)
    assert producer.flush() == 0
    args = [sys.executable, str(EXAMPLE), *FAST_JOIN, "--bootstrap", bootstrap,
            "--topic", topic, "--group", f"g{unique}", "--from-beginning"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": ""}, cwd="/")
    try:
        assert proc.stdout is not None
        lines = read_lines(proc.stdout, len(first), 60)
        assert sorted(lines) == sorted(expected_line(c) for c in first)
        proc.send_signal(signal.SIGINT)
        _out, raw_err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = raw_err.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"{len(first)} command(s)" in err

    # The same group goes on after what it printed: only the new command comes.
    producer.send("trading.commands", later.symbol, later)
    assert producer.flush() == 0
    again = run([*args[4:], "--max", "1"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [expected_line(later)]
