"""A real worker's ``/health/`` (the service shape beside the older keys) and ``/metrics``
(parsed with prometheus_client's parser) during a run on the local broker, the kill switch
followed through both, and the Grafana dashboard checked against what the worker exposes."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pipeline_helpers import send_ticks
from prometheus_client.parser import text_string_to_metric_families

from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.localstack import WorkerProcess
from schemas.records import CollectorHealth, ControlMessage
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana-dashboard.json"
T = TypeVar("T")

#: Families the worker must expose, as the parser names them (counters without _total).
FAMILIES = {
    "tickstream_build_info", "tickstream_uptime_seconds", "tickstream_worker_status",
    "tickstream_worker_problems", "tickstream_records_in", "tickstream_records_out",
    "tickstream_stage_records", "tickstream_rejects", "tickstream_duplicates",
    "tickstream_decode_dead_letters", "tickstream_commands", "tickstream_batch_stage_seconds",
    "tickstream_tick_to_clean_seconds", "tickstream_tick_to_command_seconds",
    "tickstream_consumer_lag", "tickstream_consumer_group_members",
    "tickstream_assigned_partitions", "tickstream_model_info", "tickstream_model_loaded",
    "tickstream_kill_switch", "tickstream_collector_up", "tickstream_collector_ticks",
    "tickstream_collector_report_age_seconds", "tickstream_broker_ticks_per_second",
    "tickstream_broker_latency_seconds", "tickstream_broker_status",
    "tickstream_symbols_tracked", "tickstream_symbol_completeness_ratio",
    "tickstream_symbol_spread_quality_ratio", "tickstream_symbol_broker_sync_ratio",
    "process_cpu_seconds", "process_resident_memory_bytes",
}


def _get(port: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return bytes(resp.read())


class Scrape:
    """One ``/metrics`` answer, parsed."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def by(self, name: str, label: str) -> dict[str, float]:
        return {dict(k)[label]: v for (n, k), v in self.samples.items()
                if n == name and label in dict(k)}

    def names(self) -> set[str]:
        """Every series name a query can use: the samples', and each family's even when it
        has no sample yet (a labelled counter before its first increment)."""
        out = {n for n, _labels in self.samples}
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum",
                                                                   "_count", "_created"),
                    "summary": ("_sum", "_count", "_created")}
        for family in self.families.values():
            out.add(family.name)
            out.update(family.name + s for s in suffixes.get(family.type, ()))
        return out


def _is(name: str, value: float, scrape: Scrape) -> bool:
    return scrape.get(name) == value


def until(get: Callable[[], T], ok: Callable[[T], bool], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value!r}"
        time.sleep(0.2)


