"""The broker, aggregation and quality sections of ``/health/`` (agents.health_view), from
a real :class:`~stages.pipeline.Pipeline` fed hand-made ticks, sampled at chosen times."""

from __future__ import annotations

import time

import orjson
import pytest

from agents.health import DEGRADED, HEALTHY, UNHEALTHY, health_report
from agents.health_view import ACTIVE, IDLE, STALE, LiveView
from agents.metrics import stage_records
from agents.worker_status import WorkerStatus
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.types import Tick
from topology.settings import Settings

SETTINGS = Settings.from_env({"TICKSTREAM_SYMBOLS": "EURUSD,GBPUSD"}, env_file=None)
T0 = 1_790_000_000_000


def feed(pipeline: Pipeline, broker: str, start_ms: int, n: int, *, spread_pips: float,
         latency_ms: int, step_ms: int = 100) -> int:
    """``n`` EURUSD ticks of ``broker``; returns how many came out clean."""
    out = Outputs()
    for i in range(n):
        t = start_ms + i * step_ms
        bid = 1.1 + 0.00001 * (i % 3)
        pipeline.on_tick(Tick(broker, "EURUSD", t, bid, bid + spread_pips * 0.0001,
                              (t + latency_ms) * 1000), out)
    assert not out.rejects
    return len(out.clean)


def test_rates_latency_status_and_quality_follow_the_pipeline() -> None:
    cfg = PipelineConfig.from_settings(SETTINGS)
    pipeline = Pipeline(cfg)
    limit = cfg.symbols["EURUSD"].max_spread_pips
    live = LiveView(pipeline, cfg.symbols, window_s=10.0)

    # Both brokers quote every 100 ms of event time, A with 1 pip and 20 ms, B 2 pips, 50 ms.
    for k in range(10):
        feed(pipeline, "A", T0 + k * 200, 1, spread_pips=1, latency_ms=20)
        feed(pipeline, "B", T0 + k * 200 + 100, 1, spread_pips=2, latency_ms=50)
    first = live.update(0.0)
    a, b = first.brokers["A"], first.brokers["B"]
    assert a.ticks_per_s is None and b.ticks_per_s is None  # one sample: no rate yet
    assert (a.status, b.status) == (ACTIVE, ACTIVE)
    assert a.active_symbols == ("EURUSD",) and a.ticks == 10 and b.ticks == 10
    assert (a.latency_ms, b.latency_ms) == (20.0, 50.0)  # since the first quote
    q = first.symbols["EURUSD"]
    assert (q.brokers, q.fresh_brokers, q.completeness, q.broker_sync) == (2, 2, 1.0, 1.0)
    assert q.spread_quality == pytest.approx(((1 - 1 / limit) + (1 - 2 / limit)) / 2)
    assert first.configured == 2 and set(first.symbols) == {"EURUSD"}

    # Two seconds later A has sent 20 more, B 5 more.
    assert feed(pipeline, "A", T0 + 2_000, 20, spread_pips=1, latency_ms=30) == 20
    assert feed(pipeline, "B", T0 + 2_050, 5, spread_pips=2, latency_ms=50) == 5
    second = live.update(2.0)
    assert second.brokers["A"].ticks_per_s == pytest.approx(10.0)
    assert second.brokers["B"].ticks_per_s == pytest.approx(2.5)
    assert second.brokers["A"].latency_ms == pytest.approx(30.0)  # the window's ticks only

    # A goes on 10 s of event time past B's last quote: B drops out of consolidation.
    feed(pipeline, "A", T0 + 4_100, 100, spread_pips=1, latency_ms=30)
    third = live.update(3.0)
    assert third.brokers["A"].status == ACTIVE
    assert third.brokers["B"].status == STALE and third.brokers["B"].active_symbols == ()
    assert third.symbols["EURUSD"].broker_sync == 0.5
    assert third.symbols["EURUSD"].completeness is not None
    assert third.symbols["EURUSD"].completeness < 1.0
    assert third.quality()["broker_sync"] == 0.5

    # Nothing more for a while: both idle, the rate over the window is 0, the latency falls
    # back to the mean since the first quote.
    quiet = live.update(20.0)
    assert quiet.window_s == pytest.approx(17.0)  # the newest sample a window old: at 3 s
    assert quiet.brokers["A"].ticks_per_s == 0.0
    assert {v.status for v in quiet.brokers.values()} == {IDLE}
    assert quiet.brokers["B"].latency_ms == pytest.approx(50.0)

    # Partitions revoked: the states are gone, so is everything this worker tracked.
    pipeline.forget_all()
    gone = live.update(21.0)
    assert gone.brokers == {} and gone.symbols == {}
    assert gone.quality() == {"completeness": None, "spread_quality": None,
                              "broker_sync": None}


