"""Validator: every reason code, spike filtering with confirmation, state round-trips, real data."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.history.parse import read_history
from stages.config import SymbolSpec
from stages.dedupe import Deduplicator
from stages.types import (
    CROSSED_QUOTE,
    FUTURE_TIMESTAMP,
    MALFORMED,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    PRICE_JUMP,
    SPREAD_TOO_WIDE,
    STALE_TIMESTAMP,
    UNKNOWN_SYMBOL,
    Reject,
    Tick,
)
from stages.validate import ValidationRules, Validator

EURUSD = SymbolSpec("EURUSD", 0.0001, 5.0)
USDJPY = SymbolSpec("USDJPY", 0.01, 5.0)
PIP = 0.0001
T0 = 1_549_238_400_000  # 2019-02-04 00:00 UTC

Decision = tuple[Tick, Reject | None]


def validator(level: str = "advanced", spec: SymbolSpec | None = EURUSD, **kw: Any) -> Validator:
    rules = ValidationRules.for_level(level, spec)
    if kw:
        rules = dataclasses.replace(rules, **kw)
    return Validator(spec, rules)


def q(mid: float, t: int, broker: str = "b1", spread_pips: float = 1.0,
      symbol: str = "EURUSD", pip: float = PIP) -> Tick:
    """A quote around ``mid`` with the given spread."""
    half = spread_pips * pip / 2
    return Tick(broker=broker, symbol=symbol, time_msc=t, bid=mid - half, ask=mid + half)


def quiet(n: int, start: int = T0, level: float = 1.1, broker: str = "b1",
          step_ms: int = 100) -> list[Tick]:
    """A quiet market: ``level`` with +-0.1 pip noise."""
    noise = (0.0, 0.1, -0.1, 0.0, 0.1)
    return [q(level + noise[i % 5] * PIP, start + i * step_ms, broker) for i in range(n)]


def run(v: Validator, ticks: Iterable[Tick], now_ms: int = 0) -> list[Decision]:
    out: list[Decision] = []
    for t in ticks:
        out.extend(v.process(t, now_ms))
    return out


def one(v: Validator, t: Tick, now_ms: int = 0) -> Reject | None:
    """Process a tick that must be decided at once; return its decision."""
    res = v.process(t, now_ms)
    assert len(res) == 1 and res[0][0] is t, res
    return res[0][1]


def reason(v: Validator, t: Tick, now_ms: int = 0) -> str | None:
    r = one(v, t, now_ms)
    return None if r is None else r.reason


def as_values(decisions: Sequence[Decision]) -> list[tuple[Any, ...]]:
    return [(dataclasses.astuple(t), r) for t, r in decisions]


# ---------------------------------------------------------------- rules


def test_levels_are_tiers_of_strictness() -> None:
    basic = ValidationRules.for_level("basic", EURUSD)
    adv = ValidationRules.for_level("advanced", EURUSD)
    ent = ValidationRules.for_level("enterprise", EURUSD)
    assert not (basic.check_spread or basic.check_future or basic.check_stale or basic.check_jump)
    assert basic.check_order
    assert adv.check_spread and adv.check_future and adv.check_stale and adv.check_jump
    assert adv.max_future_skew_ms == 2_000 and adv.max_staleness_ms == 60_000
    assert adv.pip_size == 0.0001 and adv.max_spread_pips == 5.0
    assert ent.max_future_skew_ms < adv.max_future_skew_ms
    assert ent.max_staleness_ms < adv.max_staleness_ms
    assert ent.jump_sigma_mult < adv.jump_sigma_mult
    assert ent.jump_min_pips < adv.jump_min_pips
    assert 1 <= adv.confirm_ticks <= ent.confirm_ticks <= 2
    assert ValidationRules.for_level("advanced", USDJPY).pip_size == 0.01
    with pytest.raises(ValueError, match="unknown validation level"):
        ValidationRules.for_level("paranoid", EURUSD)
    with pytest.raises(ValueError, match="confirm_ticks"):
        dataclasses.replace(adv, confirm_ticks=0)


# ---------------------------------------------------------------- static reason codes


def test_unknown_symbol() -> None:
    v = validator(spec=None)
    assert reason(v, q(1.1, T0)) == UNKNOWN_SYMBOL
    v = validator()
    assert reason(v, q(1.1, T0, symbol="GBPUSD")) == UNKNOWN_SYMBOL
    assert v.rejected_by_reason == {UNKNOWN_SYMBOL: 1}


def test_malformed_and_non_positive_prices() -> None:
    v = validator("basic")
    assert reason(v, Tick("b1", "EURUSD", T0, math.nan, 1.1)) == MALFORMED
    assert reason(v, Tick("b1", "EURUSD", T0, 1.1, math.inf)) == MALFORMED
    assert reason(v, Tick("b1", "EURUSD", T0, -math.inf, 1.1)) == MALFORMED
    huge = 8.98846567431158e307  # finite, but bid + ask overflows: the mid would be inf
    assert reason(v, Tick("b1", "EURUSD", T0, huge, huge)) == MALFORMED
    assert reason(v, Tick("b1", "EURUSD", T0, 1.1, 0.0)) == NON_POSITIVE_PRICE
    assert reason(v, Tick("b1", "EURUSD", T0, 0.0, 1.1)) == NON_POSITIVE_PRICE
    assert reason(v, Tick("b1", "EURUSD", T0, -1.1, -1.0)) == NON_POSITIVE_PRICE
    assert v.rejected_by_reason == {MALFORMED: 4, NON_POSITIVE_PRICE: 3}
    assert v.accepted == 0


def test_crossed_quote_and_locked_quote_is_valid() -> None:
    v = validator()
    assert reason(v, Tick("b1", "EURUSD", T0, 1.10000, 1.09999)) == CROSSED_QUOTE
    assert reason(v, Tick("b1", "EURUSD", T0, 1.10000, 1.10000)) is None  # locked: valid
    basic = validator("basic")
    assert reason(basic, Tick("b1", "EURUSD", T0, 1.10000, 1.09999)) == CROSSED_QUOTE


def test_spread_limit_in_pips_including_exact_boundary() -> None:
    v = validator()
    assert reason(v, Tick("b1", "EURUSD", T0, 1.10000, 1.10050)) is None  # exactly 5 pips
    assert reason(v, Tick("b1", "EURUSD", T0, 1.10000, 1.10051)) == SPREAD_TOO_WIDE
    r = one(v, Tick("b1", "EURUSD", T0, 1.10000, 1.10100))
    assert r is not None and "10.0 pips" in r.detail
    # basic does not check the spread
    assert reason(validator("basic"), Tick("b1", "EURUSD", T0, 1.1, 1.2)) is None


def test_jpy_pip_size_scales_spread_and_jump_limits() -> None:
    v = validator(spec=USDJPY)
    assert reason(v, Tick("b1", "USDJPY", T0, 110.00, 110.05)) is None  # 5 JPY pips
    assert reason(v, Tick("b1", "USDJPY", T0, 110.00, 110.06)) == SPREAD_TOO_WIDE
    # A 5-pip move (0.05 JPY) is ordinary; a 40-pip spike (0.40 JPY) is held and rejected.
    assert reason(v, q(110.075, T0 + 100, symbol="USDJPY", pip=0.01)) is None
    assert v.process(q(110.475, T0 + 200, symbol="USDJPY", pip=0.01), 0) == []
    back = q(110.08, T0 + 300, symbol="USDJPY", pip=0.01)
    res = v.process(back, 0)
    assert [(t.time_msc, r.reason if r else None) for t, r in res] == [
        (T0 + 200, PRICE_JUMP), (T0 + 300, None)
    ]
    r = res[0][1]
    assert r is not None and "40.0 pips" in r.detail


def test_future_and_stale_timestamps_against_reference_clock() -> None:
    v = validator()
    now = T0 + 100_000
    assert reason(v, q(1.1, now + 2_000), now) is None  # exactly at the skew limit
    assert reason(v, q(1.1, now + 2_001), now) == FUTURE_TIMESTAMP
    w = validator()
    assert reason(w, q(1.1, now - 60_000), now) is None  # exactly at the staleness limit
    assert reason(w, q(1.1, now - 60_001, broker="b2"), now) == STALE_TIMESTAMP
    ent = validator("enterprise")
    assert reason(ent, q(1.1, now + 501), now) == FUTURE_TIMESTAMP
    # now_ms 0 (no receive time): both checks skipped, replay stays deterministic
    z = validator()
    assert reason(z, q(1.1, T0 - 10**9), 0) is None
    assert reason(z, q(1.1, T0 + 10**9), 0) is None
    # basic never checks time against the clock
    assert reason(validator("basic"), q(1.1, now + 10**6), now) is None


def test_out_of_order_per_broker_and_same_millisecond_is_fine() -> None:
    v = validator()
    assert reason(v, q(1.1, T0 + 10)) is None
    assert reason(v, q(1.10001, T0 + 10)) is None  # same millisecond: fine
    assert reason(v, q(1.10002, T0 + 10)) is None
    assert reason(v, q(1.1, T0 + 9)) == OUT_OF_ORDER
    assert reason(v, q(1.1, T0 + 5, broker="b2")) is None  # another broker's own clock
    # the rejected tick did not move the reference back
    assert reason(v, q(1.1, T0 + 9)) == OUT_OF_ORDER
    assert reason(v, q(1.1, T0 + 11)) is None
    assert v.rejected_by_reason == {OUT_OF_ORDER: 2}
    assert v.accepted == 5


def test_rejected_ticks_never_change_state() -> None:
    v = validator()
    run(v, quiet(50))
    before = v.snapshot()
    bad = [
        Tick("b1", "EURUSD", T0 + 10_000, 1.2, 1.1),  # crossed, far away and later
        Tick("b1", "EURUSD", T0 + 10_000, 1.1, 1.2),  # too wide
        Tick("b1", "EURUSD", T0 + 10_000, math.nan, 1.1),
        q(1.1, T0 + 1),  # out of order
    ]
    for t in bad:
        assert one(v, t) is not None
    after = v.snapshot()
    assert after["brokers"] == before["brokers"]
    assert v.accepted == 50 and sum(v.rejected_by_reason.values()) == 4


# ---------------------------------------------------------------- price jumps


def test_spike_that_reverts_is_rejected_and_leaves_no_trace() -> None:
    base = quiet(200)
    t_spike = base[-1].time_msc + 100
    spike = q(1.1040, t_spike)
    after = quiet(20, start=t_spike + 100)
    v = validator()
    assert all(r is None for _, r in run(v, base))
    assert v.process(spike, 0) == []
    assert v.pending_count == 1 and v.holding
    res = v.process(after[0], 0)
    assert [t for t, _ in res] == [spike, after[0]]
    r = res[0][1]
    assert r is not None and r.reason == PRICE_JUMP
    assert "39.9 pips" in r.detail and "limit 10.0 pips" in r.detail  # from 1.10001
    assert res[1][1] is None
    assert all(r is None for _, r in run(v, after[1:]))
    assert v.pending_count == 0 and not v.holding and v.flush() == []
    # the spike changed neither the level nor the volatility
    ref = validator()
    run(ref, base + after)
    assert v.snapshot()["brokers"] == ref.snapshot()["brokers"]
    assert v.rejected_by_reason == {PRICE_JUMP: 1}


def test_genuine_jump_confirmed_by_next_tick_is_accepted() -> None:
    """EURUSD quiet at 1.1000 with 0.1 pip noise jumps +40 pips and stays (a news move)."""
    base = quiet(200)
    moved = quiet(30, start=base[-1].time_msc + 100, level=1.1040)
    v = validator()
    run(v, base)
    assert v.process(moved[0], 0) == []  # held: could be a spike
    res = v.process(moved[1], 0)
    assert res == [(moved[0], None), (moved[1], None)]
    assert all(r is None for _, r in run(v, moved[2:]))
    assert v.accepted == 230 and v.rejected_by_reason == {}
    # the accepted jump raised the volatility estimate, as a news move should
    assert v.snapshot()["brokers"]["b1"]["ewma"] > 0.3 * PIP


def test_spike_followed_by_opposite_spike_each_judged_against_accepted_level() -> None:
    v = validator()
    base = quiet(100)
    run(v, base)
    t = base[-1].time_msc
    up, down, back = q(1.1040, t + 100), q(1.0960, t + 200), q(1.1, t + 300)
    assert v.process(up, 0) == []
    res = v.process(down, 0)  # does not confirm the up-spike, and is itself a jump
    assert len(res) == 1 and res[0][0] is up and res[0][1] is not None
    assert v.pending_count == 1 and v.holding
    res = v.process(back, 0)
    assert [t for t, _ in res] == [down, back]
    assert res[0][1] is not None and res[0][1].reason == PRICE_JUMP and res[1][1] is None


def test_static_rejects_do_not_resolve_a_held_tick() -> None:
    v = validator()
    base = quiet(100)
    run(v, base)
    t = base[-1].time_msc
    jump = q(1.1040, t + 100)
    assert v.process(jump, 0) == []
    crossed = Tick("b1", "EURUSD", t + 200, 1.1, 1.0999)
    older = q(1.1040, t + 50)  # older than the held tick
    assert reason(v, crossed) == CROSSED_QUOTE
    assert reason(v, older) == OUT_OF_ORDER
    assert v.pending_count == 1 and v.holding
    confirm = q(1.10405, t + 300)
    assert v.process(confirm, 0) == [(jump, None), (confirm, None)]


def test_another_broker_confirms_a_held_jump_immediately() -> None:
    v = validator()
    a, b = quiet(100, broker="A"), quiet(100, start=T0 + 50, broker="B")
    run(v, [x for pair in zip(a, b, strict=True) for x in pair])
    t = b[-1].time_msc
    jump_a = q(1.1040, t + 10, broker="A")
    assert v.process(jump_a, 0) == []
    b_old = q(1.1, t + 20, broker="B")  # B still at the old level: no evidence either way
    assert v.process(b_old, 0) == [(b_old, None)]
    assert v.pending_count == 1 and v.holding
    b_new = q(1.10395, t + 30, broker="B")  # B moved too: confirms A, and A confirms B
    assert v.process(b_new, 0) == [(jump_a, None), (b_new, None)]
    assert v.pending_count == 0 and not v.holding and v.rejected_by_reason == {}


def test_lagging_broker_catching_up_is_accepted_when_another_broker_is_there() -> None:
    v = validator()
    run(v, quiet(50, broker="A", level=1.1040))
    run(v, quiet(50, broker="B", level=1.1000))
    t = T0 + 49 * 100
    catch_up = q(1.1040, t + 1_000, broker="B")  # A quoted 1.1040 one second earlier
    assert v.process(catch_up, 0) == [(catch_up, None)]
    # when the other broker's quote is too old it is no evidence: the tick is held
    w = validator()
    run(w, quiet(50, broker="A", level=1.1040))
    run(w, quiet(50, broker="B", level=1.1000))
    late = q(1.1040, t + 60_000, broker="B")
    assert w.process(late, 0) == []


def test_enterprise_needs_two_confirming_ticks_and_rejects_a_two_tick_spike() -> None:
    base = quiet(100)
    t = base[-1].time_msc
    v = validator("enterprise")
    run(v, base)
    j, c1, c2 = q(1.1040, t + 100), q(1.1041, t + 200), q(1.10405, t + 300)
    assert v.process(j, 0) == []
    assert v.process(c1, 0) == []
    assert v.pending_count == 2 and v.holding
    assert v.process(c2, 0) == [(j, None), (c1, None), (c2, None)]

    w = validator("enterprise")
    run(w, base)
    s1, s2, back = q(1.1040, t + 100), q(1.1040, t + 200), q(1.1, t + 300)
    assert w.process(s1, 0) == [] and w.process(s2, 0) == []
    res = w.process(back, 0)
    assert [(x, r.reason if r else None) for x, r in res] == [
        (s1, PRICE_JUMP), (s2, PRICE_JUMP), (back, None)
    ]


def test_flush_releases_held_ticks_as_accepted() -> None:
    v = validator("enterprise")
    run(v, quiet(50, broker="A") + quiet(50, broker="B", start=T0 + 10_000))
    ja = q(1.1040, T0 + 20_000, broker="A")
    jb = q(1.0960, T0 + 20_000, broker="B")  # opposite: does not confirm A
    ca = q(1.1040, T0 + 20_100, broker="A")
    assert v.process(ja, 0) == [] and v.process(jb, 0) == [] and v.process(ca, 0) == []
    assert v.pending_count == 3
    out = v.flush()
    assert out == [(ja, None), (ca, None), (jb, None)]
    assert v.pending_count == 0 and not v.holding and v.flush() == []


def test_volatility_widens_the_limit() -> None:
    """In a busy market (3-pip tick moves) a 30-pip move is within 15x volatility."""
    busy = [q(1.1 + (3 if i % 2 else 0) * PIP, T0 + i * 100) for i in range(300)]
    v = validator()
    assert all(r is None for _, r in run(v, busy))
    big = q(1.1030, T0 + 30_100)
    assert v.process(big, 0) == [(big, None)]
    calm = validator()
    run(calm, quiet(300))
    assert calm.process(q(1.1030, T0 + 30_100), 0) == []


# ---------------------------------------------------------------- state


def _mixed_stream() -> list[Tick]:
    a = quiet(60, broker="A")
    b = quiet(60, broker="B", start=T0 + 30)
    s: list[Tick] = [x for pair in zip(a, b, strict=True) for x in pair]
    t = T0 + 10_000
    s += [
        q(1.1040, t, broker="A"),  # A spike ...
        q(1.1, t + 10, broker="B"),
        Tick("A", "EURUSD", t + 15, 1.2, 1.1),  # crossed
        q(1.1, t + 20, broker="A"),  # ... reverts
        q(1.1050, t + 30, broker="B"),  # B jump ...
        q(1.1051, t + 40, broker="A"),  # ... confirmed by A
        q(1.1052, t + 50, broker="A"),
        q(1.1051, t + 20, broker="B"),  # out of order
        q(1.0990, t + 60, broker="A"),  # A jump held at the end
    ]
    return s


@pytest.mark.parametrize("level", ["advanced", "enterprise"])
@pytest.mark.parametrize("cut", [120, 121, 124, 125, 128])
def test_snapshot_json_restore_midstream_gives_identical_results(level: str, cut: int) -> None:
    stream = _mixed_stream()
    whole = validator(level)
    full = run(whole, stream) + whole.flush()
    first = validator(level)
    head = run(first, stream[:cut])
    state = json.loads(json.dumps(first.snapshot()))
    second = validator(level)
    second.restore(state)
    assert second.pending_count == first.pending_count
    tail = run(second, stream[cut:]) + second.flush()
    assert as_values(head + tail) == as_values(full)
    assert second.rejected_by_reason == whole.rejected_by_reason
    assert second.accepted == whole.accepted
    assert second.snapshot() == whole.snapshot()


def test_snapshot_with_pending_tick_keeps_all_tick_fields() -> None:
    v = validator()
    run(v, quiet(50))
    held = Tick("b1", "EURUSD", T0 + 10_000, 1.1039, 1.1041, recv_time_us=123, seq=7,
                last=1.104, volume=2.5)
    assert v.process(held, 0) == []
    w = validator()
    w.restore(json.loads(json.dumps(v.snapshot())))
    out = w.flush()
    assert len(out) == 1 and out[0][0] == held and out[0][1] is None


def test_mid_stream_cut_has_a_pending_tick() -> None:
    """Guard for the snapshot test above: some cut points really hold a tick."""
    v = validator()
    run(v, _mixed_stream()[:121])
    assert v.pending_count == 1 and v.holding


# ---------------------------------------------------------------- invariant


_event = st.tuples(
    st.sampled_from(["A", "B", "C"]),
    st.integers(min_value=-50, max_value=400),  # time step, ms (negative: out of order)
    st.one_of(
        st.integers(min_value=-3, max_value=3),  # ordinary move, pips
        st.sampled_from([-60, -40, 40, 60]),  # jumps / spikes
    ),
    st.sampled_from(["ok", "ok", "ok", "ok", "crossed", "wide", "nan", "zero", "locked"]),
)


def _build(events: list[tuple[str, int, int, str]]) -> list[Tick]:
    ticks: list[Tick] = []
    t = T0
    level = {"A": 1.1, "B": 1.1, "C": 1.1}
    for broker, dt, move, kind in events:
        t += dt
        mid = level[broker] = level[broker] + move * PIP
        bid, ask = mid - 0.5 * PIP, mid + 0.5 * PIP
        if kind == "crossed":
            bid, ask = ask, bid
        elif kind == "wide":
            ask = bid + 20 * PIP
        elif kind == "nan":
            bid = math.nan
        elif kind == "zero":
            bid = 0.0
        elif kind == "locked":
            ask = bid
        ticks.append(Tick(broker, "EURUSD", t, bid, ask))
    return ticks


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_event, max_size=120),
    st.sampled_from(["basic", "advanced", "enterprise"]),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=0, max_value=120),
)
def test_every_tick_comes_out_exactly_once(
    events: list[tuple[str, int, int, str]], level: str, confirm: int, cut: int
) -> None:
    ticks = _build(events)
    v = validator(level, confirm_ticks=confirm)
    out: list[Decision] = []
    for n, tk in enumerate(ticks, 1):
        out.extend(v.process(tk, 0))
        assert v.pending_count == n - len(out)  # nothing lost, nothing emitted twice
    held = v.pending_count
    assert len(out) + held == len(ticks)
    out += v.flush()
    assert v.pending_count == 0
    assert len(out) == len(ticks)
    assert Counter(id(t) for t, _ in out) == Counter(id(t) for t in ticks)
    assert v.accepted + sum(v.rejected_by_reason.values()) == len(ticks)
    assert v.accepted == sum(1 for _, r in out if r is None)
    # a broker's accepted ticks come out in input order, with non-decreasing time
    index = {id(t): i for i, t in enumerate(ticks)}
    for broker in "ABC":
        acc = [t for t, r in out if r is None and t.broker == broker]
        assert [index[id(t)] for t in acc] == sorted(index[id(t)] for t in acc)
        assert [t.time_msc for t in acc] == sorted(t.time_msc for t in acc)
    # and a snapshot/restore at any point changes nothing
    first = validator(level, confirm_ticks=confirm)
    head = run(first, ticks[:cut])
    second = validator(level, confirm_ticks=confirm)
    second.restore(json.loads(json.dumps(first.snapshot())))
    again = head + run(second, ticks[cut:]) + second.flush()
    assert as_values(again) == as_values(out)


# ---------------------------------------------------------------- real data


def _rows(path: Path, fmt: str, symbol: str | None = None,
          tz: str | None = None) -> list[tuple[str, int, float, float]]:
    """Real ticks through the project's history reader (zones applied there)."""
    return [(t.symbol, t.time_msc, t.bid, t.ask)
            for t in read_history(fmt, path, broker="X", symbol=symbol, tz=tz)
            if isinstance(t, Tick)]


