"""The one place that constructs the :class:`faust.App`.

Importing this module does nothing: no environment is read, nothing connects. The app is
built by :func:`create_app` from a :class:`~topology.settings.Settings`. For
``faust -A topology.app worker`` the module attribute ``app`` is resolved lazily (PEP 562
``__getattr__``) from ``TICKSTREAM_*`` variables when Faust's CLI asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from agents.worker_status import WorkerStatus
from engine.gc import freeze_startup_heap
from engine.raw_schema import RawBytes
from topology.admin import ensure_topics
from topology.log_filters import install_reconnect_filter
from topology.settings import Settings
from topology.tables import ALL_TABLES, make_table
from topology.topics import ALL_TOPICS

log = logging.getLogger(__name__)


class TickstreamApp(faust.App):  # type: ignore[misc]
    """A Faust app that creates and verifies its topics before anything subscribes, and
    lets agents finish their work before the consumer stops."""

    settings: Settings
    fetch_wait_ms: int | None = None
    #: The worker's problems and counters, shared with its agents (``Wiring.status``).
    tickstream_status: WorkerStatus | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Coroutines run first thing when the worker stops (SIGTERM), while the consumer,
        #: producer and tables still work: the pipeline writes its last checkpoint here.
        self.before_stop: list[Callable[[], Awaitable[None]]] = []

    async def on_stop(self) -> None:
        for hook in self.before_stop:
            try:
                await hook()
            except Exception:  # a failed hook must not keep the worker from stopping
                log.exception("before-stop hook %r failed", hook)
        await super().on_stop()

    async def on_started(self) -> None:
        await super().on_started()
        from topology.state_guard import BrokerWatch

        status = getattr(self, "tickstream_status", None)
        if status is not None:
            # Broker unreachable: /health/ not-ok; broker lost our topics: exit (state_guard).
            self.add_future(BrokerWatch(self.settings, status).run())
        from stages.score import import_model_library

        import_model_library()  # before the freeze: its objects are frozen too
        freeze_startup_heap(self.settings.gc_gen0_threshold)
        from stages import native

        native.install()
        log.info("stage modules: %s", ", ".join(f"{n} {s}" for n, s in native.STATUS.items()))

    def _new_transport(self) -> Any:
        """Faust's aiokafka transport with the fetch wait from settings (see transport.py)."""
        from engine.transport import Transport

        return Transport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        # The Kafka clients' reconnect noise while the broker is down: ~100 lines a second.
        install_reconnect_filter()
        # Faust creates only the last level of its datadir (var/worker on a fresh clone).
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, ensure_topics, self.settings)
        # Local table state ahead of this broker's changelogs would stop Faust's recovery
        # with ConsistencyError: discard it (one WARNING) and rebuild from the changelogs.
        from topology.state_guard import LOCAL_STATE_PROBLEM, guard_local_state

        status = getattr(self, "tickstream_status", None)
        tabledir = Path(self.conf.tabledir)
        check = await loop.run_in_executor(None, guard_local_state, self.settings, tabledir,
                                           status)
        if check.stale and status is not None:
            self.add_future(self._clear_when_recovered(status, LOCAL_STATE_PROBLEM))

    async def _clear_when_recovered(self, status: Any, key: str) -> None:
        tables: Any = self.tables  # faust.tables.TableManager: its Recovery service
        await tables.recovery.completed.wait()
        status.clear(key)
        log.info("tables rebuilt from the changelogs")


def faust_credentials(settings: Settings) -> Any:
    """Faust credentials matching the librdkafka settings of :meth:`Settings.confluent_config`."""
    sec = settings.security
    if sec.protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(
        cafile=str(sec.ssl_ca_file) if sec.ssl_ca_file else None
    )
    if sec.protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=sec.sasl_username,
        password=sec.sasl_password.get() if sec.sasl_password else None,
        mechanism=sec.sasl_mechanism,
        ssl_context=context,
    )


