"""The worker's own state as the health page sees it: an explicit object, not app attributes.

Agents and services that can tell the worker is not doing its job (a stalled partition, a
broker that lost our topics, a failed restore) report a *problem* under a stable key; the
``/health/`` page turns not-ok while any problem is reported and lists them, and clears it
when the reporter clears its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerStatus:
    """Problems currently reported, by key, with the detail an operator needs."""

    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Free-form figures other parts publish for the health page (e.g. per-partition lag).
    gauges: dict[str, Any] = field(default_factory=dict)
    #: The pipeline agent's counters (events, batches, dead letters by kind, checkpoints).
    stats: dict[str, float] = field(default_factory=dict)
    #: The model store the scorer uses (``stages.score.ModelStore``), for its status.
    models: Any = None
    #: When this worker was built: epoch ms and the monotonic clock (for ``uptime_s``).
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    started_mono: float = field(default_factory=time.monotonic)

    def report(self, key: str, detail: str, **extra: Any) -> None:
        """Mark ``key`` as a problem (replacing any earlier report under that key)."""
        since = self.problems.get(key, {}).get("since_ms")
        self.problems[key] = {
            "detail": detail,
            "since_ms": since if since is not None else time.time_ns() // 1_000_000,
            **extra,
        }

    def clear(self, key: str) -> None:
        self.problems.pop(key, None)

    @property
    def ok(self) -> bool:
        return not self.problems

    def uptime_s(self, now_mono: float | None = None) -> float:
        return (time.monotonic() if now_mono is None else now_mono) - self.started_mono

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": dict(self.problems), **self.gauges}