@pytest.fixture(scope="module")
def histdata_rows(shared_data: Path) -> list[tuple[str, int, float, float]]:
    return _rows(shared_data / "multi/EURUSD_20120104_NY17-24h.csv.gz", "truefx",
                 tz="America/New_York")


@pytest.fixture(scope="module")
def dukascopy_rows(shared_data: Path) -> list[tuple[str, int, float, float]]:
    return _rows(shared_data / "dukascopy/EURUSD_20190204-20190205_decoded.csv.gz",
                 "dukascopy", "EURUSD")


def pipeline(ticks: Sequence[Tick]) -> tuple[Deduplicator, Validator, list[Decision]]:
    """Deduplicator then Validator (advanced), now_ms = tick time, flush at the end."""
    d = Deduplicator()
    v = validator()
    out: list[Decision] = []
    for t in ticks:
        if d.is_duplicate(t):
            continue
        out.extend(v.process(t, t.time_msc))
    pending = v.pending_count
    out.extend(v.flush())
    rejects = sum(v.rejected_by_reason.values())
    accepted_before_flush = v.accepted - pending
    assert len(ticks) == accepted_before_flush + d.duplicates + rejects + pending
    assert len(out) == len(ticks) - d.duplicates
    return d, v, out


def to_ticks(rows: Sequence[tuple[str, int, float, float]], broker: str) -> list[Tick]:
    return [Tick(broker, s, t, b, a, recv_time_us=t * 1000) for s, t, b, a in rows]


