"""Online rows == ``process --store`` rows: the same simulated ticks through a live worker and
the sink into one database of a real clickhouse-server, and through ``tickstream process
--store`` into another; every stored table compared with FINAL, column by column (the
wall-clock columns aside), and once with one cross-database query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from pipeline_helpers import RISK, send_ticks, train_small_model

from connectors.files import write_canonical
from connectors.producer import RecordProducer
from connectors.simulator import simulate
from devstack.clickhouse import ClickHouseServer
from devstack.localstack import WorkerProcess
from devstack.sink import SinkProcess
from schemas.codec import make_codec
from schemas.records import RawTick
from storage.backend import Backend, open_backend
from storage.schema import BARS, COMMANDS, FEATURES, TICKS, Table
from storage.url import parse_store_url
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = pytest.mark.integration

#: Columns that hold a wall-clock time of the run (or of the insert), not of the data.
WALL_CLOCK = {"processed_time_us", "created_time_us", "inserted_at", "time_us"}


def rows(backend: Backend, database: str, table: Table) -> list[tuple[Any, ...]]:
    names = [c for c in table.column_names if c not in WALL_CLOCK]
    return backend.query(
        f"SELECT {', '.join(names)} FROM {database}.{table.name} FINAL "
        f"ORDER BY {', '.join(table.key)}").rows


def rejects(backend: Backend, database: str, online: bool) -> list[tuple[Any, ...]]:
    """(broker, symbol, time_msc, bid, ask, reason, detail, stage) of every stored reject:
    online the original is the RawTick's Avro bytes, offline its canonical CSV row."""
    codec = make_codec(None)
    out = []
    for original, reason, detail, stage in backend.query(
            f"SELECT original, reason, detail, stage FROM {database}.rejects FINAL").rows:
        raw = original if isinstance(original, bytes) else original.encode()
        if online:
            t = codec.decode(raw, RawTick)
            fields = (t.broker, t.symbol, str(t.time_msc), repr(t.bid), repr(t.ask))
        else:
            fields = tuple(raw.decode().split(","))
        out.append((*fields, reason, detail, stage))
    return sorted(out)


def test_online_rows_equal_process_store_rows(
        settings_env: dict[str, str], clickhouse_server: ClickHouseServer, unique: str,
        tmp_path: Path) -> None:
    online_db, offline_db = f"on{unique}", f"off{unique}"
    env = {**settings_env, **RISK,
           # offline has no idle timer: a slow wait here must not close a bar early online
           "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000",
           "TICKSTREAM_STORE_URL": clickhouse_server.store_url(online_db),
           "TICKSTREAM_SINK_BATCH_ROWS": "2000", "TICKSTREAM_SINK_BATCH_MS": "100"}
    settings = Settings.from_env(env, env_file=None)
    env["TICKSTREAM_MODEL_DIR"] = str(train_small_model(tmp_path, settings))
    settings = Settings.from_env(env, env_file=None)
    ticks = simulate(7, seconds=1800)

    # ---- offline: tickstream process --store ---------------------------------------------
    src = tmp_path / "ticks.csv"
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    done = subprocess.run(
        [sys.executable, "-m", "topology.cli", "process", str(src), "--model",
         env["TICKSTREAM_MODEL_DIR"], "--store", clickhouse_server.store_url(offline_db),
         "--json"],
        check=True, capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO_ROOT,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stored = result["stored"]
    assert stored["ticks"] == result["clean"] and stored["bars_m1"] == result["bars"]
    assert stored["commands"] == sum(result["commands"].values()) > 0
    assert stored["rejects"] == sum(result["rejected"].values()) > 0

    backend = open_backend(parse_store_url(clickhouse_server.store_url(offline_db)))
    try:
        # Bars closed by the end-of-input flush (trigger 0) have no online counterpart yet.
        flushed = {(r[0], r[1]) for r in backend.query(
            f"SELECT symbol, bar_time FROM {offline_db}.bars_m1 FINAL "
            "WHERE trigger_recv_time_us = 0").rows}
        off = {t.name: [r for r in rows(backend, offline_db, t) if (r[0], r[1]) not in flushed]
               if t is not TICKS and t is not COMMANDS else rows(backend, offline_db, t)
               for t in (TICKS, BARS, FEATURES, COMMANDS)}
        off["commands"] = [r for r in off["commands"] if (r[2], r[10]) not in flushed]
        off_rejects = rejects(backend, offline_db, online=False)
    finally:
        backend.close()
    assert off["bars_m1"] and off["commands"] and len(flushed) >= 1

    # ---- online: a worker and the sink ---------------------------------------------------
    ensure_topics(settings)
    sink = SinkProcess(env, tmp_path / "sink.log", cwd=REPO_ROOT)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    online = open_backend(parse_store_url(clickhouse_server.store_url(online_db)))
    try:
        worker.start()
        sink.wait_assigned()
        send_ticks(RecordProducer(settings), ticks)

        def count(table: str) -> int:
            return int(online.query(f"SELECT count() FROM {online_db}.{table} FINAL").scalar())

        want = {"ticks": len(off["ticks"]), "bars_m1": len(off["bars_m1"]),
                "features": len(off["features"]), "commands": len(off["commands"]),
                "rejects": len(off_rejects)}
        sink.wait_for(lambda: all(count(t) >= n for t, n in want.items()), 120,
                      f"the online store to hold {want}")
        on = {t.name: rows(online, online_db, t) for t in (TICKS, BARS, FEATURES, COMMANDS)}
        on_rejects = rejects(online, online_db, online=True)
        # One query across the two databases: bars present in both with other values.
        differing = online.query(
            f"SELECT count() FROM (SELECT symbol, bar_time, open, high, low, close, "
            f"tick_count FROM {online_db}.bars_m1 FINAL) ANY INNER JOIN (SELECT symbol, "
            f"bar_time, open AS o, high AS h, low AS lo, close AS c, tick_count AS n FROM "
            f"{offline_db}.bars_m1 FINAL) USING (symbol, bar_time) WHERE open != o OR "
            f"high != h OR low != lo OR close != c OR tick_count != n").scalar()
        joined = online.query(
            f"SELECT count() FROM (SELECT symbol, bar_time FROM {online_db}.bars_m1 FINAL) "
            f"ANY INNER JOIN (SELECT symbol, bar_time FROM {offline_db}.bars_m1 FINAL) "
            f"USING (symbol, bar_time)").scalar()
    finally:
        worker.stop()
        code = sink.stop()
        online.close()
    assert code == 0, sink.output()[-3000:]

    for name in ("ticks", "bars_m1", "features", "commands"):
        assert on[name] == off[name], name
    assert on_rejects == off_rejects
    assert differing == 0 and joined == len(off["bars_m1"])
    assert "Traceback" not in worker.log_text() and "Traceback" not in sink.output()
