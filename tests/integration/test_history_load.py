"""``tickstream load`` on the real samples into the real local broker, and only once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from connectors.history.parse import BadLine, read_history
from devstack.kafka_io import Message, TopicReader
from offline.load import load_paths
from schemas.codec import make_codec
from schemas.records import RawTick
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.data]

MT5_EXPORT = (
    "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n"
    "2024.03.01\t09:00:00.250\t1.08011\t1.08013\t\t\t6\n"
    "2024.03.01\t09:00:00.900\t\t1.08015\t\t\t4\n"
    "2024.03.01\tbroken\n"
    "2024.03.01\t09:00:01.000\t1.08012\t\t\t\t2\n"
)


def read_all(settings: Settings, n: int) -> list[Message]:
    with TopicReader(settings, [settings.topic("ticks.history")]) as reader:
        return reader.read_until(lambda got: len(got) >= n, timeout_s=60)


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topology.cli", *argv],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


def test_every_format_loads_keyed_by_symbol_at_tick_time_and_only_once(
        settings_env: dict[str, str], kafka_settings: Settings, shared_data: Path,
        tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    mt5 = tmp_path / "EURUSD_export.csv"
    mt5.write_text(MT5_EXPORT, encoding="utf-16")
    jobs = [
        ("histdata", [shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv"], {}),
        ("truefx", [shared_data / "truefx/USDJPY-2013-01-01.csv"], {}),
        ("lean", [shared_data / "lean/oanda/tick/nzdusd/20140512_quote.zip"], {}),
        ("dukascopy", [shared_data / "dukascopy/EURUSD/2019/01/04"], {"symbol": "EURUSD"}),
        ("mt5", [mt5], {"broker": "ICM", "tz": "Europe/Athens"}),
    ]
    expected: list[Tick] = []
    for fmt, paths, kw in jobs:
        for p in paths:
            expected += [r for r in read_history(fmt, p, **kw) if isinstance(r, Tick)]
    results = {fmt: load_paths(kafka_settings, fmt, paths, **kw) for fmt, paths, kw in jobs}
    assert {f: r["loaded"] for f, r in results.items()} == dict.fromkeys(results, 1)
    assert results["mt5"]["bad_lines"] == 1
    [bad] = results["mt5"]["paths"][0]["bad_examples"]
    assert bad.startswith(f"{mt5}:4: ")  # file and line number

    got = read_all(kafka_settings, len(expected))
    assert len(got) == len(expected)
    codec = make_codec(None)
    decoded = [(m, codec.decode(m.value, RawTick, m.topic)) for m in got]
    assert all(m.key == r.symbol.encode() for m, r in decoded)
    assert all(m.timestamp_ms == r.time_msc for m, r in decoded)
    assert all(r.source == "HISTORY" and r.recv_time_us == r.time_msc * 1000
               for _, r in decoded)
    assert Counter((r.broker, r.symbol, r.time_msc, r.bid, r.ask) for _, r in decoded) == \
        Counter((t.broker, t.symbol, t.time_msc, t.bid, t.ask) for t in expected)
    # one symbol, one partition: its ticks in file order
    by_symbol: dict[str, set[int]] = {}
    for m, r in decoded:
        by_symbol.setdefault(r.symbol, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_symbol.values())

    # The same files again (through the command a user types): skipped, nothing produced.
    again = cli(settings_env, "load", "histdata",
                str(shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv"), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["loaded"], summary["skipped"], summary["ticks"]) == (0, 1, 0)
    assert "already loaded" in summary["paths"][0]["detail"]
    assert len(read_all(kafka_settings, len(expected) + 1)) == len(expected)

    # --force loads it again, on purpose
    forced = cli(settings_env, "load", "histdata",
                 str(shared_data / "histdata/DAT_ASCII_EURUSD_T_20200101.csv"), "--force",
                 "--json")
    assert json.loads(forced.stdout)["ticks"] == 9_500
    assert len(read_all(kafka_settings, len(expected) + 9_500)) == len(expected) + 9_500


def test_a_mistake_is_one_line_and_bad_lines_are_reported(
        settings_env: dict[str, str], tmp_path: Path) -> None:
    wrong = cli(settings_env, "load", "mt5", str(tmp_path / "x.csv"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().count("\n") == 0 and "--broker" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    src = tmp_path / "ticks.csv"
    src.write_text("broker,symbol,time_msc,bid,ask\nA,EURUSD,1700000000000,1.1,1.1002\n"
                   "A,EURUSD,later,1.1,1.1002\n")
    # Every path is checked before anything is loaded: a missing one is one line, exit 1,
    # and the others are not loaded either (nothing half-done).
    missing = cli(settings_env, "load", "csv", str(src), str(tmp_path / "missing.csv"))
    assert missing.returncode == 1, missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        f"tickstream load: no such file or folder: {tmp_path / 'missing.csv'}")
    assert "Traceback" not in missing.stderr and missing.stdout == ""
    out = cli(settings_env, "load", "csv", str(src))
    assert out.returncode == 0, out.stderr
    assert f"{src}: 1 ticks, 1 bad lines" in out.stdout
    assert f"bad line: {src}:3:" in out.stdout
    assert "Traceback" not in out.stderr
    assert [isinstance(r, BadLine) for r in read_history("csv", src)] == [False, True]


def test_a_full_producer_queue_is_waited_out_and_nothing_is_lost(
        kafka_settings: Settings) -> None:
    """The loaders' sender on a queue of 16 records: every one of 600 sends either queues
    at once or waits for room (BufferError) and then queues; all 600 arrive, in order."""
    from connectors.producer import RecordProducer

    ensure_topics(kafka_settings)
    producer = RecordProducer(kafka_settings, **{"queue.buffering.max.messages": 16})
    topic = kafka_settings.topic("ticks.history")
    delivered: list[int] = []
    send = producer.raw_sender(topic, lambda err, msg: delivered.append(
        -1 if err is not None else msg.timestamp()[1]))
    for i in range(600):
        send(b"EURUSD", b"v%d" % i, 1_500_000_000_000 + i)
    assert producer.flush(60) == 0
    assert delivered == [1_500_000_000_000 + i for i in range(600)]
    got = read_all(kafka_settings, 600)
    assert [m.value for m in got] == [b"v%d" % i for i in range(600)]


def test_the_batch_sender_waits_out_a_full_queue_and_keeps_the_order(
        kafka_settings: Settings) -> None:
    """The loader's batch sender on a queue of 16 records, serving reports every 7: all
    600 records arrive once each, in order — the one that met the full queue is sent
    again, not dropped or sent twice."""
    from connectors.producer import RecordProducer

    ensure_topics(kafka_settings)
    producer = RecordProducer(kafka_settings, **{"queue.buffering.max.messages": 16})
    topic = kafka_settings.topic("ticks.history")
    assert producer.acquire_producer_id(topic)
    delivered: list[int] = []
    send_many = producer.raw_batch_sender(topic, lambda err, msg: delivered.append(
        -1 if err is not None else msg.timestamp()[1]), poll_every=7)
    send_many([b"EURUSD"] * 600, [b"v%d" % i for i in range(600)],
              [1_500_000_000_000 + i for i in range(600)])
    assert producer.flush(60) == 0
    assert delivered == [1_500_000_000_000 + i for i in range(600)]
    got = read_all(kafka_settings, 600)
    assert [m.value for m in got] == [b"v%d" % i for i in range(600)]


def test_asking_for_the_producer_id_early_says_when_no_broker_answers() -> None:
    from connectors.producer import RecordProducer
    from devstack.broker import free_port

    dead = Settings.from_env({"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
                             env_file=None)
    producer = RecordProducer(dead)
    assert producer.acquire_producer_id(dead.topic("ticks.history"), timeout_s=0.5) is False
