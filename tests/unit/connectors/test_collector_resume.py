"""A restarted collector resumes after what it delivered (connectors/positions.py).

Unit tests drive :class:`PositionTracker` with a producer whose deliveries the test
controls; the simulator and MT5 collectors are "killed" in process (the stored positions
and the records sent are snapshotted at the kill, as a SIGKILL would leave them) and
restarted from the snapshot. Integration tests SIGKILL and SIGTERM real
``tickstream collect`` processes against the local broker.

The bound checked everywhere: after a SIGKILL a restart re-sends at most
``2 * position_every`` records (MT5: ``2 * (position_every + batch_size - 1)``); after a
clean stop, none.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sinks import ListSink
from standins.mt5 import TICK_DTYPE, TICK_FLAG_ASK, TICK_FLAG_BID, Terminal, serve
from standins.oanda import OandaStandIn, Prices, Snapshot

from connectors.mt5 import build as build_mt5
from connectors.mt5.collector import Mt5Collector
from connectors.oanda.collector import OandaCollector
from connectors.oanda.config import load_config as load_oanda_config
from connectors.positions import (
    MemoryPositionStore,
    Position,
    PositionError,
    PositionTracker,
    decode,
    encode,
    read_positions,
)
from connectors.producer import RecordProducer
from connectors.simulator import build as build_sim
from connectors.simulator.collector import SimulatorCollector
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import RawTick, Record
from topology.admin import ensure_topics
from topology.settings import Settings

START = 1_700_000_000_000
SIM = {"name": "sim-resume", "seed": 3, "realtime": False, "start_ms": START,
       "symbols": ["EURUSD", "USDJPY"], "ticks_per_s": 5,
       "events": {"calendar_every_s": 120, "news_every_s": 30}}
PASSWORD = "resume-pw-77"
LOGIN = 7001
SERVER = "Resume-Demo"
BOTH = TICK_FLAG_BID | TICK_FLAG_ASK


class Killed(BaseException):
    """Raised from a sink to end a collector the way SIGKILL would (no clean stop)."""


class LaggyProducer:
    """A DeliverySink whose deliveries happen when the test says (or at poll/flush)."""

    def __init__(self, store: MemoryPositionStore | None = None) -> None:
        self.sent: list[tuple[str, str | bytes, Record]] = []
        self.pending: deque[Callable[[Any, Any], None] | None] = deque()
        self.store = store
        self.kill_after: int | None = None
        self.on_kill: Callable[[], None] = lambda: None
        self.rng: random.Random | None = None  # deliver a random share after each send
        self.per_poll: int | None = None  # deliveries per poll (None: all pending)
        self.polls = 0

    def send(self, topic: str, key: str | bytes, record: Record,
             on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        if self.kill_after is not None and len(self.sent) >= self.kill_after:
            self.on_kill()
            raise Killed
        self.sent.append((topic, key, record))
        self.pending.append(on_delivery)
        if self.rng is not None and self.rng.random() < 0.3:
            self.deliver(self.rng.randint(0, len(self.pending)))

    def deliver(self, n: int | None = None, err: Any = None) -> None:
        for _ in range(len(self.pending) if n is None else min(n, len(self.pending))):
            cb = self.pending.popleft()
            if cb is not None:
                cb(err, None)

    def poll(self, timeout_s: float = 0.0) -> int:
        self.polls += 1
        n = len(self.pending) if self.per_poll is None else min(self.per_poll, len(self.pending))
        self.deliver(n)
        if self.store is not None:
            self.store.confirm()
        return n

    def flush(self, timeout_s: float = 30.0) -> int:
        self.deliver()
        if self.store is not None:
            self.store.confirm()
        return 0

    def records(self, topic: str | None = None) -> list[Record]:
        return [r for t, _k, r in self.sent if topic is None or t == topic]


def tick(i: int) -> RawTick:
    return RawTick(broker="X", symbol="EURUSD", bid=1.0, ask=1.0001, time_msc=i,
                   recv_time_us=i)


# ---- the tracker -------------------------------------------------------------------------
def test_a_position_is_stored_only_after_its_records_are_delivered() -> None:
    store = MemoryPositionStore()
    producer = LaggyProducer()
    producer.per_poll = 1  # a slow broker: one acknowledgement per poll
    tr = PositionTracker(store, "c", producer, every=3, interval_s=3600)
    assert tr.loaded is None
    for i in range(5):
        tr.send("ticks.raw", "EURUSD", tick(i))
    assert tr.due()
    tr.checkpoint({"n": 5})
    assert store.positions == {} and producer.polls == 0  # nothing delivered, no wait
    producer.deliver(4)
    tr.send("ticks.raw", "EURUSD", tick(5))
    assert store.positions == {}  # the 5th record is still in flight
    # The second checkpoint waits for the first position: the 5th record's acknowledgement
    # (one poll), not the 6th record's.
    tr.checkpoint({"n": 6})
    assert store.positions == {"c": {"n": 5}} and producer.polls == 1
    assert len(producer.pending) == 1
    assert tr.close({"n": 6})  # a clean stop: flush, then the final position
    assert store.positions == {"c": {"n": 6}}
    assert PositionTracker(store, "c", producer).loaded == {"n": 6}


def test_due_by_count_or_by_time() -> None:
    now = [0.0]
    tr = PositionTracker(MemoryPositionStore(), "c", LaggyProducer(), every=10,
                         interval_s=2.0, clock=lambda: now[0])
    assert not tr.due()
    now[0] = 5.0
    assert not tr.due()  # nothing sent: nothing to store
    tr.send("ticks.raw", "EURUSD", tick(0))
    assert tr.due()
    tr.checkpoint({"n": 1})
    for i in range(9):
        tr.send("ticks.raw", "EURUSD", tick(i))
    assert not tr.due()
    tr.send("ticks.raw", "EURUSD", tick(9))
    assert tr.due()
    with pytest.raises(ValueError):
        PositionTracker(MemoryPositionStore(), "c", LaggyProducer(), every=0)


@pytest.mark.parametrize("seed", range(8))
def test_records_after_the_stored_position_never_exceed_two_epochs(seed: int) -> None:
    """Whenever a kill comes, a restart re-sends at most 2 * every records, however late
    deliveries and position writes are acknowledged."""
    every = 50
    store = MemoryPositionStore(confirm_at_once=False)
    producer = LaggyProducer(store)
    producer.rng = random.Random(seed)
    tr = PositionTracker(store, "c", producer, every=every, interval_s=3600)
    worst = 0
    rng = random.Random(seed + 100)
    for n in range(1, 5001):
        tr.send("ticks.raw", "EURUSD", tick(n))
        if tr.due():
            tr.checkpoint({"n": n})
        if rng.random() < 0.05:
            store.confirm()
        stored = store.positions.get("c", {"n": 0})["n"]
        worst = max(worst, n - stored)
        assert n - stored <= 2 * every
    assert worst > every  # the deliveries did lag: the bound was exercised, not idle


def test_a_delivery_error_stops_the_position_and_fails() -> None:
    store = MemoryPositionStore()
    producer = LaggyProducer()
    tr = PositionTracker(store, "c", producer, every=2, interval_s=3600)
    tr.send("ticks.raw", "EURUSD", tick(0))
    tr.checkpoint({"n": 1})
    producer.deliver()
    tr.send("ticks.raw", "EURUSD", tick(1))
    tr.checkpoint({"n": 2})
    assert store.positions == {"c": {"n": 1}}
    producer.deliver(1, err="MSG_TIMED_OUT")
    with pytest.raises(PositionError, match="not delivered"):
        tr.send("ticks.raw", "EURUSD", tick(2))
        tr.checkpoint({"n": 3})
    assert store.positions == {"c": {"n": 1}}
    with pytest.raises(PositionError):
        tr.close({"n": 3})


def test_the_stored_value_is_versioned_json() -> None:
    value = encode("sim", {"ticks": 5})
    assert decode(value) == {"ticks": 5}
    assert decode(b'{"v": 99, "position": {}}') is None
    assert decode(b"not json") is None


# ---- the simulator, killed and restarted in process --------------------------------------
async def run_until_killed(c: SimulatorCollector | Mt5Collector, producer: LaggyProducer,
                           store: MemoryPositionStore, kill_after: int
                           ) -> tuple[dict[str, Position], list[Record]]:
    """Run ``c`` until its ``kill_after``-th record; what a SIGKILL would leave behind."""
    left: dict[str, Any] = {}

    def snapshot() -> None:
        left["positions"] = {k: dict(v) for k, v in store.positions.items()}
        left["sent"] = producer.records()

    producer.kill_after, producer.on_kill = kill_after, snapshot
    with pytest.raises(Killed):
        await asyncio.wait_for(c.run(), 60)
    return left["positions"], left["sent"]


def tracked_sim(config: dict[str, Any], store: MemoryPositionStore,
                rng: random.Random | None = None) -> tuple[SimulatorCollector, LaggyProducer]:
    producer = LaggyProducer(store)
    producer.rng = rng
    c = build_sim(config, ListSink())
    c.track_positions(PositionTracker(store, c.name, producer, every=c.position_every,
                                      interval_s=c.position_interval_s))
    return c, producer


async def test_simulator_resumes_after_a_kill_and_sends_nothing_twice_after_a_stop() -> None:
    config = {**SIM, "max_ticks": 6000, "position_every": 200}
    expected_sink = ListSink()
    await asyncio.wait_for(build_sim(config, expected_sink).run(), 60)
    expected = [r for _t, _k, r in expected_sink.sent]
    assert len(expected) > 6000  # ticks and events

    store = MemoryPositionStore(confirm_at_once=False)
    c, producer = tracked_sim(config, store, random.Random(1))
    positions, before = await run_until_killed(c, producer, store, kill_after=2345)
    assert len(before) == 2345

    store = MemoryPositionStore({k: dict(v) for k, v in positions.items()})
    c2, producer2 = tracked_sim(config, store)
    assert c2.positions is not None and c2.positions.loaded == positions["sim-resume"]
    await asyncio.wait_for(c2.run(), 60)
    after = producer2.records()
    resumed_at = len(expected) - len(after)  # the restart sends exactly a suffix
    assert after == expected[resumed_at:]
    assert before == expected[:2345]
    resent = 2345 - resumed_at
    assert 0 <= resent <= 2 * 200, resent
    assert resumed_at == positions["sim-resume"]["ticks"] + positions["sim-resume"]["events"]
    assert c2.tick_index == 6000 and c2.health.ticks == 6000 - positions["sim-resume"]["ticks"]

    # The clean stop stored the final position: a third run has nothing left to send.
    assert store.positions["sim-resume"]["ticks"] == 6000
    c3, producer3 = tracked_sim(config, store)
    await asyncio.wait_for(c3.run(), 60)
    assert producer3.records() == [] and c3.health.ticks == 0


async def test_a_stopped_endless_simulator_continues_exactly_where_it_stopped() -> None:
    config = {**SIM, "position_every": 100}
    store = MemoryPositionStore()
    c, producer = tracked_sim(config, store)
    task = asyncio.create_task(c.run())
    deadline = time.monotonic() + 30
    while c.health.ticks < 1500:
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.001)
    await c.stop()
    await asyncio.wait_for(task, 10)
    first = producer.records()
    c2, producer2 = tracked_sim({**config, "max_ticks": c.tick_index + 500}, store)
    await asyncio.wait_for(c2.run(), 60)
    expected_sink = ListSink()
    await asyncio.wait_for(build_sim({**config, "max_ticks": c.tick_index + 500},
                                     expected_sink).run(), 60)
    assert first + producer2.records() == [r for _t, _k, r in expected_sink.sent]


async def test_another_configuration_starts_afresh() -> None:
    store = MemoryPositionStore()
    c, _producer = tracked_sim({**SIM, "max_ticks": 300}, store)
    await asyncio.wait_for(c.run(), 60)
    assert store.positions["sim-resume"]["ticks"] == 300
    c2, producer2 = tracked_sim({**SIM, "max_ticks": 300, "seed": 4}, store)
    await asyncio.wait_for(c2.run(), 60)
    assert len(producer2.records("ticks.raw")) == 300


def test_position_settings_are_validated() -> None:
    c = build_sim({**SIM, "position_every": 7, "position_interval_s": 0.5}, ListSink())
    assert (c.position_every, c.position_interval_s) == (7, 0.5)
    from connectors.base.collector import CollectorConfigError

    with pytest.raises(CollectorConfigError, match="position_every"):
        build_sim({**SIM, "position_every": 0}, ListSink())
    with pytest.raises(CollectorConfigError, match="position_interval_s"):
        build_sim({**SIM, "position_interval_s": 0}, ListSink())
    m = build_mt5({**mt5_config(), "position_every": 9}, ListSink(),
                  env={"RESUME_PW": PASSWORD}, api=Terminal().as_module)
    assert (m.position_every, m.position_interval_s) == (9, 1.0)
    with pytest.raises(CollectorConfigError, match="position_interval_s"):
        build_mt5({**mt5_config(), "position_interval_s": -1}, ListSink(),
                  env={"RESUME_PW": PASSWORD})


# ---- MT5, killed and restarted in process ------------------------------------------------
def mt5_config(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "mt5-resume", "broker": "ICM", "server": SERVER, "login": LOGIN,
        "password_env": "RESUME_PW", "symbols": ["EURUSD", "USDJPY"],
        "poll_interval_s": 0.002, "batch_size": 50, "backfill_s": 3600,
        "position_every": 40, "backoff": {"base_s": 0.01, "cap_s": 0.05},
    }
    base.update(over)
    return base


def mt5_terminal(rows_per_symbol: int, t0: int) -> tuple[Terminal, list[tuple[Any, ...]]]:
    """A terminal with history: up to 3 ticks per millisecond, one-sided ticks included."""
    term = Terminal(("EURUSD", "USDJPY"), accounts={LOGIN: (PASSWORD, SERVER)})
    rng = random.Random(5)
    expected: list[tuple[Any, ...]] = []
    for sym, px in (("EURUSD", 1.1), ("USDJPY", 150.0)):
        rows = []
        t = t0
        bid, ask = px, px + 0.0002
        for i in range(rows_per_symbol):
            t += rng.choice((0, 0, 1, 3, 250))
            flags = BOTH if i == 0 else rng.choice((BOTH, BOTH, TICK_FLAG_BID, TICK_FLAG_ASK))
            if flags & TICK_FLAG_BID:
                bid = round(px + i * 1e-6, 6)
            if flags & TICK_FLAG_ASK:
                ask = round(px + 0.0002 + i * 1e-6, 6)
            rows.append((t // 1000, bid if flags & TICK_FLAG_BID else 0.0,
                         ask if flags & TICK_FLAG_ASK else 0.0, 0.0, 0, t, flags, 0.0))
            expected.append((sym, t, bid, ask))
        term.add_ticks(sym, np.array(rows, dtype=TICK_DTYPE))
    return term, expected


def tracked_mt5(term: Terminal, store: MemoryPositionStore, rng: random.Random | None = None,
                **over: Any) -> tuple[Mt5Collector, LaggyProducer]:
    producer = LaggyProducer(store)
    producer.rng = rng
    c = build_mt5(mt5_config(**over), ListSink(), env={"RESUME_PW": PASSWORD},
                  api=term.as_module)
    c.track_positions(PositionTracker(store, c.name, producer, every=c.position_every,
                                      interval_s=c.position_interval_s))
    return c, producer


def quotes(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.symbol, r.time_msc, r.bid, r.ask) for r in records if isinstance(r, RawTick)]


async def run_until(c: Mt5Collector, done: Callable[[], bool], timeout_s: float = 30) -> None:
    task = asyncio.create_task(c.run())
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline and not task.done(), "collector did not get there"
        await asyncio.sleep(0.002)
    await c.stop()
    await asyncio.wait_for(task, 10)


async def test_mt5_resumes_after_the_last_delivered_time_msc() -> None:
    t0 = int(time.time() * 1000) - 1_800_000  # in the backfill window
    term, expected = mt5_terminal(600, t0)
    store = MemoryPositionStore(confirm_at_once=False)
    c, producer = tracked_mt5(term, store, random.Random(2))
    positions, before = await run_until_killed(c, producer, store, kill_after=437)
    assert len(before) == 437
    stored = positions["mt5-resume"]["symbols"]
    assert set(stored) <= {"EURUSD", "USDJPY"}

    store = MemoryPositionStore({k: dict(v) for k, v in positions.items()})
    c2, producer2 = tracked_mt5(term, store)
    assert sorted(c2.resumed) == sorted(stored)
    await run_until(c2, lambda: Counter(quotes(before + producer2.records()))
                    .keys() >= set(expected) and len(quotes(producer2.records())) > 0)
    got = Counter(quotes(before) + quotes(producer2.records()))
    want = Counter(expected)
    assert not want - got, "ticks lost across the restart"
    resent = sum((got - want).values())
    assert resent <= 2 * (40 + 50 - 1), resent
    # per symbol, the restart continued in order from its stored cursor
    for sym in ("EURUSD", "USDJPY"):
        mine = [q for q in quotes(producer2.records()) if q[0] == sym]
        full = [q for q in expected if q[0] == sym]
        assert mine == full[len(full) - len(mine):]

    # After the clean stop nothing is sent again; new ticks (also in the last ms) are.
    last_eur = max(q[1] for q in expected if q[0] == "EURUSD")
    term.add_tick("EURUSD", last_eur, 1.2, 1.2002)
    term.add_tick("EURUSD", last_eur + 1, 1.3, 1.3002)
    c3, producer3 = tracked_mt5(term, store)
    await run_until(c3, lambda: len(quotes(producer3.records())) >= 2)
    await asyncio.sleep(0.05)
    assert quotes(producer3.records()) == [("EURUSD", last_eur, 1.2, 1.2002),
                                           ("EURUSD", last_eur + 1, 1.3, 1.3002)]


# ---- OANDA: a live stream; its snapshot is what a restart would repeat ---------------------
def tracked_oanda(standin: OandaStandIn, store: MemoryPositionStore
                  ) -> tuple[OandaCollector, LaggyProducer]:
    producer = LaggyProducer(store)
    cfg = load_oanda_config({
        "name": "oanda-resume", "account_id": standin.account_id, "stream_url": standin.url,
        "instruments": standin.instruments, "heartbeat_timeout_s": 5.0,
        "reconnect": {"base_s": 0.01, "cap_s": 0.05}, "connections_per_s": 1000,
        "position_every": 2,
    }, env={"OANDA_API_TOKEN": standin.token})
    c = OandaCollector(cfg, ListSink())
    c.track_positions(PositionTracker(store, c.name, producer, every=c.position_every,
                                      interval_s=c.position_interval_s))
    return c, producer


async def test_a_restarted_oanda_collector_skips_the_snapshot_of_what_it_delivered() -> None:
    store = MemoryPositionStore()
    async with OandaStandIn(sessions=[[Prices(6)], [Snapshot(), Prices(3)]]) as oanda:
        c, producer = tracked_oanda(oanda, store)
        task = asyncio.create_task(c.run())
        deadline = time.monotonic() + 15
        while c.health.ticks < 6:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.005)
        await c.stop()
        await asyncio.wait_for(task, 10)
        assert set(store.positions["oanda-resume"]["last"]) == {
            r.symbol for r in producer.records() if isinstance(r, RawTick)}
        c2, producer2 = tracked_oanda(oanda, store)  # a new process: only the stored position
        task = asyncio.create_task(c2.run())
        deadline = time.monotonic() + 15
        while c2.health.ticks < 3:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.005)
        await c2.stop()
        await asyncio.wait_for(task, 10)
    assert oanda.snapshot_lines  # the snapshot was sent ...
    assert c2.duplicates == len(oanda.snapshot_lines)  # ... and recognised, line by line
    sent = [(r.symbol, r.time_msc, r.bid, r.ask)
            for r in producer.records() + producer2.records() if isinstance(r, RawTick)]
    assert len(sent) == len(set(sent)) == 9


# ---- on the real broker ------------------------------------------------------------------
@pytest.mark.integration
def test_positions_are_read_to_the_fetch_high_watermark(kafka_settings: Settings) -> None:
    """Tansu's ListOffsets(latest) names the last batch's first offset + 1; a reader
    that trusted it would miss the newest positions written in a multi-record batch."""
    ensure_topics(kafka_settings)
    topic = kafka_settings.topic("collectors.positions")
    linger: dict[str, Any] = {"linger.ms": 50}  # a few records per batch
    producer = RecordProducer(kafka_settings, **linger)
    for batch in range(3):
        for i in range(20):
            producer.send_raw(topic, f"c{i % 4}", encode(f"c{i % 4}", {"n": batch * 20 + i}))
        assert producer.flush(10) == 0
    producer.send_raw(topic, "gone", encode("gone", {"n": 1}))
    producer.send_raw(topic, "gone", None)  # type: ignore[arg-type]  # a tombstone
    assert producer.flush(10) == 0
    got = read_positions(kafka_settings, topic, timeout_s=20)
    assert got == {"c0": {"n": 56}, "c1": {"n": 57}, "c2": {"n": 58}, "c3": {"n": 59}}
    empty = Settings.from_env({"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS":
                               ",".join(kafka_settings.kafka_bootstrap_servers),
                               "TICKSTREAM_TOPIC_PREFIX": f"{kafka_settings.topic('')}e.",
                               "TICKSTREAM_PARTITIONS": "4"}, env_file=None)
    ensure_topics(empty)
    assert read_positions(empty, empty.topic("collectors.positions"), timeout_s=20) == {}


def tickstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "topology.cli", *args]


def read_all(settings: Settings, topics: list[str], quiet_s: float = 1.0) -> list[Message]:
    """Every record on ``topics``, until nothing new came for ``quiet_s``."""
    with TopicReader(settings, [settings.topic(t) for t in topics]) as reader:
        out: list[Message] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            got = reader.poll(timeout_s=0.1)
            if got:
                out += got
                last = time.monotonic()
    return out


def count_on(settings: Settings, topic: str) -> Callable[[], int]:
    reader = TopicReader(settings, [settings.topic(topic)])
    seen = [0]

    def count() -> int:
        seen[0] += len(reader.poll(timeout_s=0.05))
        return seen[0]

    count.close = reader.close  # type: ignore[attr-defined]
    return count


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate()


def start(procs: list[subprocess.Popen[str]], kind: str, path: Path, env: dict[str, str],
          *extra: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(tickstream("collect", kind, "--config", str(path), *extra), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(p: subprocess.Popen[str], timeout_s: float = 30) -> str:
    _out, err = p.communicate(timeout=timeout_s)
    assert p.returncode == 0, err
    return err


def ident(t: Record) -> tuple[Any, ...]:
    """A tick without its receive time (the wall clock in real time)."""
    assert isinstance(t, RawTick)
    return (t.broker, t.symbol, t.time_msc, t.bid, t.ask)


def paced_sim_config(settings_env: dict[str, str], **over: Any) -> dict[str, Any]:
    """Real time at 500 ticks/s per stream (3,000/s): a signal lands part-way."""
    config = {**SIM, "name": f"sim-{settings_env['TICKSTREAM_APP_ID']}", "realtime": True,
              "ticks_per_s": 500, "events": {"calendar_every_s": 0, "news_every_s": 0},
              **over}
    config.pop("start_ms")
    return config


def seeded_stream(settings: Settings, config: dict[str, Any], n: int) -> Counter[Any]:
    """What the collector should have sent: the same seed and the simulated start it
    stored, generated without pacing."""
    stored = read_positions(settings, settings.topic("collectors.positions"))[config["name"]]
    sink = ListSink()
    asyncio.run(asyncio.wait_for(build_sim({**config, "realtime": False,
                                            "start_ms": stored["start_ms"], "max_ticks": n},
                                           sink).run(), 60))
    return Counter(ident(r) for _t, _k, r in sink.sent)


def ticks_on(settings: Settings) -> Counter[Any]:
    codec = make_codec(None)
    return Counter(ident(codec.decode(m.value, RawTick, m.topic))
                   for m in read_all(settings, ["ticks.raw"]))


def run_and_signal(procs: list[subprocess.Popen[str]], path: Path, env: dict[str, str],
                   settings: Settings, at: int, sig: signal.Signals) -> None:
    """Start the simulator, wait until ``ticks.raw`` holds ``at`` ticks, send ``sig``."""
    count = count_on(settings, "ticks.raw")
    try:
        p = start(procs, "simulate", path, env)
        wait_until(lambda: count() >= at, 30, f"{at} ticks on ticks.raw")
        p.send_signal(sig)
        if sig == signal.SIGKILL:
            p.communicate(timeout=10)
            assert p.returncode == -signal.SIGKILL
        else:
            finish(p)
    finally:
        count.close()  # type: ignore[attr-defined]


@pytest.mark.integration
def test_simulator_process_sigkilled_and_restarted_resends_only_the_bounded_tail(
    tmp_path: Path, settings_env: dict[str, str], kafka_settings: Settings,
    procs: list[subprocess.Popen[str]],
) -> None:
    ensure_topics(kafka_settings)
    every, total = 300, 15_000
    config = paced_sim_config(settings_env, max_ticks=total, position_every=every)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **settings_env}
    run_and_signal(procs, path, env, kafka_settings, 3000, signal.SIGKILL)
    killed_at = sum(ticks_on(kafka_settings).values())
    assert killed_at < total, "the collector finished before it was killed"

    # The restart catches up on what was due while it was down, then runs to max_ticks.
    finish(start(procs, "simulate", path, env), 60)
    got = ticks_on(kafka_settings)
    want = seeded_stream(kafka_settings, config, total)
    assert not want - got, f"{sum((want - got).values())} ticks lost"
    resent = sum((got - want).values())
    assert resent <= 2 * every, resent

    # That run ended cleanly: a third one has nothing left to send.
    finish(start(procs, "simulate", path, env), 60)
    assert ticks_on(kafka_settings) == got


@pytest.mark.integration
def test_simulator_process_sigtermed_and_restarted_resends_nothing(
    tmp_path: Path, settings_env: dict[str, str], kafka_settings: Settings,
    procs: list[subprocess.Popen[str]],
) -> None:
    ensure_topics(kafka_settings)
    config = paced_sim_config(settings_env, position_every=300)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **settings_env}
    run_and_signal(procs, path, env, kafka_settings, 3000, signal.SIGTERM)
    first = sum(ticks_on(kafka_settings).values())
    run_and_signal(procs, path, env, kafka_settings, first + 3000, signal.SIGTERM)
    got = ticks_on(kafka_settings)
    n = sum(got.values())
    assert got == seeded_stream(kafka_settings, config, n)  # each tick exactly once


@pytest.mark.integration
def test_mt5_process_sigkilled_and_restarted_resumes_after_the_last_delivered_tick(
    tmp_path: Path, settings_env: dict[str, str], kafka_settings: Settings,
    procs: list[subprocess.Popen[str]],
) -> None:
    ensure_topics(kafka_settings)
    every, batch = 100, 50
    t0 = int(time.time() * 1000) - 1_800_000
    term = Terminal(("EURUSD", "USDJPY"), accounts={LOGIN: (PASSWORD, SERVER)})
    rng = random.Random(9)
    rows: dict[str, list[tuple[Any, ...]]] = {"EURUSD": [], "USDJPY": []}
    want: list[tuple[Any, ...]] = []
    t = t0
    for i in range(12_000):  # fed while the collector runs: a kill lands part-way
        sym = ("EURUSD", "USDJPY")[i % 2]
        # Fewer ticks per second and symbol than a poll batch: a fuller second doubles the
        # poll count, and the bound below (``batch`` per poll) would not apply.
        t += rng.choice((0, 20, 40, 60))
        px = (1.1 if sym == "EURUSD" else 150.0) + i * 1e-6
        rows[sym].append((t // 1000, round(px, 6), round(px + 0.0002, 6), 0.0, 0, t, BOTH, 0.0))
        want.append((sym, t, round(px, 6), round(px + 0.0002, 6)))
    per_second = Counter((sym, r[0]) for sym, rs in rows.items() for r in rs[:6000])
    assert max(per_second.values()) < batch, "the feed must not make the poll count double"
    for sym in rows:  # the first tick of each symbol is there before the collector starts
        term.add_ticks(sym, np.array(rows[sym][:1], dtype=TICK_DTYPE))
    name = f"mt5-{settings_env['TICKSTREAM_APP_ID']}"
    config = mt5_config(name=name, batch_size=batch, position_every=every, backfill_s=3600,
                        health_interval_s=1)
    path = tmp_path / "mt5.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **settings_env, "RESUME_PW": PASSWORD}
    codec = make_codec(None)

    def feed(upto: int) -> None:
        for sym, rs in rows.items():
            have = term.tick_count(sym)
            if have < upto:
                term.add_ticks(sym, np.array(rs[have:upto], dtype=TICK_DTYPE))

    with serve(term) as server:
        count = count_on(kafka_settings, "ticks.raw")
        try:
            p = start(procs, "mt5", path, env, "--bridge", server.address)
            for upto in range(200, 3001, 200):  # 6,000 ticks, fed in steps
                feed(upto)
                time.sleep(0.02)
            wait_until(lambda: count() >= 2000, 30, "2,000 ticks")
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=10)
            feed(4500)  # ticks keep arriving while the collector is down
        finally:
            count.close()  # type: ignore[attr-defined]
        p = start(procs, "mt5", path, env, "--bridge", server.address)
        feed(6000)
        missing = Counter(want)
        with TopicReader(kafka_settings, [kafka_settings.topic("ticks.raw")]) as reader:

            def all_there() -> bool:
                for m in reader.poll(timeout_s=0.05):
                    r = codec.decode(m.value, RawTick, m.topic)
                    missing.subtract([(r.symbol, r.time_msc, r.bid, r.ask)])
                return not +missing  # a count below zero is a duplicate, not a missing one

            wait_until(all_there, 30, "every tick")
        p.send_signal(signal.SIGTERM)
        finish(p)
        after_kill = read_all(kafka_settings, ["ticks.raw"])
        got = Counter((r.symbol, r.time_msc, r.bid, r.ask) for r in (
            codec.decode(m.value, RawTick, m.topic) for m in after_kill))
        assert not Counter(want) - got, "ticks lost across the SIGKILL"
        resent = sum((got - Counter(want)).values())
        assert resent <= 2 * (every + batch - 1), resent

        # A clean stop: the restart sends only what is new, in the last millisecond too.
        last = rows["EURUSD"][-1]
        term.add_tick("EURUSD", last[5], 1.5, 1.5002)
        p = start(procs, "mt5", path, env, "--bridge", server.address)
        count = count_on(kafka_settings, "ticks.raw")
        try:
            wait_until(lambda: count() >= len(after_kill) + 1, 30, "the new tick")
        finally:
            count.close()  # type: ignore[attr-defined]
        p.send_signal(signal.SIGTERM)
        finish(p)
    final = Counter((r.symbol, r.time_msc, r.bid, r.ask) for r in (
        codec.decode(m.value, RawTick, m.topic) for m in read_all(kafka_settings, ["ticks.raw"])))
    assert final - got == Counter({("EURUSD", last[5], 1.5, 1.5002): 1})
    assert sum(final.values()) == sum(got.values()) + 1
