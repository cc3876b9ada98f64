"""Store URLs and records -> columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import storage_checks

from storage.errors import StorageError
from storage.rows import to_columns
from storage.schema import BY_NAME, TABLES, create_table_sql
from storage.url import parse_store_url


def test_server_url() -> None:
    u = parse_store_url("clickhouse://ts:s%40cret@ch.example:9440/market")
    assert (u.scheme, u.host, u.port, u.user, u.password, u.database) == (
        "clickhouse", "ch.example", 9440, "ts", "s@cret", "market")
    assert "s@cret" not in str(u) and "s@cret" not in repr(u)
    assert u.address == "ch.example:9440"
    d = parse_store_url("clickhouse://localhost")
    assert (d.port, d.user, d.password, d.database) == (9000, "default", None, "default")


def test_chdb_url() -> None:
    u = parse_store_url("chdb://var/chdb")
    assert (u.scheme, u.path) == ("chdb", Path("var/chdb"))


@pytest.mark.parametrize("bad", [
    "", "chdb://", "http://h:9000/db", "clickhouse://", "clickhouse://u:pw@h:notaport/db",
    "clickhouse://h:9000/bad-db", "clickhouse://h:9000/db?x=1", "h:9000",
])
def test_bad_urls_are_one_line_and_never_echo_a_password(bad: str) -> None:
    with pytest.raises(StorageError) as err:
        parse_store_url(bad.replace("pw", "hunter2"))
    msg = str(err.value)
    assert "\n" not in msg and "hunter2" not in msg
    assert msg.startswith("TICKSTREAM_STORE_URL: ")


def test_rows_cover_every_field_of_every_record() -> None:
    recs = storage_checks.samples(5)
    for topic, sent in recs.items():
        table = next(t for t in TABLES if t.topic == topic)
        assert set(table.column_names) == set(type(sent[0]).FIELDS), topic
        cols = to_columns(table, [r.to_dict() for r in sent])
        assert all(len(v) == 5 for v in cols.values())


def test_nullable_columns() -> None:
    recs = [storage_checks.tick(i).to_dict() for i in range(4)]
    cols = to_columns(BY_NAME["ticks"], recs)
    assert cols["seq"].dtype == object and list(cols["seq"]) == [0, None, None, 3]
    assert cols["time_msc"].dtype == np.int64 and cols["bid"].dtype == np.float64
    feats = to_columns(BY_NAME["features"], [storage_checks.feature(0).to_dict()])
    assert np.isnan(feats["sma_20"][0])  # NULL in a Nullable(Float64) column


def test_ddl_on_old_servers_avoids_what_1816_lacks() -> None:
    for table in TABLES:
        old = create_table_sql(table, "db", (18, 16, 1))
        for word in ("DateTime64", "TTL", "CODEC", "LowCardinality"):
            assert word not in old
        assert "ReplacingMergeTree" in old and "PARTITION BY toYYYYMMDD(time)" in old
        new = create_table_sql(table, "db", (24, 8))
        assert "CODEC(Delta, ZSTD)" in new
