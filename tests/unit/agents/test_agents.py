"""Broker-less agent tests with Faust's ``agent.test_context()`` and the memory store.

The agents are thin; these tests check the wiring each one owns: what it publishes where,
what it writes to its table, what it dead-letters (with the original bytes), and that the
pipeline agent obeys the global tables kept by the control and context agents.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from faust_fakes import RecordingProducer, close_consumer_loop
from waiting import until

from schemas.codec import make_codec
from schemas.records import CleanTick, ControlMessage, MarketEvent, RawTick, RejectedRecord
from topology.app import create_app
from topology.settings import Settings

CODEC = make_codec(None)


@pytest.fixture
def app() -> Iterator[Any]:
    s = Settings.from_env(
        {"TICKSTREAM_TABLE_STORE": "memory://", "TICKSTREAM_TOPIC_PREFIX": "u.",
         "TICKSTREAM_CHECKPOINT_INTERVAL_MS": "0"},  # checkpoint after every batch
        env_file=None,
    )
    a = create_app(s, web_enabled=False)
    a.producer = RecordingProducer()
    yield a
    close_consumer_loop(a)


def agent(app: Any, name: str) -> Any:
    return next(a for a in app.agents.values() if a.name == name)


def control_msg(command: str) -> bytes:
    return bytes(CODEC.encode(ControlMessage(
        command=command, reason="test", issued_by="pytest", time_ms=1), "u.control"))


def raw_tick(i: int, symbol: str = "EURUSD", now_ms: int | None = None) -> bytes:
    t = (now_ms or int(time.time() * 1000)) + i
    return bytes(CODEC.encode(RawTick(
        broker="ICM", symbol=symbol, bid=1.1 + i * 1e-5, ask=1.1001 + i * 1e-5, time_msc=t,
        recv_time_us=(t + 20) * 1000, source="SIMULATOR"), "u.ticks.raw"))



def dead_letters(app: Any) -> list[RejectedRecord]:
    return [CODEC.decode(v, RejectedRecord) for _k, v in app.producer.by_topic("u.ticks.rejected")]


async def test_control_agent_keeps_the_kill_switch_in_its_table(app: Any) -> None:
    async with agent(app, "control").test_context() as ag:
        await ag.put(control_msg("kill_switch_on"), key=b"kill_switch")
        state = orjson.loads(app.tables["control_state"][b"kill_switch"])
        assert state["on"] is True and state["issued_by"] == "pytest"
        await ag.put(control_msg("kill_switch_off"), key=b"kill_switch")
    assert orjson.loads(app.tables["control_state"][b"kill_switch"])["on"] is False
    changelog = app.producer.by_topic(app.tables["control_state"].changelog_topic.get_topic_name())
    assert [orjson.loads(v)["on"] for _k, v in changelog] == [True, False]


async def test_control_agent_dead_letters_what_it_cannot_apply(app: Any) -> None:
    async with agent(app, "control").test_context() as ag:
        await ag.put(b"\x00garbage", key=b"x")
        await ag.put(control_msg("reboot_everything"), key=b"x")
    dls = dead_letters(app)
    assert [d.reason for d in dls] == ["malformed", "unknown_command"]
    assert dls[0].original == b"\x00garbage" and dls[0].stage == "control"
    assert b"kill_switch" not in app.tables["control_state"]


def event(eid: str, currency: str, impact: str = "HIGH", published: int = 1_000) -> bytes:
    return bytes(CODEC.encode(MarketEvent(
        event_id=eid, kind="CALENDAR", currency=currency, currencies=[currency], title="CPI",
        event_time_ms=10_000_000, published_ms=published, impact=impact, source="test"),
        "u.events.calendar"))


async def test_context_agent_books_events_per_currency_and_dead_letters_bad_ones(
    app: Any,
) -> None:
    async with agent(app, "context").test_context() as ag:
        await ag.put(event("e1", "USD"), key=b"USD")
        await ag.put(event("e2", "USD", published=2_000), key=b"USD")
        await ag.put(event("e3", "euro"), key=b"euro")
        await ag.put(b"not avro", key=b"EUR")
    table = app.tables["context"]
    assert set(table.keys()) == {b"USD"}
    from stages.context import ContextBook

    book = ContextBook()
    book.restore_currency("USD", orjson.loads(table[b"USD"]))
    assert len(book) == 2
    assert book.features("EURUSD", 5_000)["minutes_to_next_event"] is not None
    assert [d.reason for d in dead_letters(app)] == ["invalid_event", "malformed"]


async def test_pipeline_agent_publishes_checkpoints_and_dead_letters(app: Any) -> None:
    now = int(time.time() * 1000)
    bad = b"\x01\x02 not a tick"
    async with agent(app, "pipeline").test_context() as ag:
        for i in range(3):
            await ag.put(raw_tick(i, now_ms=now), key=b"EURUSD")
        await ag.put(bad, key=b"EURUSD")
        await ag.put(raw_tick(9, symbol="XXXYYY", now_ms=now), key=b"XXXYYY")
        await until(lambda: b"EURUSD" in app.tables["pipeline_state"])
    clean = [CODEC.decode(v, CleanTick) for _k, v in app.producer.by_topic("u.ticks.clean")]
    assert [c.time_msc for c in clean] == [now, now + 1, now + 2]
    assert all(c.best_bid_broker == "ICM" and c.fresh_brokers == 1 for c in clean)
    dls = dead_letters(app)
    assert [d.reason for d in dls] == ["malformed", "unknown_symbol"]
    assert dls[0].original == bad
    snap = orjson.loads(app.tables["pipeline_state"][b"EURUSD"])
    assert snap["offset"] >= 2 and snap["state"]["stages"]["symbol"] == "EURUSD"
    quality = orjson.loads(app.tables["broker_quality"][b"EURUSD"])
    assert "ICM" in quality


async def test_pipeline_agent_loads_its_model_before_its_first_batch(
    app: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow load (importing xgboost takes a second) must not let bars be decided without
    # the model: online would make fewer commands than offline on the same ticks.
    from stages.score import ModelStore

    real = ModelStore.latest
    published_while_loading: list[int] = []

    def slow_latest(self: ModelStore) -> Any:
        time.sleep(0.3)
        published_while_loading.append(len(app.producer.by_topic("u.ticks.clean")))
        return real(self)

    monkeypatch.setattr(ModelStore, "latest", slow_latest)
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0), key=b"EURUSD")
        await until(lambda: app.producer.by_topic("u.ticks.clean"))
    assert published_while_loading == [0]


async def test_pipeline_agent_processes_nothing_after_its_last_checkpoint(app: Any) -> None:
    """SIGTERM: once the last checkpoint is written, later events are left for the next
    owner (unacked); processing them would send outputs no checkpoint covers."""
    now = int(time.time() * 1000)
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0, now_ms=now), key=b"EURUSD")
        await until(lambda: len(app.producer.by_topic("u.ticks.clean")) == 1)
        for hook in app.before_stop:  # what TickstreamApp.on_stop runs first
            await hook()
        await ag.put(raw_tick(1, now_ms=now), key=b"EURUSD")
        await until(lambda: app.tickstream_stats["left_at_stop"] == 1)
    assert len(app.producer.by_topic("u.ticks.clean")) == 1
    snap = orjson.loads(app.tables["pipeline_state"][b"EURUSD"])
    assert snap["offset"] == 0, "the last checkpoint covers the first event only"


async def test_pipeline_agent_skips_events_of_a_partition_revoked_since_buffered(
    app: Any,
) -> None:
    """A rebalance gives a partition to another worker while its events sit in our take
    buffer: they are neither processed nor acked here (their new owner processes them),
    and a partition assigned back is processed again."""
    from faust.types import TP

    now = int(time.time() * 1000)
    tp = TP("u.ticks.raw", 0)
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0, now_ms=now), key=b"EURUSD", partition=0)
        await until(lambda: len(app.producer.by_topic("u.ticks.clean")) == 1)
        await app.on_partitions_revoked.send({tp})
        await ag.put(raw_tick(1, now_ms=now), key=b"EURUSD", partition=0)
        await until(lambda: app.tickstream_stats["revoked_skipped"] == 1)
        assert len(app.producer.by_topic("u.ticks.clean")) == 1
        await app.on_partitions_assigned.send({tp})
        await ag.put(raw_tick(2, now_ms=now), key=b"EURUSD", partition=0)
        await until(lambda: len(app.producer.by_topic("u.ticks.clean")) == 2)
    clean = [CODEC.decode(v, CleanTick) for _k, v in app.producer.by_topic("u.ticks.clean")]
    assert [c.time_msc for c in clean] == [now, now + 2]
    snap = orjson.loads(app.tables["pipeline_state"][b"EURUSD"])
    assert snap["offset"] == 2, "the skipped event is not covered by a checkpoint"


async def test_pipeline_agent_obeys_the_global_tables(app: Any) -> None:
    async with agent(app, "control").test_context() as ag:
        await ag.put(control_msg("kill_switch_on"), key=b"kill_switch")
    async with agent(app, "context").test_context() as ag:
        await ag.put(event("e1", "USD"), key=b"USD")
    pipeline = app.tickstream_pipeline
    assert pipeline.kill_switch is False and pipeline.context.currencies == []
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0), key=b"EURUSD")
        await until(lambda: b"EURUSD" in app.tables["pipeline_state"])
    assert pipeline.kill_switch is True
    assert pipeline.context.currencies == ["USD"]


async def test_pipeline_agent_dead_letters_a_tick_whose_key_is_not_its_symbol(app: Any) -> None:
    """A null or foreign key could put a symbol's tick on another partition than its state
    (and its replay fence): dead-lettered as ``bad_key`` with its bytes, never processed."""
    now = int(time.time() * 1000)
    null_key, wrong_key = raw_tick(1, now_ms=now), raw_tick(2, now_ms=now)
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0, now_ms=now), key=b"EURUSD")
        await ag.put(null_key, key=None)
        await ag.put(wrong_key, key=b"GBPUSD")
        await ag.put(raw_tick(3, now_ms=now), key=b"EURUSD")
        await until(lambda: len(dead_letters(app)) == 2
                    and len(app.producer.by_topic("u.ticks.clean")) == 2)
    clean = [CODEC.decode(v, CleanTick) for _k, v in app.producer.by_topic("u.ticks.clean")]
    assert [c.time_msc for c in clean] == [now, now + 3]
    dls = dead_letters(app)
    assert [(d.reason, d.original, d.key) for d in dls] == [
        ("bad_key", null_key, None), ("bad_key", wrong_key, b"GBPUSD")]
    assert app.tickstream_stats["bad_key"] == 2 and app.tickstream_stats["replayed_skipped"] == 0


async def test_pipeline_agent_fences_replays_per_partition(app: Any) -> None:
    """The replay fence compares a symbol's offsets within one partition only: an event at
    a low offset of another partition is processed, not skipped as a replay."""
    now = int(time.time() * 1000)
    async with agent(app, "pipeline").test_context() as ag:
        for i in range(3):
            await ag.put(raw_tick(i, now_ms=now), key=b"EURUSD", partition=0)
        ag.sent_offset = 0  # the first record of partition 1
        await ag.put(raw_tick(3, now_ms=now), key=b"EURUSD", partition=1)
        await until(lambda: len(app.producer.by_topic("u.ticks.clean")) == 4)
    assert app.tickstream_stats["replayed_skipped"] == 0
    snap = orjson.loads(app.tables["pipeline_state"][b"EURUSD"])
    assert sorted(map(tuple, snap["offsets"])) == [("u.ticks.raw", 0, 2), ("u.ticks.raw", 1, 0)]


async def test_pipeline_agent_checks_a_tick_without_receive_time_against_its_record_time(
    app: Any,
) -> None:
    now = int(time.time() * 1000)
    year_3000 = bytes(CODEC.encode(RawTick(
        broker="ICM", symbol="EURUSD", bid=1.1, ask=1.1001, time_msc=32_503_680_000_000,
        recv_time_us=0, source="SIMULATOR"), "u.ticks.raw"))
    async with agent(app, "pipeline").test_context() as ag:
        await ag.put(raw_tick(0, now_ms=now), key=b"EURUSD")
        await ag.put(year_3000, key=b"EURUSD", timestamp=now / 1000)
        await ag.put(raw_tick(5, now_ms=now), key=b"EURUSD")
        await until(lambda: len(app.producer.by_topic("u.ticks.clean")) == 2)
    assert [(d.reason, d.original) for d in dead_letters(app)] == [
        ("future_timestamp", year_3000)]


async def test_a_revoked_symbols_position_no_longer_counts_toward_the_total_limit(
    app: Any,
) -> None:
    """On revocation the risk stage forgets the revoked symbols' positions too: a symbol now
    owned by another worker must not count toward this worker's max_total_positions."""
    from faust.types import TP

    pipeline = app.tickstream_pipeline
    pipeline.state("EURUSD")
    pipeline.risk.restore_symbol("EURUSD", {**pipeline.risk.snapshot_symbol("EURUSD"),
                                            "position": 1, "entry_price": 1.1})
    assert pipeline.risk.open_positions == 1
    async with agent(app, "pipeline").test_context():
        await app.on_partitions_revoked.send({TP("u.ticks.raw", 0)})
    assert pipeline.risk.open_positions == 0 and pipeline.risk.position("EURUSD") == 0
    assert pipeline.states == {}


