"""``tickstream``: run the local broker, workers and tools.

Every command resolves :class:`~topology.settings.Settings` from ``TICKSTREAM_*`` variables
at start-up; a bad value stops the command with a message naming the variable. A command
that fails ends with one line on stderr and a documented exit code
(:mod:`topology.cli_errors`); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from topology.cli_errors import EXIT_CODES, EXIT_INTERRUPTED, report
from topology.settings import Settings, SettingsError

log = logging.getLogger("tickstream")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tickstream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _warn(command: str, text: str) -> None:
    print(f"tickstream {command}: warning: {text}", file=sys.stderr, flush=True)


def _check_tick_files(command: str, paths: Sequence[Any]) -> None:
    """Every canonical tick CSV is there and has a usable header, before anything is
    started or written (one line naming the file otherwise); an empty or header-only file
    is a warning."""
    from connectors.files import TickFileError, canonical_table

    for path in paths:
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "no such file"
            raise TickFileError(f"{path}: {what}")
        try:
            table = canonical_table(path)
        except OSError as exc:
            raise TickFileError(f"{path}: cannot read: {exc.strerror}") from None
        if table is None:
            _warn(command, f"{path}: empty file: no ticks in it")
            continue
        records = table[1]
        try:
            if next(records, None) is None:
                _warn(command, f"{path}: only a header: no ticks in it")
        finally:
            records.close()  # type: ignore[attr-defined]


#: How this run's error lines begin (``tickstream COMMAND`` once the command is known).
_PREFIX = "tickstream"


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"{_PREFIX}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_broker(args: argparse.Namespace) -> int:
    from devstack.broker import LocalBroker

    broker = LocalBroker(port=args.port).start()
    print(f"broker ready on {broker.bootstrap} (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                print("broker exited", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from topology.admin import ensure_topics, planned_topics
    from topology.preflight import require_broker

    settings = _settings()
    require_broker(settings)  # one line at once, not 30 s of client retries
    created = ensure_topics(settings)
    for p in planned_topics(settings):
        mark = "created" if p.name in created else "ok"
        print(f"{p.name:<40} partitions={p.partitions:<3} {mark}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from topology.admin import ensure_topics
    from topology.preflight import require_worker_can_start

    settings = _settings()
    require_worker_can_start(settings, args.faust_args)
    ensure_topics(settings)  # fail fast, before Faust starts, on a partition mismatch
    from faust.cli.faust import cli

    import topology.app

    topology.app.preflight_done = True  # checked just now: not again when Faust loads the app

    argv = ["-A", "topology.app", "worker", "-l", settings.log_level, *args.faust_args]
    cli.main(args=argv, prog_name="tickstream worker", standalone_mode=True)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from topology.describe import describe_mermaid, describe_text

    settings = _settings()
    if args.format in ("text", "both"):
        print(describe_text(settings))
    if args.format in ("mermaid", "both"):
        if args.format == "both":
            print()
        print(describe_mermaid(settings))
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from topology.smoke import run_smoke

    result = run_smoke(ticks=args.ticks, embedded=args.embedded)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


def _batch_gc(settings: Settings, model: bool = False) -> None:
    """The worker's garbage-collector tuning (topology/app.py) for a batch command: the
    imported libraries' heap is frozen and young collections run every
    TICKSTREAM_GC_GEN0_THRESHOLD allocations (engine/gc.py, docs/platform-notes.md).

    ``model``: the command will load a model, so its library is imported first and
    frozen with the rest (``stages.score.import_model_library``)."""
    from engine.gc import freeze_startup_heap

    if model:
        from stages.score import import_model_library

        import_model_library()

    freeze_startup_heap(settings.gc_gen0_threshold, logging.DEBUG)


def cmd_process(args: argparse.Namespace) -> int:
    from pathlib import Path

    from offline.forking import usable_cpus
    from offline.process import run_process

    settings = _settings()
    files = [Path(f) for f in args.files]
    _check_tick_files("process", files)  # before any shard is started or output written
    for e in args.events:
        if not Path(e).is_file():
            raise FileNotFoundError(2, "no such events file", e)
    _batch_gc(settings, model=args.model is not None)
    with _progress(args, "process", total=_rows_total(files)) as bar:
        result = run_process(
            files, settings,
            Path(args.model) if args.model else None, Path(args.out) if args.out else None,
            events=[Path(e) for e in args.events], jobs=args.jobs or usable_cpus(),
            store=args.store, progress=bar.update, require_model=args.model is not None,
        )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number from 1 to 256, got {text!r}")
    return n


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from offline.train import TrainError, format_summary, train

    settings = _settings()
    model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir

    def step(what: str) -> None:
        if not args.json:
            print(f"train: {what} ...", file=sys.stderr, flush=True)

    try:
        result = train(
            Path(args.features), model_dir, settings.symbols, version=args.version,
            n_folds=args.folds, embargo_min=args.embargo_min, window=args.window,
            force=args.force, progress=step)
    except TrainError as exc:
        print(f"tickstream train: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_summary(result))
    return 0 if result["promoted"] else 3


def cmd_collect(args: argparse.Namespace) -> int:
    from topology.collect import run_collector

    return run_collector(args.kind, args.config, _settings(), bridge=args.bridge)


def _history_paths(args: argparse.Namespace) -> list[Any]:
    from pathlib import Path

    return [Path(p) for p in args.paths]


def _progress(args: argparse.Namespace, what: str, total: int | None = None) -> Any:
    """A tqdm bar on stderr (none with --json or when stderr is not a terminal); with a
    ``total`` it shows the share done and the time left."""
    from tqdm import tqdm

    return tqdm(unit=" ticks", unit_scale=True, desc=what, file=sys.stderr, total=total,
                disable=True if args.json else None, dynamic_ncols=True)


def _rows_total(files: list[Any]) -> int | None:
    """Every input row of plain CSV ``files`` (None when one is compressed): the bar's end."""
    from connectors.files import data_rows

    counts = [data_rows(f) for f in files]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def _print_history_summary(result: dict[str, Any], verb: str, command: str) -> None:
    for p in result["paths"]:
        status = p["status"]
        if status == "failed":  # the detail names the path
            print(f"tickstream {command}: {p['detail']}", file=sys.stderr, flush=True)
            continue
        if status == "skipped":
            print(f"{p['path']}: skipped: {p['detail']}")
            continue
        print(f"{p['path']}: {p['ticks']:,} ticks, {p['bad_lines']:,} bad lines")
        for s in p["streams"]:
            print(f"  {s['broker']:<10} {s['symbol']:<8} {s['ticks']:>12,}  "
                  f"{s['first']} .. {s['last']}")
        for line in p["bad_examples"]:
            print(f"  bad line: {line}")
        if p["bad_lines"] > len(p["bad_examples"]):
            print(f"  ... and {p['bad_lines'] - len(p['bad_examples']):,} more bad lines")
    rate = f" ({result['ticks_per_s']:,} ticks/s)" if result.get("ticks_per_s") else ""
    print(f"{verb} {result['ticks']:,} ticks in {result['seconds']:.1f} s{rate}; "
          f"{result['bad_lines']:,} bad lines; {result.get('failed', 0)} path(s) failed"
          + (f"; {result['skipped']} skipped" if result.get("skipped") else ""))


def cmd_load(args: argparse.Namespace) -> int:
    from connectors.history.parse import HistoryError, check_options
    from offline.convert import check_inputs
    from offline.load import LoadError, load_paths
    from topology.admin import ensure_topics
    from topology.preflight import require_broker

    settings = _settings()
    try:
        check_options(args.format, broker=args.broker, symbol=args.symbol, tz=args.tz)
    except HistoryError as exc:
        print(f"tickstream load: {exc}", file=sys.stderr)
        return 2
    check_inputs(_history_paths(args))  # every path is there before anything is loaded
    require_broker(settings)  # one line, not a client's retries
    _batch_gc(settings)
    logging.getLogger("topology.admin").setLevel(logging.WARNING)  # one line, not one a topic
    created = ensure_topics(settings)  # ticks.history and the manifest, declared partitions
    if created and not args.json:
        where = ",".join(settings.kafka_bootstrap_servers)
        print(f"created {len(created)} missing topics on {where}", file=sys.stderr)
    with _progress(args, "load") as bar:
        try:
            result = load_paths(settings, args.format, _history_paths(args),
                                broker=args.broker, symbol=args.symbol, tz=args.tz,
                                topic=args.topic, force=args.force, progress=bar.update)
        except LoadError as exc:
            print(f"tickstream load: {exc}", file=sys.stderr)
            return 1
    _warn_empty("load", result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_history_summary(result, f"loaded into {result['topic']}:", "load")
    return 1 if result["failed"] else 0


def _warn_empty(command: str, result: dict[str, Any]) -> None:
    for p in result["paths"]:
        if p["status"] != "failed" and p["status"] != "skipped" and not p["ticks"]:
            bad = f" ({p['bad_lines']:,} bad lines)" if p["bad_lines"] else ""
            _warn(command, f"{p['path']}: no ticks in it{bad}")


def cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from connectors.history.parse import HistoryError, check_options
    from offline.convert import convert_paths

    try:
        check_options(args.format, broker=args.broker, symbol=args.symbol, tz=args.tz)
    except HistoryError as exc:
        print(f"tickstream convert: {exc}", file=sys.stderr)
        return 2
    to_stdout = args.output == "-"
    _batch_gc(_settings())
    with _progress(args, "convert") as bar:
        result = convert_paths(args.format, _history_paths(args),
                               None if to_stdout else Path(args.output),
                               broker=args.broker, symbol=args.symbol, tz=args.tz,
                               progress=bar.update)
    _warn_empty("convert", result)
    if args.json:  # on stderr when the CSV itself goes to stdout
        print(json.dumps(result, sort_keys=True), file=sys.stderr if to_stdout else sys.stdout)
    elif to_stdout:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            _print_history_summary(result, "wrote standard output:", "convert")
    else:
        verb = f"wrote {result['output']}:" if result["written"] else (
            f"NOTHING written to {result['output']} (a path failed):")
        _print_history_summary(result, verb, "convert")
    return 1 if result["failed"] else 0


def _iso_ms(text: str) -> int:
    """``2014-05-12``, ``2014-05-12T13:00``, ``...Z`` or with an offset → epoch ms (UTC if
    no offset is given)."""
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2014-05-12 or 2014-05-12T13:30Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from connectors.history.topic import TopicReadError
    from offline.forking import usable_cpus
    from offline.replay import ReplayError, replay

    settings = _settings()
    _check_tick_files("replay", [Path(f) for f in args.file])
    if args.topic is not None:
        from topology.preflight import require_broker

        require_broker(settings)  # one line, not the client's connection warnings first
    _batch_gc(settings)
    with _progress(args, "replay") as bar:
        try:
            result = replay(
                settings, settings, out=Path(args.out), topic=args.topic,
                files=[Path(f) for f in args.file], from_ms=args.from_ms, to_ms=args.to_ms,
                symbols=args.symbols, horizon_min=args.horizon_min, threshold=args.threshold,
                progress=bar.update, store=args.store, jobs=args.jobs or usable_cpus())
        except (ReplayError, TopicReadError) as exc:
            print(f"tickstream replay: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"replayed {result['ticks']:,} ticks in {result['seconds']:.1f} s "
          f"({result['ticks_per_s']:,} ticks/s): {result['rows']:,} labelled rows "
          f"({result['feature_set']}) to {result['output']}")
    for sym, s in result["symbols"].items():
        print(f"  {sym:<8} bars {s['bars']:>7,}  rows {s['rows']:>7,}  unlabelled "
              f"{s['unlabelled']:>5,}  up/flat/down {s['up']:,}/{s['flat']:,}/{s['down']:,}  "
              f"threshold {s['threshold']:.6g}")
    if result.get("malformed"):
        print(f"  {result['malformed']:,} records were not ticks (counted, not replayed)")
    return 0


def _history_arguments(p: argparse.ArgumentParser) -> None:
    from connectors.history.parse import FORMATS

    p.add_argument("format", choices=FORMATS, metavar="FORMAT",
                   help=f"the files' format: one of {', '.join(FORMATS)} (each format's "
                   "layout and clock: docs/history.md)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files, or folders for dukascopy (.bi5 layout) and lean")
    p.add_argument("--broker", help="broker name of the ticks (default: the vendor's)")
    p.add_argument("--symbol", help="symbol of every tick, when neither the rows nor the file "
                   "or folder name say it (never guessed: without it such a file is refused)")
    p.add_argument("--tz", metavar="ZONE",
                   help="IANA zone of the file's clock, overriding the format's (mt5: required)")
    p.add_argument("--json", action="store_true", help="print one compact JSON line")


def cmd_reset(args: argparse.Namespace) -> int:
    from topology.state_guard import ResetError, reset_kafka_state, reset_local_state

    settings = _settings()
    if args.topics and not args.yes:
        print(f"tickstream reset: --topics deletes consumer group {settings.app_id!r} and the "
              f"app's changelog topics on {','.join(settings.kafka_bootstrap_servers)}; "
              f"add --yes to confirm", file=sys.stderr)
        return 2
    try:
        removed = reset_local_state(settings)
        kafka = reset_kafka_state(settings) if args.topics else None
    except (ResetError, OSError) as exc:
        print(f"tickstream reset: {exc}", file=sys.stderr)
        return 1
    result = {"data_dir": str(settings.data_dir), "removed": removed, "kafka": kafka}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    if removed:
        for r in removed:
            print(f"removed local table state {r['path']} ({r['files']} files, "
                  f"{r['bytes']} bytes)")
    else:
        print(f"no local table state in {settings.data_dir}")
    if kafka is not None:
        group = kafka["consumer_group"]
        print(f"consumer group {group['name']}: {group['result']}")
        for t in kafka["topics_deleted"]:
            print(f"deleted topic {t}")
        for t, err in sorted(kafka["topics_failed"].items()):
            print(f"could not delete topic {t}: {err}")
        if kafka["topics_absent"]:
            print(f"{len(kafka['topics_absent'])} internal topics were not there")
    return 1 if kafka is not None and kafka["topics_failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickstream",
        description="Multi-broker forex tick topology on Faust. Settings come from "
        "TICKSTREAM_* environment variables (see README); a misspelt one is an error.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"tickstream {_version()}",
                        help="print the installed version and exit")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="log at DEBUG and print the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "broker", help="run the local Kafka-protocol broker (Tansu) on 127.0.0.1",
        description="Run the development broker (Tansu, in memory: its data are gone when it "
        "stops) on 127.0.0.1 in the foreground until Ctrl-C or SIGTERM. Production uses "
        "Apache Kafka (docker/compose.yaml).")
    p.add_argument("--port", type=int, default=9092, help="TCP port (default 9092)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "topics", help="create missing topics, verify partition counts",
        description="Create every declared topic that is missing (with its declared "
        "partition count, TICKSTREAM_PARTITIONS) and check the existing ones; prints one "
        "line per topic. Exit 1 when the broker does not answer or a count differs.")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser(
        "worker", help="create/verify topics, then run a Faust worker (as faust -A topology.app)",
        description="Check the broker answers and the web port is free, create or verify the "
        "topics, then run the Faust worker in the foreground (SIGTERM stops it cleanly). "
        "Its web server (health at /health/) listens on TICKSTREAM_WEB_PORT (default 6066): "
        "a second worker on one machine needs another port.")
    p.add_argument("faust_args", nargs=argparse.REMAINDER, metavar="FAUST_OPTION",
                   help="extra `faust worker` options, e.g. --web-bind 0.0.0.0 or "
                   "--web-port 6067")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "reset", help="delete the worker's local table state (and with --topics --yes its "
        "consumer group and changelog topics)",
        description="Delete the worker's local table state under TICKSTREAM_DATA_DIR (Faust "
        "rebuilds it from the changelogs at the next start). Stop the worker first. With "
        "--topics --yes also delete the app's consumer group (committed offsets) and its "
        "internal changelog topics on the broker.",
    )
    p.add_argument("--topics", action="store_true",
                   help="also delete the consumer group and the app's internal topics")
    p.add_argument("--yes", action="store_true", help="confirm --topics")
    p.add_argument("--json", action="store_true", help="print one compact JSON line")
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser(
        "describe", help="print the topology as text and/or a Mermaid diagram",
        description="Print the topics, tables and agents with their partition counts "
        "(as resolved from the current settings), as text and/or a Mermaid flowchart.")
    p.add_argument("--format", choices=["text", "mermaid", "both"], default="both",
                   help="text, mermaid or both (default both)")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser(
        "smoke", help="end-to-end smoke run: broker, topics, worker, ticks in, results out",
        description="Send simulated ticks through a real worker and check results come out; "
        "prints one JSON line with ok true/false (exit 0/1).")
    p.add_argument("--ticks", type=int, default=200, help="valid ticks to send (default 200)")
    p.add_argument(
        "--embedded", action="store_true",
        help="start a private local broker on a free port instead of using the configured one",
    )
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser(
        "process", help="run the stage chain offline over canonical tick CSV files (no Kafka)",
        description="Run the worker's stages (dedupe, validation, consolidation, bars, "
        "features, score, risk) over canonical tick CSVs without Kafka and print the counts "
        "as JSON. Every input is checked before anything starts; an empty or header-only "
        "file is a warning. Exit codes: 0 done, 1 unusable input, 2 bad usage.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="CSV with header broker,symbol,time_msc,bid,ask[,last,volume,seq] "
                   "(`tickstream convert` writes them)")
    p.add_argument("--model", metavar="DIR",
                   help="model directory `tickstream train` wrote; one without a usable "
                        "model is an error (default: no model, no commands)")
    p.add_argument("--out", metavar="DIR",
                   help="write clean/rejected/bars/features/commands .csv here")
    p.add_argument("--events", metavar="FILE", action="append", default=[],
                   help="calendar/news MarketEvents as JSON lines (repeatable)")
    p.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                   help="processes for the per-symbol stages; symbols are dealt out among "
                        "them and the results are the same for any N (default: one per "
                        "usable CPU)")
    p.add_argument("--store", metavar="URL", help="also write the outputs to this store's "
                   "tables (chdb://PATH or clickhouse://...), as the sink does online")
    p.add_argument("--json", action="store_true", help="print one compact JSON line")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser(
        "train", help="walk-forward evaluation on a replayed feature file, then a model",
        description="Walk-forward validation in time order (purge and embargo between fit, "
        "validation and test), per-fold accuracy, log loss, AUC and Brier score next to the "
        "base-rate, majority and previous-bar baselines with block-bootstrap intervals; "
        "isotonic calibration and the entry threshold chosen on validation folds. The model "
        "is saved as a new version the worker picks up only when it beats the best baseline "
        "(or with --force). A PNG and JSON report go to MODEL_DIR/reports/. Exit codes: 0 "
        "saved, 3 not promoted (no edge), 1 unusable input, 2 bad usage.",
    )
    p.add_argument("--features", required=True, metavar="FILE.parquet",
                   help="labelled feature matrix written by `tickstream replay`")
    p.add_argument("--model-dir", metavar="DIR",
                   help="model directory (default: TICKSTREAM_MODEL_DIR)")
    p.add_argument("--version", help="model version (default: the next free vN)")
    p.add_argument("--folds", type=int, default=4, metavar="N",
                   help="walk-forward folds (default 4)")
    p.add_argument("--window", choices=("expanding", "rolling"), default="expanding",
                   help="training window per fold (default expanding)")
    p.add_argument("--embargo-min", type=int, metavar="MIN",
                   help="gap beyond the label horizon between parts (default: one horizon)")
    p.add_argument("--force", action="store_true",
                   help="save the model even when it does not beat the best baseline")
    p.add_argument("--json", action="store_true", help="print one compact JSON line")
    p.set_defaults(func=cmd_train)

    from topology.collect import KINDS

    p = sub.add_parser(
        "collect",
        help=f"run one collector ({', '.join(KINDS)}) until SIGTERM",
        description="Run one collector in this process: records go to Kafka through the shared "
        "producer, a health report goes to collectors.health every health_interval_s seconds "
        "(config key, default 5) and once at stop. SIGTERM/SIGINT stop it after flushing. "
        "Exit codes: 0 clean stop, 1 collector failure, no broker or undelivered records, "
        "2 bad config.",
    )
    p.add_argument("kind", choices=list(KINDS), help="which collector")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="YAML configuration (examples in config/collectors/)")
    p.add_argument("--bridge", metavar="HOST:PORT",
                   help="mt5 only: the rpyc bridge to a terminal under Wine (overrides the file)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "load", help="produce vendor history files to ticks.history, each file once",
        description="Parse history files at the edge and produce their ticks to Kafka "
        "(key = symbol, record timestamp = tick time) through the collectors' producer. A "
        "file already loaded into the topic (by content fingerprint, kept on the compacted "
        "history.manifest topic) is skipped unless --force. Bad lines are counted and "
        "reported with file and line; a path without ticks is a warning. Exit codes: 0 "
        "loaded, 1 a path failed or no broker, 2 bad usage.",
    )
    _history_arguments(p)
    p.add_argument("--topic", default="ticks.history", help="logical topic (default ticks.history)")
    p.add_argument("--force", action="store_true", help="load a file even if loaded before")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser(
        "replay", help="history (a topic or CSV files) through the stages into a labelled "
        "feature matrix (Parquet)",
        description="Read a topic with a fresh consumer that commits nothing (or canonical "
        "CSV files), order each symbol's ticks by time, run the worker's stage classes and "
        "write one Parquet row per bar: the feature vector, the scale-free model features "
        "and the label (see docs/history.md). The same input gives the same bytes.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--topic", help="logical topic to read, e.g. ticks.history")
    src.add_argument("--file", action="append", default=[], metavar="CSV",
                     help="canonical tick CSV (repeatable)")
    src.add_argument("--store", metavar="URL", help="the stored feature vectors of this store "
                     "(chdb://PATH or clickhouse://...), labelled; see docs/storage.md")
    p.add_argument("--from", dest="from_ms", type=_iso_ms, metavar="ISO",
                   help="first tick time (inclusive), e.g. 2014-05-12 (UTC)")
    p.add_argument("--to", dest="to_ms", type=_iso_ms, metavar="ISO",
                   help="end (exclusive), e.g. 2014-05-14T12:00Z")
    p.add_argument("--symbols", nargs="+", metavar="SYM", help="only these symbols")
    p.add_argument("--out", required=True, metavar="FILE.parquet",
                   help="the feature matrix to write (the input of `tickstream train`)")
    p.add_argument("--horizon-min", type=int, default=5, metavar="H",
                   help="label horizon in minutes (default 5)")
    p.add_argument("--threshold", type=float, metavar="PRICE",
                   help="label move threshold in price units (default: the median spread)")
    p.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                   help="processes for the per-symbol stages when replaying ticks; symbols "
                        "are dealt out among them and the file is the same for any N "
                        "(default: one per usable CPU)")
    p.add_argument("--json", action="store_true", help="print one compact JSON line")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "convert", help="convert vendor tick files to one canonical CSV",
        description="The same readers as `load`, written to one canonical CSV (the input of "
        "`process` and `replay --file`). Every input is checked before the output is "
        "created; the output is written beside its name and renamed into place only when "
        "every path was read, so a failed run leaves no file. The symbol comes from the rows "
        "or the file name, or --symbol. Exit codes: 0 written, 1 a path failed (nothing "
        "written), 2 bad usage.")
    _history_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="canonical CSV to write; - writes it to standard output (the summary "
                   "then goes to stderr)")
    p.set_defaults(func=cmd_convert)

    from topology.tail_cli import add_parser as add_tail_parser

    add_tail_parser(sub)

    from topology.control_cli import add_parser as add_control_parser

    add_control_parser(sub)  # control kill-switch on|off, control model VERSION

    from topology.demo_cli import add_parser as add_demo_parser

    add_demo_parser(sub)

    from topology.backtest_cli import add_parser as add_backtest_parser

    add_backtest_parser(sub)

    from topology.store_cli import add_parsers as add_store_parsers

    add_store_parsers(sub)  # sink, query ohlc|quality|commands, store migrate|retention
    _everywhere(sub, "--debug", action="store_true", default=argparse.SUPPRESS,
                help="log at DEBUG and print the traceback of a failure")
    return parser


def _everywhere(sub: Any, *flags: str, **kwargs: Any) -> None:
    """Add an option to every subcommand (and their subcommands) that lacks it, so a
    global flag works after the command name too."""
    for p in set(sub.choices.values()):
        if not any(set(flags) & set(a.option_strings) for a in p._actions):
            p.add_argument(*flags, **kwargs)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _everywhere(action, *flags, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    from stages import native

    native.install()  # before any stage module is imported: compiled when fresh
    try:  # the parser imports what the commands need (xgboost, sklearn): about a second
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("tickstream: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    global _PREFIX
    _PREFIX = f"tickstream {args.command}"
    debug = bool(args.debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not debug:
        logging.getLogger("librdkafka").setLevel(logging.WARNING)
        # clickhouse-driver logs each failed connect with its traceback; the store's error
        # (StorageError) already says which address did not answer, in one line
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except SystemExit:
        raise
    except BaseException as exc:  # one line and a documented exit code, not a traceback
        return report(args.command, exc, debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