@pytest.mark.data
def test_histdata_2012_is_overwhelmingly_accepted(
    histdata_rows: list[tuple[str, int, float, float]],
) -> None:
    ticks = to_ticks(histdata_rows, "histdata")
    assert len(ticks) == 73_622
    assert ticks[0].time_msc == int(datetime(2012, 1, 4, 22, 0, 0, 290_000, tzinfo=UTC)
                                    .timestamp() * 1000)
    d, v, out = pipeline(ticks)
    assert d.duplicates == 0
    assert v.accepted / len(ticks) > 0.999
    accepted_times = [t.time_msc for t, r in out if r is None]
    assert accepted_times == sorted(accepted_times)
    assert v.rejected_by_reason.get(CROSSED_QUOTE, 0) == 0


@pytest.mark.data
def test_dukascopy_repeated_prices_are_not_duplicates(
    dukascopy_rows: list[tuple[str, int, float, float]],
) -> None:
    ticks = to_ticks(dukascopy_rows, "dukascopy")
    assert len(ticks) == 266_219
    repeats = sum(1 for a, b in itertools.pairwise(ticks)
                  if (a.bid, a.ask) == (b.bid, b.ask))
    assert repeats == 40_977  # same bid/ask, new timestamp: genuine observations
    d, v, _ = pipeline(ticks)
    assert d.duplicates == 0
    assert v.accepted / len(ticks) > 0.99
    assert set(v.rejected_by_reason) <= {SPREAD_TOO_WIDE, PRICE_JUMP}
    # re-delivered ticks (a collector retry) are the only duplicates
    redelivered = [x for i, t in enumerate(ticks) for x in ((t, t) if i % 1000 == 0 else (t,))]
    d2, v2, _ = pipeline(redelivered)
    assert d2.duplicates == len(ticks[::1000])
    assert v2.accepted == v.accepted


