"""The short variant of ``make reliability`` (bench/reliability): real Lean ticks through a
worker on the real broker, judged against offline ``tickstream process``.

Steady feed (nothing killed) and every bad-input kind across a SIGKILL: the accounting
invariants must hold exactly: nothing lost, no key emitted with two contents, every tick
sent accounted for (clean + rejected + counted duplicates == sent), every bad input in
exactly one place (a dead letter carrying its original bytes, or one clean tick).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from conftest import need

from bench.reliability import data
from bench.reliability import scenarios as sc
from bench.reliability.__main__ import train
from devstack.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.data]


@pytest.fixture(scope="module")
def ctx(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> sc.Context:
    need(data.DEFAULT_ROOT.is_dir(), f"Lean data folder {data.DEFAULT_ROOT} is absent")
    work = tmp_path_factory.mktemp("reliability")
    return sc.Context(data.DEFAULT_ROOT, work, broker, train(data.DEFAULT_ROOT, work),
                      quick=True, seed=11, soak_s=0.0, log=lambda _m: None)


def _invariants(res: dict[str, Any]) -> None:
    detail = res["detail"]
    assert res["lost"] == 0, detail
    assert res["conflicting"] == 0, detail
    assert detail["rejected"]["extra"] == 0, detail["rejected"]
    assert res["accounted"] == res["sent"], res
    assert res["tracebacks"] == 0


def test_steady_real_feed_every_tick_accounted(ctx: sc.Context) -> None:
    res = sc.steady(ctx, rates=[120.0], seconds=5.0)
    _invariants(res)
    assert res["online_clean"] > 0 and res["rates"]["120"]["latency_ms"]["n"] > 0


def test_every_bad_input_accounted_across_a_sigkill(ctx: sc.Context) -> None:
    res = sc.bad_inputs(ctx, n=1500, rate=300.0, per_kind=2)
    bad = res["bad"]
    assert bad["bad_sent"] == 2 * len(sc.BAD_KINDS)
    assert bad["unaccounted"] == 0, bad["kinds"]
    assert bad["not_the_expected_reason"] == 0, bad["kinds"]
    # every dead letter of a bad input carries the record's original bytes
    dead_lettered = sum(n for v in bad["kinds"].values()
                        for o, n in v["outcomes"].items() if o.startswith("dead letter"))
    assert bad["dead_letters_with_original_bytes"] == dead_lettered
    _invariants(res)


def test_lean_reader_applies_each_brokers_clock(tmp_path: Path) -> None:
    need(data.DEFAULT_ROOT.is_dir(), f"Lean data folder {data.DEFAULT_ROOT} is absent")
    day = data.lean_days(data.DEFAULT_ROOT)[0]
    ticks = data.lean_day(data.DEFAULT_ROOT, day)
    assert {t.broker for t in ticks} == {"OANDA", "FXCM"}
    assert {t.symbol for t in ticks} == {"EURUSD", "NZDUSD"}
    assert all(a.time_msc <= b.time_msc for a, b in itertools.pairwise(ticks))
    # FXCM's file clock is UTC-5: its first quote of the day is at 05:00 UTC or later,
    # and the merged stream starts once every stream has begun.
    first_fxcm = min(t.time_msc for t in ticks if t.broker == "FXCM")
    assert first_fxcm % 86_400_000 >= 5 * 3_600_000
