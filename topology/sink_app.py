"""The storage sink's process: ``tickstream sink`` or ``python -m topology.sink_app``.

It runs apart from the trading worker — its own process and its own consumer group
(``<app_id>-sink``) — so a slow or absent store never slows the trading path; the worker
does not know it exists. At start it creates the topics it reads (declared partition
counts), opens the store named by ``TICKSTREAM_STORE_URL`` and applies the schema
migrations, then runs :class:`agents.sink.Sink` until SIGTERM/SIGINT, when it flushes and
commits what it holds. See docs/storage.md.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from agents.sink import Sink, SinkConfig, SinkOutage, SinkStats
from connectors.kafka_client import consumer_config
from schemas.codec import make_codec
from schemas.registry import SchemaRegistryError
from storage.backend import Backend, open_backend
from storage.errors import StorageError
from storage.migrations import migrate
from topology.settings import Settings, SettingsError

log = logging.getLogger(__name__)

#: The logical topics the sink stores.
SINK_TOPICS = ("ticks.clean", "bars.m1", "features", "trading.commands", "ticks.rejected")


def sink_group(settings: Settings) -> str:
    return f"{settings.app_id}-sink"


def open_store(settings: Settings) -> Backend:
    """The store of ``settings``, migrated to the latest schema."""
    backend = open_backend(settings.store_url)
    try:
        migrate(backend)
    except BaseException:
        backend.close()
        raise
    return backend


def build_sink(settings: Settings, backend: Backend) -> Sink:
    from confluent_kafka import Consumer

    conf = consumer_config(settings, **{
        "group.id": sink_group(settings),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": max(6000, int(settings.session_timeout_s * 1000)),
        "fetch.wait.max.ms": max(10, settings.fetch_wait_ms),
        "queued.max.messages.kbytes": 65_536,
    })
    registry = settings.schema_registry_url.get() if settings.schema_registry_url else None
    config = SinkConfig(
        topics={settings.topic(t): t for t in SINK_TOPICS},
        batch_rows=settings.sink_batch_rows,
        batch_ms=settings.sink_batch_ms,
        outage_exit_s=float(settings.sink_outage_exit_s),
    )
    return Sink(Consumer(conf), backend, make_codec(registry), config)


def run(settings: Settings) -> SinkStats:
    """Run the sink until SIGTERM/SIGINT; returns its counters."""
    from topology.admin import ensure_topics

    ensure_topics(settings)
    backend = open_store(settings)
    try:
        sink = build_sink(settings, backend)

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("sink: signal %d, flushing and stopping", signum)
            sink.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("sink: %s -> %s (group %s, batches of %d rows / %d ms)",
                 ", ".join(sink.config.topics), settings.store_url, sink_group(settings),
                 settings.sink_batch_rows, settings.sink_batch_ms)
        stats = sink.run()
        log.info("sink stopped: %s", stats)
        return stats
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line and exit 1 on a bad setting or an unreachable store."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(Settings.from_env())
    except (SettingsError, StorageError, SinkOutage) as exc:
        print(f"tickstream sink: {exc}", file=sys.stderr)
        return 1
    except SchemaRegistryError as exc:  # still down when the sink was told to stop
        print(f"tickstream sink: schema registry: {exc}; the batch is not committed and is "
              "read again at the next start", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
