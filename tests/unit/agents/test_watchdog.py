"""The stall watchdog's policy and the adaptive fetch wait, without Faust or a broker.

The integration side (a real worker on a long log) is
``tests/integration/test_worker_live_rate.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.health import health_report
from agents.watchdog import STALL_EXIT_CODE, StallReporter, StallWatch
from agents.worker_status import WorkerStatus
from engine.transport import (
    AdaptiveFetchWait,
    fetch_outcome,
    install_adaptive_wait,
    partition_offsets,
)
from topology.settings import Settings, SettingsError

P0, P1 = ("t.ticks.raw", 0), ("t.ticks.raw", 1)


# ---- StallWatch -------------------------------------------------------------------------


def test_a_partition_that_moves_or_has_no_lag_is_never_stalled() -> None:
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=5, exit_s=10)
    for second in range(60):
        verdict = watch.observe(float(second), {
            P0: (second * 10, second * 10 + 500),  # lag, but moving
            P1: (42, 42),  # not moving, nothing to read
        })
        assert verdict.stalled == [] and verdict.fatal == []
    assert verdict.lags == {P0: 500, P1: 0}
    assert (verdict.total_lag, verdict.max_lag) == (500, 500)


def test_lag_without_progress_warns_then_is_fatal() -> None:
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=5, exit_s=10)
    assert watch.observe(100.0, {P0: (7, 20), P1: (3, 3)}).stalled == []
    assert watch.observe(104.9, {P0: (7, 20), P1: (3, 3)}).stalled == []
    verdict = watch.observe(105.0, {P0: (7, 25), P1: (3, 3)})
    [stall] = verdict.stalled
    assert (stall.partition, stall.lag, stall.position, stall.highwater) == (P0, 18, 7, 25)
    assert stall.stalled_s == pytest.approx(5.0)
    assert verdict.fatal == []
    verdict = watch.observe(110.0, {P0: (7, 25), P1: (3, 3)})
    assert [s.partition for s in verdict.fatal] == [P0]


def test_progress_clears_a_stall_and_restarts_the_clock() -> None:
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=5, exit_s=0)
    watch.observe(0.0, {P0: (7, 20)})
    assert watch.observe(6.0, {P0: (7, 20)}).stalled
    assert watch.observe(7.0, {P0: (8, 20)}).stalled == []
    assert watch.observe(11.9, {P0: (8, 20)}).stalled == []
    assert watch.observe(12.0, {P0: (8, 20)}).stalled
    # A seek back is movement too, not a stall.
    assert watch.observe(13.0, {P0: (0, 20)}).stalled == []


def test_exit_disabled_with_zero() -> None:
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=1, exit_s=0)
    watch.observe(0.0, {P0: (0, 9)})
    verdict = watch.observe(1e6, {P0: (0, 9)})
    assert verdict.stalled and verdict.fatal == []


def test_unknown_offsets_and_new_partitions_start_their_clock() -> None:
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=5, exit_s=10)
    watch.observe(0.0, {P0: (None, None)})
    verdict = watch.observe(20.0, {P0: (None, 50)})
    assert verdict.stalled == [] and verdict.lags == {}
    assert watch.observe(24.0, {P0: (0, 50)}).stalled == []  # first known look at 24
    assert watch.observe(28.9, {P0: (0, 50)}).stalled == []
    assert watch.observe(29.0, {P0: (0, 50)}).stalled
    # Revoked, then assigned back: a fresh start, not 30 s without progress.
    assert watch.observe(30.0, {}).lags == {}
    assert watch.observe(31.0, {P0: (0, 50)}).stalled == []
    assert watch.observe(35.9, {P0: (0, 50)}).stalled == []


def test_warn_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StallWatch(warn_s=0, exit_s=10)


# ---- StallReporter ----------------------------------------------------------------------


@dataclass
class _Wait:
    wait_ms: int = 40
    fetches: int = 9
    starved_fetches: int = 3


def test_reporter_names_the_partition_on_health_and_in_stats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    status = WorkerStatus()
    exits: list[int] = []
    reporter = StallReporter(status, exit_s=10, exit_process=exits.append)
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=2, exit_s=10)
    stats: dict[str, float] = {"batches": 3}
    caplog.set_level(logging.INFO, logger="agents.watchdog")

    reporter.apply(watch.observe(0.0, {P0: (5, 105), P1: (9, 9)}), stats, _Wait())
    assert status.ok
    assert status.gauges["partition_lag"] == {"t.ticks.raw[0]": 100, "t.ticks.raw[1]": 0}
    assert stats == {"batches": 3, "lag": 100, "lag_max": 100, "fetch_wait_ms": 40,
                     "fetches": 9, "starved_fetches": 3}

    for now in (2.0, 3.0):  # reported while stalled, warned once
        reporter.apply(watch.observe(now, {P0: (5, 105), P1: (9, 9)}), stats, None)
    report = health_report({}, None, worker=status)
    assert report["ok"] is False
    problem = report["worker"]["problems"]["stalled t.ticks.raw[0]"]
    assert (problem["topic"], problem["partition"], problem["lag"]) == ("t.ticks.raw", 0, 100)
    assert (problem["position"], problem["highwater"]) == (5, 105)
    assert "t.ticks.raw[0]" in problem["detail"] and "lag 100" in problem["detail"]
    assert [r.levelname for r in caplog.records if "stalled" in r.getMessage()] == ["WARNING"]

    reporter.apply(watch.observe(4.0, {P0: (6, 105), P1: (9, 9)}), stats, None)
    assert status.ok and health_report({}, None, worker=status)["ok"] is True
    assert exits == []


def test_reporter_exits_non_zero_with_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    status = WorkerStatus()
    exits: list[int] = []
    reporter = StallReporter(status, exit_s=10, exit_process=exits.append)
    watch: StallWatch[tuple[str, int]] = StallWatch(warn_s=2, exit_s=10)
    caplog.set_level(logging.INFO, logger="agents.watchdog")
    for now in (0.0, 5.0, 9.0):
        reporter.apply(watch.observe(now, {P0: (5, 105)}), None, None)
    assert exits == []
    reporter.apply(watch.observe(10.0, {P0: (5, 105)}), None, None)
    assert exits == [STALL_EXIT_CODE] and STALL_EXIT_CODE != 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "t.ticks.raw[0]" in errors[0].getMessage() and "lag 100" in errors[0].getMessage()


# ---- AdaptiveFetchWait ------------------------------------------------------------------


def test_wait_doubles_while_starved_up_to_the_cap_and_shrinks_back_while_records_flow() -> None:
    policy = AdaptiveFetchWait(5, 500)
    assert policy.wait_ms == 5
    grown = [policy.after_fetch(got_records=False, starved=True) for _ in range(9)]
    assert grown == [10, 20, 40, 80, 160, 320, 500, 500, 500]
    assert (policy.fetches, policy.starved_fetches) == (9, 9)
    # Idle (empty, nothing to read): unchanged.
    assert policy.after_fetch(got_records=False, starved=False) == 500
    # One partition starved while another brought records: still starved.
    assert policy.after_fetch(got_records=True, starved=True) == 500
    shrunk = [policy.after_fetch(got_records=True, starved=False) for _ in range(40)]
    assert shrunk[:3] == [375, 282, 212]
    assert all(a >= b for a, b in itertools.pairwise(shrunk))
    assert shrunk[-1] == 5 and min(shrunk) == 5


def test_a_healthy_consumer_keeps_the_configured_wait() -> None:
    policy = AdaptiveFetchWait(5, 5000)
    for i in range(1000):
        assert policy.after_fetch(got_records=i % 3 != 0, starved=False) == 5
    assert (policy.fetches, policy.starved_fetches) == (1000, 0)


def test_cap_below_base_means_no_widening() -> None:
    policy = AdaptiveFetchWait(5, 1)
    assert policy.after_fetch(got_records=False, starved=True) == 5
    with pytest.raises(ValueError):
        AdaptiveFetchWait(0, 10)


# ---- the fetcher hook, on stand-ins of aiokafka's objects -------------------------------


@dataclass
class _State:
    position: int | None
    highwater: int | None = None
    timestamp: int | None = None
    paused: bool = False

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


@dataclass
class _Assignment:
    states: dict[Any, _State]
    active: bool = True

    @property
    def tps(self) -> frozenset[Any]:
        return frozenset(self.states)

    def state_value(self, tp: Any) -> _State | None:
        return self.states.get(tp)


@dataclass
class _Request:
    topics: list[tuple[str, list[tuple[int, int, int]]]]


@dataclass
class _Fetcher:
    respond: dict[Any, tuple[int, bool]]  # tp -> (highwater, records?)
    assignment: _Assignment
    _records: dict[Any, object] = field(default_factory=dict)
    _fetch_max_wait_ms: int = 5
    sent_waits: list[int] = field(default_factory=list)

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        from time import time

        self.sent_waits.append(self._fetch_max_wait_ms)
        for tp, (hw, records) in self.respond.items():
            state = assignment.state_value(tp)
            state.highwater, state.timestamp = hw, int(1000 * time())
            if records:
                self._records[tp] = object()
        return any(r for _, r in self.respond.values())


def test_fetch_outcome_tells_starved_from_idle_and_from_records() -> None:
    from aiokafka import TopicPartition

    tp0, tp1 = TopicPartition("raw", 0), TopicPartition("raw", 1)
    request = _Request([("raw", [(0, 100, 1 << 20), (1, 7, 1 << 20)])])
    fresh = 1_000
    assignment = _Assignment({tp0: _State(100, 200, fresh), tp1: _State(7, 7, fresh)})
    fetcher = _Fetcher({}, assignment)
    assert fetch_outcome(fetcher, assignment, request, since_ms=fresh) == (False, True)
    fetcher._records[tp0] = object()
    assert fetch_outcome(fetcher, assignment, request, since_ms=fresh) == (True, False)
    fetcher._records.clear()
    # An answer older than the request (a failed Fetch) or a seek meanwhile says nothing.
    assert fetch_outcome(fetcher, assignment, request, since_ms=fresh + 1) == (False, False)
    assignment.states[tp0].position = 150
    assert fetch_outcome(fetcher, assignment, request, since_ms=fresh) == (False, False)


def test_installed_hook_widens_the_next_fetch_after_a_starved_one() -> None:
    from aiokafka import TopicPartition

    tp0 = TopicPartition("raw", 0)
    assignment = _Assignment({tp0: _State(0)})
    fetcher = _Fetcher({tp0: (30_000, False)}, assignment)
    policy = AdaptiveFetchWait(5, 5000)
    install_adaptive_wait(fetcher, policy)
    request = _Request([("raw", [(0, 0, 1 << 20)])])

    async def fetches(n: int) -> None:
        for _ in range(n):
            await fetcher._proc_fetch_request(assignment, 0, request)

    asyncio.run(fetches(4))
    assert fetcher.sent_waits == [5, 10, 20, 40]
    fetcher.respond = {tp0: (30_000, True)}
    fetcher._records.clear()
    asyncio.run(fetches(1))
    assert fetcher._fetch_max_wait_ms == 60 == policy.wait_ms


def test_partition_offsets_leaves_out_changelogs_and_paused_partitions() -> None:
    from aiokafka import TopicPartition

    assignment = _Assignment({
        TopicPartition("raw", 0): _State(5, 9),
        TopicPartition("raw", 1): _State(None),
        TopicPartition("raw", 2): _State(1, 4, paused=True),
        TopicPartition("app-state-changelog", 0): _State(0, 9),
    })

    class App:
        class tables:
            changelog_topics = {"app-state-changelog"}

        class _consumer:
            class _thread:
                class _consumer:
                    class _subscription:
                        subscription = type("S", (), {"assignment": assignment})

    assert partition_offsets(App) == {("raw", 0): (5, 9), ("raw", 1): (None, None)}
    assignment.active = False
    assert partition_offsets(App) == {}
    assert partition_offsets(object()) == {}


def test_partition_offsets_measure_progress_at_the_committed_offset_not_the_fetch_pos() -> None:
    # Faust fetches ahead into the stream buffer: a worker far behind had its fetch position
    # at the high watermark and showed lag 0. Progress is what it has committed.
    from aiokafka import TopicPartition
    from faust.types import TP

    assignment = _Assignment({
        TopicPartition("raw", 0): _State(9_000, 9_000),   # fetched everything...
        TopicPartition("raw", 1): _State(40, 50),          # ...not yet committed here
    })

    class App:
        class tables:
            changelog_topics: set[str] = set()

        class _consumer:
            _committed_offset = {TP("raw", 0): 1_200}  # ...but processed only to 1,200

            class _thread:
                class _consumer:
                    class _subscription:
                        subscription = type("S", (), {"assignment": assignment})

    assert partition_offsets(App) == {("raw", 0): (1_200, 9_000), ("raw", 1): (40, 50)}
    verdict = StallWatch(warn_s=30, exit_s=0).observe(0.0, partition_offsets(App))
    assert verdict.lags == {("raw", 0): 7_800, ("raw", 1): 10}


# ---- settings ---------------------------------------------------------------------------


def test_stall_and_fetch_wait_settings() -> None:
    d = Settings.from_env({}, env_file=None)
    assert (d.fetch_wait_ms, d.fetch_wait_max_ms, d.stall_warn_s, d.stall_exit_s) == (
        5, 5000, 30, 120)
    s = Settings.from_env({"TICKSTREAM_FETCH_WAIT_MAX_MS": "800", "TICKSTREAM_STALL_WARN_S": "3",
                           "TICKSTREAM_STALL_EXIT_S": "0"}, env_file=None)
    assert (s.fetch_wait_max_ms, s.stall_warn_s, s.stall_exit_s) == (800, 3, 0)
    for name, bad in (("FETCH_WAIT_MAX_MS", "0"), ("STALL_WARN_S", "0"),
                      ("STALL_EXIT_S", "-1"), ("STALL_EXIT_S", "soon")):
        with pytest.raises(SettingsError, match=f"TICKSTREAM_{name}"):
            Settings.from_env({f"TICKSTREAM_{name}": bad}, env_file=None)


def test_a_fetch_the_hook_cannot_judge_leaves_the_wait_and_the_fetcher_alone() -> None:
    assignment = _Assignment({})
    fetcher = _Fetcher({}, assignment)
    policy = AdaptiveFetchWait(5, 5000)
    install_adaptive_wait(fetcher, policy)
    broken = _Request([("raw", [(0,)])])  # type: ignore[list-item]
    assert asyncio.run(fetcher._proc_fetch_request(assignment, 0, broken)) is False
    assert fetcher._fetch_max_wait_ms == 5 and policy.fetches == 0
