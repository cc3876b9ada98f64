"""The stage settings reach the stages: dedupe window, broker staleness, broker priorities.

Each is driven through ``Settings.from_env`` → ``PipelineConfig.from_settings`` →
``Pipeline``, the path the worker, ``tickstream process`` and training all take.
"""

from __future__ import annotations

from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.types import OUT_OF_ORDER, Tick
from topology.settings import Settings

T0 = 1_700_000_000_000


def pipeline(**env: str) -> Pipeline:
    s = Settings.from_env({f"TICKSTREAM_{k}": v for k, v in env.items()}, env_file=None)
    return Pipeline(PipelineConfig.from_settings(s))


def tick(broker: str, t: int, bid: float = 1.1000, ask: float = 1.1002) -> Tick:
    return Tick(broker, "EURUSD", t, bid, ask, recv_time_us=(t + 20) * 1000)


def run(p: Pipeline, ticks: list[Tick]) -> Outputs:
    out = Outputs()
    for t in ticks:
        p.on_tick(t, out)
    return out


def test_broker_priorities_break_a_best_price_tie() -> None:
    # Two brokers with the same quotes at the same times: same quality, so priority decides.
    ticks = [tick(b, T0 + i * 100) for i in range(5) for b in ("ICM", "PEP")]
    for priorities, winner in (("ICM=1,PEP=0", "PEP"), ("ICM=0,PEP=1", "ICM")):
        last = run(pipeline(BROKER_PRIORITIES=priorities), ticks).clean[-1]
        assert last.fresh_brokers == 2
        assert (last.best_bid_broker, last.best_ask_broker) == (winner, winner), priorities


def test_broker_staleness_drops_a_quiet_broker() -> None:
    ticks = [tick("ICM", T0), tick("PEP", T0 + 10), tick("PEP", T0 + 3_000)]
    assert run(pipeline(), ticks).clean[-1].fresh_brokers == 2  # default 5 s
    assert run(pipeline(BROKER_STALENESS_MS="2000"), ticks).clean[-1].fresh_brokers == 1


def test_dedupe_window_bounds_what_counts_as_a_repeat() -> None:
    first = tick("ICM", T0)
    ticks = [first, tick("ICM", T0 + 5_000, 1.1001, 1.1003), tick("ICM", T0)]
    default = run(pipeline(), ticks)
    assert default.duplicates == 1 and not default.rejects
    # With a 1 s window the repeat is beyond the horizon: it is not a counted duplicate,
    # and the validator rejects it as out of order instead (still accounted for).
    short = run(pipeline(DEDUPE_WINDOW_MS="1000"), ticks)
    assert short.duplicates == 0
    assert [r.reason for _t, r in short.rejects] == [OUT_OF_ORDER]


def test_configuration_wins_over_a_restored_snapshot() -> None:
    ticks = [tick(b, T0 + i * 100) for i in range(5) for b in ("ICM", "PEP")]
    before = pipeline(BROKER_PRIORITIES="ICM=0,PEP=1")
    run(before, ticks)
    snapshot = before.snapshot_symbol("EURUSD")
    # The operator changes the priorities and restarts: the new ones apply at once.
    after = pipeline(BROKER_PRIORITIES="ICM=1,PEP=0")
    after.restore_symbol("EURUSD", snapshot)
    out = run(after, [tick("ICM", T0 + 600), tick("PEP", T0 + 600)])
    assert out.clean[-1].best_bid_broker == "PEP"


def test_idle_flush_keeps_the_bars_it_is_told_to_keep_open() -> None:
    p = pipeline()
    ticks = [Tick("ICM", sym, T0 + i * 1_000, 1.1, 1.1002, recv_time_us=(T0 + i * 1_000) * 1000)
             for i in range(3) for sym in ("EURUSD", "NZDUSD")]
    run(p, ticks)
    out = Outputs()
    late = T0 - T0 % 60_000 + 60_000 + 5_000
    p.idle_flush(late, 5_000, out, keep_open={"EURUSD"})
    assert [b.symbol for b in out.bars] == ["NZDUSD"]
    p.idle_flush(late, 5_000, out)
    assert [b.symbol for b in out.bars] == ["NZDUSD", "EURUSD"]
