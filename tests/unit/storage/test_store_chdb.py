"""The storage checks on the embedded engine (chdb): migrations, round trip, idempotency,
retention and queries (tests/fixtures/storage_checks.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import storage_checks

from storage.backend import Backend, open_backend
from storage.url import parse_store_url


@pytest.fixture
def chdb_backend(tmp_path: Path) -> Iterator[Backend]:
    backend = open_backend(parse_store_url(f"chdb://{tmp_path / 'store'}"))
    try:
        yield backend
    finally:
        backend.close()  # one chdb path per process at a time: free it for the next test


@pytest.mark.parametrize("check", storage_checks.ALL_CHECKS, ids=lambda c: c.__name__)
def test_chdb(chdb_backend: Backend, check: Callable[[Backend], None]) -> None:
    check(chdb_backend)


def test_modern_ddl_on_chdb(chdb_backend: Backend) -> None:
    from storage.migrations import migrate

    migrate(chdb_backend)
    types = dict(chdb_backend.query(
        "SELECT name, type FROM system.columns WHERE database = 'default' AND table = 'ticks'"
    ).rows)
    assert types["broker"] == "LowCardinality(String)"
    assert types["time"] == "DateTime('UTC')"


def test_reopened_store_keeps_its_rows(tmp_path: Path) -> None:
    url = parse_store_url(f"chdb://{tmp_path / 'store'}")
    backend = open_backend(url)
    storage_checks.check_round_trip(backend)
    backend.close()
    again = open_backend(url)
    try:
        assert storage_checks.counts(again) == {t: 30 for t in storage_checks.counts(again)}
    finally:
        again.close()
