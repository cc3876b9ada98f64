"""History loader throughput: ``tickstream load`` into a real broker, per format.

For each of ``csv`` (the canonical CSV of the Lean ticks), ``dukascopy`` (the two-day ``.bi5``
folder) and ``lean`` (both brokers' zips), on the real files in ``../shared/data``:

* ``history_parse_ticks_per_s``: the loader's reader alone (file → batches of ticks,
  :func:`connectors.history.batch_readers.read_batches`), no Kafka;
* ``history_load_ticks_per_s``: :func:`offline.load.load_paths` (read, encode, produce,
  every delivery acknowledged, manifest written) into a fresh topic;
* ``history_replay_ticks_per_s``: ``tickstream replay --json`` of the loaded ``lean`` topic
  (read back, every stage, labels, the Parquet file written) as users run it, in its own
  process (its garbage-collector tuning, not this process's heap of loaded ticks): ticks
  over the command's own ``seconds`` (not the interpreter's start-up), best of two;
* ``train_seconds``: ``tickstream train`` (walk-forward folds, the final model, its report)
  on that replay's feature file, with ``train_rows`` and the walk-forward verdict
  (``train_pooled_logloss`` against ``train_best_baseline_logloss``, ``train_promoted``);
* ``history_producer_floor_msgs_per_s``: the loader's sender (its ProducerId asked for
  first, reports served in bulk, every delivery counted) sending the same number of
  pre-encoded records, measured in the same run, so the load figures can be read as a
  share of what the producer path itself takes (``history_load_vs_floor``).

Run ``python -m bench.history_load [--bootstrap HOST:PORT] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.history.batch import TickBatch
from connectors.history.batch_readers import read_batches
from connectors.producer import RecordProducer
from offline.convert import convert_paths
from offline.load import load_paths
from offline.train import train
from schemas.records import RawTick
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _env(bootstrap: str) -> dict[str, str]:
    return {"TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TICKSTREAM_TOPIC_PREFIX": f"hbench{uuid.uuid4().hex[:8]}.",
            "TICKSTREAM_PARTITIONS": "4"}


def _settings(bootstrap: str, env: dict[str, str] | None = None) -> Settings:
    return Settings.from_env(env or _env(bootstrap), env_file=None)


def replay_command(env: dict[str, str], out: Path, runs: int = 2) -> dict[str, Any]:
    """``tickstream replay --topic ticks.history --out OUT --json`` in its own process, as
    users run it; the JSON summary of its fastest run (by its own ``seconds``)."""
    best: dict[str, Any] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-m", "topology.cli", "replay", "--topic", "ticks.history",
             "--out", str(out), "--json"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
            check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tickstream replay failed ({done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if not best or result["seconds"] < best["seconds"]:
            best = result
    return best


def _inputs(tmp: Path, quick: bool) -> dict[str, tuple[list[Path], dict[str, Any]]]:
    lean = DATA / "lean"
    lean_paths = ([lean / "oanda/tick/eurusd/20140512_quote.zip",
                   lean / "fxcm/tick/eurusd/20140512_quote.zip"] if quick else [lean])
    # The canonical CSV of the same ticks as ``lean`` (one EURUSD day with --quick): long
    # enough that a fresh idempotent producer's first ProducerId (librdkafka retries it
    # on a 500 ms timer when no broker connection is up yet) does not dominate the figure.
    canonical = tmp / "lean.csv"
    convert_paths("lean", lean_paths, canonical)
    duka = DATA / "dukascopy/EURUSD"
    return {
        "csv": ([canonical], {}),
        "dukascopy": ([duka / "2019/01/04"] if quick else [duka], {"symbol": "EURUSD"}),
        "lean": (lean_paths, {}),
    }


def measure(bootstrap: str, quick: bool = False) -> dict[str, Any]:
    parse: dict[str, int] = {}
    load: dict[str, int] = {}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        inputs = _inputs(Path(tmpdir), quick)
        for fmt, (paths, kw) in inputs.items():
            t0 = time.perf_counter()
            n = sum(len(r) if type(r) is TickBatch else type(r) is Tick
                    for p in paths for r in read_batches(fmt, p, **kw))
            parse[fmt] = round(n / (time.perf_counter() - t0))
            counts[fmt] = n
        replay_rate = 0
        trained: dict[str, Any] = {}
        for fmt, (paths, kw) in inputs.items():
            env = _env(bootstrap)
            settings = _settings(bootstrap, env)
            ensure_topics(settings)
            result = load_paths(settings, fmt, paths, **kw)
            assert result["ticks"] == counts[fmt], (fmt, result["ticks"], counts[fmt])
            load[fmt] = round(result["ticks"] / result["seconds"])
            if fmt == "lean":
                rep = replay_command(env, Path(tmpdir) / "lean.parquet")
                assert rep["ticks"] == counts[fmt], (rep["ticks"], counts[fmt])
                replay_rate = rep["ticks_per_s"]
                t0 = time.perf_counter()
                res = train(Path(tmpdir) / "lean.parquet", Path(tmpdir) / "models",
                            settings.symbols)
                pooled = res["walk_forward"]["pooled"]
                trained = {
                    "train_seconds": round(time.perf_counter() - t0, 2),
                    "train_rows": res["rows"],
                    "train_pooled_logloss": round(pooled["model"]["logloss"], 4),
                    "train_best_baseline_logloss": round(
                        pooled[pooled["best_baseline"]]["logloss"], 4),
                    "train_pooled_auc": None if pooled["model"]["auc"] is None
                    else round(pooled["model"]["auc"], 4),
                    "train_promoted": res["promoted"],
                }
    floor = _producer_floor(bootstrap, max(counts.values()))
    return {
        "history_parse_ticks_per_s": parse,
        "history_load_ticks_per_s": load,
        "history_ticks": counts,
        "history_replay_ticks_per_s": replay_rate,
        **trained,
        "history_producer_floor_msgs_per_s": floor,
        "history_load_vs_floor": {f: round(v / floor, 3) for f, v in load.items()},
    }


def _producer_floor(bootstrap: str, n: int) -> int:
    """The loader's sender alone: ``n`` pre-encoded RawTick records, every delivery
    counted, flushed."""
    settings = _settings(bootstrap)
    ensure_topics(settings)
    producer = RecordProducer(settings)
    topic = settings.topic("ticks.history")
    value = producer.codec.encode(RawTick(broker="OANDA", symbol="EURUSD", bid=1.1, ask=1.1002,
                                          time_msc=1_400_000_000_000,
                                          recv_time_us=1_400_000_000_000_000,
                                          source="HISTORY"), topic)
    delivered = [0]

    def counted(err: Any, msg: Any) -> None:
        delivered[0] += err is None

    t0 = time.perf_counter()
    producer.acquire_producer_id(topic)
    send_many = producer.raw_batch_sender(topic, counted)
    for start in range(0, n, 65_536):
        rows = min(65_536, n - start)
        send_many([b"EURUSD"] * rows, [value] * rows,
                  list(range(1_400_000_000_000 + start, 1_400_000_000_000 + start + rows)))
    assert producer.flush(120) == 0 and delivered[0] == n
    return round(n / (time.perf_counter() - t0))


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.history_load", description=__doc__)
    ap.add_argument("--bootstrap")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from devstack.broker import LocalBroker
    from stages import native

    native.install()  # the stages as users run them: compiled when fresh

    broker = None if args.bootstrap else LocalBroker().start()
    bootstrap = args.bootstrap or (broker.bootstrap if broker is not None else "")
    try:
        print(json.dumps(measure(bootstrap, args.quick), sort_keys=True))
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
