"""Versioned schema migrations, recorded in the store's ``schema_migrations`` table.

:func:`migrate` applies, in order, every migration above the highest version recorded,
and records each one once its statements ran. Statements are written to be safe to run
again (``IF NOT EXISTS``; a column is added only when ``system.columns`` lacks it: 18.16
has no ``ADD COLUMN IF NOT EXISTS``), so a process killed between a migration's DDL and its
record simply redoes it. The sink and the CLI both migrate at start-up.

A migration's statements are built for the server they run on (``schema.create_table_sql``
takes the server version), so the same history works on 18.16 and current ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from storage.backend import Backend, quote
from storage.schema import COMMANDS, TABLES, Table, create_table_sql

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Backend], None]


#: Migration 1's commands table: partitioned by the day of ``created_time_us`` (wall clock
#: online, 0 offline: ``process --store``'s commands all fell on 1970-01-01, which the
#: retention job dropped at once). Migration 3 moves it to the decision day.
_COMMANDS_V1 = replace(COMMANDS, time_expr="intDiv(created_time_us, 1000000)")


def _create_tables(backend: Backend) -> None:
    version = backend.server_version()
    for table in TABLES:
        table = _COMMANDS_V1 if table is COMMANDS else table
        backend.execute(create_table_sql(table, backend.database, version))


def _add_column(backend: Backend, table: str, column: str, definition: str) -> None:
    have = backend.query(
        f"SELECT count() FROM system.columns WHERE database = {quote(backend.database)} "
        f"AND table = {quote(table)} AND name = {quote(column)}"
    ).scalar()
    if not have:
        backend.execute(f"ALTER TABLE {backend.database}.{table} ADD COLUMN {column} {definition}")


def _inserted_at(backend: Backend) -> None:
    # When the sink stored the row: ingest lag per row, and what a re-delivered batch
    # looks like (same key, later inserted_at) before the merge collapses it.
    for table in TABLES:
        _add_column(backend, table.name, "inserted_at", "DateTime('UTC') DEFAULT now()")


def _time_default(backend: Backend, table: str) -> str:
    rows = backend.query(
        f"SELECT default_expression FROM system.columns WHERE database = "
        f"{quote(backend.database)} AND table = {quote(table)} AND name = 'time'"
    ).rows
    return str(rows[0][0]) if rows else ""


def _repartition(backend: Backend, table: Table, marker: str) -> None:
    """Rebuild ``table`` with its current ``time`` expression (a partition key cannot be
    altered): create ``<name>_new``, copy every row (``time`` recomputed by its new default),
    swap the names, drop the old table. Safe to run again at any point: a table whose
    ``time`` default already holds ``marker`` is left as it is (a copy left over from an
    interrupted run is dropped)."""
    db, name = backend.database, table.name
    new, old = f"{name}_new", f"{name}_old"
    if marker in _time_default(backend, name):
        backend.execute(f"DROP TABLE IF EXISTS {db}.{old}")
        return
    backend.execute(f"DROP TABLE IF EXISTS {db}.{new}")
    backend.execute(create_table_sql(replace(table, name=new), db, backend.server_version()))
    _add_column(backend, new, "inserted_at", "DateTime('UTC') DEFAULT now()")
    cols = ", ".join((*table.column_names, "inserted_at"))
    backend.execute(f"INSERT INTO {db}.{new} ({cols}) SELECT {cols} FROM {db}.{name}")
    backend.execute(f"RENAME TABLE {db}.{name} TO {db}.{old}, {db}.{new} TO {db}.{name}")
    backend.execute(f"DROP TABLE IF EXISTS {db}.{old}")


def _commands_by_decision_day(backend: Backend) -> None:
    _repartition(backend, COMMANDS, "bar_time")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the ticks, bars_m1, features, commands and rejects tables",
              _create_tables),
    Migration(2, "inserted_at on every table", _inserted_at),
    Migration(3, "commands partitioned by the day they were decided (bar_time), not by "
                 "created_time_us", _commands_by_decision_day),
)
LATEST = MIGRATIONS[-1].version


def _ensure_bookkeeping(backend: Backend) -> None:
    if backend.database != "default":
        backend.execute(f"CREATE DATABASE IF NOT EXISTS {backend.database}")
    backend.execute(
        f"CREATE TABLE IF NOT EXISTS {backend.database}.{MIGRATIONS_TABLE} "
        "(version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )


def current_version(backend: Backend) -> int:
    """The highest migration recorded (0 for an empty store)."""
    _ensure_bookkeeping(backend)
    return int(backend.query(
        f"SELECT max(version) FROM {backend.database}.{MIGRATIONS_TABLE}"
    ).scalar() or 0)


def migrate(backend: Backend, target: int = LATEST) -> list[int]:
    """Apply the migrations above the recorded version up to ``target``; returns the
    versions applied (empty when the store was up to date)."""
    done = current_version(backend)
    applied = []
    for m in MIGRATIONS:
        if done < m.version <= target:
            m.apply(backend)
            backend.execute(
                # INSERT ... SELECT: inline VALUES hang on 18.16's native protocol
                f"INSERT INTO {backend.database}.{MIGRATIONS_TABLE} (version, name) "
                f"SELECT {m.version}, {quote(m.name)}"
            )
            log.info("store %s: migration %d applied (%s)", backend.url, m.version, m.name)
            applied.append(m.version)
    return applied
