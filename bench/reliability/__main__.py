"""``python -m bench.reliability [--quick] [--only SCENARIO ...] [--json]``.

Runs the fault scenarios (steady, kills, stall, restart, badinput, soak) against real
QuantConnect Lean ticks from ``../shared/data/lean`` on a private local broker, writes the
figures to ``docs/reliability.md`` (a full run; ``--doc PATH`` to choose, ``--no-doc`` to
skip) and prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.reliability import data, report, scenarios

SOAK_S = 300.0
SCENARIOS = ("steady", "kills", "stall", "restart", "badinput", "soak")


def train(root: Path, workdir: Path) -> Path:
    """A small model from another Lean day, so the replays produce commands."""
    from stages.pipeline import Outputs, Pipeline, PipelineConfig
    from stages.train import train_model
    from topology.settings import Settings

    settings = Settings.from_env({}, env_file=None)
    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    out = Outputs()
    rows = []
    for t in data.historical(data.real_slice(root, 60_000, day_index=3)):
        pipeline.on_tick(t, out)
        rows += [f for f in out.features if f.symbol == "EURUSD"]
        out.clear()
    models = workdir / "models"
    train_model([r.to_dict() for r in rows], [r.close for r in rows], 3, models, "v1",
                (rows[0].bar_time, rows[-1].bar_time))
    return models


def plan(quick: bool, soak_s: float | None) -> dict[str, dict[str, Any]]:
    if quick:
        return {
            "steady": {"rates": [10.0, 2000.0], "seconds": 6.0},
            "kills": {"n_kills": 2, "rate": 200.0, "gap_s": (2.0, 4.0)},
            "stall": {"stall_s": 6.0},
            "restart": {"observe_s": 15.0},
            "badinput": {"n": 3000, "rate": 300.0, "per_kind": 2},
            "soak": {"seconds": soak_s or 30.0, "sample_s": 3.0},
        }
    return {
        "steady": {"rates": [10.0, 50.0, 120.0, 2000.0], "seconds": 15.0},
        "kills": {"n_kills": 5, "rate": 200.0, "gap_s": (3.0, 8.0)},
        "stall": {"stall_s": 30.0},
        "restart": {"observe_s": 30.0},
        "badinput": {"n": 6000, "rate": 300.0, "per_kind": 2},
        # 10 minutes (--soak-s 600) do not fit the 15-minute budget on 2 shared cores
        "soak": {"seconds": soak_s or SOAK_S, "sample_s": 10.0},
    }


def run(only: list[str], quick: bool, *, seed: int = 7, soak_s: float | None = None,
        root: Path = data.DEFAULT_ROOT, workdir: Path | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the chosen scenarios; a scenario that raises is reported with its error."""
    from devstack.broker import LocalBroker

    if not root.is_dir():
        raise FileNotFoundError(f"real data folder {root} is absent")
    def stderr(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    say = log or stderr
    started = time.monotonic()
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="reliability-")
        workdir = Path(own_tmp.name)
    result: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "quick": quick,
        "seed": seed, "cpus": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2), "scenarios": {}}
    broker = LocalBroker(log_path=workdir / "tansu.log").start()
    try:
        model = train(root, workdir)
        ctx = scenarios.Context(root, workdir, broker, model, quick, seed, soak_s or 0.0, say)
        sizes = plan(quick, soak_s)
        funcs: dict[str, Callable[..., dict[str, Any]]] = {
            "steady": scenarios.steady, "kills": scenarios.kills, "stall": scenarios.stall,
            "restart": scenarios.restart, "badinput": scenarios.bad_inputs,
            "soak": scenarios.soak}
        for name in SCENARIOS:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            say(f"== {name}")
            try:
                res = funcs[name](ctx, **sizes[name])
            except Exception as exc:
                logging.exception("scenario %s failed", name)
                res = {"error": repr(exc)[:2000]}
            res["scenario_seconds"] = round(time.monotonic() - t0, 1)
            res["load_average_1min_after"] = round(os.getloadavg()[0], 2)
            result["scenarios"][name] = res
    finally:
        broker.stop()
        if own_tmp is not None:
            own_tmp.cleanup()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short variant of every scenario")
    ap.add_argument("--only", nargs="+", choices=SCENARIOS, default=[], metavar="SCENARIO",
                    help=f"run only these ({', '.join(SCENARIOS)})")
    ap.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    ap.add_argument("--soak-s", type=float,
                    help=f"soak duration (default {SOAK_S:.0f}; --quick 30)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=data.DEFAULT_ROOT, help="the lean/ folder")
    ap.add_argument("--doc", type=Path, help="write the report here (default "
                    "docs/reliability.md for a full run of every scenario)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.data.is_dir():
        print(f"python -m bench.reliability: real data folder {args.data} is absent: pass "
              "--data PATH (the lean/ folder of ../shared/data)", file=sys.stderr)
        return 2
    try:
        result = run(args.only, args.quick, seed=args.seed, soak_s=args.soak_s, root=args.data)
    except KeyboardInterrupt:  # run() stops what it started on the way out
        print("python -m bench.reliability: interrupted; nothing written", file=sys.stderr)
        return 130
    saved = Path(__file__).resolve().parents[2] / "var" / "reliability-last.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, sort_keys=True, default=str, indent=1))
    doc = args.doc
    if doc is None and not args.no_doc and not args.quick and not args.only:
        doc = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
    command = "python -m bench.reliability " + " ".join(sys.argv[1:] if argv is None else argv)
    if doc is not None and not args.no_doc:
        doc.write_text(report.render(result, command.strip()))
        print(f"wrote {doc}", file=sys.stderr)
    if not args.json:
        print(report.summary_lines(result), file=sys.stderr)
    print(json.dumps(report.compact(result), sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
