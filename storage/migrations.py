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
from dataclasses import dataclass

from storage.backend import Backend, quote
from storage.schema import TABLES, create_table_sql

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Backend], None]


def _create_tables(backend: Backend) -> None:
    version = backend.server_version()
    for table in TABLES:
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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the ticks, bars_m1, features, commands and rejects tables",
              _create_tables),
    Migration(2, "inserted_at on every table", _inserted_at),
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
