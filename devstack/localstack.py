"""Start and stop worker processes on the local broker (demo, smoke runs, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: What Faust's worker logs once its agents run and its partitions are assigned.
READY_MARKER = "[^Worker]: Ready"


class WorkerError(RuntimeError):
    """A worker process exited early or did not become ready in time."""


@dataclass
class WorkerProcess:
    """``tickstream worker`` in a child process whose log is a file we can watch."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: Where this process's own lines begin in the log file (see :meth:`start`).
    log_offset: int = field(default=0, init=False)

    def start(self, ready_timeout_s: float = 60.0) -> WorkerProcess:
        """Start the worker and wait until *this* process logs that it is ready.

        The log file may already hold an earlier worker's lines (a restart appends to the
        same file): only what is written after this start counts, so a restarted worker is
        never taken for ready on its predecessor's "Ready".
        """
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = len(self.log_text())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "topology.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_log(READY_MARKER, ready_timeout_s, after=self.log_offset)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, marker: str, timeout_s: float, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if marker in self.log_text()[after:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise WorkerError(
                    f"worker exited with {self.process.returncode}:\n{self.log_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"no {marker!r} in worker log after {timeout_s}s:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the crash case, no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM: graceful stop; escalate to SIGKILL after ``timeout_s``.

        Returns the exit status (negative: killed by that signal), or None if the worker
        was not running.
        """
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(10)
