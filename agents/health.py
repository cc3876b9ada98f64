"""The health agent and the worker's ``/health/`` page.

Every collector process (``tickstream collect``) publishes a
:class:`~schemas.records.CollectorHealth` report on ``collectors.health`` (keyed by collector
name, compacted) every few seconds and once when it stops. The agent keeps the latest
report of each collector in the ``collector_health`` global table, so every worker shows
every broker connection whichever worker consumed the report, and a restarted worker has
them back from the changelog before it serves a request.

``GET /health/`` answers JSON (see :func:`health_report`): each collector's latest report
with its age, the model status, the kill switch (``on``, ``reason``, ``issued_by``,
``time_ms``: what ``tickstream control kill-switch`` set), the last model announcement
(``tickstream control model``) beside the model in use, and broker quality per symbol from
the ``broker_quality`` table (the symbols whose partitions this worker holds).

Beside those, the page has the shape operators' tools expect of a service: ``service``,
``status`` (``healthy`` / ``degraded`` / ``unhealthy``), ``version``, ``uptime_s``; per broker
its status, active symbols, ticks/s and latency (:mod:`agents.health_view`); the
aggregation (symbols tracked, consumers in the group and the partitions each holds); and
feed quality (completeness, spread quality, broker sync). ``docs/health.md`` documents
every field.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from agents import AgentSpec
from agents.control import KILL_SWITCH_KEY, MODEL_KEY, ControlView
from agents.health_view import LiveView, Summary
from agents.rejects import DeadLetters
from agents.wiring import Wiring
from agents.worker_status import WorkerStatus
from schemas.codec import MalformedRecord
from schemas.records import CollectorHealth

log = logging.getLogger(__name__)

TABLE = "collector_health"
QUALITY_TABLE = "broker_quality"  # kept by the pipeline agent
SPEC = AgentSpec(
    name="health", sources=("collectors.health",), stages=("decode", "latest report per collector"),
    outputs=("ticks.rejected",), tables=(TABLE,),
)
INVALID_HEALTH = "invalid_health"
PATH = "/health/"
ALIAS = "/health"
#: A running collector whose last report is older than this many report intervals is stale.
STALE_INTERVALS = 3.0
DEFAULT_INTERVAL_S = 5.0
SERVICE = "tickstream-worker"
HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
#: Seconds between two samples of the pipeline's consolidators (agents.health_view).
SAMPLE_INTERVAL_S = 1.0


def service_version() -> str:
    """The installed tickstream distribution's version."""
    try:
        return importlib.metadata.version("tickstream")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def collector_status(report: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """One collector's latest report, with its age and whether it is healthy now.

    ``ok``: running, connected, and its last report is fresh (not older than
    :data:`STALE_INTERVALS` report intervals).
    """
    out = dict(report)
    detail = out.get("detail")
    if isinstance(detail, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            out["detail"] = orjson.loads(detail)
    age_s = max(0.0, (now_ms - int(report.get("time_ms") or 0)) / 1000.0)
    interval = float(report.get("interval_s") or 0.0) or DEFAULT_INTERVAL_S
    out["age_s"] = round(age_s, 3)
    out["stale"] = report.get("state") == "RUNNING" and age_s > STALE_INTERVALS * interval
    out["ok"] = report.get("state") == "RUNNING" and bool(report.get("connected")) and not (
        out["stale"]
    )
    return out


def health_report(
    collectors: Mapping[bytes, bytes],
    control: ControlView | None,
    models: Any = None,
    broker_quality: Mapping[bytes, bytes] | None = None,
    now_ms: int | None = None,
    worker: WorkerStatus | None = None,
    *,
    live: Summary | None = None,
    consumers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``/health/`` answers, from the tables, the model store, the pipeline's live
    state (``live``) and the consumer group (``consumers``, see :func:`consumer_group`).

    ``ok`` is true when every collector that has not been stopped on purpose is ``ok``
    (a FAILED or stale collector makes it false) and the worker itself reports no problem
    (:class:`~agents.worker_status.WorkerStatus`); the kill switch and the model are
    reported, not judged. ``status`` says the same in three words: ``healthy`` (``ok``),
    ``unhealthy`` (the worker reports a problem), ``degraded`` (the worker is fine but a
    collector is failed or stale).
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    reports = {
        key.decode(): collector_status(orjson.loads(raw), now_ms)
        for key, raw in sorted(collectors.items())
    }
    kill = control.get(KILL_SWITCH_KEY) if control is not None else None
    announced = control.get(MODEL_KEY) if control is not None else None
    quality = {
        key.decode(): orjson.loads(raw) for key, raw in sorted((broker_quality or {}).items())
    }
    worker_view = worker.as_dict() if worker is not None else {"ok": True, "problems": {}}
    worker_ok = bool(worker_view["ok"])
    collectors_ok = all(r["ok"] for r in reports.values() if r.get("state") != "STOPPED")
    status = overall_status(worker_ok, collectors_ok)
    return {
        "service": SERVICE,
        "status": status,
        "version": service_version(),
        "uptime_s": round(worker.uptime_s(), 3) if worker is not None else None,
        "started_ms": worker.started_ms if worker is not None else None,
        "brokers": {b: v.as_dict() for b, v in live.brokers.items()} if live is not None else {},
        "aggregation": aggregation(live, consumers),
        "quality": quality_section(live),
        "ok": worker_ok and collectors_ok,
        "time_ms": now_ms,
        "worker": worker_view,
        "collectors": reports,
        "model": models.status() if models is not None else None,
        "kill_switch": {"on": bool(kill and kill.get("on")), **(kill or {})},
        "model_announced": announced,
        "broker_quality": quality,
    }


def overall_status(worker_ok: bool, collectors_ok: bool) -> str:
    """``healthy``; ``unhealthy`` while the worker reports a problem; else ``degraded``
    while a collector (not stopped on purpose) is failed, disconnected or stale."""
    if not worker_ok:
        return UNHEALTHY
    return HEALTHY if collectors_ok else DEGRADED


def aggregation(live: Summary | None, consumers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Symbols this worker tracks and the consumer group it is part of."""
    group = dict(consumers) if consumers is not None else None
    return {
        "symbols_tracked": len(live.symbols) if live is not None else 0,
        "symbols_configured": live.configured if live is not None else None,
        "symbols": sorted(live.symbols) if live is not None else [],
        "consumers": len(group["members"]) if group is not None else None,
        "consumer_group": group,
    }


def quality_section(live: Summary | None) -> dict[str, Any]:
    """Worker-wide feed quality (means over symbols) and each symbol's figures."""
    overall = live.quality() if live is not None else {
        "completeness": None, "spread_quality": None, "broker_sync": None}
    return {
        **{k: None if v is None else round(v, 4) for k, v in overall.items()},
        "window_s": round(live.window_s, 3) if live is not None else None,
        "by_symbol": ({s: q.as_dict() for s, q in live.symbols.items()}
                      if live is not None else {}),
    }


def consumer_group(app: Any, source_topic: str) -> dict[str, Any]:
    """The group's members and the ``source_topic`` partitions each holds, as the group
    leader handed them out at the last rebalance (every member receives the whole
    distribution with its assignment); empty before the first assignment."""
    assignor = app.assignor
    members = {
        str(url): sorted(topics.get(source_topic, ()))
        for url, topics in sorted(assignor.external_topics_metadata().items())
    }
    return {
        "group": app.conf.id,
        "this_worker": str(app.conf.canonical_url),
        "partitions": sorted(tp.partition for tp in assignor.assigned_actives()
                             if tp.topic == source_topic),
        "members": members,
    }


def register(w: Wiring, control: ControlView, live: LiveView | None = None,
             ) -> Mapping[bytes, bytes]:
    """The agent, its table, the ``/health/`` page and the once-a-second sample of the
    pipeline's live state behind its broker and quality sections; returns the table."""
    app, codec = w.app, w.codec
    table = w.tables[TABLE]
    physical = w.topic("collectors.health")
    dead_letters = w.topics["ticks.rejected"]
    dl_physical = w.topic("ticks.rejected")
    worker = w.status
    quality = w.tables.get(QUALITY_TABLE)

    dead_letter = DeadLetters(dead_letters, dl_physical, codec, "health").send

    @app.agent(w.topics["collectors.health"], name="health")  # type: ignore[untyped-decorator]
    async def health(stream: Any) -> None:
        async for event in stream.events():
            try:
                rec = codec.decode(event.value, CollectorHealth, physical)
            except MalformedRecord as exc:
                log.error("undecodable collector health report dead-lettered: %s", exc.detail)
                await dead_letter(event, exc.reason, exc.detail)
                continue
            if not rec.name.strip():
                await dead_letter(event, INVALID_HEALTH, "empty collector name")
                continue
            previous = table.get(rec.name.encode())
            table[rec.name.encode()] = orjson.dumps(rec.to_dict())
            if previous is None or orjson.loads(previous).get("state") != rec.state:
                log.info("collector %s (%s) is %s", rec.name, rec.kind, rec.state)

    source = w.topic("ticks.raw")

    if live is not None:
        @app.timer(interval=SAMPLE_INTERVAL_S)  # type: ignore[untyped-decorator]
        async def sample_brokers() -> None:
            live.update(time.monotonic())

    def report() -> dict[str, Any]:
        return health_report(
            table, control, worker.models if worker is not None else None,
            quality, worker=worker,
            live=live.current(time.monotonic()) if live is not None else None,
            consumers=consumer_group(app, source),
        )

    @app.page(PATH)  # type: ignore[untyped-decorator]
    async def health_page(view: Any, request: Any) -> Any:
        """Service, brokers, aggregation, quality; every collector's latest health, the
        model, the kill switch, broker quality per symbol."""
        return view.json(report())

    @app.page(ALIAS)  # type: ignore[untyped-decorator]
    async def health_alias(view: Any, request: Any) -> Any:
        """The same page without the trailing slash (where most tools look)."""
        return view.json(report())

    return table  # type: ignore[no-any-return]
