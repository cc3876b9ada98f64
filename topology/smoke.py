"""A short end-to-end run through the local broker: the thin path, checked, in one command."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.producer import RecordProducer
from devstack.broker import LocalBroker, free_port
from devstack.kafka_io import TopicReader
from devstack.localstack import WorkerProcess
from schemas.records import RawTick
from topology.admin import ensure_topics
from topology.settings import Settings


def run_smoke(ticks: int = 200, embedded: bool = True, timeout_s: float = 60.0) -> dict[str, Any]:
    broker = LocalBroker().start() if embedded else None
    workdir = Path(tempfile.mkdtemp(prefix="tickstream-smoke-"))
    env = {
        "TICKSTREAM_APP_ID": f"smoke-{os.getpid()}",
        "TICKSTREAM_DATA_DIR": str(workdir / "worker"),
        "TICKSTREAM_WEB_PORT": str(free_port()),
        "TICKSTREAM_PARTITIONS": os.environ.get("TICKSTREAM_PARTITIONS", "4"),
    }
    if broker is not None:
        env["TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    settings = Settings.from_env({**os.environ, **env}, env_file=None)
    worker = WorkerProcess(env, workdir / "worker.log")
    started = time.monotonic()
    try:
        ensure_topics(settings)
        worker.start()
        producer = RecordProducer(settings)
        now_ms = int(time.time() * 1000)
        symbols = list(settings.symbols)[:3]
        for i in range(ticks):
            sym = symbols[i % len(symbols)]
            pip = settings.symbols[sym].pip_size
            bid = (150.0 if sym.endswith("JPY") else 1.1) + (i % 7) * pip
            producer.send("ticks.raw", sym, RawTick(
                broker="SIM", symbol=sym, bid=bid, ask=bid + 2 * pip,
                time_msc=now_ms + i, recv_time_us=time.time_ns() // 1000, source="SIMULATOR",
            ))
        producer.send_raw(settings.topic("ticks.raw"), symbols[0], b"\x00not avro")
        producer.flush()
        clean_t, rej_t = settings.topic("ticks.clean"), settings.topic("ticks.rejected")
        with TopicReader(settings, [clean_t, rej_t]) as reader:
            got = reader.read_until(
                lambda ms: sum(m.topic == clean_t for m in ms) >= ticks
                and any(m.topic == rej_t for m in ms),
                timeout_s,
            )
        clean = sum(m.topic == clean_t for m in got)
        rejected = sum(m.topic == rej_t for m in got)
        return {
            "ok": clean == ticks and rejected == 1,
            "ticks_sent": ticks,
            "malformed_sent": 1,
            "clean_received": clean,
            "rejected_received": rejected,
            "seconds": round(time.monotonic() - started, 2),
            "worker_log": str(worker.log_path),
        }
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()
