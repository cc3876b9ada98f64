"""The worker's ``/metrics`` page (Prometheus text format, ``prometheus_client``) and
``/topology`` (what ``tickstream describe`` prints, as JSON).

Two kinds of figures:

* **Per batch** (:class:`BatchMetrics`, updated by the pipeline agent once per batch, never
  per tick): records in, clean ticks, bars, features and commands out, rejects by reason,
  duplicates, and histograms of the batch's processing and publishing time and of the
  receive → clean latency of the batch's oldest clean tick (one sample per batch keeps the
  hot path free of per-tick work).
* **At scrape time** (:class:`WorkerCollector`, read from the live objects when Prometheus
  asks): records in and out of each stage, decode dead letters, checkpoints, consumer lag
  per partition and the fetch wait, the consumer group, the model in use, the kill switch,
  bars not scored and entries blocked by reason, each collector's health and counters, the
  worker's status and uptime, and per broker and symbol what ``/health/`` shows
  (:mod:`agents.health_view`). Plus the process figures of ``prometheus_client``'s
  ``ProcessCollector`` (CPU, memory, open files).

``docs/health.md`` lists every metric; names are kept stable (dashboards and alerts use them).

Every worker has its own registry (not the process-global one), so two apps in one test
process never collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agents.control import ControlView
    from agents.health_view import LiveView
    from agents.wiring import Wiring
    from stages.pipeline import Outputs, Pipeline

PATH = "/metrics"
TOPOLOGY_PATH = "/topology"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class BatchMetrics:
    """Counters and histograms the pipeline agent feeds once per batch."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_in = Counter("tickstream_records_in", "Records consumed from ticks.raw",
                                  registry=registry)
        self.out = Counter("tickstream_records_out", "Records produced, by output",
                           ["output"], registry=registry)
        self.rejects = Counter("tickstream_rejects", "Ticks dead-lettered by the stages, by "
                               "reason", ["reason"], registry=registry)
        self.duplicates = Counter("tickstream_duplicates", "Ticks dropped as duplicates",
                                  registry=registry)
        self.commands = Counter("tickstream_commands", "Trading commands, by action",
                                ["action"], registry=registry)
        self.stage_seconds = Histogram(
            "tickstream_batch_stage_seconds", "Time per batch in each worker stage",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.tick_to_clean = Histogram(
            "tickstream_tick_to_clean_seconds", "Receive time to clean tick, oldest clean "
            "tick of each batch", buckets=_LATENCY_BUCKETS, registry=registry)
        self.tick_to_command = Histogram(
            "tickstream_tick_to_command_seconds", "Receive time of the tick that closed the "
            "bar (or hit the stop) to the command's creation, every command",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self._out = {k: self.out.labels(k) for k in ("clean", "bars", "features", "commands")}
        self._process = self.stage_seconds.labels("process")
        self._publish = self.stage_seconds.labels("publish")
        self._checkpoint = self.stage_seconds.labels("checkpoint")
        #: Plain totals beside the counters, for the per-stage figures at scrape time.
        self.totals: dict[str, int] = dict.fromkeys(
            ("in", "clean", "bars", "features", "commands", "duplicates", "rejects"), 0)

    def batch(self, events: int, out: Outputs, process_s: float) -> None:
        """One processed batch, before its outputs are cleared."""
        totals = self.totals
        self.records_in.inc(events)
        totals["in"] += events
        self._process.observe(process_s)
        if out.clean:
            self._out["clean"].inc(len(out.clean))
            totals["clean"] += len(out.clean)
            first = out.clean[0]
            self.tick_to_clean.observe(
                max(0, first.processed_time_us - first.recv_time_us) / 1e6)
        if out.bars:
            self._out["bars"].inc(len(out.bars))
            totals["bars"] += len(out.bars)
        if out.features:
            self._out["features"].inc(len(out.features))
            totals["features"] += len(out.features)
        if out.duplicates:
            self.duplicates.inc(out.duplicates)
            totals["duplicates"] += out.duplicates
        if out.rejects:
            totals["rejects"] += len(out.rejects)
            for _tick, rej in out.rejects:
                self.rejects.labels(rej.reason).inc()
        for cmd in out.commands:
            self._out["commands"].inc()
            totals["commands"] += 1
            self.commands.labels(cmd.action).inc()
            if cmd.trigger_recv_time_us > 0:
                self.tick_to_command.observe(
                    max(0, cmd.created_time_us - cmd.trigger_recv_time_us) / 1e6)

    def published(self, seconds: float) -> None:
        self._publish.observe(seconds)

    def checkpointed(self, seconds: float) -> None:
        """One checkpoint (wait for the outputs' acks, write state, ack the events)."""
        self._checkpoint.observe(seconds)


def stage_records(totals: Mapping[str, int], stats: Mapping[str, float],
                  ) -> list[tuple[str, str, float]]:
    """``(stage, "in"|"out", records)`` of each stage, from the batch totals and the agent's
    stats (see ``docs/health.md``: what a stage lets through and what it holds back)."""
    consumed = float(totals.get("in", 0))
    decoded = consumed - float(stats.get("malformed", 0)) - float(stats.get("bad_key", 0))
    staged = decoded - float(stats.get("replayed_skipped", 0))
    clean, bars = float(totals.get("clean", 0)), float(totals.get("bars", 0))
    features = float(totals.get("features", 0))
    return [
        ("decode", "in", consumed), ("decode", "out", decoded),
        ("validate", "in", staged), ("validate", "out", clean),
        ("bars", "in", clean), ("bars", "out", bars),
        ("indicators", "in", bars), ("indicators", "out", features),
        # Commands come from scored bars and from exits checked on every tick.
        ("risk", "out", float(totals.get("commands", 0))),
    ]


class WorkerCollector(Collector):
    """Figures read from the worker's live objects at each scrape."""

    def __init__(self, w: Wiring, control: ControlView, collectors: Mapping[bytes, bytes],
                 pipeline: Pipeline | None, batch: BatchMetrics | None = None,
                 live: LiveView | None = None) -> None:
        self._app = w.app
        self._source = w.topic("ticks.raw")
        self._status = w.status
        self._control = control
        self._collectors = collectors
        self._pipeline = pipeline
        self._batch = batch
        self._live = live

    def collect(self) -> Iterator[Metric]:
        from agents.health import (
            DEGRADED,
            HEALTHY,
            SERVICE,
            UNHEALTHY,
            collector_status,
            consumer_group,
            overall_status,
            service_version,
        )

        status = self._status
        stats = status.stats if status is not None else {}
        info = GaugeMetricFamily("tickstream_build_info", "The worker's service name and "
                                 "version (always 1)", labels=["service", "version"])
        info.add_metric([SERVICE, service_version()], 1.0)
        yield info
        if status is not None:
            yield GaugeMetricFamily("tickstream_uptime_seconds", "Seconds since the worker "
                                    "was built", value=status.uptime_s())
        if self._batch is not None:
            stage = CounterMetricFamily("tickstream_stage_records", "Records into and out "
                                        "of each stage", labels=["stage", "direction"])
            for name, direction, value in stage_records(self._batch.totals, stats):
                stage.add_metric([name, direction], value)
            yield stage
        dl = CounterMetricFamily("tickstream_decode_dead_letters", "Records dead-lettered "
                                 "before the stages, by reason", labels=["reason"])
        for reason in ("malformed", "bad_key"):
            dl.add_metric([reason], float(stats.get(reason, 0)))
        yield dl
        yield CounterMetricFamily("tickstream_replayed_skipped", "Records at or below the "
                                  "offset a restored state covers, skipped",
                                  value=float(stats.get("replayed_skipped", 0)))
        yield CounterMetricFamily("tickstream_checkpoints", "State checkpoints written",
                                  value=float(stats.get("checkpoints", 0)))
        lag = GaugeMetricFamily("tickstream_consumer_lag", "High watermark - committed "
                                "offset per source partition", labels=["partition"])
        gauges = status.gauges if status is not None else {}
        for tp, value in sorted((gauges.get("partition_lag") or {}).items()):
            lag.add_metric([str(tp)], float(value))
        yield lag
        if "fetch_wait_ms" in gauges:
            yield GaugeMetricFamily("tickstream_consumer_fetch_wait_seconds", "The "
                                    "consumer's current fetch wait (it widens while a "
                                    "partition with lag gets empty fetches)",
                                    value=float(gauges["fetch_wait_ms"]) / 1000.0)
        group = consumer_group(self._app, self._source)
        yield GaugeMetricFamily("tickstream_consumer_group_members", "Members of the "
                                "worker's consumer group at the last rebalance",
                                value=float(len(group["members"])))
        yield GaugeMetricFamily("tickstream_assigned_partitions", "Partitions of ticks.raw "
                                "this worker holds", value=float(len(group["partitions"])))
        models = status.models if status is not None else None
        model = getattr(models, "current", None)
        minfo = GaugeMetricFamily("tickstream_model_info", "The model in use (1) and its id",
                                  labels=["version", "model_id"])
        if model is not None:
            minfo.add_metric([model.version, model.model_id], 1.0)
        yield minfo
        yield GaugeMetricFamily("tickstream_model_loaded", "1 when a model is loaded",
                                value=1.0 if model is not None else 0.0)
        yield GaugeMetricFamily("tickstream_kill_switch", "1 while the kill switch is on",
                                value=1.0 if self._control.kill_switch else 0.0)
        if self._pipeline is not None:
            ns = CounterMetricFamily("tickstream_bars_not_scored", "Bars the model did not "
                                     "score, by reason", labels=["reason"])
            for reason, n in sorted(self._pipeline.not_scored.items()):
                ns.add_metric([reason], float(n))
            yield ns
            blocked = CounterMetricFamily("tickstream_entries_blocked", "Entries the risk "
                                          "rules blocked, by reason", labels=["reason"])
            for reason, n in sorted(self._pipeline.risk.blocked_by_reason.items()):
                blocked.add_metric([reason], float(n))
            yield blocked
        reports = self._collector_reports(collector_status)
        yield from self._collector_families(reports)
        collectors_ok = all(r["ok"] for r in reports if r.get("state") != "STOPPED")
        worker_ok = status.ok if status is not None else True
        current = overall_status(worker_ok, collectors_ok)
        state = GaugeMetricFamily("tickstream_worker_status", "1 for the worker's current "
                                  "/health/ status, 0 for the others", labels=["status"])
        for name in (HEALTHY, DEGRADED, UNHEALTHY):
            state.add_metric([name], 1.0 if name == current else 0.0)
        yield state
        yield GaugeMetricFamily("tickstream_worker_problems", "Problems the worker reports "
                                "(/health/ worker.problems)",
                                value=float(len(status.problems)) if status is not None else 0.0)
        if self._live is not None:
            yield from self._live_families(self._live)

    def _collector_reports(self, collector_status: Any) -> list[dict[str, Any]]:
        now_ms = time.time_ns() // 1_000_000
        out = []
        for _name, raw in sorted(self._collectors.items()):
            try:
                out.append(collector_status(orjson.loads(raw), now_ms))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue
        return out

    def _collector_families(self, reports: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["collector", "kind"]
        up = GaugeMetricFamily("tickstream_collector_up", "1 while a collector is running, "
                               "connected and reporting", labels=labels)
        age = GaugeMetricFamily("tickstream_collector_report_age_seconds", "Age of the "
                                "collector's latest health report", labels=labels)
        rate = GaugeMetricFamily("tickstream_collector_ticks_per_second", "The collector's "
                                 "mean ticks per second since it started", labels=labels)
        counts = {
            field: CounterMetricFamily(f"tickstream_collector_{field}", doc, labels=labels)
            for field, doc in (
                ("ticks", "Ticks the collector sent since it started"),
                ("events", "Calendar events and headlines the collector sent since it started"),
                ("rejected", "Payloads the collector dead-lettered since it started"),
                ("errors", "Errors of the collector since it started"),
                ("reconnects", "Reconnects of the collector since it started"),
            )
        }
        for report in reports:
            key = [str(report.get("name", "")), str(report.get("kind", ""))]
            up.add_metric(key, 1.0 if report.get("ok") else 0.0)
            age.add_metric(key, float(report.get("age_s") or 0.0))
            rate.add_metric(key, float(report.get("ticks_per_s") or 0.0))
            for field, family in counts.items():
                family.add_metric(key, float(report.get(field) or 0))
        yield up
        yield age
        yield rate
        yield from counts.values()

    def _live_families(self, live: LiveView) -> Iterator[Metric]:
        from agents.health_view import ACTIVE, IDLE, STALE

        summary = live.current(time.monotonic())
        yield GaugeMetricFamily("tickstream_symbols_tracked", "Symbols with state in this "
                                "worker", value=float(len(summary.symbols)))
        b_status = GaugeMetricFamily("tickstream_broker_status", "1 for the broker's "
                                     "current status, 0 for the others",
                                     labels=["broker", "status"])
        b_rate = GaugeMetricFamily("tickstream_broker_ticks_per_second", "Accepted ticks per "
                                   "second over the last seconds", labels=["broker"])
        b_lat = GaugeMetricFamily("tickstream_broker_latency_seconds", "Mean receive time - "
                                  "broker time of its recent ticks", labels=["broker"])
        b_active = GaugeMetricFamily("tickstream_broker_active_symbols", "Symbols in which "
                                     "the broker's quote is fresh", labels=["broker"])
        b_up = GaugeMetricFamily("tickstream_broker_uptime_ratio", "Share of event time the "
                                 "broker's quote was fresh (mean over symbols)",
                                 labels=["broker"])
        for broker, v in summary.brokers.items():
            for name in (ACTIVE, IDLE, STALE):
                b_status.add_metric([broker, name], 1.0 if v.status == name else 0.0)
            if v.ticks_per_s is not None:
                b_rate.add_metric([broker], v.ticks_per_s)
            if v.latency_ms is not None:
                b_lat.add_metric([broker], v.latency_ms / 1000.0)
            b_active.add_metric([broker], float(len(v.active_symbols)))
            b_up.add_metric([broker], v.uptime)
        yield from (b_status, b_rate, b_lat, b_active, b_up)
        families = {
            name: GaugeMetricFamily(f"tickstream_symbol_{name}_ratio", doc, labels=["symbol"])
            for name, doc in (
                ("completeness", "Mean over the symbol's brokers of their uptime"),
                ("spread_quality", "Mean over the symbol's brokers of 1 - mean spread / "
                                   "spread limit"),
                ("broker_sync", "Share of the symbol's brokers whose quote is fresh"),
            )
        }
        for symbol, q in summary.symbols.items():
            for name, family in families.items():
                value = getattr(q, name)
                if value is not None:
                    family.add_metric([symbol], value)
        yield from families.values()


def register(w: Wiring, control: ControlView, collectors: Mapping[bytes, bytes],
             pipeline: Pipeline | None, registry: CollectorRegistry,
             batch: BatchMetrics | None = None, live: LiveView | None = None) -> None:
    """The ``/metrics`` and ``/topology`` pages on ``w.app``."""
    app = w.app
    registry.register(WorkerCollector(w, control, collectors, pipeline, batch, live))
    ProcessCollector(registry=registry)

    @app.page(PATH)  # type: ignore[untyped-decorator]
    async def metrics_page(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=: the header is set as a whole.
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    @app.page(TOPOLOGY_PATH)  # type: ignore[untyped-decorator]
    async def topology_page(view: Any, request: Any) -> Any:
        return view.json(topology_document(w))


def topology_document(w: Wiring) -> dict[str, Any]:
    """The registered agents, what each reads, does, writes and keeps, and the topics."""
    from agents import agent_specs

    return {
        "agents": [{"name": s.name, "sources": [w.topic(t) for t in s.sources],
                    "stages": list(s.stages), "outputs": [w.topic(t) for t in s.outputs],
                    "tables": list(s.tables), "reads": list(s.reads)} for s in agent_specs()],
        "topics": sorted(w.topic(t) for t in w.topics),
    }
