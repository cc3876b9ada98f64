"""The worker's ``/metrics`` page (Prometheus text format, ``prometheus_client``) and
``/topology`` (what ``tickstream describe`` prints, as JSON).

Two kinds of figures:

* **Per batch** (:class:`BatchMetrics`, updated by the pipeline agent once per batch, never
  per tick): records in, clean ticks, bars, features and commands out, rejects by reason,
  duplicates, and histograms of the batch's processing and publishing time and of the
  receive → clean latency of the batch's oldest clean tick (one sample per batch keeps the
  hot path free of per-tick work).
* **At scrape time** (:class:`WorkerCollector`, read from the live objects when Prometheus
  asks): decode dead letters, checkpoints, consumer lag per partition, the model in use,
  the kill switch, bars not scored and entries blocked by reason, each collector's health.

Every worker has its own registry (not the process-global one), so two apps in one test
process never collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agents.control import ControlView
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
        self._out = {k: self.out.labels(k) for k in ("clean", "bars", "features", "commands")}
        self._process = self.stage_seconds.labels("process")
        self._publish = self.stage_seconds.labels("publish")

    def batch(self, events: int, out: Outputs, process_s: float) -> None:
        """One processed batch, before its outputs are cleared."""
        self.records_in.inc(events)
        self._process.observe(process_s)
        if out.clean:
            self._out["clean"].inc(len(out.clean))
            first = out.clean[0]
            self.tick_to_clean.observe(
                max(0, first.processed_time_us - first.recv_time_us) / 1e6)
        if out.bars:
            self._out["bars"].inc(len(out.bars))
        if out.features:
            self._out["features"].inc(len(out.features))
        if out.duplicates:
            self.duplicates.inc(out.duplicates)
        for _tick, rej in out.rejects:
            self.rejects.labels(rej.reason).inc()
        for cmd in out.commands:
            self._out["commands"].inc()
            self.commands.labels(cmd.action).inc()

    def published(self, seconds: float) -> None:
        self._publish.observe(seconds)


class WorkerCollector(Collector):
    """Figures read from the worker's live objects at each scrape."""

    def __init__(self, w: Wiring, control: ControlView, collectors: Mapping[bytes, bytes],
                 pipeline: Pipeline | None) -> None:
        self._status = w.status
        self._control = control
        self._collectors = collectors
        self._pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        from agents.health import collector_status

        stats = self._status.stats if self._status is not None else {}
        dl = CounterMetricFamily("tickstream_decode_dead_letters", "Records dead-lettered "
                                 "before the stages, by reason", labels=["reason"])
        for reason in ("malformed", "bad_key"):
            dl.add_metric([reason], float(stats.get(reason, 0)))
        yield dl
        yield CounterMetricFamily("tickstream_checkpoints", "State checkpoints written",
                                  value=float(stats.get("checkpoints", 0)))
        lag = GaugeMetricFamily("tickstream_consumer_lag", "High watermark - committed "
                                "offset per source partition", labels=["partition"])
        gauges = self._status.gauges if self._status is not None else {}
        for tp, value in sorted((gauges.get("partition_lag") or {}).items()):
            lag.add_metric([str(tp)], float(value))
        yield lag
        models = self._status.models if self._status is not None else None
        model = getattr(models, "current", None)
        info = GaugeMetricFamily("tickstream_model_info", "The model in use (1) and its id",
                                 labels=["version", "model_id"])
        if model is not None:
            info.add_metric([model.version, model.model_id], 1.0)
        yield info
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
        up = GaugeMetricFamily("tickstream_collector_up", "1 while a collector is running, "
                               "connected and reporting", labels=["collector", "kind"])
        now_ms = time.time_ns() // 1_000_000
        for name, raw in sorted(self._collectors.items()):
            try:
                report = collector_status(orjson.loads(raw), now_ms)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue
            up.add_metric([name.decode(errors="replace"), str(report.get("kind", ""))],
                          1.0 if report.get("ok") else 0.0)
        yield up


def register(w: Wiring, control: ControlView, collectors: Mapping[bytes, bytes],
             pipeline: Pipeline | None, registry: CollectorRegistry) -> None:
    """The ``/metrics`` and ``/topology`` pages on ``w.app``."""
    app = w.app
    registry.register(WorkerCollector(w, control, collectors, pipeline))

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
