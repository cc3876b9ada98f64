"""Shared fixtures: one local broker per test session, unique names per test, shared data.

Under ``CI=true`` nothing skips: a missing broker binary or data folder is a failure.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages import native

native.install()  # as the entry points do: the stages run compiled when the build is fresh

import procs  # noqa: E402
from clickhouse_server import clickhouse_server, clickhouse_url  # noqa: E402, F401

from devstack.broker import LocalBroker, free_port  # noqa: E402
from topology.settings import Settings  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
LEFTOVER_GRACE_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def need(condition: bool, reason: str) -> None:
    """Skip locally when something optional is missing; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: missing services or data are failures)")
    pytest.skip(reason)


def _children() -> set[int]:
    """Live (not zombie) child processes of this process."""
    return procs.children(os.getpid())


@pytest.fixture(autouse=True)
def leaves_nothing_behind() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running (session fixtures, set
    up before this one, are not counted). What a test stops gets a few seconds to end."""
    threads, children = set(threading.enumerate()), _children()
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while True:
        left = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        kids = sorted(_children() - children)
        if not (left or kids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left or kids:
        pytest.fail(f"left behind: threads {left}, child processes {kids}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = LocalBroker(log_path=log).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_env(broker: LocalBroker, unique: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a test that talks to the broker: its own topic prefix and app id."""
    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "TICKSTREAM_TOPIC_PREFIX": f"t{unique}.",
        "TICKSTREAM_APP_ID": f"app{unique}",
        "TICKSTREAM_PARTITIONS": "4",
        "TICKSTREAM_DATA_DIR": str(tmp_path / "worker"),
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_WEB_PORT": str(free_port()),  # workers of parallel runs must not clash
    }


@pytest.fixture
def kafka_settings(settings_env: dict[str, str]) -> Settings:
    return Settings.from_env(settings_env, env_file=None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    need(SHARED_DATA.is_dir(), f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA
