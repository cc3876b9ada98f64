"""``tickstream demo``: the command line of :mod:`topology.demo` (``make demo``).

Registered by :func:`topology.cli.build_parser` through :func:`add_parser`; also runnable on
its own as ``python -m topology.demo_cli [--duration S] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not 1.0 <= x <= 86_400.0:
        raise argparse.ArgumentTypeError(f"--duration takes seconds from 1 to 86400, got {text!r}")
    return x


def _days(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--history-days takes a whole number >= 1, got {text!r}")
    return n


def add_parser(sub: Any) -> None:
    """Add ``demo`` to the ``tickstream`` subcommands (an ``add_subparsers()`` result)."""
    from topology.demo import DEFAULT_LEAN

    p = sub.add_parser(
        "demo", help="the whole system for a while on a private local broker, then a summary",
        description="Start a private local broker, load the two-broker Lean history (or "
        "simulated history when it is absent) into ticks.history, replay and train a model "
        "(walk-forward report and PNG; the demo trades the version even when it is not "
        "promoted, labelled so), start the worker, the storage sink (embedded chdb) and the "
        "simulator collectors quoting live from several brokers, show a live view, then "
        "print a summary and stop every process it started (also on Ctrl-C or SIGTERM). "
        "State goes to --workdir (default var/demo, replaced at each run). Exit codes: 0 "
        "done, 1 a step failed, 130 interrupted.")
    p.add_argument("--duration", type=_seconds, default=120.0, metavar="SECONDS",
                   help="how long the live part runs (default 120)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout (progress and the "
                   "live view stay on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress or live view on stderr")
    p.add_argument("--history", type=Path, default=DEFAULT_LEAN, metavar="DIR",
                   help=f"Lean tick folder to load (default {DEFAULT_LEAN}; simulated history "
                   "when it is absent)")
    p.add_argument("--history-days", type=_days, metavar="N",
                   help="load only the first N days of it (default: all)")
    p.add_argument("--workdir", type=Path, default=Path("var/demo"), metavar="DIR",
                   help="where the run's state, logs, model and reports go (default var/demo)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from topology.demo import DemoError, DemoOptions, print_summary, run_demo
    from topology.demo_view import RichView

    logging.getLogger("librdkafka").setLevel(logging.WARNING)
    for name in ("topology.admin", "offline", "connectors", "devstack", "storage"):
        logging.getLogger(name).setLevel(logging.WARNING)
    view = RichView(quiet=args.quiet)
    opts = DemoOptions(duration_s=args.duration, history=args.history,
                       history_days=args.history_days, workdir=args.workdir)
    try:
        summary = run_demo(opts, view)
    except DemoError as exc:
        print(f"tickstream demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # after every process was stopped (counting the store)
        print("tickstream demo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a step's own error (broker, worker, sink, training, ...)
        print(f"tickstream demo: {type(exc).__name__}: {exc}\n(every process it started "
              f"was stopped; logs in {opts.workdir})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        print_summary(summary)
    return 130 if summary["interrupted"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m topology.demo_cli --duration 30``: the same command without the rest of
    ``tickstream``."""
    from stages import native

    native.install()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="tickstream")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
