"""The bench's inputs, its peer runner and its scale-out layout, without a broker.

The figures themselves belong to ``make bench``; these check what the figures stand on: the
ticks (real two-broker Lean quotes by default, any canonical CSV, the simulator), one CSV of
exactly those ticks for ``process`` and the peer, the peer's JSON read or its absence
reported, and a partition count that really spreads the symbols over the workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2

from bench import inputs, peer
from bench.topology import CpuSampler, partition_counts, spreading_partitions
from connectors.files import read_canonical, write_canonical
from stages.types import Tick

LEAN_PRESENT = inputs.LEAN.is_dir()


def need_lean() -> None:
    if not LEAN_PRESENT:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Lean data is missing: {inputs.LEAN}")
        pytest.skip(f"no Lean data at {inputs.LEAN}")


def test_lean_input_starts_where_both_brokers_quote_both_pairs(tmp_path: Path) -> None:
    need_lean()
    inp = inputs.load("lean", 5_000, tmp_path)
    assert len(inp.ticks) == 5_000
    streams = {(t.broker, t.symbol) for t in inp.ticks}
    assert streams == {("OANDA", "EURUSD"), ("OANDA", "NZDUSD"), ("FXCM", "EURUSD"),
                       ("FXCM", "NZDUSD")}
    times = [t.time_msc for t in inp.ticks]
    assert times == sorted(times)
    # Every tick has a receive time: its event time + 20 ms (deterministic).
    assert all(t.recv_time_us == t.time_msc * 1000 + inputs.RECV_DELAY_US for t in inp.ticks)
    # The CSV the offline run and the peer read holds exactly these ticks.
    assert list(read_canonical(inp.csv)) == inp.ticks
    assert inp.summary()["input_brokers"] == ["FXCM", "OANDA"]


def test_a_csv_input_is_read_as_given_and_a_bad_row_is_one_error(tmp_path: Path) -> None:
    src = tmp_path / "mine.csv"
    ticks = [Tick("B1", "EURUSD", 1_000 + i, 1.1, 1.1002, 5_000_000 + i) for i in range(10)]
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    inp = inputs.load(str(src), 4, tmp_path / "run")
    assert inp.ticks == ticks[:4]  # receive times given: kept
    with src.open("a") as fh:
        fh.write("B1,EURUSD,notanumber,1.1,1.2,,,,\n")
    with pytest.raises(inputs.InputError, match="line 12"):
        inputs.load(str(src), None, tmp_path / "run")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x7fELF\x02\x01\xd0\xff\xfe" * 50)
    with pytest.raises(inputs.InputError, match="unreadable"):
        inputs.load(str(binary), 4, tmp_path / "run")
    with pytest.raises(inputs.InputError, match="no such file"):
        inputs.load(str(tmp_path / "absent.csv"), 4, tmp_path / "run")


def test_simulated_input_is_the_simulators_three_brokers(tmp_path: Path) -> None:
    inp = inputs.load("simulated", 3_600, tmp_path)
    assert len({t.broker for t in inp.ticks}) == 3
    assert list(read_canonical(inp.csv)) == inp.ticks


def fake_peer(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "run_peer_bench.sh"
    script.write_text(f"#!/usr/bin/env bash\n{body}\n")
    return script


def test_the_peers_json_line_is_read(tmp_path: Path) -> None:
    line = json.dumps({"peer": "quixstreams", "ticks": 7, "ticks_per_s": 123.4,
                       "passthrough_msgs_per_s": 999.0})
    script = fake_peer(tmp_path, f"echo 'building venv' >&2\necho 'noise'\necho '{line}'")
    got = peer.measure(tmp_path / "in.csv", 7, script=script)
    assert got["ticks_per_s"] == 123.4


@pytest.mark.parametrize(("body", "why"), [
    ("echo 'pip: no network' >&2; exit 1", "exited 1: pip: no network"),
    ('echo \'{"ticks": 3, "ticks_per_s": 1}\'', "processed 3 ticks, not 7"),
])
def test_a_peer_that_cannot_run_says_why(tmp_path: Path, body: str, why: str) -> None:
    with pytest.raises(peer.PeerUnavailable, match=why):
        peer.measure(tmp_path / "in.csv", 7, script=fake_peer(tmp_path, body))
    with pytest.raises(peer.PeerUnavailable, match="no peer script"):
        peer.measure(tmp_path / "in.csv", 7, script=tmp_path / "absent.sh")


def partition(symbol: str, n: int) -> int:
    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % n


def test_the_scale_out_partition_count_puts_the_symbols_on_different_workers() -> None:
    symbols = ["EURUSD", "NZDUSD"]
    # At the default 12 partitions both land on odd partitions: one worker of two gets both.
    assert partition("EURUSD", 12) % 2 == partition("NZDUSD", 12) % 2
    p = spreading_partitions(symbols, 2, 12)
    assert partition("EURUSD", p) % 2 != partition("NZDUSD", p) % 2
    many = [f"SYM{i:02d}" for i in range(24)]
    p = spreading_partitions(many, 2, 12)
    per = [sum(partition(s, p) % 2 == w for s in many) for w in (0, 1)]
    assert abs(per[0] - per[1]) == 0  # 24 symbols: 12 on each worker


def test_partition_counts_follow_the_producers_hash() -> None:
    ticks = [Tick("B", "EURUSD", i, 1.0, 1.1) for i in range(3)] + [
        Tick("B", "NZDUSD", 9, 0.8, 0.81)]
    assert partition_counts(ticks, 12) == {partition("EURUSD", 12): 3,
                                           partition("NZDUSD", 12): 1}


def test_cpu_is_counted_over_the_span_only() -> None:
    sampler = CpuSampler(os.getpid())
    sampler.samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 3.0), (13.0, 3.1), (14.0, 3.1)]
    assert sampler.between(11.0, 12.0) == pytest.approx(1.5)
    assert sampler.between(10.5, 12.5) == pytest.approx(2.1)  # the samples around the span


def test_no_clickhouse_server_is_one_line_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The store figures come last: a missing server must stop the bench at once, in one
    line that says what to do, not after minutes of topology runs with a traceback."""
    import bench.__main__ as bench_main
    from devstack import clickhouse

    def missing() -> Path:
        raise clickhouse.ClickHouseError(
            "clickhouse-server is not installed: run `make clickhouse`")

    def no_input(*_a: object) -> None:
        raise AssertionError("the input was loaded before the check")

    monkeypatch.setattr(clickhouse, "server_binary", missing)
    monkeypatch.setattr(inputs, "load", no_input)
    assert bench_main.main(["--quick"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m bench: clickhouse-server is not installed: run `make clickhouse` "
                   "(or pass --skip-storage)"]
