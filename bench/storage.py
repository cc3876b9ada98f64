"""Sustained rows/s into each store backend through the sink's insert path, and the sink.

``python -m bench.storage [--rows N] [--batch N] [--bootstrap HOST:PORT]``: encodes N clean
ticks once, then for each backend (a private clickhouse-server 18.16, and chdb in a temp
directory) feeds them through :class:`agents.sink.Batch` (decode, records -> columns) and the
backend's columnar insert in batches of ``--batch`` rows, as the sink does after consuming:
per backend, rows/s end to end and insert only, and the time spent decoding/building columns
vs. inserting. Then ``store_sink_rows_per_s``: the sink *process* (``topology.sink_app``,
default batches) draining a backlog of the same N ticks preloaded on ``ticks.clean`` of a
private broker into the server, from its partitions' assignment to the last row stored
(consume, decode, insert, commit). ``python -m bench`` runs :func:`measure_all` unless
``--skip-storage``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _ticks(n: int) -> list[bytes]:
    from schemas.codec import make_codec
    from schemas.records import CleanTick

    codec = make_codec(None)
    t0 = 1_700_000_000_000
    brokers = ("ICM", "PEP", "FXCM")
    symbols = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
    out = []
    for i in range(n):
        t = t0 + i * 7
        out.append(codec.encode(CleanTick(
            broker=brokers[i % 3], symbol=symbols[i % 4], time_msc=t, recv_time_us=t * 1000,
            bid=1.085 + (i % 97) * 1e-5, ask=1.0851 + (i % 97) * 1e-5, mid=1.08505,
            spread=0.0001, best_bid=1.08502, best_ask=1.08507, best_bid_broker="PEP",
            best_ask_broker="ICM", fresh_brokers=3, dispersion=1e-5, seq=i,
            processed_time_us=t * 1000 + 900), "ticks.clean"))
    return out


def measure(url: str, values: list[bytes], batch_rows: int) -> dict[str, Any]:
    from agents.sink import Batch
    from schemas.codec import make_codec
    from storage import queries
    from storage.backend import open_backend
    from storage.migrations import migrate
    from storage.schema import BY_NAME
    from storage.url import parse_store_url

    backend = open_backend(parse_store_url(url))
    try:
        migrate(backend)
        codec = make_codec(None)
        build = insert = 0.0
        start = time.perf_counter()
        for lo in range(0, len(values), batch_rows):
            a = time.perf_counter()
            batch = Batch(codec, {"ticks.clean": "ticks.clean"})
            for off, v in enumerate(values[lo:lo + batch_rows], lo):
                batch.add("ticks.clean", 0, off, None, v)
            cols = batch.columns()["ticks"]
            b = time.perf_counter()
            backend.insert(BY_NAME["ticks"], cols)
            insert += time.perf_counter() - b
            build += b - a
        total = time.perf_counter() - start
        stored = queries.count(backend, "ticks", final=False)
        version = ".".join(map(str, backend.server_version()))
    finally:
        backend.close()
    return {
        "engine": version, "rows": len(values), "stored": stored, "batch_rows": batch_rows,
        "rows_per_s": round(len(values) / total),
        "insert_only_rows_per_s": round(len(values) / insert),
        "decode_and_columns_s": round(build, 3), "insert_s": round(insert, 3),
    }


class StorePoller(threading.Thread):
    """Samples ``count()`` of some tables of a server store every ``every_s``: (wall time
    in epoch seconds, rows) — how far a sink has come at any moment of a run."""

    def __init__(self, url: str, tables: tuple[str, ...], every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.tables, self.every_s = url, tables, every_s
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def count(self, backend: Any) -> int:
        return sum(int(backend.query(
            f"SELECT count() FROM {backend.database}.{t}").scalar()) for t in self.tables)

    def run(self) -> None:
        from storage.backend import open_backend
        from storage.url import parse_store_url

        # a sample that cannot connect is only a sample missed, not worth a traceback
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)

        backend = open_backend(parse_store_url(self.url))
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(Exception):  # the tables may not exist yet
                    self.samples.append((time.time(), self.count(backend)))
                self.stopping.wait(self.every_s)
        finally:
            backend.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def rows_at(self, wall_s: float) -> int:
        """Rows stored at ``wall_s`` (the last sample at or before it)."""
        before = [n for t, n in self.samples if t <= wall_s]
        return before[-1] if before else 0

    def first_time(self, rows: int) -> float | None:
        """When at least ``rows`` were stored (the first sample that saw them)."""
        return next((t for t, n in self.samples if n >= rows), None)


def sink_env(env: dict[str, str], url: str) -> dict[str, str]:
    return {**env, "TICKSTREAM_STORE_URL": url}


def sink_drain(bootstrap: str, values: list[bytes], server: Any, tmp: Path) -> dict[str, Any]:
    """The sink process draining ``values`` preloaded on ``ticks.clean`` into ``server``."""
    from bench.kafka_tools import bench_env, produce_all, producer
    from devstack.sink import SinkProcess
    from topology.admin import ensure_topics
    from topology.settings import Settings

    env = bench_env(bootstrap, str(tmp / "sink-drain"))
    settings = Settings.from_env(env, env_file=None)
    ensure_topics(settings)
    topic = settings.topic("ticks.clean")
    produce_all(producer(settings), topic, ((b"EURUSD", v) for v in values))
    url = server.store_url(f"drain{settings.app_id}")
    poller = StorePoller(url, ("ticks",))
    sink = SinkProcess(sink_env(env, url), tmp / "sink-drain.log")
    try:
        sink.wait_assigned()
        assigned = time.time()
        poller.start()
        sink.wait_for(lambda: bool(poller.samples) and poller.samples[-1][1] >= len(values),
                      max(120.0, len(values) / 5_000), f"{len(values)} rows stored",
                      poll_s=0.05)
    finally:
        poller.stop()
        code = sink.stop()
    done = poller.first_time(len(values))
    if code != 0 or done is None:
        raise RuntimeError(f"sink exited {code}:\n{sink.output()[-2000:]}")
    return {"rows": len(values), "seconds": round(done - assigned, 3),
            "rows_per_s": round(len(values) / (done - assigned))}


def measure_all(bootstrap: str, rows: int = 500_000, batch_rows: int = 50_000
                ) -> dict[str, Any]:
    """``store_*_rows_per_s`` for ``python -m bench`` (a private server; chdb in a temp
    directory; the sink process against the server)."""
    from devstack.clickhouse import ClickHouseServer

    values = _ticks(rows)
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="tickstream-store-bench-"))
    try:
        with ClickHouseServer(root=tmp / "ch") as server:
            srv = measure(server.store_url("bench"), values, batch_rows)
            drain = sink_drain(bootstrap, values, server, tmp)
        chdb = measure(f"chdb://{tmp / 'chdb'}", values, batch_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["store_server_rows_per_s"] = srv["rows_per_s"]
    out["store_server_insert_only_rows_per_s"] = srv["insert_only_rows_per_s"]
    out["store_chdb_rows_per_s"] = chdb["rows_per_s"]
    out["store_chdb_insert_only_rows_per_s"] = chdb["insert_only_rows_per_s"]
    out["store_sink_rows_per_s"] = drain["rows_per_s"]
    out["store_bench_rows"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--bootstrap", help="use this broker instead of a private local one")
    args = ap.parse_args(argv)
    from devstack.broker import LocalBroker

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = LocalBroker().start()
        bootstrap = broker.bootstrap
    try:
        out = measure_all(bootstrap, args.rows, args.batch)
    finally:
        if broker is not None:
            broker.stop()
    print(json.dumps({"storage": out}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
