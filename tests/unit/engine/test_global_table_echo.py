"""Readers of the global tables never go back to an older value.

A worker that writes a global table (``context``, ``control_state``) reads its own earlier
writes back from the changelog a moment later, and Faust's store applies them, so the
table briefly holds an older value than the one just written. These tests replay exactly
that sequence into a plain dict standing for the table.
"""

from __future__ import annotations

import orjson

from agents.context import ContextSync
from agents.control import KILL_SWITCH_KEY, ControlView, apply
from schemas.records import ControlMessage, MarketEvent
from stages.context import ContextBook


def news(event_id: str, published_ms: int) -> MarketEvent:
    return MarketEvent(
        event_id=event_id, kind="NEWS", currency="USD", title=event_id, impact="MEDIUM",
        event_time_ms=published_ms, published_ms=published_ms, sentiment=0.5, source="test",
    )


def test_context_sync_ignores_the_echo_of_an_older_book() -> None:
    writer = ContextBook()
    table: dict[bytes, bytes] = {}
    writes = []
    for i in range(3):
        writer.add(news(f"n{i}", 1_000 * (i + 1)))
        writes.append(orjson.dumps(writer.snapshot_currency("USD")))
    reader_book = ContextBook()
    sync = ContextSync(table)
    table[b"USD"] = writes[2]  # the newest write, then the echoes of the first two
    assert sync.sync(reader_book) == 1
    assert reader_book.revision("USD") == 3
    for echo in writes[:2]:
        table[b"USD"] = bytes(echo)  # a new object, as the store applies it
        assert sync.sync(reader_book) == 0
        assert reader_book.revision("USD") == 3
    assert reader_book.features("EURUSD", 10_000)["news_count_1h"] == 3


def test_context_sync_takes_every_newer_book() -> None:
    writer = ContextBook()
    table: dict[bytes, bytes] = {}
    reader_book = ContextBook()
    sync = ContextSync(table)
    for i in range(3):
        writer.add(news(f"n{i}", 1_000 * (i + 1)))
        table[b"USD"] = orjson.dumps(writer.snapshot_currency("USD"))
        assert sync.sync(reader_book) == 1
        assert reader_book.revision("USD") == i + 1


def test_context_sync_never_takes_an_echo_that_replaced_the_newest_before_it_looked() -> None:
    # The table goes newest write -> echo of the first write before the reader syncs: the
    # reader must still join against the newest book (this worker wrote it), not climb back
    # only as the echoes come in.
    writer = ContextBook()
    table: dict[bytes, bytes] = {}
    written: dict[bytes, bytes] = {}
    writes = []
    for i in range(3):
        writer.add(news(f"n{i}", 1_000 * (i + 1)))
        writes.append(orjson.dumps(writer.snapshot_currency("USD")))
    written[b"USD"] = table[b"USD"] = writes[2]
    table[b"USD"] = bytes(writes[0])  # the first echo lands before the reader looks
    reader_book = ContextBook()
    sync = ContextSync(table, written)
    assert sync.sync(reader_book) == 1
    assert reader_book.revision("USD") == 3
    assert reader_book.features("EURUSD", 10_000)["news_count_1h"] == 3
    table[b"USD"] = bytes(writes[1])
    assert sync.sync(reader_book) == 0
    assert reader_book.features("EURUSD", 10_000)["news_count_1h"] == 3


def test_context_sync_takes_another_workers_newer_book_over_its_own_write() -> None:
    writer = ContextBook()
    table: dict[bytes, bytes] = {}
    written: dict[bytes, bytes] = {}
    writer.add(news("n0", 1_000))
    written[b"USD"] = table[b"USD"] = orjson.dumps(writer.snapshot_currency("USD"))
    reader_book = ContextBook()
    sync = ContextSync(table, written)
    assert sync.sync(reader_book) == 1
    writer.add(news("n1", 2_000))  # the currency moved to another worker, which wrote this
    table[b"USD"] = orjson.dumps(writer.snapshot_currency("USD"))
    assert sync.sync(reader_book) == 1
    assert reader_book.features("EURUSD", 10_000)["news_count_1h"] == 2


def control_value(command: str, offset: int) -> bytes:
    entry = apply(ControlMessage(command=command, reason="r", issued_by="t", time_ms=1), offset)
    assert entry is not None and entry[0] == KILL_SWITCH_KEY
    return orjson.dumps(entry[1])


def test_control_view_never_reads_a_set_switch_as_lifted_from_an_echo() -> None:
    table: dict[bytes, bytes] = {}
    view = ControlView(table)
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 4)
    assert view.kill_switch is False
    table[KILL_SWITCH_KEY] = control_value("kill_switch_on", 5)
    assert view.kill_switch is True
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 4)  # echo of the older write
    assert view.kill_switch is True
    table[KILL_SWITCH_KEY] = control_value("kill_switch_on", 5)  # echo of the newest
    assert view.kill_switch is True
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 6)  # a real lift
    assert view.kill_switch is False


def test_control_view_reads_a_set_switch_as_set_when_an_echo_replaced_it_before_it_looked() -> None:
    table: dict[bytes, bytes] = {}
    written: dict[bytes, bytes] = {}
    view = ControlView(table, written)
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 4)
    assert view.kill_switch is False
    written[KILL_SWITCH_KEY] = table[KILL_SWITCH_KEY] = control_value("kill_switch_on", 5)
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 4)  # echo, before the view looks
    assert view.kill_switch is True
    table[KILL_SWITCH_KEY] = control_value("kill_switch_off", 6)  # a lift from the changelog
    assert view.kill_switch is False
