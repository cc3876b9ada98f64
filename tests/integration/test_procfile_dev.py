"""``honcho start -f Procfile.dev`` runs the development stack, and Ctrl-C stops all of it.

The stack's own broker listens on a private port (TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS moves
it, as Procfile.dev says); the test waits for the worker to be ready and for clean ticks
from the simulator on ``ticks.clean``, then sends SIGINT to honcho and checks that every
process it started, the broker binary included, is gone. On the way it runs the image's
HEALTHCHECK command (docker/Dockerfile) against the running worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import procs
import pytest
import yaml
from conftest import REPO_ROOT, need

from devstack.broker import free_port
from devstack.kafka_io import TopicReader
from devstack.localstack import READY_MARKER
from schemas.codec import make_codec
from schemas.records import CleanTick
from topology.settings import Settings

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 180.0
CLEAN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CLEAN_TICKS = 30


def healthcheck(web_port: str) -> int:
    """The exit status of docker/Dockerfile's HEALTHCHECK command against this machine."""
    text = (REPO_ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)
    assert match is not None, "docker/Dockerfile has no HEALTHCHECK CMD [...]"
    argv = json.loads(match.group(1))
    assert argv[0] == "python", argv
    env = {**os.environ, "TICKSTREAM_WEB_PORT": web_port}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                          timeout=30).returncode


class Output:
    """honcho's combined output, read on a thread (which ends when honcho closes it)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(proc,), name="honcho-output")
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if READY_MARKER in line:
                self.ready.set()
        self.ready.set()  # honcho is gone: stop waiting

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def text(self) -> str:
        return "".join(self.lines)


def test_honcho_runs_procfile_dev_and_sigint_stops_everything(unique: str,
                                                               tmp_path: Path) -> None:
    honcho = shutil.which("honcho", path=str(VENV_BIN))
    need(honcho is not None, "honcho is not installed (pip install -e '.[dev]')")
    assert honcho is not None
    port = free_port()
    tickstream = {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "TICKSTREAM_TOPIC_PREFIX": f"t{unique}.",
        "TICKSTREAM_APP_ID": f"app{unique}",
        "TICKSTREAM_PARTITIONS": "4",
        "TICKSTREAM_DATA_DIR": str(tmp_path / "worker"),
        "TICKSTREAM_MODEL_DIR": str(tmp_path / "models"),
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_WEB_PORT": str(free_port()),
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    env = {**inherited, **tickstream, "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(VENV_BIN), inherited.get("PATH", "")])}
    no_env_file = tmp_path / "empty.env"  # not the work tree's .env, if there is one
    no_env_file.write_text("")
    proc = subprocess.Popen(
        [honcho, "start", "-f", "Procfile.dev", "-e", str(no_env_file), "--no-colour"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    out = Output(proc)
    started: set[int] = set()
    try:
        assert out.ready.wait(READY_TIMEOUT_S), f"no worker Ready:\n{out.text()[-4000:]}"
        assert proc.poll() is None, f"honcho exited with {proc.returncode}:\n{out.text()[-4000:]}"
        started = {int(p) for p in re.findall(r"\| \S+ started \(pid=(\d+)\)", out.text())}
        assert len(started) == 3, out.text()[-4000:]

        settings = Settings.from_env(tickstream, env_file=None)
        codec = make_codec(None)
        with TopicReader(settings, [settings.topic("ticks.clean")]) as reader:
            got = reader.read_until(lambda m: len(m) >= CLEAN_TICKS, CLEAN_TIMEOUT_S)
        assert len(got) >= CLEAN_TICKS, f"{len(got)} clean ticks:\n{out.text()[-4000:]}"
        config = yaml.safe_load((REPO_ROOT / "config/collectors/simulate.yaml").read_text())
        brokers = {b["name"] for b in config["brokers"]}
        for message in got:
            tick = codec.decode(message.value, CleanTick)
            assert tick.symbol in config["symbols"] and tick.broker in brokers, tick
            assert message.key == tick.symbol.encode()
            assert 0 < tick.bid < tick.ask, tick

        assert healthcheck(tickstream["TICKSTREAM_WEB_PORT"]) == 0
        running = procs.descendants(proc.pid)  # honcho's helpers, the commands, the broker binary
        assert running >= started
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        try:
            rc = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            for pid in procs.in_groups(started):
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            out.join(10)
            assert proc.stdout is not None
            proc.stdout.close()
    text = out.text()
    assert rc == 130, text[-4000:]  # honcho's status after SIGINT
    assert "SIGINT received" in text and "SIGKILL" not in text, text[-4000:]
    stopped = dict(re.findall(r"\| (\S+) stopped \(rc=(-?\d+)\)", text))
    assert stopped == {"broker.1": "0", "worker.1": "0", "collect-simulator.1": "0"}, text[-4000:]
    assert healthcheck(tickstream["TICKSTREAM_WEB_PORT"]) != 0  # nothing answers now
    # Each was waited for by its parent before honcho reported it stopped and exited.
    left = {p for p in running if procs.alive(p)} | procs.in_groups(started)
    assert not left, f"still running after honcho stopped: {sorted(left)}"
