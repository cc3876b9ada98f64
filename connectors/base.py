"""One lifecycle for every source and sink: public ``start/stop/flush`` around ``_hooks``.

Subclasses implement :meth:`_connect`, :meth:`_disconnect` and :meth:`_flush`; the base
class owns state transitions and health, so venue modules hold only venue logic.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass


@dataclass(slots=True)
class Health:
    connected: bool = False
    last_tick_time_ms: int | None = None
    ticks: int = 0
    errors: int = 0
    reconnects: int = 0
    started_at: float = 0.0

    def ticks_per_s(self) -> float:
        elapsed = time.monotonic() - self.started_at if self.started_at else 0.0
        return self.ticks / elapsed if elapsed > 0 else 0.0


class Connector(abc.ABC):
    """Base contract: ``start`` connects once, ``flush`` makes output durable, ``stop`` ends."""

    name: str = "connector"

    def __init__(self) -> None:
        self.health = Health()
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self.health.started_at = time.monotonic()
        self._connect()
        self.health.connected = True
        self._started = True

    def flush(self) -> None:
        self._flush()

    def stop(self) -> None:
        if not self._started:
            return
        try:
            self._flush()
        finally:
            self._disconnect()
            self.health.connected = False
            self._started = False

    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _disconnect(self) -> None: ...

    def _flush(self) -> None:  # noqa: B027 - sources without buffers need nothing
        """Make everything handed to the connector durable."""
