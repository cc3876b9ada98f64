"""The context agent: calendar events and headlines into the ``context`` global table.

``events.calendar`` and ``events.news`` are keyed by currency. The agent adds each event to
a :class:`~stages.context.ContextBook` (the same class ``tickstream process`` uses) and
writes the currency's book to the ``context`` global table. Every worker replicates that
table, so the pipeline agent can join any pair's two currencies as of the bar time, whichever
worker consumed the events. :class:`ContextSync` copies changed currencies from the table
into the pipeline's own book before each batch.

An event that does not decode, or that the book refuses (unknown kind or impact), goes to
``ticks.rejected`` with its original bytes and a reason code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from agents import AgentSpec
from agents.rejects import DeadLetters
from agents.wiring import Wiring
from engine.raw_schema import RawBytes
from schemas.codec import MalformedRecord
from schemas.records import MarketEvent
from stages.context import ContextBook

log = logging.getLogger(__name__)

TABLE = "context"
SPEC = AgentSpec(
    name="context", sources=("events.calendar", "events.news"),
    stages=("decode", "as-of event book per currency"), outputs=("ticks.rejected",),
    tables=(TABLE,),
)
INVALID_EVENT = "invalid_event"


class ContextSync:
    """Keeps a pipeline's :class:`ContextBook` equal to the ``context`` table, cheaply.

    Table values are compared by identity: a currency is decoded only when its value object
    changed since the last sync (the memory store hands back the object it holds).

    Only a newer snapshot (higher ``revision``) replaces a currency. The table is global with
    every changelog partition as a standby, so the worker that writes a currency also reads
    its own earlier writes back from the changelog, a little later, and the store applies
    them: for a moment the table holds an older book than the one just written. Taking that
    echo would join bars against fewer events than were already in (found by the
    online-equals-offline test); ignoring anything not newer keeps the book monotone.
    """

    def __init__(self, table: Mapping[bytes, bytes]) -> None:
        self.table = table
        self._seen: dict[bytes, bytes] = {}
        self.updates = 0

    def sync(self, book: ContextBook) -> int:
        changed = 0
        for key, raw in list(self.table.items()):
            if self._seen.get(key) is raw:
                continue
            self._seen[key] = raw
            data = orjson.loads(raw)
            currency = key.decode()
            revision = data.get("revision")
            if revision is not None and int(revision) <= book.revision(currency):
                continue  # our own earlier write, read back from the changelog
            book.restore_currency(currency, data)
            changed += 1
        self.updates += changed
        return changed


def register(w: Wiring) -> ContextSync:
    app, codec = w.app, w.codec
    table = w.tables[TABLE]
    book = ContextBook()
    own = ContextSync(table)  # the agent's book follows the table too
    sync = ContextSync(table)  # handed to the pipeline agent for its own book
    source = app.topic(w.topic("events.calendar"), w.topic("events.news"), schema=RawBytes())
    dead_letters = w.topics["ticks.rejected"]
    dl_physical = w.topic("ticks.rejected")

    dead_letter = DeadLetters(dead_letters, dl_physical, codec, "context").send

    @app.agent(source, name="context")  # type: ignore[untyped-decorator]
    async def context(stream: Any) -> None:
        async for event in stream.events():
            try:
                ev = codec.decode(event.value, MarketEvent, event.message.topic)
            except MalformedRecord as exc:
                await dead_letter(event, exc.reason, exc.detail)
                continue
            if len(ev.currency) != 3 or not (ev.currency.isalpha() and ev.currency.isupper()):
                await dead_letter(event, INVALID_EVENT, f"currency {ev.currency!r} is not ISO 4217")
                continue
            own.sync(book)  # start from the table: another worker may have owned this key
            try:
                book.add(ev)
            except ValueError as exc:
                await dead_letter(event, INVALID_EVENT, str(exc))
                continue
            table[ev.currency.encode()] = orjson.dumps(book.snapshot_currency(ev.currency))

    return sync
