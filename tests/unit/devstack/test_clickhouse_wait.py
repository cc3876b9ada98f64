"""devstack/clickhouse.py: waiting for a server that is not up yet is quiet, and its failure
is one error naming the last cause."""

from __future__ import annotations

import logging

import pytest

from devstack.broker import free_port
from devstack.clickhouse import ClickHouseError, ClickHouseServer


def test_refused_connections_while_waiting_log_nothing_and_the_error_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    server = ClickHouseServer()
    server.port = free_port()  # nothing listens there
    driver = logging.getLogger("clickhouse_driver.connection")
    level = driver.level
    with caplog.at_level(logging.DEBUG), pytest.raises(ClickHouseError) as info:
        server.wait_ready(0.3)
    assert "not ready in 0.3s" in str(info.value) and "Connection refused" in str(info.value)
    assert [r for r in caplog.records if r.name.startswith("clickhouse_driver")] == []
    assert driver.level == level  # the driver's own level is given back
