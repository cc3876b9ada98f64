"""Issue 13 items 2, 4-6, 9: every command fails with one line and a documented exit code,
writes nothing half-done, and documents every option."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka_log import RdKafkaLog
from topology.cli import build_parser
from topology.preflight import PreflightError, require_free_port, require_worker_can_start
from topology.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
TICKSTREAM = [sys.executable, "-m", "topology.cli"]
HEADER = "broker,symbol,time_msc,bid,ask\n"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*TICKSTREAM, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure's stderr, less log lines: exactly one ``tickstream COMMAND:`` line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    mine = [ln for ln in proc.stderr.splitlines() if ln.startswith("tickstream")]
    assert len(mine) == 1 and mine[0].startswith(f"tickstream {command}: "), proc.stderr
    return mine[0]


def test_process_on_a_missing_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = run(["process", str(tmp_path / "nope.csv"), "--out", "out"], tmp_path)
    assert proc.returncode == 1
    assert one_line(proc, "process").endswith("nope.csv: no such file")
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.mark.parametrize("argv", [
    ["replay", "--topic", "ticks.history", "--out", "f.parquet"],
    ["backtest", "--topic", "ticks.history", "--model-dir", "models"],
])
def test_a_command_reading_a_topic_with_no_broker_says_only_that(tmp_path: Path,
                                                                argv: list[str]) -> None:
    """Nothing but the one line: no librdkafka connection warnings before it."""
    from devstack.broker import free_port

    port = free_port()  # nothing listens there
    proc = run(argv, tmp_path, {"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [one_line(proc, argv[0])]
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in proc.stderr


def test_process_with_a_model_directory_that_is_not_there_says_so(tmp_path: Path) -> None:
    ticks = tmp_path / "t.csv"
    ticks.write_text(HEADER + "ICM,EURUSD,1700000000000,1.1,1.1002\n")
    proc = run(["process", str(ticks), "--model", str(tmp_path / "modles")], tmp_path)
    assert proc.returncode == 1
    line = one_line(proc, "process")
    assert "modles does not exist" in line and "tickstream train" in line
    assert "unexpected" not in line and "report it" not in line, line


def test_process_with_a_model_directory_holding_no_usable_model_says_so(tmp_path: Path
                                                                        ) -> None:
    """Asked for a model, a batch run must not go on to make no command at all."""
    ticks = tmp_path / "t.csv"
    ticks.write_text(HEADER + "ICM,EURUSD,1700000000000,1.1,1.1002\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model-v1.meta.json").write_text("{")
    for folder, why in (("empty", "no model-<version>.meta.json"), ("corrupt", "JSON")):
        proc = run(["process", str(ticks), "--model", folder, "--out", "out"], tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc, "process")
        assert f"no usable model in {folder}" in line and why in line, line
        assert "WARNING" not in proc.stderr, proc.stderr  # the line says it once
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["process", "convert", "train", "replay"])
def test_a_binary_input_is_one_line_naming_the_file(tmp_path: Path, command: str) -> None:
    blob = tmp_path / "blob.csv"
    blob.write_bytes(bytes(range(128, 256)) * 40)
    args = {"process": ["process", str(blob)],
            "convert": ["convert", "csv", str(blob), "-o", str(tmp_path / "o.csv")],
            "train": ["train", "--features", str(blob), "--model-dir", str(tmp_path / "m")],
            "replay": ["replay", "--file", str(blob), "--out", str(tmp_path / "f.parquet")]}
    proc = run(args[command], tmp_path)
    assert proc.returncode in (1, 2)
    assert "blob.csv" in one_line(proc, command)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "f.parquet").exists()


def test_a_wrong_header_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "ticks.csv"
    f.write_text("when,price\n1,2\n")
    proc = run(["process", str(f)], tmp_path)
    assert proc.returncode == 1
    assert "ticks.csv" in one_line(proc, "process")


def test_a_header_only_input_warns(tmp_path: Path) -> None:
    f = tmp_path / "empty.csv"
    f.write_text(HEADER)
    proc = run(["process", str(f)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tickstream process: warning: " in proc.stderr and "only a header" in proc.stderr


def test_convert_checks_its_input_before_creating_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    proc = run(["convert", "truefx", str(tmp_path / "missing.csv"), "-o", str(out)], tmp_path)
    assert proc.returncode == 1
    assert "missing.csv" in one_line(proc, "convert")
    assert not out.exists()


def test_convert_dash_writes_standard_output(tmp_path: Path) -> None:
    src = tmp_path / "EURUSD-2013-01.csv"
    src.write_text("EUR/USD,20130101 22:09:27,1.3191,1.3199\n"
                   "EUR/USD,20130101 22:09:28.250,1.3192,1.3199\n")
    proc = run(["convert", "truefx", str(src), "-o", "-"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[0].startswith("broker,symbol,time_msc,bid,ask")
    assert len(rows) == 3 and all(",EURUSD," in r for r in rows[1:])
    assert rows[1].split(",")[2].endswith("000") and rows[2].split(",")[2].endswith("250")
    assert not (tmp_path / "-").exists()


def test_a_misspelt_setting_stops_a_command_naming_the_one_meant(tmp_path: Path) -> None:
    proc = run(["describe"], tmp_path, env={"TICKSTREAM_PARTITON": "3"})
    assert proc.returncode == 2
    assert one_line(proc, "describe").endswith(
        "unknown setting TICKSTREAM_PARTITON — did you mean TICKSTREAM_PARTITIONS?")


def test_the_faust_worker_line_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "topology.app", "worker"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TICKSTREAM_PARTITIONS": "abc"},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert one_line(proc, "worker") == ("tickstream worker: configuration error: "
                                        "TICKSTREAM_PARTITIONS: expected an integer 1..10000 "
                                        "(got 'abc')")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the with block ends


@pytest.mark.parametrize("command", [["worker"], ["topics"], ["tail", "ticks.clean"],
                                     ["collect", "simulate", "--config",
                                      str(ROOT / "config/collectors/simulate.yaml")]])
def test_no_broker_is_one_line_naming_the_address(tmp_path: Path, command: list[str]) -> None:
    port = _closed_port()
    proc = run(command, tmp_path, env={"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS":
                                       f"127.0.0.1:{port}"}, timeout=60)
    assert proc.returncode == 1
    line = one_line(proc, " ".join(command[:2]) if command[0] == "collect" else command[0])
    assert f"127.0.0.1:{port}" in line and "make broker" in line
    assert "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS" in line
    assert "Connect to ipv4" not in proc.stderr


def test_a_taken_web_port_names_the_setting() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = int(held.getsockname()[1])
        with pytest.raises(PreflightError, match=f"port {port} .*TICKSTREAM_WEB_PORT"):
            require_free_port(port)
        settings = Settings.from_env({"TICKSTREAM_WEB_PORT": str(port)}, env_file=None)
        with pytest.raises(PreflightError, match="--web-port"):
            # a broker that answers: the held socket itself; the port given on the line
            require_worker_can_start(
                Settings.from_env({"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"},
                                  env_file=None), ["--web-port", str(port)])
        require_worker_can_start(  # --without-web: no port to check
            Settings.from_env({"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"},
                              env_file=None), ["--without-web"])
        assert settings.web_port == port
    require_free_port(port)  # free again


def test_ctrl_c_during_process_is_one_line_exit_130_and_no_output(tmp_path: Path) -> None:
    f = tmp_path / "ticks.csv"
    t0 = 1_400_000_000_000
    with f.open("w") as fh:
        fh.write(HEADER)
        for i in range(600_000):
            mid = 1.3 + (i % 500) * 1e-5
            fh.write(f"OANDA,EURUSD,{t0 + i * 50},{mid:.5f},{mid + 0.0001:.5f}\n")
    proc = subprocess.Popen([*TICKSTREAM, "process", str(f), "--out", "out"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    first = proc.stderr.readline()  # the first log line: the shards are running
    assert first and time.monotonic() < deadline
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "tickstream process: interrupted"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ctrl_c_while_replay_runs_its_shards_is_one_line_exit_130(tmp_path: Path) -> None:
    """Ctrl-C while ``replay --jobs 2`` has its two forked shards running: the parent says
    so in one line and exits 130, the shards go with it, no file is written."""
    from procs import alive, children

    f = tmp_path / "ticks.csv"
    t0 = 1_400_000_000_000
    with f.open("w") as fh:
        fh.write(HEADER)
        for i in range(300_000):
            step = (i % 500) * 1e-5
            fh.write(f"OANDA,EURUSD,{t0 + i * 50},{1.3 + step:.5f},{1.3001 + step:.5f}\n"
                     f"OANDA,NZDUSD,{t0 + i * 50},{0.8 + step:.5f},{0.8001 + step:.5f}\n")
    out = tmp_path / "features.parquet"
    proc = subprocess.Popen([*TICKSTREAM, "replay", "--file", str(f), "--out", str(out),
                             "--jobs", "2"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(children(proc.pid)) < 2:  # both shards forked and running
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the shards never started"
        time.sleep(0.01)
    shards = children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "tickstream replay: interrupted"
    assert not out.exists()
    assert not [pid for pid in shards if alive(pid)]  # no shard left behind


def _subcommands(parser: argparse.ArgumentParser, path: str = "tickstream"
                 ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", sub))
                found.extend(_subcommands(sub, f"{path} {name}"))
    return found


def test_every_subcommand_has_a_description_and_every_option_a_help() -> None:
    missing = []
    for name, sub in _subcommands(build_parser()):
        if not sub.description:
            missing.append(f"{name}: no description")
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_version_and_format_choices_are_printed(tmp_path: Path) -> None:
    proc = run(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("tickstream ")
    helped = run(["convert", "--help"], tmp_path)
    assert "truefx" in helped.stdout and "dukascopy" in helped.stdout


def test_librdkafka_connection_failures_are_one_warning_then_debug() -> None:
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.librdkafka")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Keep())
    log = RdKafkaLog(logger, repeat_s=3600)
    for ms in (0, 1, 5, 10):
        log.log(3, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                f"[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to "
                f"ipv4#127.0.0.1:9 failed: Connection refused (after {ms}ms in state CONNECT)")
    assert [r.levelno for r in records] == [logging.WARNING] + [logging.DEBUG] * 3


def test_process_store_on_a_store_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "ticks.csv"
    f.write_text(HEADER + "OANDA,EURUSD,1400000000000,1.30000,1.30010\n")
    port = _closed_port()
    proc = run(["process", str(f), "--store", f"clickhouse://u:p@127.0.0.1:{port}/db"],
               tmp_path, timeout=120)
    assert proc.returncode == 1
    line = one_line(proc, "process")
    assert line.startswith("tickstream process: store: ") and f"127.0.0.1:{port}" in line


def test_ctrl_c_while_the_commands_load_is_one_line_exit_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Building the parser imports xgboost, sklearn and the rest (about a second): a Ctrl-C
    then was a page of import traceback."""
    import topology.cli as cli

    def interrupted() -> argparse.ArgumentParser:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["process", "x.csv"]) == 130
    assert capsys.readouterr().err == "tickstream: interrupted\n"
