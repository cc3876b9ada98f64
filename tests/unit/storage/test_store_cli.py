"""``tickstream query|store|sink`` on the embedded store, and their one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import storage_checks

from devstack.broker import free_port
from storage.backend import open_backend
from storage.migrations import LATEST, migrate
from storage.url import parse_store_url
from topology.store_cli import add_parsers


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tickstream")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # no .env of the repo
    url = f"chdb://{tmp_path / 'store'}"
    backend = open_backend(parse_store_url(url))
    try:
        migrate(backend)
        storage_checks.insert(backend, {"bars.m1": [storage_checks.bar(i) for i in range(30)],
                                        "trading.commands": [storage_checks.command(1)]})
    finally:
        backend.close()
    return url


def test_query_ohlc_json_and_csv(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["query", "ohlc", "eurusd", "-t", "15m", "--json", "--store", store]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["minutes"] for r in rows] == [15, 15]
    assert rows[0]["bucket"] == storage_checks.T0
    assert cli(["query", "ohlc", "EURUSD", "-t", "5m", "--csv", "--store", store,
                "--from", "2023-11-14T00:10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "bucket,open,high,low,close,tick_count,minutes" and len(lines) == 5


def test_query_commands_and_quality(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["query", "commands", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "2023-11-14" in out and "BUY" in out
    assert out.startswith("outcomes: unknown (no stored clean ticks")  # no ticks stored
    assert cli(["query", "quality", "--json", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_store_migrate_and_retention(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["store", "migrate", "--store", store]) == 0
    assert f"schema version {LATEST}" in capsys.readouterr().out
    assert cli(["store", "retention", "--dry-run", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "bars_m1 (free, 7 days): would drop 1 day partitions: 20231114" in out


def test_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "no" / "such-store"
    assert cli(["query", "commands", "--store", f"chdb://{typo}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no store at {typo}" in err
    assert not typo.parent.exists()  # a query never creates a store
    assert cli(["query", "commands", "--store", "clickhouse://u:hunter2@h:x/db"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hunter2" not in err and "TICKSTREAM_STORE_URL" in err
    port = free_port()
    monkeypatch.setenv("TICKSTREAM_STORE_URL", f"clickhouse://default@127.0.0.1:{port}/db")
    assert cli(["store", "migrate"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"127.0.0.1:{port} is not answering" in err and "TICKSTREAM_STORE_URL" in err
