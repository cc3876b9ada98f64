"""Deduplicator: exact re-deliveries are dropped, repeated prices are not, memory is bounded."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stages.dedupe import Deduplicator
from stages.types import Tick

T0 = 1_549_238_400_000  # 2019-02-04 00:00 UTC


def tick(t: int, bid: float = 1.1, ask: float = 1.1001, broker: str = "b1") -> Tick:
    return Tick(broker=broker, symbol="EURUSD", time_msc=t, bid=bid, ask=ask)


def test_exact_redelivery_is_duplicate_and_counted_per_broker() -> None:
    d = Deduplicator()
    assert d.is_duplicate(tick(T0)) is False
    assert d.is_duplicate(tick(T0)) is True
    assert d.is_duplicate(tick(T0)) is True
    assert d.is_duplicate(tick(T0, broker="b2")) is False  # another broker's quote
    assert d.is_duplicate(tick(T0, broker="b2")) is True
    assert d.duplicates_by_broker == {"b1": 2, "b2": 1}
    assert d.duplicates == 3
    assert len(d) == 2


def test_same_prices_with_new_timestamp_or_new_price_is_not_duplicate() -> None:
    d = Deduplicator()
    assert not d.is_duplicate(tick(T0))
    assert not d.is_duplicate(tick(T0 + 1))  # volume-only update: same prices, new time
    assert not d.is_duplicate(tick(T0 + 1, bid=1.10001))  # same ms, new bid
    assert not d.is_duplicate(tick(T0 + 1, ask=1.10011))  # same ms, new ask
    assert not d.is_duplicate(Tick("b1", "GBPUSD", T0, 1.1, 1.1001))  # other symbol
    assert d.duplicates_by_broker == {}
    assert len(d) == 5


def test_expiry_is_by_event_time_and_boundary_is_inclusive() -> None:
    d = Deduplicator(window_ms=1_000)
    assert not d.is_duplicate(tick(T0))
    assert not d.is_duplicate(tick(T0 + 1_000, bid=1.2))  # horizon is exactly T0: kept
    assert d.is_duplicate(tick(T0))
    assert not d.is_duplicate(tick(T0 + 1_001, bid=1.3))  # horizon T0 + 1: T0 expires
    assert len(d) == 2
    # Older than the horizon: cannot be checked, reported as new but not remembered.
    assert not d.is_duplicate(tick(T0))
    assert not d.is_duplicate(tick(T0))
    assert len(d) == 2


def test_horizon_is_per_broker() -> None:
    """A broker whose clock runs far ahead must not wipe another broker's memory."""
    d = Deduplicator(window_ms=1_000)
    assert not d.is_duplicate(tick(T0, broker="slow"))
    assert not d.is_duplicate(tick(T0 + 3_600_000, broker="fast"))
    assert d.is_duplicate(tick(T0, broker="slow"))


def test_memory_stays_bounded_for_a_million_ticks_over_hours() -> None:
    window = 600_000
    d = Deduplicator(window_ms=window)
    step = 10  # one tick every 10 ms: 1M ticks span 10,000 s (2.8 h) of event time
    allowed = window // step + 1  # ticks whose time lies within [max - window, max]
    peak = 0
    bid = 1.1
    for i in range(1_000_000):
        b = bid + (i % 7) * 1e-5
        assert not d.is_duplicate(Tick("b1", "EURUSD", T0 + i * step, b, b + 1e-4))
        if i % 5_000 == 0:
            peak = max(peak, len(d))
            assert len(d) <= allowed
    assert len(d) == allowed
    assert peak == allowed  # the window filled and stopped growing
    assert d.duplicates == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(min_value=0, max_value=5_000),
            st.sampled_from([1.1, 1.10001, 1.10002]),
        ),
        max_size=300,
    )
)
def test_matches_reference_model_and_bound_holds_under_disorder(
    events: list[tuple[str, int, float]],
) -> None:
    """Against a model that never forgets: duplicate iff the key was remembered earlier and
    the tick is not older than its broker's horizon; held entries span at most 2 windows."""
    window = 1_000
    d = Deduplicator(window_ms=window)
    remembered: set[tuple[str, int, float]] = set()
    max_time: dict[str, int] = {}
    for broker, t, bid in events:
        max_time[broker] = max(max_time.get(broker, t), t)
        horizon = max_time[broker] - window
        key = (broker, t, bid)
        expected = t >= horizon and key in remembered
        assert d.is_duplicate(Tick(broker, "EURUSD", T0 + t, bid, bid + 1e-4)) is expected
        if t >= horizon:
            remembered.add(key)
        for b, mem in d.snapshot()["brokers"].items():
            for entry in mem["entries"]:
                assert entry[1] >= T0 + max_time[b] - 2 * window


