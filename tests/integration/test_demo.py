"""``tickstream demo --duration 30 --json`` end to end, and a Ctrl-C in the middle of one.

The demo runs in its own session with a marker in its environment that every process it
starts inherits (the broker binary, the worker, the sink, the collectors); afterwards no
process carrying the marker may be alive, and none of the pids the summary lists.

The first run loads one day of the Lean history (``--history-days 1``: the default loads
all of it, which takes longer than this test should), or simulated history where the data
folder is absent. What the summary must show: commands, duplicates, rejects of every kind
the demo injects (crossed quotes, spikes → price_jump, late quotes → out_of_order,
undecodable records → malformed), the nothing-lost invariant (every record on ticks.raw is a
clean tick, a reject from ticks.raw or a duplicate the worker counted), the store holding
exactly the records of the stored topics, and the training report's PNG.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import procs
import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
INJECTED_REJECTS = ("crossed_quote", "price_jump", "out_of_order", "malformed")


def _marked(mark: str) -> list[int]:
    """Live processes whose environment carries ``DEMO_TEST_MARK=mark``."""
    return procs.with_environment(f"DEMO_TEST_MARK={mark}".encode(), besides=os.getpid())


def _wait_gone(mark: str, pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = sorted(set(_marked(mark)) | {p for p in pids if procs.alive(p)})
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _start(tmp_path: Path, mark: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    err = tmp_path / "demo.stderr"
    env = {**os.environ, "DEMO_TEST_MARK": mark, "PYTHONUNBUFFERED": "1"}
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.demo_cli", "--workdir", str(tmp_path / "demo"),
             *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=f,
            start_new_session=True)
    return proc, err


def _kill_all(proc: subprocess.Popen[bytes], mark: str) -> None:
    """Only when the test itself failed: nothing of this run may outlive it."""
    for pid in [proc.pid, *_marked(mark)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    proc.wait(10)


def test_demo_end_to_end(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    proc, err = _start(tmp_path, mark, "--duration", "30", "--json", "--history-days", "1")
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_all(proc, mark)
        pytest.fail(f"demo still running after {RUN_TIMEOUT_S} s:\n{err.read_text()[-3000:]}")
    assert proc.returncode == 0, err.read_text()[-3000:]
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, out.decode()[-2000:]  # one JSON object, nothing else on stdout
    s = json.loads(lines[0])
    assert s["interrupted"] is False

    left = _wait_gone(mark, list(s["pids"].values()))
    assert not left, f"processes left running: {left}"
    assert set(s["pids"]) >= {"broker", "worker", "sink", "collect-warmup",
                              "collect-simulator", "collect-calendar", "collect-news"}

    assert s["commands"] > 0, s["commands_by_action"]
    assert sum(s["commands_by_action"].values()) == s["commands"]
    assert s["duplicates"] > 0
    for reason in INJECTED_REJECTS:
        assert s["rejects_by_reason"].get(reason, 0) > 0, (reason, s["rejects_by_reason"])
    assert s["bars"] > 0

    # Nothing lost: every record on ticks.raw (read back from the topic by the demo) is a
    # clean tick, a reject from ticks.raw or a duplicate the worker counted; the worker
    # consumed exactly those records.
    assert s["ticks_in"] == sum(s["ticks_per_broker"].values()) + s["malformed_in"]
    assert s["ticks_in"] == s["clean"] + s["rejected"] + s["duplicates"]
    assert s["nothing_lost"]["holds"] is True
    assert s["worker_records_in"] == s["ticks_in"]
    assert s["rejected"] == sum(s["rejects_by_reason"].values())

    # The store holds every record of the stored topics, once.
    assert s["rows_stored"] == s["records_through_topics"]
    assert s["rows_stored"] == s["distinct_keys_through_topics"]
    assert s["rows_stored"]["ticks"] == s["clean"]
    assert s["rows_stored"]["commands"] == s["commands"]

    assert s["train"]["version"] == "demo" and s["train"]["used_by_demo"] is True
    assert s["train"]["promoted"] == s["train"]["beats_best_baseline"]
    for png in s["reports"]:
        assert Path(png).is_file() and Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["collector_exit"] == {"simulator": 0, "calendar": 0, "news": 0}
    for kind in ("calendar from SIMULATOR", "news from SIMULATOR",
                 "calendar from demo-calendar", "news from demo-wire"):
        assert s["events"].get(kind, 0) > 0, (kind, s["events"])
    assert s["exit_codes"]["worker"] == 0 and s["exit_codes"]["sink"] == 0


def test_demo_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """SIGINT to the demo's process group (what Ctrl-C in a terminal sends) once the live
    collectors run: exit 130, and every process it started is gone. This run has no Lean
    folder, so it also shows the fallback to simulated history."""
    mark = uuid.uuid4().hex
    proc, err = _start(tmp_path, mark, "--duration", "600", "--json", "--history-days", "1",
                       "--history", str(tmp_path / "no-lean-here"))
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while "live for" not in err.read_text(errors="replace"):
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.2)
        while len(started := _marked(mark)) < 7:  # demo, broker, worker, sink, 3 collectors
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, (started, err.read_text()[-3000:])
            time.sleep(0.1)
        _look_while_live(tmp_path / "demo" / "endpoints.json", deadline)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    except BaseException:
        _kill_all(proc, mark)
        raise
    assert "loading simulated history" in err.read_text()
    assert proc.returncode == 130, err.read_text()[-3000:]
    s = json.loads(out.decode().strip().splitlines()[-1])
    assert s["interrupted"] is True
    left = _wait_gone(mark, [*started, *s["pids"].values()])
    assert not left, f"processes left running after Ctrl-C: {left}"


def _look_while_live(endpoints: Path, deadline: float) -> None:
    """While the demo runs: its worker's /health and /metrics answer in their documented
    shapes (the Prometheus text parsed with prometheus_client's parser), and the example
    consumer reads the demo's trading.commands and prints them."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    where = json.loads(endpoints.read_text())
    while True:  # the live view fills with the live collectors' first ticks
        with urllib.request.urlopen(where["health"], timeout=10) as resp:
            health = json.loads(resp.read())
        if health["brokers"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert health["service"] and health["status"] in ("healthy", "degraded")
    assert health["brokers"] and health["aggregation"]["symbols_tracked"] > 0
    assert {"completeness", "spread_quality", "broker_sync"} <= set(health["quality"])
    with urllib.request.urlopen(where["metrics"], timeout=10) as resp:
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    assert "tickstream_duplicates" in families and "tickstream_kill_switch" in families
    assert sum(s.value for s in families["tickstream_records_in"].samples
               if s.name.endswith("_total")) > 0
    assert {s.labels["direction"] for s in families["tickstream_stage_records"].samples} \
        >= {"in", "out"}

    # The example consumer, as another team would run it, on the demo's own broker: the
    # warm-up bars have produced commands by now (the first test asserts commands > 0).
    example = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "consume_commands.py"),
         "--bootstrap", where["bootstrap"], "--topic", where["commands_topic"],
         "--group", f"example-{uuid.uuid4().hex[:8]}", "--from-beginning", "--json",
         "--max", "1"], capture_output=True, text=True,
        timeout=max(5.0, deadline - time.monotonic()))
    assert example.returncode == 0, example.stderr
    command = json.loads(example.stdout.splitlines()[0])
    assert command["action"] in ("BUY", "SELL", "CLOSE") and command["command_id"]
