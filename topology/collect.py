"""``tickstream collect KIND --config FILE``: one collector per process.

:func:`run_collector` loads the YAML file, builds the venue's collector with its ``build()``
around the shared :class:`~connectors.producer.RecordProducer`, and runs it until SIGTERM or
SIGINT. While it runs, a :class:`~schemas.records.CollectorHealth` report goes to
``collectors.health`` (keyed by the collector's name) every ``health_interval_s`` seconds
(a key of the config file, read here and not passed to the venue; default 5 s), and once
more when it stops, after the last record was sent, so the final report's counts are
exactly what reached the broker. The producer is flushed before the process exits.
A resumable collector (simulator, MT5) first reads its stored position from
``collectors.positions`` and keeps it there (:mod:`connectors.positions`).

Exit codes: 0 after a requested stop with everything delivered; 1 when the collector fails
(:class:`~connectors.base.resilience.FatalCollectorError`,
:class:`~connectors.base.resilience.ReconnectExhausted`, anything unexpected) or records could
not be delivered; 2 for a configuration error. Failures print one line on stderr with the
collector's credentials redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from connectors.base.collector import Collector, CollectorConfigError, RecordSink
from connectors.base.config import read_yaml
from connectors.base.resilience import FatalCollectorError, ReconnectExhausted
from schemas.records import CollectorHealth, Record
from topology.settings import Settings

log = logging.getLogger(__name__)

#: ``tickstream collect KIND`` -> the package whose ``build(config, sink, ...)`` makes it.
KINDS: dict[str, str] = {
    "mt5": "connectors.mt5",
    "oanda": "connectors.oanda",
    "websocket": "connectors.websocket",
    "calendar": "connectors.calendar",
    "news": "connectors.news",
    "simulate": "connectors.simulator",
}
HEALTH_TOPIC = "collectors.health"
DEFAULT_HEALTH_INTERVAL_S = 5.0
#: How long a collector may take to wind down after SIGTERM before it is cancelled.
STOP_GRACE_S = 10.0
FLUSH_TIMEOUT_S = 30.0
#: Keys of the config file that belong to the runner, not to the venue's build().
RUNNER_KEYS = ("health_interval_s",)
#: What health_dict() keys map to the record; anything else a venue adds goes to ``detail``.
_HEALTH_FIELDS = frozenset({
    "name", "kind", "connected", "last_tick_time_ms", "ticks", "events", "rejected", "errors",
    "reconnects", "last_error", "circuit", "ticks_per_s",
})


class Builder(Protocol):
    def __call__(
        self, config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None,
        **kwargs: Any,
    ) -> Collector: ...


class LazyProducer:
    """A :class:`~connectors.producer.RecordProducer` opened on first use.

    librdkafka connects as soon as a producer exists; building the collector with this
    sink means a configuration error is reported without touching the network. After the
    first record ``send`` is the producer's own method (no indirection per record).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: Any = None
        self.send: Callable[[str, str | bytes, Record], None] = self._open_and_send

    def open(self) -> Any:
        if self.producer is None:
            from connectors.producer import RecordProducer

            self.producer = RecordProducer(self.settings)
            self.send = self.producer.send
        return self.producer

    def _open_and_send(self, topic: str, key: str | bytes, record: Record) -> None:
        self.open().send(topic, key, record)

    def flush(self, timeout_s: float = 30.0) -> int:
        return int(self.producer.flush(timeout_s)) if self.producer is not None else 0