def test_snapshot_json_restore_gives_identical_behaviour() -> None:
    prices = [1.1 + k * 1e-5 for k in range(5)] + [0.1 + 0.2, 1 / 3]  # awkward floats too
    stream = [
        Tick(f"b{i % 2}", "EURUSD", T0 + (i // 3) * 700, prices[i % 7], prices[i % 7] + 1e-4)
        for i in range(200)
    ]
    stream += stream[150:]  # redeliveries after the cut, some expired by then
    a = Deduplicator(window_ms=5_000)
    for t in stream[:120]:
        a.is_duplicate(t)
    b = Deduplicator(window_ms=5_000)
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert len(b) == len(a) > 0
    ra = [a.is_duplicate(t) for t in stream[120:]]
    rb = [b.is_duplicate(t) for t in stream[120:]]
    assert ra == rb
    assert sum(ra) > 0
    assert a.duplicates_by_broker == b.duplicates_by_broker
    assert a.snapshot() == b.snapshot()


def _persist(d: Deduplicator, store: dict[int, list[Any]]) -> dict[str, Any]:
    """What the worker does at a checkpoint: changed segments, drops, then the meta."""
    changed, dropped = d.take_changes()
    for seg, entries in changed.items():
        store[seg] = json.loads(json.dumps(entries))
    for seg in dropped:
        store.pop(seg, None)
    return json.loads(json.dumps(d.snapshot_meta()))


def test_segmented_persistence_restores_identical_behaviour() -> None:
    rng = random.Random(5)
    ticks = []
    for i in range(6000):  # three brokers, re-deliveries, 20 min of event time
        t = 1_000_000 + i * 200 + rng.randint(0, 50)
        tick = Tick(rng.choice("ABC"), "EURUSD", t, 1.1 + rng.randint(0, 9) * 1e-5, 1.1002,
                    t * 1000)
        ticks.append(tick)
        if rng.random() < 0.2:
            ticks.append(rng.choice(ticks[-50:]))
    live = Deduplicator(window_ms=60_000, segment_ms=5_000)
    store: dict[int, list[Any]] = {}
    meta: dict[str, Any] = {}
    for n, tick in enumerate(ticks[:4000]):
        live.is_duplicate(tick)
        if n % 97 == 0:
            meta = _persist(live, store)
    meta = _persist(live, store)
    # 800 s of ticks in 5 s segments: only those within two windows of the newest remain.
    assert len(store) <= 2 * 60_000 // 5_000 + 2, "expired segments are dropped"
    restored = Deduplicator(window_ms=60_000, segment_ms=5_000)
    restored.restore_segmented(meta, {int(s): store.get(int(s)) for s in meta["segments"]})
    decisions_live = [live.is_duplicate(t) for t in ticks[4000:]]
    decisions_restored = [restored.is_duplicate(t) for t in ticks[4000:]]
    assert decisions_live == decisions_restored
    assert sum(decisions_live) > 100


def test_segments_written_after_the_meta_do_not_leak_into_a_restore() -> None:
    d = Deduplicator(window_ms=60_000, segment_ms=10_000)
    first = Tick("A", "EURUSD", 1_000, 1.1, 1.1002, 1_000_000)
    later = Tick("A", "EURUSD", 2_000, 1.1, 1.1002, 2_000_000)
    store: dict[int, list[Any]] = {}
    d.is_duplicate(first)
    meta = _persist(d, store)  # the checkpoint
    d.is_duplicate(later)
    _persist(d, store)  # segment rewritten, then a crash before the next meta
    r = Deduplicator(window_ms=60_000, segment_ms=10_000)
    r.restore_segmented(meta, {int(s): store.get(int(s)) for s in meta["segments"]})
    assert r.is_duplicate(first)  # known at the checkpoint
    assert not r.is_duplicate(later)  # processed after it: replayed, so not a duplicate


def test_without_change_tracking_the_answers_are_the_same_and_no_segments_are_kept() -> None:
    # Offline runs are never checkpointed: the window is not kept a second time as segments
    # (a whole history's keys otherwise stay there to the end of the run).
    rng = random.Random(11)
    ticks = []
    for i in range(20_000):
        t = T0 + i * 50 + rng.randint(-400, 400)
        ticks.append(tick(t, broker=rng.choice(["b1", "b2"])))
        if rng.random() < 0.1:
            ticks.append(ticks[rng.randrange(max(0, len(ticks) - 50), len(ticks))])
    tracked = Deduplicator(window_ms=60_000)
    untracked = Deduplicator(window_ms=60_000, track_changes=False)
    answers = [tracked.is_duplicate(t) for t in ticks]
    assert [untracked.is_duplicate(t) for t in ticks] == answers
    assert sum(answers) > 1_000 and untracked.duplicates_by_broker == tracked.duplicates_by_broker
    assert tracked.snapshot_meta()["segments"]  # the checkpointed one has them
    assert untracked.snapshot_meta()["segments"] == {}
    assert untracked.take_changes() == ({}, [])
