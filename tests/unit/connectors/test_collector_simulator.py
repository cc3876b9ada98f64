"""The simulator: pinned seeded outputs, anomaly rates, stalls, the incremental streams, and
the simulator collector on its own and end to end through the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import yaml
from aiokafka.partitioner import murmur2
from conftest import REPO_ROOT
from sinks import ListSink

from connectors.base.collector import CollectorConfigError
from connectors.producer import RecordProducer
from connectors.simulator import (
    BASE_PRICES,
    Anomalies,
    BrokerProfile,
    EventStream,
    TickStream,
    build,
    simulate,
    simulate_events,
)
from connectors.simulator.collector import SimulatorCollector
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import MarketEvent, RawTick
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

REPO = REPO_ROOT
START = 1_700_000_000_000
NONE = Anomalies(duplicate=0, crossed=0, spike=0, out_of_order=0, jump_every_s=0)


def digest(items: Iterable[object]) -> str:
    return hashlib.sha256("\n".join(map(repr, items)).encode()).hexdigest()


# ---- simulate(): outputs other tests depend on ------------------------------------------
def test_seeded_outputs_are_pinned() -> None:
    """The exact outputs tests/integration/test_online_offline.py and test_worker_context_control.py
    rely on: these digests were taken from the simulator before stalls existed."""
    assert digest(simulate(7, seconds=120)) == (
        "f9ddc9667d234ccaef801d58dc5012dc30e7b2422098fc6727c0900a1185af03")
    noisy = Anomalies(duplicate=0.1, crossed=0.05, spike=0.05, out_of_order=0.1, jump_every_s=20)
    assert digest(simulate(5, symbols=("EURUSD", "GBPUSD", "USDJPY"), ticks_per_s=4.0,
                           seconds=60, anomalies=noisy)) == (
        "3a09090d2ac5f8285deb57b0ead81fdca2ae17dba5b1320bcb3d24120fee8f84")
    assert digest(simulate_events(11, symbols=("EURUSD",), seconds=1800, calendar_every_s=400,
                                  news_every_s=45)) == (
        "76bc986cebeea21d732a6fe2a6175bfc0c280a9cec490ae0c3cc0086c3172d39")


def test_stall_settings_without_stalls_change_nothing() -> None:
    off = Anomalies(stall_every_s=0, stall_min_s=1, stall_max_s=2)
    assert simulate(3, seconds=60, anomalies=off) == simulate(3, seconds=60)


def test_named_broker_profiles_reproduce_the_defaults() -> None:
    profiles = [BrokerProfile("ICM", 0.8, 20), BrokerProfile("PEP", 0.8 + 0.4, 50),
                BrokerProfile("FXCM", 0.8 + 0.8, 80)]
    assert simulate(3, seconds=60, brokers=profiles) == simulate(3, seconds=60)


def test_brokers_quote_one_walk_with_their_own_spread_and_latency() -> None:
    brokers = [BrokerProfile("A", 0.5, 10, noise_pips=0.0), BrokerProfile("B", 2.0, 90)]
    ticks = simulate(1, symbols=("EURUSD",), brokers=brokers, seconds=300, ticks_per_s=2,
                     anomalies=NONE)
    assert len(ticks) == 300 * 2 * 2
    by = {b: [t for t in ticks if t.broker == b] for b in "AB"}
    for b, spread, latency in (("A", 0.5, 10), ("B", 2.0, 90)):
        assert {round((t.ask - t.bid) / 0.0001, 1) for t in by[b]} == {spread}
        assert {t.recv_time_us // 1000 - t.time_msc for t in by[b]} == {latency}
    # the same walk: the two brokers' mids stay within a few pips of each other
    for a, b in zip(by["A"], by["B"], strict=True):
        assert abs(a.mid - b.mid) < 5 * 0.0001
    assert [t.recv_time_us for t in ticks] == sorted(t.recv_time_us for t in ticks)


# ---- anomaly rates -----------------------------------------------------------------------
QUOTES = 3 * 2 * 2000  # brokers x symbols x steps


def only(**rates: float) -> list[Tick]:
    an = Anomalies(**{**{"duplicate": 0, "crossed": 0, "spike": 0, "out_of_order": 0,
                         "jump_every_s": 0}, **rates})
    return simulate(21, symbols=("EURUSD", "USDJPY"), seconds=2000, anomalies=an)


def near(count: int, rate: float, n: int = QUOTES) -> bool:
    """Within five standard deviations of the binomial mean (the run is seeded anyway)."""
    mean = rate * n
    return abs(count - mean) <= 5 * (mean * (1 - rate)) ** 0.5


def test_no_anomalies_at_zero_rates() -> None:
    ticks = only()
    assert len(ticks) == QUOTES
    assert all(t.bid < t.ask for t in ticks)
    assert len({(t.broker, t.symbol, t.time_msc) for t in ticks}) == QUOTES


def test_duplicate_rate() -> None:
    ticks = only(duplicate=0.05)
    keys = Counter((t.broker, t.symbol, t.time_msc, t.bid, t.ask) for t in ticks)
    dups = sum(n - 1 for n in keys.values())
    assert len(ticks) == QUOTES + dups and near(dups, 0.05)


def test_crossed_rate() -> None:
    crossed = sum(t.bid > t.ask for t in only(crossed=0.03))
    assert near(crossed, 0.03)


def test_spike_rate() -> None:
    ticks = only(spike=0.02)
    spikes = 0
    for (_b, sym), series in _series(ticks).items():
        pip = 0.01 if sym.endswith("JPY") else 0.0001
        spikes += sum(b.mid - a.mid > 30 * pip for a, b in itertools.pairwise(series))
    assert near(spikes, 0.02)


def test_out_of_order_rate() -> None:
    ticks = only(out_of_order=0.04)
    late, newest = 0, {}
    for t in ticks:  # receive order
        key = (t.broker, t.symbol)
        late += t.time_msc < newest.get(key, 0)
        newest[key] = max(newest.get(key, 0), t.time_msc)
    assert len(ticks) == QUOTES + late
    assert near(late, 0.04, QUOTES - 3 * 2)  # a broker's first quote has nothing to repeat


def test_genuine_jumps_move_every_broker() -> None:
    ticks = only(jump_every_s=100)
    moved: Counter[tuple[str, int]] = Counter()
    for (_b, sym), series in _series(ticks).items():
        pip = 0.01 if sym.endswith("JPY") else 0.0001
        for a, b in itertools.pairwise(series):
            if abs(b.mid - a.mid) > 15 * pip:
                moved[(sym, b.time_msc // 1000)] += 1
    assert moved and set(moved.values()) == {3}  # every broker follows the level shift
    assert 2 * 20 * 0.5 <= len(moved) <= 2 * 20 * 2  # about 2000 s / 100 s per symbol


def _series(ticks: list[Tick]) -> dict[tuple[str, str], list[Tick]]:
    out: dict[tuple[str, str], list[Tick]] = {}
    for t in sorted(ticks, key=lambda t: t.time_msc):
        out.setdefault((t.broker, t.symbol), []).append(t)
    return out


# ---- stalls ------------------------------------------------------------------------------
def test_a_stalled_broker_goes_quiet_on_every_symbol_then_comes_back() -> None:
    an = Anomalies(stall_every_s=120, stall_min_s=10, stall_max_s=30, duplicate=0,
                   out_of_order=0)
    step = 250  # ms at 4 quotes/s: a quote of the step before a stall may fall just inside it
    stream = TickStream(4, ("EURUSD", "USDJPY"), ("ICM", "PEP", "FXCM"), START, 4.0, an)
    ticks = stream.until(START + 1800 * 1000)
    assert stream.stalls is not None
    total = 0
    for broker in ("ICM", "PEP", "FXCM"):
        windows = stream.stalls.windows(broker, START + 1700 * 1000)
        assert windows, broker
        mine = [t for t in ticks if t.broker == broker]
        for i, (s, e) in enumerate(windows):
            total += 1
            assert 10_000 <= e - s <= 30_000
            assert not [t for t in mine if s + step <= t.time_msc < e], (broker, s, e)
            if i + 1 < len(windows) and windows[i + 1][0] < e + 2000:
                continue  # quiet again at once: nothing to see in between
            for sym in ("EURUSD", "USDJPY"):  # back on every symbol after the stall
                assert any(e <= t.time_msc < e + 2000 for t in mine if t.symbol == sym)
    assert 3 * 1800 / 150 * 0.4 <= total <= 3 * 1800 / 120 * 2
    # the other brokers keep quoting while one is quiet
    s, e = stream.stalls.windows("ICM", START + 1700 * 1000)[0]
    quoting = {t.broker for t in ticks if s + step <= t.time_msc < e}
    assert quoting and "ICM" not in quoting


def test_stalls_in_simulate_are_seeded() -> None:
    an = Anomalies(stall_every_s=60, stall_min_s=5, stall_max_s=10)
    a = simulate(9, seconds=600, anomalies=an)
    assert a == simulate(9, seconds=600, anomalies=an)
    assert len(a) < len(simulate(9, seconds=600))


# ---- incremental streams -----------------------------------------------------------------
def test_tick_stream_is_seeded_ordered_and_independent_of_chunking() -> None:
    def run(chunks: list[int], seed: int = 5) -> list[Tick]:
        s = TickStream(seed, ("EURUSD", "USDJPY", "GBPUSD"), ("ICM", "PEP"), START, 10.0)
        out: list[Tick] = []
        for t in chunks:
            out += s.until(t)
        return out

    end = START + 120_000
    whole = run([end])
    assert whole == run([*range(START + 7, end, 333), end])
    assert [t.recv_time_us for t in whole] == sorted(t.recv_time_us for t in whole)
    assert all(t.recv_time_us < end * 1000 for t in whole)
    assert whole != run([end], seed=6)
    # a symbol's quotes do not depend on which other symbols are simulated
    alone = TickStream(5, ("USDJPY",), ("ICM", "PEP"), START, 10.0).until(end)
    assert alone == [t for t in whole if t.symbol == "USDJPY"]


def test_event_stream_is_seeded_in_publication_order() -> None:
    end = START + 7200 * 1000

    def run(step: int) -> list[MarketEvent]:
        s = EventStream(3, ("EURUSD", "USDJPY"), START, calendar_every_s=300, news_every_s=60)
        out: list[MarketEvent] = []
        for t in [*range(START + step, end, step), end]:
            out += s.until(t)
        return out

    events = run(7200 * 1000)
    assert events == run(61_000 * 3)
    assert [e.published_ms for e in events] == sorted(e.published_ms for e in events)
    kinds = Counter(e.kind for e in events)
    assert kinds["CALENDAR"] >= 2 * 10 and kinds["NEWS"] >= 60
    releases = {e.event_id: e for e in events if e.kind == "CALENDAR" and e.actual}
    for e in events:  # announced an hour ahead (or at start), re-published at release
        if e.kind == "CALENDAR" and e.actual is None and e.event_id in releases:
            assert e.published_ms == max(START, e.event_time_ms - 3_600_000)
            assert releases[e.event_id].published_ms == e.event_time_ms
    assert {e.currency for e in events} <= {"EUR", "USD", "JPY"}


# ---- configuration -----------------------------------------------------------------------
def test_shipped_config_builds() -> None:
    path = REPO / "config" / "collectors" / "simulate.yaml"
    data = yaml.safe_load(path.read_text())
    assert data.pop("health_interval_s") == 5  # read by `tickstream collect`, not the venue
    c = build(data, ListSink(), config_path=str(path))
    assert isinstance(c, SimulatorCollector) and c.kind == "simulate"
    assert c.config.realtime and c.config.anomalies.stall_every_s == 900
    assert [b.name for b in c.config.brokers] == ["ICM", "PEP", "FXCM"]
    assert set(c.config.symbols) <= set(c.config.prices)


@pytest.mark.parametrize(("config", "field"), [
    ({"colour": "red"}, "colour"),
    ({"symbols": ["EUR"]}, "symbols"),
    ({"ticks_per_s": 0}, "ticks_per_s"),
    ({"ticks_per_s": 5000}, "ticks_per_s"),
    ({"start_ms": START}, "start_ms"),  # only without real time
    ({"brokers": ["A", "A"]}, "brokers"),
    ({"brokers": [{"name": "A", "spread": 1}]}, "brokers[0].spread"),
    ({"anomalies": {"duplicate": 2}}, "anomalies.duplicate"),
    ({"anomalies": {"stall_min_s": 9, "stall_max_s": 3}}, "anomalies.stall_min_s"),
    ({"events": {"news_every_s": 0.5}}, "events.news_every_s"),
    ({"symbols": ["XAUUSD"]}, "prices"),
    ({"kind": "oanda"}, "kind"),
])
def test_config_errors_name_the_file_and_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(CollectorConfigError, match=rf"^sim\.yaml: {re.escape(field)}: "):
        build(config, ListSink(), config_path="sim.yaml")


# ---- the collector ---------------------------------------------------------------------
FAST = {"name": "sim-test", "seed": 8, "realtime": False, "start_ms": START,
        "symbols": ["EURUSD", "USDJPY", "GBPUSD"], "ticks_per_s": 5,
        "events": {"calendar_every_s": 120, "news_every_s": 30}}


async def run_collector(config: dict[str, Any], sink: Any) -> SimulatorCollector:
    c = build(config, sink)
    await asyncio.wait_for(c.run(), 60)
    return c


async def test_max_ticks_stops_after_exactly_that_many() -> None:
    sink = ListSink()
    c = await run_collector({**FAST, "max_ticks": 5000}, sink)
    ticks = sink.records("ticks.raw")
    assert len(ticks) == c.health.ticks == 5000
    assert c.stopping and c.health.errors == 0
    assert all(isinstance(t, RawTick) and t.source == "SIMULATOR" for t in ticks)
    assert [k for t, k, _r in sink.sent if t == "ticks.raw"] == [t.symbol for t in ticks]
    events = [(t, k, r) for t, k, r in sink.sent if t.startswith("events.")]
    assert len(events) == c.health.events > 0
    assert all(k == r.currency and t == f"events.{r.kind.lower()}" for t, k, r in events)
    # ticks and events are interleaved in time order
    times = [r.recv_time_us if isinstance(r, RawTick) else r.published_ms * 1000
             for _t, _k, r in sink.sent]
    assert times == sorted(times)


async def test_fast_mode_is_reproducible_record_for_record() -> None:
    a, b, c = ListSink(), ListSink(), ListSink()
    await run_collector({**FAST, "max_ticks": 3000}, a)
    await run_collector({**FAST, "max_ticks": 3000}, b)
    await run_collector({**FAST, "max_ticks": 3000, "seed": 9}, c)
    assert a.sent == b.sent
    assert a.records("ticks.raw") != c.records("ticks.raw")
    # the collector streams what TickStream generates, one to one
    stream = TickStream(8, FAST["symbols"], ("ICM", "PEP", "FXCM"), START, 5.0)
    expected = stream.until(START + 600_000)[:3000]
    assert [(t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.recv_time_us) for t in expected] == [
        (t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.recv_time_us)
        for t in a.records("ticks.raw")]


async def test_realtime_stamps_the_wall_clock() -> None:
    sink = ListSink()
    before_us = time.time_ns() // 1000
    c = await run_collector({"name": "rt", "seed": 2, "symbols": ["EURUSD"],
                             "ticks_per_s": 200, "max_ticks": 300,
                             "anomalies": {"out_of_order": 0}}, sink)
    after_us = time.time_ns() // 1000
    ticks = sink.records("ticks.raw")
    assert len(ticks) == c.health.ticks == 300
    recv = [t.recv_time_us for t in ticks]
    assert recv == sorted(recv) and before_us <= recv[0] and recv[-1] <= after_us
    # broker time is the simulated time, anchored at the wall clock when the run started
    assert all(before_us // 1000 <= t.time_msc <= after_us // 1000 for t in ticks)
    assert c.start_ms >= before_us // 1000


async def test_stop_ends_an_endless_run() -> None:
    sink = ListSink()
    c = build({**FAST, "ticks_per_s": 50}, sink)
    task = asyncio.create_task(c.run())
    deadline = time.monotonic() + 30
    while c.health.ticks < 1000:
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.01)
    await c.stop()
    await asyncio.wait_for(task, 10)
    assert len(sink.records("ticks.raw")) == c.health.ticks >= 1000


async def test_health_reports_quiet_brokers() -> None:
    sink = ListSink()
    c = await run_collector({**FAST, "max_ticks": 20_000, "anomalies": {
        "stall_every_s": 30, "stall_min_s": 20, "stall_max_s": 25}}, sink)
    h = c.health_dict()
    assert h["kind"] == "simulate" and h["seed"] == 8 and h["realtime"] is False
    assert c.ticks is not None and c.ticks.stalls is not None
    expected = [b for b in ("ICM", "PEP", "FXCM") if c.ticks.stalls.quiet(b, c.sim_ms)]
    assert h["quiet_brokers"] == expected


# ---- end to end through the real broker ------------------------------------------------
def partition_of(key: bytes, partitions: int) -> int:
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def read_exactly(settings: Settings, counts: dict[str, int]) -> dict[str, list[Message]]:
    names = {settings.topic(t): t for t in counts}
    with TopicReader(settings, sorted(names)) as reader:

        def enough(ms: list[Message]) -> bool:
            got = Counter(names[m.topic] for m in ms)
            return all(got[t] >= n for t, n in counts.items())

        msgs = reader.read_until(enough, timeout_s=60)
        msgs += reader.poll(timeout_s=0.5)  # anything beyond the expected count shows up
    out: dict[str, list[Message]] = {t: [] for t in counts}
    for m in msgs:
        out[names[m.topic]].append(m)
    return out


@pytest.mark.integration
async def test_end_to_end_through_kafka(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings)
    config = {**FAST, "max_ticks": 4000, "anomalies": {"stall_every_s": 60}}
    c = await run_collector(config, RecordProducer(kafka_settings))
    assert c.flush(30) == 0
    local = ListSink()
    await run_collector(config, local)  # the same seed without Kafka
    n_cal, n_news = len(local.records("events.calendar")), len(local.records("events.news"))
    assert (c.health.ticks, c.health.events) == (4000, n_cal + n_news)
    assert n_cal and n_news

    got = read_exactly(kafka_settings, {"ticks.raw": 4000, "events.calendar": n_cal,
                                        "events.news": n_news, "ticks.rejected": 0})
    assert {t: len(ms) for t, ms in got.items()} == {
        "ticks.raw": 4000, "events.calendar": n_cal, "events.news": n_news, "ticks.rejected": 0}
    codec = make_codec(None)
    parts = kafka_settings.partitions
    ticks: dict[int, list[RawTick]] = {}
    for m in got["ticks.raw"]:
        tick = codec.decode(m.value, RawTick, m.topic)
        assert m.key == tick.symbol.encode()
        assert m.partition == partition_of(m.key, parts)
        ticks.setdefault(m.partition, []).append(tick)
    expected = local.records("ticks.raw")
    for p, received in ticks.items():  # per partition, in the order they were produced
        assert received == [t for t in expected if partition_of(t.symbol.encode(), parts) == p]
    for topic in ("events.calendar", "events.news"):
        decoded = []
        for m in got[topic]:
            ev = codec.decode(m.value, MarketEvent, m.topic)
            assert m.key == ev.currency.encode()
            assert m.partition == partition_of(m.key, parts)
            decoded.append(ev)
        assert sorted(decoded, key=lambda e: (e.published_ms, e.event_id)) == sorted(
            local.records(topic), key=lambda e: (e.published_ms, e.event_id))


def test_base_prices_unchanged() -> None:
    assert BASE_PRICES == {"EURUSD": 1.0850, "GBPUSD": 1.2650, "USDJPY": 151.20,
                           "AUDUSD": 0.6550}
