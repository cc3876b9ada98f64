"""The sink's loop with a stand-in consumer and store: offsets are committed only after
the insert, an outage pauses consumption and retries with backoff, nothing is lost."""

from __future__ import annotations

from typing import Any

import storage_checks

from agents.sink import Sink, SinkConfig
from schemas.codec import make_codec
from storage.backend import Columns
from storage.errors import StoreUnavailable
from storage.schema import Table

CODEC = make_codec(None)
TOPICS = {"p.ticks.clean": "ticks.clean", "p.bars.m1": "bars.m1",
          "p.ticks.rejected": "ticks.rejected"}


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"EURUSD"

    def value(self) -> bytes:
        return self._v


class FakeConsumer:
    def __init__(self, messages: list[Msg], sink: list[Sink]) -> None:
        self.queue = messages
        self.sink = sink
        self.paused = False
        self.pauses = 0
        self.commits: list[dict[tuple[str, int], int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if self.paused:
            return []
        out, self.queue = self.queue[:n], self.queue[n:]
        if not out and not self.queue:
            self.sink[0].stop()
        return out

    def assignment(self) -> list[str]:
        return ["all"]

    def pause(self, parts: Any) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self, parts: Any) -> None:
        self.paused = False

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def close(self) -> None:
        self.closed = True


class FlakyStore:
    """Fails ``fail`` inserts with StoreUnavailable, then stores; records what it stored."""

    url: Any = None
    database = "default"

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.rows: dict[str, int] = {}
        self.consumer: FakeConsumer | None = None
        self.commits_at_insert: list[int] = []

    def insert(self, table: Table, columns: Columns) -> int:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("ClickHouse at 127.0.0.1:1 is not answering")
        n = len(next(iter(columns.values())))
        self.rows[table.name] = self.rows.get(table.name, 0) + n
        assert self.consumer is not None
        self.commits_at_insert.append(len(self.consumer.commits))
        return n


def messages(n: int) -> list[Msg]:
    out = []
    for i in range(n):
        out.append(Msg("p.ticks.clean", i % 2, i // 2,
                       CODEC.encode(storage_checks.tick(i), "p.ticks.clean")))
        out.append(Msg("p.bars.m1", 0, i, CODEC.encode(storage_checks.bar(i), "p.bars.m1")))
    out.append(Msg("p.ticks.clean", 0, n, b"not avro"))  # malformed: kept as a reject
    return out


def run(n: int, fail: int, batch_rows: int) -> tuple[Sink, FakeConsumer, FlakyStore]:
    holder: list[Sink] = []
    consumer = FakeConsumer(messages(n), holder)
    store = FlakyStore(fail)
    store.consumer = consumer
    sink = Sink(consumer, store, CODEC, SinkConfig(  # type: ignore[arg-type]
        topics=TOPICS, batch_rows=batch_rows, batch_ms=60_000, backoff_initial_s=0.001,
        backoff_max_s=0.004))
    holder.append(sink)
    sink.run()
    return sink, consumer, store


def test_commits_only_after_the_insert() -> None:
    sink, consumer, store = run(100, fail=0, batch_rows=50)
    assert store.rows == {"ticks": 100, "bars_m1": 100, "rejects": 1}
    assert consumer.closed and sink.stats.batches == len(consumer.commits) == 5
    # Every commit came after the inserts of its batch: no insert saw its batch committed.
    assert store.commits_at_insert == sorted(store.commits_at_insert)
    last = consumer.commits[-1]
    assert last[("p.ticks.clean", 0)] == 101  # the malformed record's offset + 1
    assert sink.stats.malformed == 1


def test_outage_pauses_retries_and_loses_nothing() -> None:
    sink, consumer, store = run(100, fail=7, batch_rows=60)
    assert store.rows == {"ticks": 100, "bars_m1": 100, "rejects": 1}
    assert sink.stats.retries == 7 and sink.stats.outages == 1
    assert consumer.pauses == 1 and not consumer.paused
    merged: dict[tuple[str, int], int] = {}
    for c in consumer.commits:
        merged.update(c)
    assert merged == {("p.ticks.clean", 0): 101, ("p.ticks.clean", 1): 50,
                      ("p.bars.m1", 0): 100}


def test_a_batch_decodes_column_wise_as_record_by_record() -> None:
    """The batch's columns (column-wise decode, with the one-by-one path for what it
    declines) hold exactly the rows the codec's decode_dict gives, and every record it cannot
    read as a malformed reject with its coordinates and bytes."""
    import numpy as np

    from agents.sink import Batch
    from storage.rows import to_columns
    from storage.schema import BY_NAME, BY_TOPIC

    batch = Batch(CODEC, TOPICS, clock_us=lambda: 7)
    sent = messages(60)
    good = CODEC.encode(storage_checks.tick(999), "p.ticks.clean")
    sent.append(Msg("p.ticks.clean", 1, 500, good[:-1]))  # cut short
    sent.append(Msg("p.ticks.clean", 1, 501, good + b"\x00"))  # a trailing byte
    sent += [Msg("p.ticks.rejected", 0, i, CODEC.encode(r, "p.ticks.rejected"))
             for i, r in enumerate(storage_checks.samples(40)["ticks.rejected"])]
    for m in sent:
        batch.add(m.topic(), m.partition(), m.offset(), m.key(), m.value())
    got = batch.columns()
    assert batch.columns().keys() == got.keys() and batch.malformed == 3  # decoded once

    want: dict[str, list[dict[str, Any]]] = {}
    for m in sent:
        table = BY_TOPIC[TOPICS[m.topic()]]
        try:
            want.setdefault(table.name, []).append(CODEC.decode_dict(table.record, m.value()))
        except Exception:
            want.setdefault("rejects", []).append({
                "source_topic": m.topic(), "source_partition": m.partition(),
                "source_offset": m.offset(), "reason": "malformed", "detail": "",
                "stage": "sink", "original": m.value(), "key": m.key(), "time_us": 7})

    def rows(name: str, cols: dict[str, Any]) -> list[tuple[Any, ...]]:
        names = [c for c in BY_NAME[name].column_names if c != "detail"]
        for c in names:
            assert isinstance(cols[c], np.ndarray), (name, c)
        return sorted(zip(*(cols[c].tolist() for c in names), strict=True), key=repr)

    assert got.keys() == want.keys()
    for name, recs in want.items():
        expected = to_columns(BY_NAME[name], recs)
        for c, arr in expected.items():
            assert got[name][c].dtype == arr.dtype, (name, c)
        assert rows(name, got[name]) == rows(name, expected), name


def test_an_int_past_32_bits_is_a_reject_not_a_failed_insert() -> None:
    """A foreign producer's varint too big for an Avro int (``tick_count``): the record is
    a malformed reject with its bytes; the batch still inserts into its Int32 column."""
    from agents.sink import Batch

    good = CODEC.encode(storage_checks.bar(1), "p.bars.m1")
    bad = CODEC.encode_dict("Bar", {**storage_checks.bar(1).to_dict(), "tick_count": 1 << 40})
    batch = Batch(CODEC, TOPICS, clock_us=lambda: 7)
    batch.add("p.bars.m1", 0, 0, None, good)
    batch.add("p.bars.m1", 0, 1, None, bad)
    cols = batch.columns()
    assert batch.malformed == 1
    assert cols["bars_m1"]["tick_count"].tolist() == [storage_checks.bar(1).tick_count]
    assert cols["rejects"]["original"].tolist() == [bad]
    assert "does not fit an Avro int" in cols["rejects"]["detail"][0]


def test_a_registry_outage_pauses_retries_and_rejects_nothing() -> None:
    """Confluent framing: the sink has not seen the writer schema's id yet and the registry
    is down (connection refused on its port). The batch is not rejected as malformed: the
    sink pauses, backs off and decodes it again once the registry answers, then commits."""
    from fake_schema_registry import FakeSchemaRegistry

    registry = FakeSchemaRegistry()
    with registry:
        writer = make_codec(registry.url)
        sent = [Msg("p.ticks.clean", 0, i, writer.encode(storage_checks.tick(i), "p.ticks.clean"))
                for i in range(30)]
        url = registry.url
    holder: list[Sink] = []

    class RegistryComesBack(FakeConsumer):
        paused_polls = 0

        def consume(self, n: int, timeout: float) -> list[Msg]:
            if self.paused:
                self.paused_polls += 1
                if self.paused_polls == 3:
                    registry.__enter__()  # the same port, the same schemas
            return super().consume(n, timeout)

    consumer = RegistryComesBack(sent, holder)
    store = FlakyStore()
    store.consumer = consumer
    sink = Sink(consumer, store, make_codec(url), SinkConfig(  # type: ignore[arg-type]
        topics=TOPICS, batch_rows=1000, batch_ms=60_000, backoff_initial_s=0.001,
        backoff_max_s=0.004))
    holder.append(sink)
    try:
        sink.run()
    finally:
        registry.__exit__(None, None, None)
    assert consumer.paused_polls >= 3, "the registry was never down for the sink"
    assert store.rows == {"ticks": 30}  # nothing in rejects
    assert sink.stats.malformed == 0 and sink.stats.outages == 1 and sink.stats.retries >= 1
    assert "unreachable" in (sink.stats.last_error or "")
    assert consumer.pauses == 1 and not consumer.paused
    assert consumer.commits == [{("p.ticks.clean", 0): 30}]