def test_current_recomputes_only_when_older_than_a_second() -> None:
    cfg = PipelineConfig.from_settings(SETTINGS)
    pipeline = Pipeline(cfg)
    live = LiveView(pipeline, cfg.symbols)
    s = live.current(100.0)
    assert live.current(100.5) is s
    feed(pipeline, "A", T0, 3, spread_pips=1, latency_ms=10)
    later = live.current(101.0)
    assert later is not s and later.brokers["A"].ticks_per_s == 3.0
    feed(pipeline, "A", T0 + 300, 3, spread_pips=1, latency_ms=10)
    assert live.current(102.0).brokers["A"].ticks_per_s == 3.0  # 6 ticks since 100 s


def test_a_restored_state_counts_only_the_ticks_after_its_restore() -> None:
    cfg = PipelineConfig.from_settings(SETTINGS)
    pipeline = Pipeline(cfg)
    live = LiveView(pipeline, cfg.symbols)
    live.update(0.0)
    feed(pipeline, "A", T0, 10, spread_pips=1, latency_ms=10)  # as if from the table
    live.restored("EURUSD")
    feed(pipeline, "A", T0 + 1_000, 4, spread_pips=1, latency_ms=30)
    view = live.update(1.0).brokers["A"]
    assert (view.ticks, view.ticks_per_s, view.latency_ms) == (14, 4.0, 30.0)


def test_health_report_has_the_service_shape_beside_the_old_keys() -> None:
    cfg = PipelineConfig.from_settings(SETTINGS)
    pipeline = Pipeline(cfg)
    feed(pipeline, "A", T0, 5, spread_pips=1, latency_ms=10)
    live = LiveView(pipeline, cfg.symbols).update(0.0)
    worker = WorkerStatus()
    group = {"group": "app", "this_worker": "http://h:1", "partitions": [0, 1],
             "members": {"http://h:1": [0, 1], "http://h:2": [2, 3]}}
    page = health_report({}, None, worker=worker, live=live, consumers=group)
    assert (page["service"], page["status"], page["ok"]) == ("tickstream-worker", HEALTHY,
                                                             True)
    assert page["version"] and page["uptime_s"] >= 0
    assert page["brokers"]["A"]["status"] == ACTIVE
    assert page["brokers"]["A"]["active_symbols"] == ["EURUSD"]
    assert set(page["brokers"]["A"]) >= {"status", "active_symbols", "ticks_per_s",
                                         "latency_ms"}
    agg = page["aggregation"]
    assert (agg["symbols_tracked"], agg["symbols_configured"], agg["consumers"]) == (1, 2, 2)
    assert agg["consumer_group"]["partitions"] == [0, 1]
    quality = page["quality"]
    assert quality["completeness"] == 1.0 and quality["broker_sync"] == 1.0
    assert 0.0 < quality["spread_quality"] < 1.0
    assert set(quality["by_symbol"]) == {"EURUSD"}
    for key in ("worker", "collectors", "model", "kill_switch", "model_announced",
                "broker_quality", "time_ms"):
        assert key in page

    now = int(time.time() * 1000)
    stale = {b"c": orjson.dumps({"name": "c", "kind": "simulate", "state": "RUNNING",
                                 "connected": True, "time_ms": now - 60_000,
                                 "interval_s": 1.0})}
    assert health_report(stale, None, worker=worker, now_ms=now)["status"] == DEGRADED
    worker.report("stalled x[0]", "no progress")
    page = health_report(stale, None, worker=worker, now_ms=now)
    assert (page["status"], page["ok"]) == (UNHEALTHY, False)
    empty = health_report({}, None)
    assert empty["brokers"] == {} and empty["aggregation"]["consumers"] is None


def test_stage_records_account_for_what_each_stage_lets_through() -> None:
    totals = {"in": 100, "clean": 80, "bars": 4, "features": 3, "commands": 1,
              "duplicates": 5, "rejects": 6}
    stats = {"malformed": 2, "bad_key": 1, "replayed_skipped": 4}
    rows = {(stage, d): v for stage, d, v in stage_records(totals, stats)}
    assert rows[("decode", "in")] == 100 and rows[("decode", "out")] == 97
    assert rows[("validate", "in")] == 93 and rows[("validate", "out")] == 80
    assert rows[("bars", "out")] == 4 and rows[("indicators", "out")] == 3
    assert rows[("risk", "out")] == 1
