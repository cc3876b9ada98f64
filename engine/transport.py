"""Faust's aiokafka transport: settable fetch wait, a short prefetch backoff, and a cheaper
per-message drain loop.

Faust 0.15's aiokafka driver builds the worker consumer with ``fetch_max_wait_ms=1500``
hard-coded (``faust/transport/drivers/aiokafka.py``, ``_create_worker_consumer``), and the
local broker holds every fetch for part of that wait even when data is waiting: that is
where a default Faust worker's second of latency comes from (``docs/platform-notes.md``).
The consumer-thread subclass sets the wait before the consumer starts (aiokafka reads
``_fetch_max_wait_ms`` when it builds its fetcher).

aiokafka's fetcher does not fetch from a broker for ``prefetch_backoff`` (100 ms) after a
fetch left records of *any* partition on it unconsumed; normally the application takes
them within a millisecond, which wakes the fetcher at once. Faust never takes the records
of a partition it has paused (table changelogs after recovery) or parked for a full stream
buffer, so each such leftover froze every partition on that broker for the whole 100 ms:
at a worker's start, 200 ticks waited ~100 ms (a bench run's p99 is 1% of its ticks).
:data:`PREFETCH_BACKOFF_S` caps that at 10 ms. Not 0: with no backoff the fetcher sends
the next Fetch (for the other partitions) while the records just fetched are still being
taken, and the partition that had them waits for that Fetch's whole wait before it is
fetched again (measured: p50 +2 ms at 2,000 ticks/s).

Faust's drain loop (``Consumer._drain_messages``) hands every message to the conductor
through ``Service.wait_first(callback(message), suspend_flow.wait())``: four tasks and an
``asyncio.wait`` per record, so that a callback blocked on a full stream buffer can be
abandoned when a rebalance suspends the flow. py-spy showed that wrapper as a large share of
the worker's time. :class:`_Consumer` awaits the callback directly while the flow is
active and keeps ``wait_first`` only while it is suspended. The rebalance path does not
depend on ``wait_first``: ``App._on_partitions_revoked`` suspends the flow and then stops the
fetcher, which cancels the drain task wherever it is blocked (``Fetcher.on_stop``), and a
worker shutdown stops the fetcher the same way. Everything else — read offsets, gap
tracking for acks, commit-every, the periodic yield — is Faust's loop unchanged.

The drain loop also hands the records of a topic with a registered lane (``ticks.raw``, read
by the pipeline agent alone) straight to that lane instead of the conductor
(:mod:`engine.lane`), and :meth:`_Consumer.getmany` reports each partition's end offset
to Faust's monitor once per call instead of once per record.

:meth:`_Consumer.perform_seek` replaces Faust's seek after recovery, which could lose
records or leave a restarted worker at the end of a topic (its docstring has the detail).

**The fetch wait widens while a partition with lag gets empty fetches.** The local broker
(Tansu) answers a Fetch with what it reads within the fetch wait, and its reading gets
slower with the number of record batches in a partition (one per tick at live rates): past
roughly 15,000-60,000 batches a 5 ms Fetch comes back at once and *empty* although the
response's own high watermark is ahead of the position, so the worker sat at that offset
for good (``docs/platform-notes.md``). :class:`AdaptiveFetchWait` doubles the wait of the
next Fetch after one that left a partition with lag empty, up to ``fetch_wait_max_ms``,
and shrinks it back towards ``fetch_wait_ms`` with every Fetch that brings records and
starves none. The fetcher builds each request from ``Fetcher._fetch_max_wait_ms`` after
the previous response was processed, so :meth:`_ConsumerThread.on_start` wraps
``Fetcher._proc_fetch_request`` and sets the wait there. A worker that is not stuck never
sees a starved Fetch, so its wait stays at the configured one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from aiokafka import TopicPartition
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from engine.high_watermarks import exact_end_offsets
from engine.lane import lane_topics

log = logging.getLogger(__name__)

#: Longest a fetch waits for records of another partition to be taken (see module docstring).
PREFETCH_BACKOFF_S = 0.010
#: Faust's own hard-coded wait, used when the app sets none.
FAUST_FETCH_WAIT_MS = 1500


class AdaptiveFetchWait:
    """The wait of the next Fetch, from what the previous ones brought (no I/O, no clock).

    * A Fetch that left a partition *starved* (no records although its high watermark, in
      that same response, is ahead of the position fetched from): the wait doubles, up to
      ``max_ms``.
    * A Fetch that brought records and starved nothing: the wait shrinks by a quarter,
      down to ``base_ms``. Gradually, not at once: on a long log the broker needs the
      wider wait for every Fetch, and dropping straight back would make every other Fetch
      come back empty.
    * An empty Fetch with nothing to read (idle): unchanged.
    """

    __slots__ = ("base_ms", "fetches", "max_ms", "starved_fetches", "wait_ms")

    def __init__(self, base_ms: int, max_ms: int) -> None:
        if base_ms < 1:
            raise ValueError(f"base wait must be at least 1 ms, got {base_ms}")
        self.base_ms = base_ms
        self.max_ms = max(base_ms, max_ms)
        self.wait_ms = base_ms
        #: Fetches so far, and those that left a partition with lag empty (diagnostics).
        self.fetches = 0
        self.starved_fetches = 0

    def after_fetch(self, *, got_records: bool, starved: bool) -> int:
        """Record one Fetch's outcome; returns the wait for the next Fetch."""
        self.fetches += 1
        if starved:
            self.starved_fetches += 1
            self.wait_ms = min(self.max_ms, self.wait_ms * 2)
        elif got_records:
            self.wait_ms = max(self.base_ms, self.wait_ms - self.wait_ms // 4)
        return self.wait_ms


def fetch_outcome(
    fetcher: Any, assignment: Any, request: Any, since_ms: int
) -> tuple[bool, bool]:
    """``(got_records, starved)`` of the Fetch ``request`` just processed by ``fetcher``.

    A partition counts only if the response answered it (its state's timestamp is at or
    after ``since_ms``, when the request was sent) at the offset requested: a failed
    request or a seek meanwhile says nothing about the broker's reading.
    """
    got = starved = False
    records = fetcher._records
    for topic, partitions in request.topics:
        for partition, offset, *_ in partitions:
            tp = TopicPartition(topic, partition)
            if tp in records:
                got = True
                continue
            state = assignment.state_value(tp)
            if (state is None or not state.has_valid_position or state.position != offset
                    or state.timestamp is None or state.timestamp < since_ms):
                continue
            if state.highwater is not None and state.highwater > offset:
                starved = True
    return got, starved


def install_adaptive_wait(fetcher: Any, policy: AdaptiveFetchWait) -> None:
    """Make ``fetcher`` (aiokafka's ``Fetcher``) set its next wait from ``policy``."""
    original: Callable[[Any, int, Any], Awaitable[bool]] = fetcher._proc_fetch_request

    async def proc_fetch_request(assignment: Any, node_id: int, request: Any) -> bool:
        since_ms = int(1000 * time.time())
        result = await original(assignment, node_id, request)
        try:
            got, starved = fetch_outcome(fetcher, assignment, request, since_ms)
        except Exception:  # never let the wait's bookkeeping break the fetcher
            log.exception("adaptive fetch wait: could not judge a Fetch; wait unchanged")
            return result
        fetcher._fetch_max_wait_ms = policy.after_fetch(got_records=got, starved=starved)
        return result

    fetcher._fetch_max_wait_ms = policy.wait_ms
    fetcher._proc_fetch_request = proc_fetch_request


def _assignment(app: Any) -> Any:
    """The aiokafka consumer's active assignment (``None`` when it has none or is not up)."""
    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None or not assignment.active:
        return None
    return assignment


def fetch_state(app: Any) -> dict[tuple[str, int], tuple[int | None, float | None]]:
    """``(topic, partition) -> (high watermark, wall time in s of the last Fetch response)``
    of every assigned partition, from the consumer's subscription state (plain reads).

    The idle bar timer uses it to tell a quiet partition (nothing beyond what was
    processed, and the broker answered just now) from one whose records are still waiting
    or whose broker has stopped answering.
    """
    assignment = _assignment(app)
    if assignment is None:
        return {}
    out: dict[tuple[str, int], tuple[int | None, float | None]] = {}
    for tp in list(assignment.tps):
        state = assignment.state_value(tp)
        if state is None:
            continue
        at_ms = getattr(state, "timestamp", None)
        out[(tp.topic, tp.partition)] = (state.highwater, at_ms / 1000 if at_ms else None)
    return out


def partition_offsets(app: Any) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """``(topic, partition) -> (progress, high watermark)`` of the worker's stream partitions.

    *Progress* is the partition's committed offset (the next offset to process once every
    earlier record is processed and acknowledged), not the consumer's fetch position: Faust
    fetches ahead into the stream buffer, so the fetch position reached the high watermark
    while thousands of records still waited to be processed and a worker that was far
    behind showed lag 0. Before the first commit of a partition the fetch position stands
    in. Table changelogs and partitions paused on purpose (Faust pauses stream partitions
    while it recovers tables) are left out. Plain attribute reads of the consumer's state,
    no call into the consumer thread. Empty while the consumer is not running or has no
    assignment.
    """
    faust_consumer_ = getattr(app, "_consumer", None)
    assignment = _assignment(app)
    if assignment is None:
        return {}
    committed: Any = getattr(faust_consumer_, "_committed_offset", None) or {}
    changelogs = set(app.tables.changelog_topics)
    out: dict[tuple[str, int], tuple[int | None, int | None]] = {}
    for tp in list(assignment.tps):
        if tp.topic in changelogs:
            continue
        state = assignment.state_value(tp)
        if state is None or state.paused:
            continue
        done = committed.get(tp)
        if done is None:
            done = state.position if state.has_valid_position else None
        out[(tp.topic, tp.partition)] = (done, state.highwater)
    return out


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # See the module docstring: records of a partition the worker does not take (paused
        # or parked for a full buffer) must not hold back fetches of the others.
        consumer: Any = self._consumer
        consumer._fetcher._prefetch_backoff = PREFETCH_BACKOFF_S
        app: Any = self.app
        base = int(getattr(app, "fetch_wait_ms", None) or FAUST_FETCH_WAIT_MS)
        most = int(getattr(getattr(app, "settings", None), "fetch_wait_max_ms", base))
        policy = AdaptiveFetchWait(base, most)
        install_adaptive_wait(consumer._fetcher, policy)
        app.tickstream_fetch_wait = policy  # read by the stall watchdog's stats

    async def _highwaters(self, partitions: list[Any]) -> Any:
        # Recovery's end offsets, corrected where the broker's ListOffsets reports less than
        # its Fetch high watermark (engine/high_watermarks.py).
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        return await exact_end_offsets(
            lambda: self._create_client_consumer(cast(Any, self.transport)), reported)


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek every stream partition to where its committed offset says, flow stopped.

        Faust's version (``Consumer.perform_seek``) has two holes that a restarted worker
        with a backlog falls into, both found by the restart tests:

        * Recovery (``Recovery._resume_streams``) resumes the stream partitions, awaits this
          seek, then calls ``app.flow_control.resume()`` — which clears every stream buffer
          — and only then ``consumer.resume_flow()``. Records handed over while the seek is
          in flight are cleared although the position has moved past them. With the flow
          stopped the drain loop hands nothing over during the seek; whatever it handed
          over before is at or after the committed offset, so it comes again (the pipeline
          agent skips what its state already covers).
        * aiokafka's ``seek_to_committed`` moves only partitions with a committed offset
          above 0. A partition never committed (a worker killed before its first commit)
          keeps whatever position the fetcher reached meanwhile — records fetched during
          recovery and then dropped by Faust, so a restarted worker sat at the end of the
          topic and processed nothing. Under ``auto_offset_reset="earliest"`` no commit
          means "from the beginning", so those partitions are sought there.

        The buffers are about to be cleared, and clearing a queue fires no pressure-drop
        callback: a partition Faust took out of the fetch set because its buffer was full
        (``on_buffer_full``) would stay out for good, so those are put back.
        """
        self.stop_flow()
        committed = await self.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        never = [
            tp for tp, offset in committed.items()
            if (offset is None or offset <= 0) and tp.topic not in changelogs
        ]
        if never and self.app.conf.consumer_auto_offset_reset == "earliest":
            await self._thread.seek_to_beginning(*never)
        # Faust's bookkeeping, as in Consumer.perform_seek.
        self._read_offset.update({
            faust_consumer.ensure_TP(tp): offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()
        })
        self._committed_offset.update({
            faust_consumer.ensure_TP(tp): offset if offset else None
            for tp, offset in committed.items() if offset is not None
        })
        buffered = self._buffered_partitions
        if buffered:
            self.log.info("fetching again from %d partitions held for a full buffer",
                          len(buffered))
            self._get_active_partitions().update(buffered - self._paused_partitions)
            buffered.clear()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """faust-streaming 0.15 ``Consumer.getmany`` with one change: each partition's end
        offset is handed to the monitor once per call, not once per record (a call into the
        consumer thread's state and a monitor update for every record, ~4% of a worker's
        main thread on a backlog). The offsets only feed Faust's lag statistics."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        records_it = self.scheduler.iterate(records)
        to_message = self._to_message
        if self.flow_active:
            app = self.app
            track_end = app.monitor.track_tp_end_offset
            highwater = self.highwater
            buffered = self._buffered_partitions
            tracked: set[Any] = set()
            for tp, record in records_it:
                if not self.flow_active:
                    break
                new_generation_id = app.consumer_generation_id
                if new_generation_id != generation_id:
                    self.log.dev("Generation id changed from %r to %r. Cancelling getmany.",
                                 generation_id, new_generation_id)
                    break
                if active_partitions is None or tp in active_partitions or tp in buffered:
                    if tp not in tracked:
                        tracked.add(tp)
                        track_end(tp, highwater(tp))
                    yield tp, to_message(tp, record)
        else:
            self.log.dev("getmany called while flow not active. Seek back to committed "
                         "offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        # faust-streaming 0.15 Consumer._drain_messages with one change: see the module docstring.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        # Topics handed to their agent's lane instead of the conductor (engine/lane.py).
        lanes = lane_topics(self.app)
        if lanes:
            self.log.info("records of %s go to their agent's lane", ", ".join(sorted(lanes)))
        flow = self.app.flow_control
        flow_active = flow.is_active
        wait_until_ebb = self.app.producer.buffer.wait_until_ebb
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    laned = 0
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            if laned:
                                laned = 0
                                await wait_until_ebb()
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            lane = lanes.get(tp.topic) if lanes else None
                            if lane is not None:
                                # What the conductor's handler would do, minus the Event
                                # (see engine/lane.py): nothing while the flow is suspended.
                                if not flow_active() and not suspended():
                                    await self.wait_first(flow.acquire(),
                                                          self.suspend_flow.wait())
                                if lane.full() and not suspended():
                                    await self.wait_first(lane.wait_room(),
                                                          self.suspend_flow.wait())
                                if flow_active() and not suspended():
                                    lane.put(message)
                                    laned += 1
                            elif suspended():
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)
                            set_read_offset(tp, offset)
                    if laned:
                        await wait_until_ebb()
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    """``kafka://`` transport whose worker consumer waits ``app.fetch_wait_ms`` per fetch."""

    Consumer = _Consumer

