"""The storage sink (``python -m topology.sink_app``) in a child process, for tests and the
benchmark: started with an environment, stopped with SIGTERM (it flushes and commits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: What the sink logs once the consumer group gave it its partitions.
ASSIGNED_MARKER = "sink assigned"


class SinkError(RuntimeError):
    """The sink exited early, or what was waited for did not happen in time."""


class SinkProcess:
    """One sink process; its output goes to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "topology.sink_app"], cwd=cwd,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str,
                 poll_s: float = 0.1) -> float:
        """Wait until ``predicate()`` (exceptions count as not yet: the store may be
        restarting); returns the seconds waited. Raises :class:`SinkError` when the sink
        exits or the time is up."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                if predicate():
                    return time.monotonic() - start
            except Exception:  # not ready is all it means here
                pass
            if self.proc.poll() is not None:
                raise SinkError(f"sink exited with {self.proc.returncode}:\n"
                                f"{self.output()[-3000:]}")
            time.sleep(poll_s)
        raise SinkError(f"timed out waiting for {what}\n{self.output()[-3000:]}")

    def wait_assigned(self, timeout_s: float = 60.0) -> float:
        return self.wait_for(lambda: ASSIGNED_MARKER in self.output(), timeout_s,
                             "the sink's partitions")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
