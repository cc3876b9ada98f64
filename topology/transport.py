"""Faust's aiokafka transport with the consumer fetch wait taken from settings.

Faust 0.15's aiokafka driver builds the worker consumer with ``fetch_max_wait_ms=1500``
hard-coded (``faust/transport/drivers/aiokafka.py``, ``_create_worker_consumer``), and the
local broker holds every fetch for part of that wait even when data is waiting: that is
where a default Faust worker's second of latency comes from (``docs/platform-notes.md``).
This subclass keeps everything else of the driver and only sets the wait, before the
consumer starts (aiokafka reads ``_fetch_max_wait_ms`` when it builds its fetcher).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    """``kafka://`` transport whose worker consumer waits ``app.fetch_wait_ms`` per fetch."""

    Consumer = _Consumer
