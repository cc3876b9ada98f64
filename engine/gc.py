"""Garbage-collector tuning for a long-running worker."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap(gen0_threshold: int | None = None, level: int = logging.INFO) -> None:
    """Move everything alive after start-up out of the collector's reach (``gc.freeze``),
    and collect the young generation every ``gen0_threshold`` allocations.

    Faust, aiokafka, numpy, xgboost and TA-Lib leave ~10^6 long-lived objects behind, and
    every full collection walked all of them: 60-95 ms stalls of the event loop (measured
    with ``gc.callbacks`` in a worker at 2,000 ticks/s), which set the worker's p99 latency.
    Frozen objects are never collected; they were going to live as long as the process.

    CPython collects the young generation every 700 net allocations; a worker allocates
    several container objects per record (message, event, tick, outputs), so under a
    backlog it collected thousands of times a second. With 5,000 (``TICKSTREAM_GC_GEN0_
    THRESHOLD``) the worker's CPU per tick fell ~12% (``docs/platform-notes.md``); a young
    collection stays well under a millisecond.

    The batch commands (``process``, ``replay``, ``load``, ``convert``, ``backtest``) apply
    the same at ``level`` DEBUG: they build lists of hundreds of thousands of ticks, and
    with CPython's default every young collection walked them again (``replay`` of the
    four Lean days from a topic: 49-50k ticks/s with the default, 61-64k tuned).
    """
    gc.collect()
    gc.freeze()
    if gen0_threshold is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    log.log(level, "start-up heap frozen: %d objects kept out of garbage collection; "
            "gc thresholds %s", gc.get_freeze_count(), gc.get_threshold())
