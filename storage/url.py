"""Store URLs: ``clickhouse://user:password@host:9000/db`` and ``chdb://PATH``.

The password never appears in ``str``/``repr`` of a :class:`StoreURL`, nor in the error a
bad URL raises (the URL is not echoed back at all, only what is wrong with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from storage.errors import StorageError

SETTING = "TICKSTREAM_STORE_URL"
EXPECTED = "chdb://PATH or clickhouse://user:password@host:port/db"
DEFAULT_PORT = 9000

Scheme = Literal["chdb", "clickhouse"]


@dataclass(frozen=True, slots=True)
class StoreURL:
    scheme: Scheme
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    user: str = "default"
    password: str | None = field(default=None, repr=False)
    database: str = "default"

    @property
    def address(self) -> str:
        """Where the store is, for error messages: ``host:port`` or the chdb path."""
        return str(self.path) if self.scheme == "chdb" else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "chdb":
            return f"chdb://{self.path}"
        cred = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"clickhouse://{cred}{self.host}:{self.port}/{self.database}"


def _bad(why: str) -> StorageError:
    return StorageError(f"{SETTING}: {why}; expected {EXPECTED}")


def _identifier(name: str, what: str) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
        raise _bad(f"{what} must be letters, digits and '_'")
    return name


def parse_store_url(value: str) -> StoreURL:
    """Parse a store URL; anything malformed raises :class:`StorageError` (one line)."""
    value = value.strip()
    if value.startswith("chdb://"):
        path = value.removeprefix("chdb://")
        if not path:
            raise _bad("chdb:// needs a directory path")
        return StoreURL(scheme="chdb", path=Path(path))
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme != "clickhouse":
        raise _bad(f"unknown scheme {scheme!r}" if scheme else "no scheme")
    parts = urlsplit(value)
    if not parts.hostname:
        raise _bad("no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise _bad("the port is not a number 1..65535") from None
    if parts.query or parts.fragment:
        raise _bad("no ?query or #fragment allowed")
    database = parts.path.strip("/") or "default"
    return StoreURL(
        scheme="clickhouse",
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else None,
        database=_identifier(database, "the database name"),
    )