def create_app(settings: Settings, *, web_enabled: bool = True) -> TickstreamApp:
    """Build the app, its topics, tables and agents from ``settings``."""
    app = TickstreamApp(
        settings.app_id,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap_servers],
        broker_credentials=faust_credentials(settings),
        store=settings.table_store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # A restarted worker with the same instance id takes its partitions back at once
        # instead of waiting for its crashed predecessor's session to expire.
        consumer_group_instance_id=settings.group_instance_id,
        # At stop, commit what is acked and go: the pipeline acks only at its checkpoints
        # (the last one in ``before_stop``), so waiting for every fetched event to be acked
        # would wait for events that no checkpoint will cover; they are replayed instead.
        stream_wait_empty=False,
        # Faust parks a partition whenever its stream buffer is full and takes it back when
        # the buffer drains. With Faust's default of 4,096 a worker under a backlog parked
        # and resumed continually: 9.8k ticks/s at 80 µs of CPU per tick, against 16k at
        # 66 µs with 65,536 (docs/platform-notes.md).
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        web_enabled=web_enabled,
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        autodiscover=False,
    )
    app.settings = settings
    app.fetch_wait_ms = settings.fetch_wait_ms
    topics = {
        spec.name: app.topic(
            settings.topic(spec.name),
            schema=RawBytes(),  # our agents decode the bytes themselves (raw_schema.py)
            partitions=spec.partitions(settings),
            retention=None if spec.retention_ms < 0 else spec.retention_ms / 1000.0,
            compacting=spec.cleanup == "compact",
            internal=False,
        )
        for spec in ALL_TOPICS
    }
    from stages import native

    native.install()  # before the agents import the stages: compiled when fresh
    from agents import register_all
    from agents.wiring import AgentConfig, Wiring
    from schemas.codec import make_codec
    from stages.pipeline import PipelineConfig

    registry = settings.schema_registry_url.get() if settings.schema_registry_url else None
    app.tickstream_status = status = WorkerStatus()
    register_all(Wiring(
        app=app,
        config=AgentConfig(
            symbols=settings.symbols, pipeline=PipelineConfig.from_settings(settings),
            partitions=settings.partitions, model_dir=settings.model_dir,
            checkpoint_interval_ms=settings.checkpoint_interval_ms,
            bar_idle_flush_ms=settings.bar_idle_flush_ms,
            stall_warn_s=settings.stall_warn_s, stall_exit_s=settings.stall_exit_s,
        ),
        topics=topics,
        physical={spec.name: settings.topic(spec.name) for spec in ALL_TOPICS},
        tables={spec.name: make_table(app, spec, settings) for spec in ALL_TABLES},
        codec=make_codec(registry),
        status=status,
    ))
    return app


def __getattr__(name: str) -> Any:
    """Build ``app`` on first access, for ``faust -A topology.app``."""
    if name == "app":
        app = create_app(_settings_for_faust_cli(sys.argv))
        globals()["app"] = app
        return app
    raise AttributeError(name)


#: Set by ``tickstream worker``, which runs the worker preflight itself before handing over
#: to Faust's command line in the same process: not run a second time here.
preflight_done = False


def _settings_for_faust_cli(argv: list[str]) -> Settings:
    """The settings for ``faust -A topology.app …`` (the Procfile's worker line): a bad
    ``TICKSTREAM_*`` value, no broker at the address or the web port taken ends the process
    with one line on stderr (exit 2 or 1) as ``tickstream worker`` does, not a traceback."""
    from topology.preflight import PreflightError, require_worker_can_start
    from topology.settings import SettingsError

    try:
        settings = Settings.from_env()
        if "worker" in argv[1:] and not preflight_done:
            require_worker_can_start(settings, argv[argv.index("worker") + 1:])
    except SettingsError as exc:
        print(f"tickstream worker: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except PreflightError as exc:
        print(f"tickstream worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    return settings
