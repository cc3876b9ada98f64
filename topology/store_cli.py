"""``tickstream sink``, ``tickstream query ohlc|quality|commands`` and
``tickstream store migrate|retention``: the storage commands, registered by
:func:`add_parsers` (``topology/cli.py`` calls it with its subparsers).

Every failure of the store is one line and exit 1, naming the address and the setting
(``TICKSTREAM_STORE_URL``); ``--store URL`` overrides the setting for one command.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from offline.backtest_defaults import DEFAULT_LATENCY_MS
from storage.backend import Backend, Result
from storage.errors import StorageError
from storage.queries import TIMEFRAMES_MS
from topology.backtest_cli import non_negative_float, non_negative_int
from topology.settings import Settings, SettingsError


def _time_ms(value: str) -> int:
    """Epoch milliseconds, or an ISO date/time (UTC unless it says otherwise)."""
    if value.isdigit():
        return int(value)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected epoch ms or an ISO date/time, e.g. 2024-01-31T12:00"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "store", None):
        from dataclasses import replace

        from storage.url import parse_store_url

        settings = replace(settings, store_url=parse_store_url(args.store))
    return settings


def _with_store(fn: Callable[[argparse.Namespace, Backend, Settings], int]
                ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from topology.sink_app import open_store

        try:
            settings = _settings(args)
            url = settings.store_url
            if (args.command == "query" and url.scheme == "chdb" and url.path is not None
                    and not url.path.exists()):
                # a query never creates a store: a mistyped path is said, not filled empty
                raise StorageError(f"no store at {url.path}: nothing is stored there yet "
                                   "(tickstream sink or process --store fills one; "
                                   "--store or TICKSTREAM_STORE_URL says where)")
            backend = open_store(settings)
            try:
                return fn(args, backend, settings)
            finally:
                backend.close()
        except (StorageError, SettingsError) as exc:
            print(f"tickstream {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


def _print(result: Result, args: argparse.Namespace) -> None:
    rows = result.dicts()
    if args.json:
        json.dump(rows, sys.stdout, default=str)
        sys.stdout.write("\n")
        return
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.names)
        writer.writerows(result.rows)
        return
    cells = [list(result.names)] + [[_cell(v) for v in r] for r in result.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(result.names))]
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def cmd_sink(args: argparse.Namespace) -> int:
    from agents.sink import SinkOutage
    from topology.sink_app import run

    try:
        run(_settings(args))
    except (StorageError, SettingsError, SinkOutage) as exc:
        print(f"tickstream sink: {exc}", file=sys.stderr)
        return 1
    return 0


@_with_store
def cmd_query(args: argparse.Namespace, backend: Backend, settings: Settings) -> int:
    from storage import queries

    if args.what == "ohlc":
        result = queries.ohlc(backend, args.symbol, args.timeframe, start_ms=args.start,
                              end_ms=args.end, limit=args.limit)
    elif args.what == "quality":
        result = queries.broker_quality(backend, bucket=args.bucket, symbols=args.symbols,
                                        start_ms=args.start, end_ms=args.end)
    else:
        from offline.outcomes import command_outcomes

        outcomes = command_outcomes(
            backend, {s: spec.pip_size for s, spec in settings.symbols.items()},
            symbol=args.symbol, start_ms=args.start, end_ms=args.end, venue=args.venue,
            latency_ms=args.latency_ms, commission=args.commission)
        result = outcomes.result
        if args.json or args.csv:
            pass
        elif outcomes.venue is None and result.rows:
            print("outcomes: unknown (no stored clean ticks after the first command to fill "
                  "at)")
        elif outcomes.venue is not None:
            print(f"outcomes: filled at {outcomes.venue}'s stored quotes, latency "
                  f"{outcomes.latency_ms} ms, commission {outcomes.commission:g} per lot "
                  f"and side ({len(outcomes.trades)} trades; as tickstream backtest fills)")
    _print(result, args)
    return 0


@_with_store
def cmd_store(args: argparse.Namespace, backend: Backend, settings: Settings) -> int:
    from storage.migrations import current_version
    from storage.retention import apply_retention

    if args.what == "migrate":  # open_store migrated already
        print(f"{settings.store_url}: schema version {current_version(backend)}")
        return 0
    dropped = apply_retention(backend, settings.store_retention, dry_run=args.dry_run)
    policy = settings.store_retention
    verb = "would drop" if args.dry_run else "dropped"
    for table, days in dropped.items():
        print(f"{table} ({policy.tier(table)}, {policy.days(table)} days): {verb} "
              f"{len(days)} day partitions{': ' + ', '.join(map(str, days)) if days else ''}")
    return 0


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    p.add_argument("--store", metavar="URL",
                   help="store URL (default TICKSTREAM_STORE_URL): chdb://PATH or "
                        "clickhouse://user:password@host:9000/db")
    if output:
        fmt = p.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true", help="a JSON array of objects")
        fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
        p.add_argument("--from", dest="start", type=_time_ms, metavar="TIME",
                       help="from (inclusive): epoch ms or ISO date/time, UTC")
        p.add_argument("--to", dest="end", type=_time_ms, metavar="TIME",
                       help="to (exclusive): epoch ms or ISO date/time, UTC")


def add_parsers(sub: Any) -> None:
    """Register ``sink``, ``query`` and ``store`` on the CLI's subparsers."""
    p = sub.add_parser("sink", help="store ticks.clean, bars.m1, features, trading.commands "
                                    "and ticks.rejected in ClickHouse (own process and group)",
                       description="Consume the output topics in the sink's own consumer "
                       "group and insert them in batches into the store (ClickHouse server or "
                       "embedded chdb), committing offsets only after each insert: "
                       "at-least-once, idempotent by row key. A store outage pauses the "
                       "consumer and retries with backoff. Runs until SIGTERM/Ctrl-C.")
    p.add_argument("--store", metavar="URL", help="store URL (default TICKSTREAM_STORE_URL)")
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser("query", help="query the store: ohlc, quality, commands",
                       description="Read the stored tables (deduplicated with FINAL): OHLC "
                       "bars, broker quality, or trading commands; a table, --json or --csv.")
    q = p.add_subparsers(dest="what", required=True, metavar="QUERY")
    o = q.add_parser("ohlc", help="OHLC bars of a symbol, rolled up from the stored 1m bars",
                     description="OHLC bars of one symbol, rolled up from the stored 1-minute "
                     "bars to the timeframe asked for, oldest first.")
    o.add_argument("symbol", type=str.upper, help="the symbol, e.g. EURUSD")
    o.add_argument("--timeframe", "-t", choices=list(TIMEFRAMES_MS), default="1m",
                   help=f"bar length: one of {', '.join(TIMEFRAMES_MS)} (default 1m)")
    o.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the last N bars (default all in the range)")
    _common(o)
    b = q.add_parser("quality", help="broker quality over time (ticks, spread, best-price "
                                     "share, latency)",
                     description="Per broker and time bucket: ticks, mean spread, the share "
                     "of ticks at the consolidated best price, and receive latency.")
    b.add_argument("--bucket", choices=list(TIMEFRAMES_MS), default="1h",
                   help=f"bucket length: one of {', '.join(TIMEFRAMES_MS)} (default 1h)")
    b.add_argument("--symbols", type=lambda v: [s.strip().upper() for s in v.split(",")],
                   default=[], metavar="SYM,SYM", help="only these symbols (default all)")
    _common(b)
    c = q.add_parser("commands", help="trading commands per day, symbol and action, with "
                                      "their outcome",
                     description="Counts of stored trading commands per day, symbol and "
                     "action (BUY, SELL, CLOSE), and what they came to: the commands filled "
                     "at one venue's stored clean quotes by the backtest's rules (entries "
                     "after the bar close plus the latency, stops and targets tick by tick, "
                     "net of the spread and commission). Columns filled, open (still open "
                     "at the last stored quote), wins, net_pips, pnl and currency; a CLOSE "
                     "row counts the trades it closed, their pips are on the entry's row.")
    c.add_argument("--symbol", type=str.upper, default=None,
                   help="only this symbol (default all)")
    c.add_argument("--venue", metavar="BROKER", default=None,
                   help="fill at this broker's quotes (default: the broker with the most "
                        "stored clean ticks)")
    c.add_argument("--latency-ms", type=non_negative_int, default=DEFAULT_LATENCY_MS,
                   metavar="MS", help="from decision to fill (default "
                                      f"{DEFAULT_LATENCY_MS})")
    c.add_argument("--commission", type=non_negative_float, default=0.0, metavar="USD",
                   help="per lot and side, in the account currency (default 0)")
    _common(c)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("store", help="the store's schema and retention",
                       description="Create or migrate the store's tables, or apply the "
                       "retention tiers.")
    s = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    m = s.add_parser("migrate", help="create or migrate the tables; print the schema version",
                     description="Apply every migration not yet recorded in "
                     "schema_migrations (idempotent) and print the schema version.")
    _common(m, output=False)
    r = s.add_parser("retention", help="drop day partitions older than each table's tier "
                                       "(TICKSTREAM_STORE_TIER / TICKSTREAM_STORE_TIERS)",
                     description="Drop the day partitions older than each table's retention "
                     "tier (TICKSTREAM_STORE_TIER / TICKSTREAM_STORE_TIERS); --dry-run lists "
                     "them only.")
    r.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    _common(r, output=False)
    p.set_defaults(func=cmd_store)
