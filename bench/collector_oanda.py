"""OANDA collector throughput: stand-in stream → OandaCollector → RecordProducer → broker.

The stand-in server (tests/fixtures/standins/oanda.py) runs on its own event loop in a thread and
writes ``n_ticks`` pre-rendered PRICE lines as fast as the socket takes them; the collector
runs on the main loop into a real broker under a unique topic prefix. The clock runs from
``collector.run()`` until every tick was emitted and ``sink.flush()`` returned (all
delivered). ``oanda_parse_only_ticks_per_s`` is :meth:`PriceParser.parse` alone on the same
lines. Run ``python -m bench.collector_oanda [--bootstrap HOST:PORT] [--ticks N]`` (without
``--bootstrap`` a private local broker is started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests" / "fixtures") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "fixtures"))

from standins.oanda import Hang, OandaStandIn, Raw  # noqa: E402

from connectors.oanda.collector import OandaCollector  # noqa: E402
from connectors.oanda.config import load_config  # noqa: E402
from connectors.oanda.parse import PriceParser  # noqa: E402
from connectors.producer import RecordProducer  # noqa: E402
from topology.admin import ensure_topics  # noqa: E402
from topology.settings import Settings  # noqa: E402

TOKEN = "bench-token"


class _ServerThread:
    """The stand-in on its own loop, so serving does not share the collector's loop."""

    def __init__(self, standin: OandaStandIn) -> None:
        self.standin = standin
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> OandaStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.standin.start(), self.loop).result(10)
        return self.standin

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.standin.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def parse_only(lines: list[bytes]) -> float:
    parser = PriceParser()
    parse = parser.parse
    t0 = time.perf_counter()
    for line in lines:
        parse(line, 0)
    return len(lines) / (time.perf_counter() - t0)


async def _collect(collector: OandaCollector, n_ticks: int, timeout_s: float) -> float:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    task = asyncio.create_task(collector.run())
    deadline = loop.time() + timeout_s
    try:
        while collector.health.ticks < n_ticks:
            if task.done():
                task.result()
                raise RuntimeError(f"collector ended early: {collector.health_dict()}")
            if loop.time() > deadline:
                raise RuntimeError(f"only {collector.health.ticks}/{n_ticks} ticks in "
                                   f"{timeout_s} s")
            await asyncio.sleep(0.005)
    finally:
        await collector.stop()
        await asyncio.wait_for(task, 10)
    remaining = collector.flush(60)
    elapsed = time.perf_counter() - t0
    if remaining:
        raise RuntimeError(f"{remaining} records undelivered after flush")
    return elapsed


def measure(bootstrap: str, n_ticks: int) -> dict[str, float]:
    """Ticks per second end to end into the broker, and for parsing alone."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings.from_env(
        {
            "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TICKSTREAM_TOPIC_PREFIX": prefix,
            "TICKSTREAM_PARTITIONS": "4",
        },
        env_file=None,
    )
    ensure_topics(settings)
    standin = OandaStandIn(token=TOKEN)
    payload = standin.render_prices(n_ticks)  # before the clock starts
    parse_rate = parse_only(payload.split(b"\n")[:-1])
    standin.sessions = [[Raw(payload), Hang()]]
    with _ServerThread(standin) as server:
        cfg = load_config(
            {"account_id": server.account_id, "stream_url": server.url,
             "instruments": server.instruments, "name": "oanda-bench"},
            env={"OANDA_API_TOKEN": TOKEN},
        )
        collector = OandaCollector(cfg, RecordProducer(settings))
        elapsed = asyncio.run(_collect(collector, n_ticks, timeout_s=max(60.0, n_ticks / 2000)))
    if collector.health.ticks != n_ticks or collector.health.rejected:
        raise RuntimeError(f"expected {n_ticks} ticks and no rejects: {collector.health_dict()}")
    return {
        "oanda_ticks_per_s": n_ticks / elapsed,
        "oanda_parse_only_ticks_per_s": parse_rate,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", help="broker host:port (default: start a local one)")
    ap.add_argument("--ticks", type=int, default=100_000)
    args = ap.parse_args(argv)
    if args.bootstrap:
        print(json.dumps(measure(args.bootstrap, args.ticks), indent=2))
        return 0
    from devstack.broker import LocalBroker

    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            print(json.dumps(measure(broker.bootstrap, args.ticks), indent=2))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
