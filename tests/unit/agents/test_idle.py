"""The idle bar timer closes a symbol's bar only when its partition is known to be quiet."""

from __future__ import annotations

from agents.idle import FRESH_FETCH_S, waiting_symbols

P0, P1 = ("raw", 0), ("raw", 1)
NOW = 1_000.0


def test_a_partition_with_nothing_waiting_and_a_fresh_fetch_is_quiet() -> None:
    assert waiting_symbols({"EURUSD": P0}, {P0: 120}, {P0: (120, NOW - 0.1)}, NOW) == set()


def test_records_beyond_what_was_processed_keep_the_bar_open() -> None:
    # the backlog after a restart: the minute's last ticks are fetched but not yet processed
    assert waiting_symbols({"EURUSD": P0, "NZDUSD": P1}, {P0: 120, P1: 50},
                           {P0: (121, NOW), P1: (50, NOW)}, NOW) == {"EURUSD"}


def test_a_broker_that_stopped_answering_keeps_the_bar_open() -> None:
    # a stalled broker: its last answer says nothing waits, but that answer is old
    stale = NOW - FRESH_FETCH_S - 0.5
    assert waiting_symbols({"EURUSD": P0}, {P0: 120}, {P0: (120, stale)}, NOW) == {"EURUSD"}


def test_anything_unknown_keeps_the_bar_open() -> None:
    assert waiting_symbols({"EURUSD": P0}, {P0: 120}, {}, NOW) == {"EURUSD"}
    assert waiting_symbols({"EURUSD": P0}, {}, {P0: (120, NOW)}, NOW) == {"EURUSD"}
    assert waiting_symbols({"EURUSD": P0}, {P0: 120}, {P0: (None, NOW)}, NOW) == {"EURUSD"}
    assert waiting_symbols({"EURUSD": P0}, {P0: 120}, {P0: (120, None)}, NOW) == {"EURUSD"}
