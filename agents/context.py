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
    them: for a while the table holds an older book than the one just written. Taking that
    echo would join bars against fewer events than were already in (found by the
    online-equals-offline test); ignoring anything not newer keeps the book monotone.

    Ignoring is not enough when the reader never saw the newest write before its echoes
    replaced it (the table went newest, oldest echo, ... before a sync): the reader would
    take the oldest echo and climb back only as the echoes come in. So this worker's own
    writes are also kept in ``written`` (by the context agent, see :func:`register`), and a
    sync takes, per currency, the newest of the table's value and the one written here.
    """

    def __init__(self, table: Mapping[bytes, bytes],
                 written: Mapping[bytes, bytes] | None = None) -> None:
        self.table = table
        self.written: Mapping[bytes, bytes] = written if written is not None else {}
        self._seen: dict[tuple[int, bytes], bytes] = {}
        self.updates = 0

    def _candidates(self) -> list[tuple[bytes, bytes]]:
        changed: list[tuple[bytes, bytes]] = []
        for source, values in enumerate((self.table, self.written)):
            for key, raw in list(values.items()):
                if self._seen.get((source, key)) is raw:
                    continue
                self._seen[(source, key)] = raw
                changed.append((key, raw))
        return changed

    def sync(self, book: ContextBook) -> int:
        newest: dict[str, tuple[int, dict[str, Any]]] = {}
        for key, raw in self._candidates():
            data = orjson.loads(raw)
            currency = key.decode()
            revision = data.get("revision")
            rank = int(revision) if revision is not None else -1
            held = newest.get(currency)
            if held is None or rank > held[0]:
                newest[currency] = (rank, data)
        changed = 0
        for currency, (rank, data) in newest.items():
            if rank >= 0 and rank <= book.revision(currency):
                continue  # our own earlier write, read back from the changelog
            book.restore_currency(currency, data)
            changed += 1
        self.updates += changed
        return changed


def register(w: Wiring) -> ContextSync:
    app, codec = w.app, w.codec
    table = w.tables[TABLE]
    book = ContextBook()
    # The newest value this worker wrote per currency: readers never fall back to an echo.
    written: dict[bytes, bytes] = {}
    own = ContextSync(table, written)  # the agent's book follows the table too
    sync = ContextSync(table, written)  # handed to the pipeline agent for its own book
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
            key, raw = ev.currency.encode(), orjson.dumps(book.snapshot_currency(ev.currency))
            written[key] = raw
            table[key] = raw

    return sync
