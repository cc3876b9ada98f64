"""Storage against a real clickhouse-server (18.16, native protocol), and the sink end to end
through the local broker: every topic stored exactly, and a server outage mid-stream that
loses and duplicates nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import storage_checks
from conftest import REPO_ROOT

from connectors.producer import RecordProducer
from devstack.clickhouse import ClickHouseServer
from devstack.sink import SinkProcess
from storage import queries
from storage.backend import Backend, open_backend
from storage.schema import TABLES
from storage.url import parse_store_url
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def server_backend(clickhouse_url: str) -> Iterator[Backend]:
    backend = open_backend(parse_store_url(clickhouse_url))
    try:
        yield backend
    finally:
        backend.close()


@pytest.mark.parametrize("check", storage_checks.ALL_CHECKS, ids=lambda c: c.__name__)
def test_server(server_backend: Backend, check: Callable[[Backend], None]) -> None:
    check(server_backend)


def test_server_version_and_plain_ddl(server_backend: Backend) -> None:
    from storage.migrations import migrate

    assert server_backend.server_version()[:2] == (18, 16)
    migrate(server_backend)
    types = dict(server_backend.query(
        f"SELECT name, type FROM system.columns WHERE database = '{server_backend.database}' "
        "AND table = 'ticks'").rows)
    assert types["broker"] == "String" and types["time"] == "DateTime('UTC')"


def test_a_server_that_is_not_there_is_one_clear_line() -> None:
    from devstack.broker import free_port
    from storage.errors import StoreUnavailable

    port = free_port()
    backend = open_backend(parse_store_url(f"clickhouse://default@127.0.0.1:{port}/db"),
                           connect_timeout_s=1)
    with pytest.raises(StoreUnavailable) as err:
        backend.server_version()
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "TICKSTREAM_STORE_URL" in msg and "\n" not in msg


# -- the sink ---------------------------------------------------------------------------

def sink_process(env: dict[str, str], log: Path) -> SinkProcess:
    return SinkProcess(env, log, cwd=REPO_ROOT)


def produce(settings: Settings, records: dict[str, list[object]]) -> int:
    producer = RecordProducer(settings)
    n = 0
    for topic, recs in records.items():
        for r in recs:
            producer.send(topic, "EURUSD", r)  # type: ignore[arg-type]
            n += 1
    assert producer.flush(30) == 0
    return n


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             sink: SinkProcess) -> None:
    sink.wait_for(predicate, timeout_s, what)


def store_counts(url: str, final: bool = True) -> dict[str, int]:
    backend = open_backend(parse_store_url(url), connect_timeout_s=1)
    try:
        return storage_checks.counts(backend, final=final)
    finally:
        backend.close()


def test_sink_stores_every_topic_exactly(settings_env: dict[str, str],
                                         kafka_settings: Settings, clickhouse_url: str,
                                         tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    recs = storage_checks.samples(200)
    recs["ticks.clean"] = [storage_checks.tick(i) for i in range(5_000)]
    produce(kafka_settings, recs)  # type: ignore[arg-type]
    want = {t.name: len(recs[t.topic]) for t in TABLES}
    env = {**settings_env, "TICKSTREAM_STORE_URL": clickhouse_url,
           "TICKSTREAM_SINK_BATCH_ROWS": "1000", "TICKSTREAM_SINK_BATCH_MS": "100"}
    sink = sink_process(env, tmp_path / "sink.log")
    try:
        wait_for(lambda: store_counts(clickhouse_url) == want, 60, f"rows {want}", sink)
        # A second sink process of the same group has nothing left to store.
    finally:
        assert sink.stop() == 0, sink.output()[-3000:]
    assert store_counts(clickhouse_url, final=False) == want  # nothing stored twice
    backend = open_backend(parse_store_url(clickhouse_url))
    try:
        assert queries.ohlc(backend, "EURUSD", "1h").dicts()[0]["minutes"] == 60
    finally:
        backend.close()


def test_server_outage_mid_stream_loses_and_duplicates_nothing(
        settings_env: dict[str, str], kafka_settings: Settings, tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    server = ClickHouseServer(root=tmp_path / "ch").start()
    url = server.store_url("outage")
    env = {**settings_env, "TICKSTREAM_STORE_URL": url,
           "TICKSTREAM_SINK_BATCH_ROWS": "500", "TICKSTREAM_SINK_BATCH_MS": "100"}
    sink = sink_process(env, tmp_path / "sink.log")
    sent = 0
    try:
        def ticks(start: int, n: int) -> dict[str, list[object]]:
            return {"ticks.clean": [storage_checks.tick(i) for i in range(start, start + n)],
                    "bars.m1": [storage_checks.bar(i) for i in range(start, start + n // 10)]}

        sent += produce(kafka_settings, ticks(0, 3_000))
        wait_for(lambda: store_counts(url)["ticks"] == 3_000, 60, "first part", sink)
        server.kill()  # mid-stream: the sink is consuming
        sent += produce(kafka_settings, ticks(3_000, 3_000))
        wait_for(lambda: "store unavailable" in sink.output(), 30, "the sink to notice", sink)
        time.sleep(1.0)  # a few backoff rounds while it is down
        server.start()
        sent += produce(kafka_settings, ticks(6_000, 3_000))
        want = {"ticks": 9_000, "bars_m1": 900}
        wait_for(lambda: {k: store_counts(url)[k] for k in want} == want, 90, "all rows", sink)
    finally:
        code = sink.stop()
        try:
            assert code == 0, sink.output()[-3000:]
            assert sent == 9_900
            assert "store back after" in sink.output()
            final = store_counts(url)
            assert {k: final[k] for k in ("ticks", "bars_m1")} == {"ticks": 9_000,
                                                                     "bars_m1": 900}
            backend = open_backend(parse_store_url(url))
            try:
                for t in ("ticks", "bars_m1"):
                    backend.execute(f"OPTIMIZE TABLE outage.{t} FINAL")
                merged = storage_checks.counts(backend, final=False)
                assert {k: merged[k] for k in ("ticks", "bars_m1")} == {"ticks": 9_000,
                                                                          "bars_m1": 900}
            finally:
                backend.close()
        finally:
            server.stop()
