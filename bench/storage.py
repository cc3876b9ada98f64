"""Sustained rows/s into each store backend through the sink's insert path.

``python -m bench.storage [--rows N] [--batch N]``: encodes N clean ticks once, then for each
backend (a private clickhouse-server 18.16, and chdb in a temp directory) feeds them through
:class:`agents.sink.Batch` (decode, records -> columns) and the backend's columnar insert in
batches of ``--batch`` rows, as the sink does after consuming. Prints one JSON object:
per backend, rows/s end to end and the share of the time spent decoding/building columns
vs. inserting. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    args = ap.parse_args(argv)
    from devstack.clickhouse import ClickHouseServer

    values = _ticks(args.rows)
    out: dict[str, Any] = {}
    with ClickHouseServer() as server:
        out["server"] = measure(server.store_url("bench"), values, args.batch)
    tmp = Path(tempfile.mkdtemp(prefix="tickstream-chdb-bench-"))
    try:
        out["chdb"] = measure(f"chdb://{tmp}", values, args.batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"storage": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
