"""``make bench``: every benchmark in one run on a private local broker; JSON on the last line.

``python -m bench [--input lean|simulated|FILE] [--ticks N] [--runs R] [--quick]
[--bootstrap HOST:PORT]``. By default the input is the real two-broker Lean days in
``../shared/data/lean`` (400,000 ticks merged by time, from the moment both brokers quote
both pairs), and the Quix Streams peer
in ``../shared/peer`` runs on the same ticks after the topology figures. Figures are only
comparable within one run (these machines are noisy): read the ratios, the spread over the
repeated runs and the latency added over the broker floor. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("python -m bench: interrupted; the broker and workers it started are stopped",
              file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--bootstrap", help="use this broker instead of a private local one")
    ap.add_argument("--input", default="lean", metavar="lean|simulated|FILE",
                    help="the ticks: the Lean days of ../shared/data/lean (default), the "
                         "simulator, or any canonical tick CSV")
    ap.add_argument("--ticks", type=positive, metavar="N",
                    help="the first N ticks of the input (default 400000; --quick 12000)")
    ap.add_argument("--runs", type=positive, metavar="R",
                    help="repeated one-worker throughput runs (default 3; --quick 1)")
    ap.add_argument("--workers", type=positive, default=2, metavar="W",
                    help="also run the input through W worker processes of one group "
                         "(default 2; 1 skips it)")
    ap.add_argument("--skip-peer", action="store_true",
                    help="do not run the Quix Streams peer on the same ticks")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--skip-collectors", action="store_true")
    ap.add_argument("--skip-history", action="store_true", help="no history loader figures")
    ap.add_argument("--skip-storage", action="store_true",
                    help="no store figures (rows/s per backend, the sink beside the topology)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from stages import native

    native.install()  # the stages as users run them: compiled when fresh
    import tempfile
    from pathlib import Path

    from bench import topology
    from bench.inputs import InputError, load
    from devstack.broker import LocalBroker

    if not args.skip_storage:  # needed near the end: say so before minutes of work
        from devstack.clickhouse import ClickHouseError, server_binary

        try:
            server_binary()
        except ClickHouseError as exc:
            print(f"python -m bench: {exc} (or pass --skip-storage)", file=sys.stderr)
            return 1
    started = time.monotonic()
    work = tempfile.TemporaryDirectory(prefix="tickstream-bench-input-")
    n = args.ticks or (12_000 if args.quick else 400_000)
    try:
        inp = load(args.input, n, Path(work.name))
    except InputError as exc:
        print(f"python -m bench: --input: {exc}", file=sys.stderr)
        work.cleanup()
        return 2
    print(f"bench: input: {inp.description}", file=sys.stderr, flush=True)
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is not None:
        from bench.kafka_tools import bench_env
        from topology.preflight import PreflightError, require_broker
        from topology.settings import Settings

        try:
            require_broker(Settings.from_env(bench_env(bootstrap, work.name), env_file=None))
        except PreflightError as exc:
            print(f"python -m bench: --bootstrap: {exc}", file=sys.stderr)
            work.cleanup()
            return 1
    if bootstrap is None:
        broker = LocalBroker().start()
        bootstrap = broker.bootstrap
    try:
        sizes: dict[str, Any] = (
            {"passthrough_msgs": 6_000, "aiokafka_msgs": 30_000, "latency_s": 3.0,
             "runs": 1, "latency_runs": 1}
            if args.quick else {}
        )
        if args.runs:
            sizes["runs"] = args.runs
        result = topology.run(bootstrap, inp, with_sink=not args.skip_storage,
                              scale_workers=args.workers, **sizes)
        if not args.skip_peer:
            result.update(peer(inp.csv, len(inp.ticks), result))
        if not args.skip_collectors:
            result["collectors_ticks_per_s"] = collectors(bootstrap, quick=args.quick)
        if not args.skip_history:
            from bench import history_load

            result.update(history_load.measure(bootstrap, quick=args.quick))
        if not args.skip_storage:
            from bench import storage

            result.update(storage.measure_all(bootstrap, rows=50_000 if args.quick
                                              else 500_000))
    finally:
        if broker is not None:
            broker.stop()
        work.cleanup()
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, sort_keys=True))
    return 0


def peer(csv: Any, n: int, result: dict[str, Any]) -> dict[str, Any]:
    """The Quix Streams peer on the same ticks: its figures and the ratios to ours."""
    from bench.peer import PeerUnavailable, measure

    print(f"bench: the Quix Streams peer on the same {n} ticks", file=sys.stderr, flush=True)
    try:
        got = measure(csv, n)
    except PeerUnavailable as exc:
        print(f"bench: peer not measured: {exc}; going on without its figures",
              file=sys.stderr, flush=True)
        return {}
    tps = float(got["ticks_per_s"])
    spread = result["topology_ticks_per_s_spread"]
    return {
        "peer_quix_ticks_per_s": round(tps),
        "peer_quix_passthrough_msgs_per_s": round(float(got["passthrough_msgs_per_s"])),
        "peer_quix_version": got.get("version"),
        "peer_quix_counts": got.get("counts"),
        # At the slowest of our repeated runs (the figure the target is set on), and median.
        "ratio_vs_quix_peer": round(spread["min"] / tps, 2),
        "ratio_vs_quix_peer_median": round(spread["median"] / tps, 2),
    }


def collectors(bootstrap: str, quick: bool) -> dict[str, float]:
    """Each collector into the broker against its stand-in (see ``bench/collector_*.py``)."""
    import importlib

    n = 20_000 if quick else 100_000
    out: dict[str, float] = {}
    for name in ("collector_oanda", "collector_mt5", "collector_simulator"):
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ImportError as exc:
            out[name] = float("nan")
            print(f"bench.{name} unavailable: {exc}", file=sys.stderr)
            continue
        for key, value in mod.measure(bootstrap, n).items():
            out[key] = round(value)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