class CollectFailed(RuntimeError):
    """The collector cannot start or run; the message is the one line printed."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file at ``path``; unreadable, invalid or not a mapping: a
    config error."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise CollectorConfigError(f"{path}: the configuration must be a mapping")
    return data


def health_interval(config: dict[str, Any], path: Path) -> float:
    """Pop and validate ``health_interval_s`` (the venue's loader rejects unknown keys)."""
    value = config.pop("health_interval_s", DEFAULT_HEALTH_INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.05 <= value <= 3600:
        raise CollectorConfigError(
            f"{path}: health_interval_s: expected seconds from 0.05 to 3600, got {value!r}"
        )
    return float(value)


def build_collector(
    kind: str, config: Mapping[str, Any], sink: RecordSink, config_path: Path,
    bridge: str | None = None,
) -> Collector:
    if kind not in KINDS:
        raise CollectorConfigError(f"unknown collector kind {kind!r} (one of {', '.join(KINDS)})")
    if bridge and kind != "mt5":
        raise CollectorConfigError("--bridge applies to mt5 collectors only")
    module = importlib.import_module(KINDS[kind])
    build: Builder = module.build
    extra: dict[str, Any] = {"bridge": bridge} if bridge else {}
    return build(config, sink, config_path=str(config_path), **extra)


def health_record(
    collector: Collector, state: str, *, started_ms: int, interval_s: float,
    now_ms: int | None = None,
) -> CollectorHealth:
    """The collector's :meth:`~connectors.base.collector.Collector.health_dict` as a record."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    h = collector.health_dict()
    extra = {k: v for k, v in h.items() if k not in _HEALTH_FIELDS}
    alive = collector.health.last_alive_mono
    return CollectorHealth(
        name=collector.name,
        kind=collector.kind,
        state=state,
        connected=bool(h.get("connected")),
        time_ms=now_ms,
        started_ms=started_ms,
        last_tick_time_ms=h.get("last_tick_time_ms"),
        ticks=int(h.get("ticks", 0)),
        events=int(h.get("events", 0)),
        rejected=int(h.get("rejected", 0)),
        errors=int(h.get("errors", 0)),
        reconnects=int(h.get("reconnects", 0)),
        ticks_per_s=float(h.get("ticks_per_s", 0.0)),
        last_error=collector.redact(h["last_error"]) if h.get("last_error") else None,
        circuit=str(h.get("circuit", "closed")),
        last_alive_ms=(
            None if alive is None else now_ms - int((time.monotonic() - alive) * 1000)
        ),
        interval_s=interval_s,
        host=socket.gethostname(),
        pid=os.getpid(),
        detail=(
            collector.redact(orjson.dumps(extra, default=str, option=orjson.OPT_SORT_KEYS)
                             .decode())
            if extra else None
        ),
    )


async def supervise(
    collector: Collector, sink: RecordSink, *, interval_s: float,
    stop_grace_s: float = STOP_GRACE_S, install_signals: bool = True,
) -> int:
    """Run ``collector`` until it stops, publishing health; returns the exit code.

    SIGTERM/SIGINT call :meth:`Collector.stop`; a collector still running ``stop_grace_s``
    later is cancelled. Then the final report is sent and the producer flushed.
    """
    loop = asyncio.get_running_loop()
    started_ms = time.time_ns() // 1_000_000
    run_task = asyncio.create_task(collector.run(), name=f"collector {collector.name}")
    stopping: set[asyncio.Task[None]] = set()

    async def stop() -> None:
        await collector.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):  # run_task reports it
            await asyncio.wait_for(asyncio.shield(run_task), stop_grace_s)
        if not run_task.done():
            log.warning("%s: still running %.0f s after stop; cancelling", collector.name,
                        stop_grace_s)
            run_task.cancel()

    def on_signal(signame: str) -> None:
        log.info("%s: %s received, stopping", collector.name, signame)
        if not stopping:
            task = loop.create_task(stop())
            stopping.add(task)

    def publish(state: str) -> None:
        sink.send(HEALTH_TOPIC, collector.name, health_record(
            collector, state, started_ms=started_ms, interval_s=interval_s))

    async def report() -> None:
        while True:
            publish("RUNNING")
            await asyncio.sleep(interval_s)

    signals = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    reporter = asyncio.create_task(report(), name=f"health {collector.name}")
    code, state, message = 0, "STOPPED", None
    try:
        await run_task
    except asyncio.CancelledError:
        if not (stopping and run_task.cancelled()):
            raise
    except (FatalCollectorError, ReconnectExhausted) as exc:
        code, state = 1, "FAILED"
        message = f"{type(exc).__name__}: {exc}"
        if collector.health.last_error and collector.health.last_error not in message:
            message += f" (last error: {collector.health.last_error})"
    except Exception as exc:
        code, state = 1, "FAILED"
        message = f"unexpected {type(exc).__name__}: {exc}"
        log.exception("%s: collector crashed", collector.name)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        for task in stopping:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if message is not None:
        collector.health.last_error = collector.redact(message)
    publish(state)
    remaining = await loop.run_in_executor(None, sink.flush, FLUSH_TIMEOUT_S)
    if message is not None:
        raise CollectFailed(collector.redact(f"{collector.name}: {message}"), code)
    if remaining:
        raise CollectFailed(f"{collector.name}: {remaining} records not delivered "
                            f"within {FLUSH_TIMEOUT_S:.0f} s")
    log.info("%s: stopped; %d ticks, %d events, %d rejected, all delivered", collector.name,
             collector.health.ticks, collector.health.events, collector.health.rejected)
    return code


def track_positions(collector: Collector, settings: Settings, producer: Any) -> None:
    """Resume ``collector`` from ``collectors.positions`` and keep its position there."""
    from connectors.positions import KafkaPositionStore, PositionTracker

    store = KafkaPositionStore(settings, producer)
    collector.track_positions(PositionTracker(
        store, collector.name, producer, every=collector.position_every,
        interval_s=collector.position_interval_s))


def run_collector(
    kind: str, config_path: str | Path, settings: Settings, bridge: str | None = None
) -> int:
    """Run one collector in this process until SIGTERM/SIGINT; returns the exit code.

    Prints one line on stderr and returns non-zero when it cannot start or fails.
    """
    path = Path(config_path)
    prefix = f"tickstream collect {kind}"
    try:
        config = load_yaml(path)
        interval_s = health_interval(config, path)
        producer = LazyProducer(settings)
        collector = build_collector(kind, config, producer, path, bridge)
    except CollectorConfigError as exc:
        print(f"{prefix}: configuration error: {exc}", file=sys.stderr)
        return 2
    from topology.preflight import PreflightError, require_broker

    try:
        require_broker(settings)  # one line at once, not 30 s of client retries
    except PreflightError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 1
    try:
        from topology.admin import ensure_topics

        ensure_topics(settings)  # never let the broker auto-create ticks.raw
    except Exception as exc:
        print(f"{prefix}: cannot prepare topics on {','.join(settings.kafka_bootstrap_servers)}:"
              f" {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    producer.open()
    if collector.resumable:
        try:
            track_positions(collector, settings, producer.producer)
        except Exception as exc:
            print(f"{prefix}: cannot read the stored positions: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
    try:
        return asyncio.run(supervise(collector, producer, interval_s=interval_s))
    except CollectFailed as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
