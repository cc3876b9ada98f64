"""Rate limiting of the Kafka clients' reconnect noise.

With its broker down, a worker's aiokafka clients log every failed connection attempt,
metadata refresh, fetch and coordinator lookup: about 75-110 lines a second, which buries
the one line that says what is wrong (and fills disks). :class:`RateLimitFilter` lets the
first ``burst`` records of each kind through per ``interval_s`` and drops the rest; the
first record of the next interval says how many were dropped. A *kind* is the logger, the
level and the message template (``record.msg`` before its arguments are filled in), so
"Unable connect to node with id %s: %s" is one kind whatever the node and the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Loggers that flood while the broker is unreachable (measured: aiokafka.client,
#: aiokafka.consumer.fetcher, aiokafka.consumer.group_coordinator), and their neighbours.
#: A filter on a logger sees only the records created on that logger, not those of its
#: children, so each is named (and :func:`install_reconnect_filter` adds any other aiokafka
#: logger already created).
CLIENT_LOGGERS: tuple[str, ...] = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "faust.transport.drivers.aiokafka",
    "faust.transport.consumer",
    "faust.transport.producer",
)
DEFAULT_BURST = 3
DEFAULT_INTERVAL_S = 30.0
#: Distinct kinds remembered; the oldest windows are forgotten beyond this.
MAX_KINDS = 1024


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    dropped: int = 0


class RateLimitFilter(logging.Filter):
    """Pass the first ``burst`` records of a kind per ``interval_s``; count the rest."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be at least 1 and interval_s above 0")
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._lock = threading.Lock()  # Faust's consumer runs aiokafka in its own thread

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval_s:
                dropped = window.dropped if window is not None else 0
                self._windows.pop(key, None)
                if len(self._windows) >= MAX_KINDS:
                    del self._windows[next(iter(self._windows))]
                self._windows[key] = _Window(start=now, passed=1)
                if dropped:
                    record.msg = (
                        f"{record.getMessage()} ({dropped} similar messages suppressed "
                        f"in the last {self.interval_s:g} s)"
                    )
                    record.args = None
                return True
            if window.passed < self.burst:
                window.passed += 1
                return True
            window.dropped += 1
            return False


def install_reconnect_filter(
    names: Iterable[str] = CLIENT_LOGGERS,
    burst: int = DEFAULT_BURST,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> RateLimitFilter:
    """Add one shared :class:`RateLimitFilter` to the Kafka client loggers (idempotent:
    a logger that already has one keeps it). Returns the filter installed."""
    wanted = set(names)
    wanted.update(
        n for n in list(logging.root.manager.loggerDict) if n.startswith("aiokafka.")
    )
    shared = RateLimitFilter(burst, interval_s)
    for name in sorted(wanted):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(shared)
    return shared
