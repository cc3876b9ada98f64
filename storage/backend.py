"""The small interface both stores implement, and :func:`open_backend` to get one.

Columns travel as a mapping of column name -> numpy array (all of one length), built by
:mod:`storage.rows`: ``float64``/``int64``/``int32`` arrays for numbers (NaN stands for NULL
in a ``Nullable(Float64)`` column), object arrays of ``str``/``bytes``/``None`` otherwise.
Each backend turns that into its own columnar payload (native blocks with numpy for the
server, an Arrow stream for chdb) without going through rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from storage.schema import ServerVersion, Table
from storage.url import StoreURL

Columns = Mapping[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class Result:
    """Rows of a query, with their column names."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.names, r, strict=True)) for r in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0]


class Backend(Protocol):
    """A ClickHouse to write to and read from; errors are :class:`~storage.errors.StorageError`
    (:class:`~storage.errors.StoreUnavailable` when it did not answer)."""

    url: StoreURL

    @property
    def database(self) -> str:
        """The database every table lives in (qualify names with it)."""
        ...

    def execute(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT)."""
        ...

    def insert(self, table: Table, columns: Columns) -> int:
        """Insert one columnar batch into ``table``; returns the rows written."""
        ...

    def query(self, sql: str) -> Result:
        """Run a SELECT and return all its rows."""
        ...

    def server_version(self) -> ServerVersion:
        """The engine's version, e.g. ``(18, 16, 1)``."""
        ...

    def close(self) -> None: ...


def parse_version(text: str) -> ServerVersion:
    return tuple(int(p) for p in text.strip().strip('"').split(".") if p.isdigit())


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_backend(url: StoreURL, *, connect_timeout_s: float = 5.0) -> Backend:
    """The backend for ``url``; connects lazily (the first call reaches the store)."""
    if url.scheme == "chdb":
        from storage.embedded import EmbeddedBackend

        return EmbeddedBackend(url)
    from storage.server import ServerBackend

    return ServerBackend(url, connect_timeout_s=connect_timeout_s)
