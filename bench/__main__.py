"""``make bench``: every benchmark in one run on a private local broker; JSON on the last line.

``python -m bench [--quick] [--bootstrap HOST:PORT]``. Figures are only comparable within one
run (these machines are noisy): read the ratios and the latency added over the broker floor.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--bootstrap", help="use this broker instead of a private local one")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--skip-collectors", action="store_true")
    ap.add_argument("--skip-history", action="store_true", help="no history loader figures")
    ap.add_argument("--skip-storage", action="store_true",
                    help="no store figures (rows/s per backend, the sink beside the topology)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from stages import native

    native.install()  # the stages as users run them: compiled when fresh
    from bench import topology
    from devstack.broker import LocalBroker

    started = time.monotonic()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = LocalBroker().start()
        bootstrap = broker.bootstrap
    try:
        sizes: dict[str, Any] = (
            {"throughput_ticks": 12_000, "passthrough_msgs": 6_000, "aiokafka_msgs": 30_000,
             "latency_s": 3.0, "runs": 1}
            if args.quick else {}
        )
        result = topology.run(bootstrap, with_sink=not args.skip_storage, **sizes)
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
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, sort_keys=True))
    return 0


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
