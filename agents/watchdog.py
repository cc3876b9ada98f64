"""The stall watchdog: a source partition with lag that makes no progress is a failure.

A worker whose fetches come back empty although its partitions have records to read (the
local broker on a long log: ``docs/platform-notes.md``) used to sit "healthy" doing
nothing. Once a second the watchdog compares each assigned stream partition's progress
(its committed offset: what the worker has processed, not what the consumer has fetched
into the stream buffer ahead of it) with its high watermark (from the consumer's fetch
responses; table changelogs and partitions paused on purpose are left out):

* lag (high watermark - committed offset) is published on ``/health/`` (``worker.partition_lag``)
  and in the pipeline's periodic stats log (``lag``, ``lag_max``, and the consumer's
  current ``fetch_wait_ms``, and its ``fetches`` and ``starved_fetches`` so far: see
  ``engine/transport.py``);
* a partition with lag whose position has not moved for ``TICKSTREAM_STALL_WARN_S`` is
  reported as a problem (``/health/`` not-ok, naming the partition and its lag) and logged
  once as a warning; it clears when the partition moves or its lag is gone;
* after ``TICKSTREAM_STALL_EXIT_S`` (0: never) the worker logs one ERROR line and exits
  with status :data:`STALL_EXIT_CODE`, so that its supervisor restarts it. The exit is
  immediate (``os._exit``), like a crash: everything processed is covered by the last
  checkpoint (at most a second old) and what follows is replayed by the next owner.

:class:`StallWatch` is the whole policy, fed positions, high watermarks and a clock; the
timer in :func:`register` only reads the consumer and reports.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agents.wiring import Wiring
from agents.worker_status import WorkerStatus

log = logging.getLogger(__name__)

#: Exit status of a worker the watchdog stops (EX_TEMPFAIL: "try again later").
STALL_EXIT_CODE = 75
#: Seconds between two looks at the consumer.
INTERVAL_S = 1.0
PROBLEM_PREFIX = "stalled "

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Stall(Generic[K]):
    """A partition with lag whose position has not moved for ``stalled_s`` seconds."""

    partition: K
    lag: int
    position: int
    highwater: int
    stalled_s: float


@dataclass(frozen=True, slots=True)
class Verdict(Generic[K]):
    #: Lag of every partition whose position and high watermark are known.
    lags: dict[K, int]
    #: Partitions stalled for at least the warning window (health not-ok).
    stalled: list[Stall[K]] = field(default_factory=list)
    #: Partitions stalled for at least the exit window (empty when exiting is disabled).
    fatal: list[Stall[K]] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(self.lags.values())

    @property
    def max_lag(self) -> int:
        return max(self.lags.values(), default=0)


class StallWatch(Generic[K]):
    """Per partition: when did it last make progress, and is it stalled now?

    A partition makes progress when its position moves (either way: a seek is not a
    stall) or when it has no lag. A partition seen for the first time, or whose position
    or high watermark is unknown, starts (or restarts) its clock; one no longer given is
    forgotten.
    """

    def __init__(self, warn_s: float, exit_s: float) -> None:
        if warn_s <= 0:
            raise ValueError(f"warn_s must be positive, got {warn_s}")
        self.warn_s = warn_s
        self.exit_s = exit_s  # 0: never
        self._last: dict[K, tuple[int | None, float]] = {}  # position, last progress

    def observe(self, now: float, offsets: Mapping[K, tuple[int | None, int | None]]) -> Verdict[K]:
        """One look: ``offsets`` maps each partition to ``(position, high watermark)``."""
        last = self._last
        for gone in [k for k in last if k not in offsets]:
            del last[gone]
        lags: dict[K, int] = {}
        stalled: list[Stall[K]] = []
        fatal: list[Stall[K]] = []
        for key, (position, highwater) in offsets.items():
            if position is None or highwater is None:
                last[key] = (position, now)
                continue
            lag = max(0, highwater - position)
            lags[key] = lag
            seen = last.get(key)
            if seen is None or seen[0] != position or lag == 0:
                last[key] = (position, now)
                continue
            stalled_s = now - seen[1]
            if stalled_s >= self.warn_s:
                stall = Stall(key, lag, position, highwater, stalled_s)
                stalled.append(stall)
                if self.exit_s > 0 and stalled_s >= self.exit_s:
                    fatal.append(stall)
        return Verdict(lags, stalled, fatal)


def partition_name(key: tuple[str, int]) -> str:
    return f"{key[0]}[{key[1]}]"


def describe(stall: Stall[tuple[str, int]]) -> str:
    return (f"{partition_name(stall.partition)}: no progress for {stall.stalled_s:.0f} s "
            f"with lag {stall.lag} (position {stall.position}, "
            f"high watermark {stall.highwater})")


class StallReporter:
    """Applies a :class:`Verdict` to the worker status, the stats and the log."""

    def __init__(
        self, status: WorkerStatus, exit_s: float,
        exit_process: Callable[[int], Any] = os._exit,
    ) -> None:
        self.status = status
        self.exit_s = exit_s
        self.exit_process = exit_process
        self._reported: set[str] = set()

    def apply(
        self, verdict: Verdict[tuple[str, int]], stats: dict[str, float] | None,
        fetch_wait: Any = None,
    ) -> None:
        """``fetch_wait``: the consumer's :class:`~engine.transport.AdaptiveFetchWait`."""
        status = self.status
        status.gauges["partition_lag"] = {
            partition_name(k): lag for k, lag in sorted(verdict.lags.items())
        }
        figures: dict[str, float] = {"lag": verdict.total_lag, "lag_max": verdict.max_lag}
        if fetch_wait is not None:
            figures["fetch_wait_ms"] = fetch_wait.wait_ms
            figures["fetches"] = fetch_wait.fetches
            figures["starved_fetches"] = fetch_wait.starved_fetches
            status.gauges["fetch_wait_ms"] = fetch_wait.wait_ms
        if stats is not None:
            stats.update(figures)
        now_reported: set[str] = set()
        for stall in verdict.stalled:
            key = PROBLEM_PREFIX + partition_name(stall.partition)
            now_reported.add(key)
            if key not in self._reported:
                log.warning("partition stalled: %s", describe(stall))
            topic, partition = stall.partition
            status.report(
                key, describe(stall), topic=topic, partition=partition, lag=stall.lag,
                position=stall.position, highwater=stall.highwater,
                stalled_s=round(stall.stalled_s, 1),
            )
        for key in self._reported - now_reported:
            status.clear(key)
            log.info("partition %s makes progress again", key.removeprefix(PROBLEM_PREFIX))
        self._reported = now_reported
        if verdict.fatal:
            worst = max(verdict.fatal, key=lambda s: s.stalled_s)
            log.error(
                "worker stalled, exiting with status %d so that its supervisor restarts it: "
                "%s (%d partition(s) without progress for over %.0f s)",
                STALL_EXIT_CODE, describe(worst), len(verdict.fatal), self.exit_s,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            self.exit_process(STALL_EXIT_CODE)


def register(w: Wiring) -> StallWatch[tuple[str, int]]:
    """The once-a-second watchdog timer; returns its policy object."""
    from engine.transport import partition_offsets

    app, status = w.app, w.status
    watch: StallWatch[tuple[str, int]] = StallWatch(w.config.stall_warn_s, w.config.stall_exit_s)
    reporter = StallReporter(status, w.config.stall_exit_s)

    @app.timer(interval=INTERVAL_S)  # type: ignore[untyped-decorator]
    async def stall_watchdog() -> None:
        verdict = watch.observe(time.monotonic(), partition_offsets(app))
        reporter.apply(verdict, status.stats or None,
                       getattr(app, "tickstream_fetch_wait", None))

    return watch