@pytest.mark.data
@pytest.mark.parametrize("source", ["histdata", "dukascopy"])
def test_injected_spike_rejected_and_news_level_shift_accepted(
    source: str, request: pytest.FixtureRequest,
) -> None:
    rows: list[tuple[str, int, float, float]] = request.getfixturevalue(f"{source}_rows")
    base_ticks = to_ticks(rows, source)
    _, base_v, base_out = pipeline(base_ticks)
    i = len(rows) // 2

    spiked = to_ticks(rows, source)
    spiked[i].bid += 30 * PIP
    spiked[i].ask += 30 * PIP
    _, v, out = pipeline(spiked)
    decision = {id(t): r for t, r in out}
    r = decision[id(spiked[i])]
    assert r is not None and r.reason == PRICE_JUMP
    assert v.rejected_by_reason.get(PRICE_JUMP, 0) == base_v.rejected_by_reason.get(
        PRICE_JUMP, 0) + 1
    assert v.accepted == base_v.accepted - 1

    shifted = to_ticks(rows, source)
    for t in shifted[i:]:
        t.bid += 50 * PIP
        t.ask += 50 * PIP
    _, w, out = pipeline(shifted)
    decision = {id(t): r for t, r in out}
    assert decision[id(shifted[i])] is None
    assert w.accepted == base_v.accepted
    assert w.rejected_by_reason == base_v.rejected_by_reason
    assert len(base_out) == len(out)