def test_health_and_metrics_during_a_run(settings_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    port = settings_env["TICKSTREAM_WEB_PORT"]
    producer = RecordProducer(settings)
    worker = WorkerProcess(settings_env, tmp_path / "worker.log").start()
    try:
        now = int(time.time() * 1000)
        producer.send("collectors.health", "sim-endpoints", CollectorHealth(
            name="sim-endpoints", kind="simulate", state="RUNNING", connected=True,
            time_ms=now, started_ms=now - 5_000, ticks=1234, events=5, rejected=2, errors=1,
            reconnects=3, ticks_per_s=246.8, interval_s=600.0))
        ticks = simulate(5, seconds=240)
        send_ticks(producer, ticks)

        def metrics() -> Scrape:
            return Scrape(_get(port, "/metrics").decode())

        def health() -> dict[str, Any]:
            page: dict[str, Any] = json.loads(_get(port, "/health/"))
            return page

        brokers = {t.broker for t in ticks}
        symbols = {t.symbol for t in ticks}
        # The broker and symbol figures come from the once-a-second sample (up to 1 s old).
        m = until(metrics, lambda s: (s.get("tickstream_records_in_total") or 0) >= len(ticks)
                  and s.get("tickstream_collector_up", collector="sim-endpoints",
                            kind="simulate") == 1.0
                  and s.get("tickstream_symbols_tracked") == len(symbols)
                  and set(s.by("tickstream_broker_ticks_per_second", "broker")) == brokers,
                  60, "every tick consumed, the collector report and every broker")
        missing = FAMILIES - set(m.families)
        assert not missing, f"families not exposed: {sorted(missing)}"

        clean = m.get("tickstream_records_out_total", output="clean")
        assert clean is not None and clean > 0
        stage = {(dict(k)["stage"], dict(k)["direction"]): v for (n, k), v in m.samples.items()
                 if n == "tickstream_stage_records_total"}
        assert stage[("decode", "in")] == len(ticks)
        assert stage[("decode", "out")] == len(ticks)  # nothing malformed was sent
        assert stage[("validate", "out")] == clean
        assert stage[("bars", "out")] == m.get("tickstream_records_out_total", output="bars")
        rejects = sum(m.by("tickstream_rejects_total", "reason").values())
        dupes = m.get("tickstream_duplicates_total") or 0
        assert rejects > 0 and dupes > 0
        assert clean + rejects + dupes <= stage[("validate", "in")]
        assert m.get("tickstream_batch_stage_seconds_count", stage="process")
        assert m.get("tickstream_tick_to_clean_seconds_count")
        assert m.get("tickstream_kill_switch") == 0.0
        assert m.get("tickstream_worker_status", status="healthy") == 1.0
        assert m.get("tickstream_consumer_group_members") == 1.0
        assert m.get("tickstream_assigned_partitions") == float(settings.partitions)
        assert m.by("tickstream_build_info", "version")
        assert (m.get("tickstream_uptime_seconds") or 0) > 0
        key = {"collector": "sim-endpoints", "kind": "simulate"}
        assert m.get("tickstream_collector_ticks_total", **key) == 1234
        assert m.get("tickstream_collector_reconnects_total", **key) == 3
        assert m.get("tickstream_collector_ticks_per_second", **key) == 246.8
        for name in ("completeness", "spread_quality", "broker_sync"):
            values = m.by(f"tickstream_symbol_{name}_ratio", "symbol")
            assert set(values) == symbols and all(0.0 <= v <= 1.0 for v in values.values())

        # /health/: each broker's accepted ticks add up to the clean ticks, and while the
        # ticks are inside the rate window the brokers are active with a rate.
        page = until(health, lambda p: sum(b["ticks"] for b in p["brokers"].values()) == clean,
                     30, "the brokers' ticks in /health/ to reach the clean ticks")
        assert (page["service"], page["status"], page["ok"]) == ("tickstream-worker",
                                                                 "healthy", True)
        assert page["version"] and page["uptime_s"] > 0 and page["started_ms"] <= now
        assert set(page["brokers"]) == brokers
        for b in page["brokers"].values():
            assert b["status"] in ("active", "idle", "stale")
            assert set(b["active_symbols"]) <= symbols
            assert b["latency_ms"] is not None and b["latency_ms"] > 0
        agg = page["aggregation"]
        assert agg["symbols_tracked"] == len(symbols) and set(agg["symbols"]) == symbols
        assert agg["consumers"] == 1
        group = agg["consumer_group"]
        assert group["partitions"] == list(range(settings.partitions))
        assert group["members"] == {group["this_worker"]: list(range(settings.partitions))}
        q = page["quality"]
        for name in ("completeness", "spread_quality", "broker_sync"):
            assert 0.0 <= q[name] <= 1.0
        assert set(q["by_symbol"]) == symbols
        assert page["collectors"]["sim-endpoints"]["ok"] is True
        assert page["kill_switch"] == {"on": False} and page["worker"]["ok"] is True
        assert page["broker_quality"]  # the table the pipeline keeps, as before
        alias = json.loads(_get(port, "/health"))
        assert set(alias) == set(page) and alias["service"] == "tickstream-worker"
        # At least one sample inside the window after the last batch shows the rate.
        until(health, lambda p: any((b["ticks_per_s"] or 0) > 0 for b in p["brokers"].values())
              and any(b["status"] == "active" for b in p["brokers"].values()),
              30, "an active broker with a rate")

        # The kill switch follows control messages in /metrics and /health/.
        for command, value in (("kill_switch_on", 1.0), ("kill_switch_off", 0.0)):
            producer.send("control", "kill_switch", ControlMessage(
                command=command, reason="endpoint test", issued_by="pytest",
                time_ms=int(time.time() * 1000)))
            assert producer.flush() == 0
            until(metrics, partial(_is, "tickstream_kill_switch", value), 60,
                  f"tickstream_kill_switch {value}")
            assert health()["kill_switch"]["on"] is bool(value)

        check_dashboard(metrics())
    finally:
        worker.stop()
        producer.flush()
    assert "Traceback" not in worker.log_text()


METRIC = re.compile(r"\b((?:tickstream|process)_[a-z0-9_]+)\b")


def check_dashboard(scrape: Scrape) -> None:
    """The dashboard is a Grafana dashboard model on a Prometheus datasource variable, and
    every query names only series this worker exposes."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exposed = scrape.names()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    unknown: list[tuple[str, str]] = []
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["targets"], p["title"]
        for target in p["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, f"{p['title']}: {target['expr']} names no tickstream metric"
            unknown += [(p["title"], n) for n in names if n not in exposed]
    assert not unknown, f"dashboard queries name metrics the worker does not expose: {unknown}"


def test_two_workers_each_report_the_group_and_their_share(settings_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    from devstack.broker import free_port

    settings = Settings.from_env(settings_env, env_file=None)
    ensure_topics(settings)
    envs = [settings_env, {**settings_env, "TICKSTREAM_WEB_PORT": str(free_port()),
                           "TICKSTREAM_DATA_DIR": str(tmp_path / "second")}]
    workers: list[WorkerProcess] = []
    try:
        for i, env in enumerate(envs):
            workers.append(WorkerProcess(env, tmp_path / f"worker{i}.log").start())

        def groups() -> list[dict[str, Any]]:
            return [json.loads(_get(e["TICKSTREAM_WEB_PORT"], "/health/"))["aggregation"]
                    for e in envs]

        aggs = until(groups, lambda a: all(x["consumers"] == 2 for x in a), 90,
                     "both workers in one group of two")
        a, b = (x["consumer_group"] for x in aggs)
        assert a["members"] == b["members"] and a["this_worker"] != b["this_worker"]
        assert a["members"][a["this_worker"]] == a["partitions"]
        assert b["members"][b["this_worker"]] == b["partitions"]
        assert sorted(a["partitions"] + b["partitions"]) == list(range(settings.partitions))
        scrapes = [Scrape(_get(e["TICKSTREAM_WEB_PORT"], "/metrics").decode()) for e in envs]
        assert [s.get("tickstream_consumer_group_members") for s in scrapes] == [2.0, 2.0]
        assert sum(s.get("tickstream_assigned_partitions") or 0 for s in scrapes) == (
            settings.partitions)
    finally:
        for w in workers:
            w.stop()