async def test_a_backlog_batch_read_column_wise_gives_what_record_by_record_reading_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of ``COLUMNAR_MIN_BATCH`` records or more are decoded column-wise: the same
    ticks, clean ticks and dead letters (malformed, bad key, unknown symbol, with their
    bytes and offsets) as decoding every record on its own."""
    import agents.pipeline as pipeline_agent

    now = int(time.time() * 1000)
    records: list[tuple[bytes, bytes | None]] = []
    for i in range(300):
        records.append((raw_tick(i, symbol=("EURUSD", "USDJPY")[i % 2], now_ms=now),
                        (b"EURUSD", b"USDJPY")[i % 2]))
    records[17] = (b"\x01\x02 not a tick", b"EURUSD")
    records[40] = (raw_tick(40, now_ms=now), None)
    records[99] = (raw_tick(99, symbol="XXXYYY", now_ms=now), b"XXXYYY")
    records[150] = (records[150][0][:-3], b"EURUSD")  # truncated

    async def run(min_batch: int) -> tuple[list[Any], list[tuple[Any, ...]], int]:
        monkeypatch.setattr(pipeline_agent, "COLUMNAR_MIN_BATCH", min_batch)
        s = Settings.from_env(
            {"TICKSTREAM_TABLE_STORE": "memory://", "TICKSTREAM_TOPIC_PREFIX": "u.",
             "TICKSTREAM_CHECKPOINT_INTERVAL_MS": "0"}, env_file=None)
        a = create_app(s, web_enabled=False)
        a.producer = RecordingProducer()
        try:
            async with agent(a, "pipeline").test_context() as ag:
                for value, key in records:
                    await ag.put(value, key=key, wait=False)
                await until(lambda: a.tickstream_stats["events"] == len(records))
            clean = [dataclasses.replace(CODEC.decode(v, CleanTick), processed_time_us=0)
                     for _k, v in a.producer.by_topic("u.ticks.clean")]  # wall clock: out
            dls = [CODEC.decode(v, RejectedRecord) for _k, v in
                   a.producer.by_topic("u.ticks.rejected")]
            return (clean, [(d.reason, d.original, d.source_offset) for d in dls],
                    int(a.tickstream_stats["batches"]))
        finally:
            close_consumer_loop(a)

    columns, col_dls, col_batches = await run(1)
    one_by_one, dls, _ = await run(10**9)
    assert col_batches < len(records), "the records did not arrive in batches"
    assert len(columns) == len(records) - 4
    assert sorted(r for r, _o, _s in col_dls) == ["bad_key", "malformed", "malformed",
                                                 "unknown_symbol"]
    assert columns == one_by_one
    assert col_dls == dls


async def test_pipeline_agent_waits_out_an_unreachable_schema_registry() -> None:
    """Confluent framing, a writer schema id the worker has not fetched yet and the registry
    down: the batch is held (no stage sees it, nothing is dead-lettered as malformed) and
    processed once the registry answers again on its port."""
    from fake_schema_registry import FakeSchemaRegistry

    registry = FakeSchemaRegistry()
    now = int(time.time() * 1000)
    with registry:
        writer = make_codec(registry.url)  # a collector's codec: registers RawTick
        records = [bytes(writer.encode(RawTick(
            broker="ICM", symbol="EURUSD", bid=1.1 + i * 1e-5, ask=1.1001 + i * 1e-5,
            time_msc=now + i, recv_time_us=(now + i + 20) * 1000, source="SIMULATOR"),
            "r.ticks.raw")) for i in range(5)]
        s = Settings.from_env({"TICKSTREAM_TABLE_STORE": "memory://",
                               "TICKSTREAM_TOPIC_PREFIX": "r.",
                               "TICKSTREAM_SCHEMA_REGISTRY_URL": registry.url}, env_file=None)
        a = create_app(s, web_enabled=False)
        a.producer = RecordingProducer()
    try:
        async with agent(a, "pipeline").test_context() as ag:
            for value in records:
                await ag.put(value, key=b"EURUSD", wait=False)
            await until(lambda: a.tickstream_stats["registry_waits"] >= 2)
            assert a.tickstream_stats["events"] == 0 and a.tickstream_stats["malformed"] == 0
            assert not a.producer.by_topic("r.ticks.rejected")
            with registry:  # back, the same port and schemas
                await until(lambda: len(a.producer.by_topic("r.ticks.clean")) == 5)
        assert a.tickstream_stats["malformed"] == 0 and not a.producer.by_topic("r.ticks.rejected")
    finally:
        close_consumer_loop(a)
