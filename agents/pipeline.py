"""The fused per-symbol pipeline agent: ``ticks.raw`` in; clean ticks, bars, features,
commands and dead letters out.

The agent only moves data: it decodes, hands ticks to :class:`stages.pipeline.Pipeline`
(the same object ``tickstream process`` drives), publishes the outputs and checkpoints the
per-symbol state into the ``pipeline_state`` table.

The agent reads ``ticks.raw`` as consumer messages from its lane (:mod:`engine.lane`: the
consumer's drain loop hands the records over without building a Faust ``Event`` per
record). Checkpoint protocol (at-least-once output, exactly-once state). Per batch of
messages taken with :func:`engine.take.take_ready` (what is ready now, no timer):

1. run the batch through the pipeline;
2. send every output (without waiting: the next batch is processed while they fly);

and at most every ``TICKSTREAM_CHECKPOINT_INTERVAL_MS`` (default 1 s; also when the input
goes quiet):

3. **wait for the broker's acknowledgement** of every output sent since the last one;
4. write the dedupe window segments that changed, then each touched symbol's state
   snapshot, tagged with the last source offset it reflects, to the tables (their
   changelogs go through the same producer);
5. only then ack the messages processed since the last checkpoint. Faust flushes the
   producer before it commits offsets, so committed offsets never run ahead of the state.

After a crash the worker resumes at the committed offset; events whose offset is at or
below the offset that a symbol's restored state records *for the same source partition*
are skipped (their outputs are already on the broker). Offsets of different partitions are
never compared: a record whose key is not its symbol (it could sit on another partition
than the symbol's state) is dead-lettered as ``bad_key`` before it reaches the stages.

A symbol's state that cannot be restored, or any other failure of the agent, stops the
worker with one CRITICAL line and exit status 3 (:func:`fatal`): an agent restarted in
place would look healthy while it never acks the events its predecessor held.

Outputs from events after the last checkpoint are produced again, identical (the stages are
deterministic), with the same natural keys (``command_id``, ``symbol``+``bar_time``,
broker+time+prices) for downstream de-duplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson
from mode import CrashingSupervisor

from agents import AgentSpec
from agents.checkpoint import Checkpointer
from agents.context import TABLE as CONTEXT_TABLE
from agents.context import ContextSync
from agents.control import MODEL_KEY, ControlView
from agents.control import TABLE as CONTROL_TABLE
from agents.fence import PartitionFence
from agents.idle import waiting_symbols
from agents.metrics import BatchMetrics
from agents.routing import OutputRouter
from agents.wiring import Wiring
from engine.events import as_current_message
from engine.lane import MessageLane
from engine.publish import BatchPublisher
from engine.take import ack_all, take_ready
from engine.transport import fetch_state
from schemas.codec import MalformedRecord
from schemas.columnar import decode_rows
from schemas.records import RawTick
from schemas.registry import SchemaRegistryError
from schemas.rejects import rejected
from stages.pipeline import Outputs, Pipeline
from stages.score import ModelStore
from stages.types import BAD_KEY, Tick

log = logging.getLogger(__name__)
RAW_TICK = RawTick.SCHEMA
#: The RawTick fields a stage Tick is built from, in its order.
TICK_FIELDS = ("broker", "symbol", "time_msc", "bid", "ask", "recv_time_us", "seq", "last",
               "volume")
#: A RawTick's TICK_FIELDS.
RawRow = tuple[str, str, int, float, float, int, int | None, float | None, float | None]
#: Batches at least this long are decoded column-wise.
COLUMNAR_MIN_BATCH = 256

STATE_TABLE = "pipeline_state"
SEGMENT_TABLE = "dedupe_segments"
QUALITY_TABLE = "broker_quality"
SPEC = AgentSpec(
    name="pipeline",
    sources=("ticks.raw",),
    stages=("decode", "dedupe", "validate", "consolidate", "bars", "indicators + context",
            "score", "risk"),
    outputs=("ticks.clean", "bars.m1", "features", "trading.commands", "ticks.rejected"),
    tables=(STATE_TABLE, SEGMENT_TABLE, QUALITY_TABLE),
    reads=(CONTEXT_TABLE, CONTROL_TABLE),
)
QUALITY_EVERY_S = 1.0

BATCH_MAX = 2000
#: Waiting out an unreachable schema registry: the first wait and the longest (seconds).
REGISTRY_BACKOFF_S = 0.1
REGISTRY_BACKOFF_MAX_S = 5.0
#: Exit status of a worker stopped by :func:`fatal` (e.g. a symbol's stored state is
#: unreadable): its supervisor restarts it, and an operator finds one CRITICAL line why.
EXIT_FATAL = 3


def register(w: Wiring, context: ContextSync, control: ControlView,
             metrics: BatchMetrics | None = None,
             on_restore: Callable[[str], None] | None = None) -> Pipeline:
    """Wire the pipeline agent, its tables, rebalance hooks and timers to the objects that
    hold its logic (:class:`PipelineAgent`, :class:`~agents.checkpoint.Checkpointer`,
    :class:`~agents.fence.PartitionFence`, :class:`~agents.routing.OutputRouter`)."""
    app, cfg = w.app, w.config
    models = ModelStore(cfg.model_dir, reload_interval_s=5.0)
    pipeline = Pipeline(cfg.pipeline, models=models, clock_us=lambda: time.time_ns() // 1000)
    physical = {name: w.topic(name) for name in SPEC.outputs}
    # ticks.raw reaches the agent through a lane, not the conductor (engine/lane.py).
    raw_topic = w.topic("ticks.raw")
    lane = MessageLane(raw_topic, max(2, int(app.conf.stream_buffer_maxsize)),
                       on_full=lambda tp: app.consumer.on_buffer_full(tp),
                       on_drop=lambda tp: app.consumer.on_buffer_drop(tp))
    lanes = getattr(app, "tickstream_lanes", None) or {}
    lanes[raw_topic] = lane
    app.tickstream_lanes = lanes
    app.flow_control.manage_queue(lane)  # cleared when the flow resumes, as channels are
    publisher = BatchPublisher(app, dict.fromkeys(physical.values(), cfg.partitions))
    worker = PipelineAgent(
        pipeline=pipeline, models=models, codec=w.codec,
        router=OutputRouter(publisher, w.codec, physical),
        state_table=w.tables[STATE_TABLE], segment_table=w.tables[SEGMENT_TABLE],
        quality_table=w.tables[QUALITY_TABLE], context=context, control=control,
        symbols=frozenset(cfg.symbols), checkpoint_interval_s=cfg.checkpoint_interval_ms / 1000,
        bar_idle_flush_ms=cfg.bar_idle_flush_ms, fetch_state=lambda: fetch_state(app),
        metrics=metrics, on_restore=on_restore, lane=lane,
    )
    w.status.models = models
    w.status.stats = worker.stats
    # Broker-less agent tests reach the worker's objects through the app.
    app.tickstream_pipeline = pipeline
    app.tickstream_stats = worker.stats

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        await worker.on_revoked(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        await worker.on_assigned(assigned)

    # A crash of this agent stops the worker (its supervisor restarts the process) rather
    # than restarting the agent in place: Faust's default would start a fresh agent that
    # never acks the events the dead one held, a stall that looks healthy.
    @app.agent(  # type: ignore[untyped-decorator]
        w.topics["ticks.raw"], name="pipeline", supervisor_strategy=CrashingSupervisor,
    )
    async def run(stream: Any) -> None:
        try:
            await worker.run(stream)
        except Exception as exc:  # a bug: never go on half-alive (see fatal)
            log.exception("pipeline agent failed")
            fatal(f"pipeline agent failed: {type(exc).__name__}: {exc}; the worker stops")

    app.before_stop.append(worker.checkpoint_before_stop)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def log_stats() -> None:
        if worker.stats["batches"]:
            log.info("pipeline stats: %s", worker.rounded_stats())

    @app.timer(  # type: ignore[untyped-decorator]
        interval=max(0.05, cfg.checkpoint_interval_ms / 1000.0))
    async def checkpoint_when_quiet() -> None:
        await worker.checkpoint_when_quiet()

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def reload_model() -> None:
        """A newer model in the directory is used from the next bar on, without restart."""
        if models.maybe_reload(time.monotonic()):
            log.info("model now %s", models.current.version if models.current else None)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def idle_flush() -> None:
        await worker.idle_flush()

    return pipeline


class PipelineAgent:
    """The pipeline agent's logic: decode, fence, run the stages, route, checkpoint.

    Everything Faust-specific arrives as plain values: the stream (``take_ready`` reads
    it), the tables (mappings), the publisher behind the router. One batch, checkpoint or
    idle flush runs at a time (``lock``).
    """

    def __init__(
        self, *, pipeline: Pipeline, models: ModelStore, codec: Any, router: OutputRouter,
        state_table: Any, segment_table: Any, quality_table: Any, context: ContextSync,
        control: ControlView, symbols: frozenset[str], checkpoint_interval_s: float,
        bar_idle_flush_ms: int,
        fetch_state: Callable[[], Mapping[tuple[str, int], tuple[int | None, float | None]]]
        = dict,
        metrics: BatchMetrics | None = None,
        on_restore: Callable[[str], None] | None = None,
        lane: MessageLane | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.lane = lane
        self.metrics = metrics  # /metrics: fed once per batch
        self.on_restore = on_restore  # /health/: a symbol's state came back from the table
        self.models = models
        self.codec = codec
        self.router = router
        self.state_table = state_table
        self.segment_table = segment_table
        self.quality_table = quality_table
        self.context = context
        self.control = control
        self.symbols = symbols
        self.bar_idle_flush_ms = bar_idle_flush_ms
        self.fetch_state = fetch_state  # see agents/idle.py
        self._processed_to: dict[tuple[str, int], int] = {}  # partition -> next offset
        self.fence = PartitionFence()
        self.checkpointer = Checkpointer(checkpoint_interval_s, self._write_state, self._ack)
        self.lock = asyncio.Lock()
        self.stopped = asyncio.Event()  # set once the last checkpoint (SIGTERM) is written
        self.stream: Any = None
        self.out = Outputs()
        self.stats: dict[str, float] = {
            "replayed_skipped": 0, "malformed": 0, "batches": 0, "events": 0,
            "process_s": 0.0, "publish_wait_s": 0.0, "checkpoints": 0, "checkpoint_s": 0.0,
            "left_at_stop": 0, "revoked_skipped": 0, "bad_key": 0, "registry_waits": 0,
        }
        self._seen_announcement: dict[str, Any] | None = None
        self._quality_written: dict[str, float] = {}  # symbol -> monotonic time of last write
        self._last_event: dict[str, Any] = {}  # symbol -> its last event (idle bar closes)
        self._event_ms = 0  # newest clean tick's event time seen
        self._event_wall_s = 0.0  # when it was seen (monotonic)

    # ---- the stream ---------------------------------------------------------------------
    async def run(self, stream: Any) -> None:
        self.stream = stream
        # The model before the first batch: a bar decided while it still loads (importing
        # xgboost alone takes a second) would make no command where an offline run of the
        # same ticks makes one. Off the event loop, which keeps the group's heartbeats.
        await asyncio.get_running_loop().run_in_executor(None, self.models.latest)
        log.info("model status: %s", self.models.status())
        async for messages in take_ready(stream, BATCH_MAX, lane=self.lane):
            # Decoded before any stage sees the batch, outside the lock (a rebalance must
            # not wait for a registry outage); None: stopped while waiting for it.
            decoded = await self._decode_waiting(messages)
            async with self.lock:
                if decoded is None or self.stopped.is_set():
                    # After the last checkpoint nothing is processed: these messages are
                    # not acked, so the next owner takes them (processing them here would
                    # send outputs no checkpoint covers: they would come out twice).
                    self.stats["left_at_stop"] += len(messages)
                    continue
                await self.process_batch(messages, decoded)

    def decode(self, events: list[Any]) -> list[tuple[Any, ...] | MalformedRecord]:
        """Each event's tick fields (``TICK_FIELDS``), or the :class:`MalformedRecord` it
        raised. A full batch (a backlog) is read column-wise; a few records one by one (the
        columns' fixed cost would outweigh them). Either way each row is what decode_dict
        gives (schemas/columnar.py), and a record the columns decline is decoded on its own.
        Raises :class:`SchemaRegistryError` when a writer schema cannot be fetched."""
        codec = self.codec
        topic = events[0].topic if events else ""
        rows: list[tuple[Any, ...] | None] | None = None
        if len(events) >= COLUMNAR_MIN_BATCH and all(m.topic == topic for m in events):
            rows = decode_rows(codec, RAW_TICK, [m.value for m in events], TICK_FIELDS,
                               topic)
        out: list[tuple[Any, ...] | MalformedRecord] = []
        for i, msg in enumerate(events):
            row = rows[i] if rows is not None else None
            if row is None:
                try:
                    # Straight to the stage tick: the reader schema guarantees every field
                    # (defaults filled in), so no RawTick object is built per event.
                    rt = codec.decode_dict(RAW_TICK, msg.value, msg.topic)
                except MalformedRecord as exc:
                    out.append(exc)
                    continue
                row = (rt["broker"], rt["symbol"], rt["time_msc"], rt["bid"], rt["ask"],
                       rt["recv_time_us"], rt["seq"], rt["last"], rt["volume"])
            out.append(row)
        return out

    async def _decode_waiting(
        self, events: list[Any]
    ) -> list[tuple[Any, ...] | MalformedRecord] | None:
        """:meth:`decode`, waiting out a schema registry that cannot be reached (backoff
        from 0.1 s to 5 s, a warning when it starts and when it ends) instead of failing or
        dead-lettering good records; None when the worker stops meanwhile."""
        delay, down_since = REGISTRY_BACKOFF_S, None
        while True:
            t0 = time.perf_counter()
            try:
                decoded = self.decode(events)
                self.stats["process_s"] += time.perf_counter() - t0  # part of processing
            except SchemaRegistryError as exc:
                self.stats["registry_waits"] += 1
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("schema registry unreachable, holding %d records until it "
                                "answers: %s", len(events), exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), delay)
                if self.stopped.is_set():
                    return None
                delay = min(REGISTRY_BACKOFF_MAX_S, delay * 2)
                continue
            if down_since is not None:
                log.warning("schema registry back after %.1f s",
                            time.monotonic() - down_since)
            return decoded

    async def process_batch(self, events: list[Any],
                            decoded: list[tuple[Any, ...] | MalformedRecord] | None = None
                            ) -> None:
        """One batch of ``ticks.raw`` consumer messages (``events`` for short), with their
        :meth:`decode` (decoded here when not given)."""
        t_batch = time.perf_counter()
        pipeline, stats, out, codec, router = (
            self.pipeline, self.stats, self.out, self.codec, self.router)
        pipeline.kill_switch = self.control.kill_switch  # global table: survives restarts
        announced = self.control.get(MODEL_KEY)
        if announced is not None and announced is not self._seen_announcement:
            self._seen_announcement = announced
            _load_announced(self.models, announced)
        self.context.sync(pipeline.context)
        if decoded is None:
            decoded = self.decode(events)
        mine = self.fence.mine(events)
        if len(mine) != len(events):
            kept = {id(m) for m in mine}
            decoded = [d for m, d in zip(events, decoded, strict=True) if id(m) in kept]
        stats["revoked_skipped"] += len(events) - len(mine)
        events = mine
        last_event_of_symbol: dict[str, Any] = {}
        symbols, keys, admit = self.symbols, router.keys, self.fence.admit
        states, on_tick, rejects = pipeline.states, pipeline.on_tick, out.rejects
        for msg, row in zip(events, decoded, strict=True):
            if isinstance(row, MalformedRecord):
                stats["malformed"] += 1
                self._dead_letter(msg, row.reason, row.detail)
                continue
            sym = row[1]
            known = sym in symbols
            key = keys.get(sym) if known else None
            if key is None:
                key = router.key(sym) if known else sym.encode()
            if msg.key != key:
                # Keyed by something else (or not at all), the tick may sit on another
                # partition than its symbol's state: it would break the per-symbol order
                # and the replay fence. Dead-lettered, never processed.
                stats["bad_key"] += 1
                self._dead_letter(
                    msg, BAD_KEY, f"record key {msg.key!r} is not the symbol {sym!r}")
                continue
            if known:
                if sym not in states:
                    self._restore(sym, msg)
                if not admit(sym, msg.tp, msg.offset):
                    stats["replayed_skipped"] += 1
                    continue
                last_event_of_symbol[sym] = msg
            tick = Tick(*cast(RawRow, row),
                        (msg.value, msg.key, msg.topic, msg.partition, msg.offset))
            before = len(rejects)
            if tick.recv_time_us > 0:
                on_tick(tick, out)
            else:  # no receive time: the record's timestamp is the reference clock
                on_tick(tick, out, int((msg.timestamp or 0) * 1000))
            if len(rejects) > before:
                for t, rej in rejects[before:]:
                    # A tick the validator held carries its origin; one restored from a
                    # snapshot (held across a restart) does not and is encoded afresh.
                    src: tuple[bytes, bytes | None, str, int, int] = t.origin or (
                        _encode_tick(codec, t, msg.topic), msg.key, msg.topic,
                        msg.partition, -1)
                    router.dead_letter(
                        rejected(*src, rej.reason, rej.detail, "validate"), src[1])
        if out.clean:
            newest = max(c.time_msc for c in out.clean)
            if newest > self._event_ms:
                self._event_ms = newest
                self._event_wall_s = time.monotonic()
        t_publish = time.perf_counter()
        metrics = self.metrics
        if metrics is not None:
            metrics.batch(len(events), out, t_publish - t_batch)
        router.publish(out)
        out.clear()
        # Delivery is awaited at the checkpoint, not per batch: the next batch is processed
        # while these are in flight, and the state is still written only after its outputs.
        deliveries = await router.flush()
        if metrics is not None:
            metrics.published(time.perf_counter() - t_publish)
        stats["process_s"] += t_publish - t_batch
        stats["batches"] += 1
        stats["events"] += len(events)
        self._last_event.update(last_event_of_symbol)
        processed_to = self._processed_to
        for msg in events:  # in offset order within a partition: the last one wins
            processed_to[(msg.topic, msg.partition)] = msg.offset + 1
        self.checkpointer.processed(events, last_event_of_symbol, deliveries)
        if self.checkpointer.due():
            await self._checkpoint()

    def _dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        self.router.dead_letter(
            rejected(msg.value, msg.key, msg.topic, msg.partition, msg.offset, reason,
                     detail, "decode"),
            msg.key,
        )

    # ---- state --------------------------------------------------------------------------
    def _restore(self, symbol: str, msg: Any) -> None:
        raw = self.state_table.get(symbol.encode())
        if raw is None:
            return
        try:
            data = orjson.loads(raw)
            meta = data["state"]["stages"]["dedupe"]
            segments: dict[int, list[Any] | None] = {}
            for seg in meta.get("segments", {}):
                stored = self.segment_table.get(_segment_key(symbol, int(seg)))
                segments[int(seg)] = orjson.loads(stored) if stored is not None else None
            self.pipeline.restore_symbol(symbol, data["state"], segments)
            self.fence.restore(symbol, data, msg.tp)
        except Exception as exc:
            # Processing on without this symbol's state would corrupt every output of it,
            # and a restarted agent would skip the failing batch silently: stop the worker.
            self.pipeline.states.pop(symbol, None)
            fatal(
                f"cannot restore the state of {symbol} from table {STATE_TABLE} "
                f"(changelog partition {msg.partition}, first event at {msg.topic} "
                f"partition {msg.partition} offset {msg.offset}): "
                f"{type(exc).__name__}: {exc}; the worker stops. Fix or remove that state "
                "(tickstream reset) and restart",
                exc,
            )
        if self.on_restore is not None:
            self.on_restore(symbol)

    def _write_state(self, symbol: str, msg: Any) -> None:
        """One symbol's checkpoint: changed dedupe segments, then the state naming them
        (``msg``: the symbol's last message, whose partition the table writes go to)."""
        st = self.pipeline.states.get(symbol)
        if st is None:
            return
        changed, dropped = st.dedupe.take_changes()
        with as_current_message(msg):
            # Segments first, then the state naming their lengths (see Deduplicator).
            for seg, entries in changed.items():
                self.segment_table[_segment_key(symbol, seg)] = orjson.dumps(entries)
            for seg in dropped:
                self.segment_table.pop(_segment_key(symbol, seg), None)
            self.state_table[symbol.encode()] = encode_state({
                "offset": msg.offset,
                "offsets": self.fence.offsets(symbol),
                "state": self.pipeline.snapshot_symbol(symbol, segmented=True),
            })
            now = time.monotonic()
            if now - self._quality_written.get(symbol, 0.0) >= QUALITY_EVERY_S:
                self._quality_written[symbol] = now
                self.quality_table[symbol.encode()] = orjson.dumps(st.consolidator.quality())

    def _ack(self, messages: list[Any]) -> None:
        ack_all(messages, self.stream.app.consumer)

    async def _checkpoint(self) -> None:
        """See :mod:`agents.checkpoint`: outputs on the broker, then state, then acks."""
        c = self.checkpointer
        t0 = time.perf_counter()
        await c.run()
        if self.metrics is not None:
            self.metrics.checkpointed(time.perf_counter() - t0)
        self.stats["checkpoints"] = c.checkpoints
        self.stats["checkpoint_s"] = c.seconds
        self.stats["publish_wait_s"] = c.publish_wait_s

    async def checkpoint_before_stop(self) -> None:
        """SIGTERM: write the last checkpoint and ack it, so the consumer commits everything
        processed and the next owner replays nothing. (Timers have stopped by then, and
        without it Faust would wait forever for acks that only a checkpoint gives.)"""
        if self.stream is None:
            return
        async with self.lock:
            if self.checkpointer.pending:
                await self._checkpoint()
            self.stopped.set()
        log.info("pipeline stopped: %s", self.rounded_stats())

    async def checkpoint_when_quiet(self) -> None:
        """Input went quiet after a batch: checkpoint it now rather than at the next one."""
        if self.stream is None or not self.checkpointer.pending:
            return
        async with self.lock:
            if not self.stopped.is_set() and self.checkpointer.pending and (
                    self.checkpointer.due()):
                await self._checkpoint()

    # ---- rebalances ---------------------------------------------------------------------
    async def on_revoked(self, revoked: Any) -> None:
        # State of symbols we may lose is reloaded from the table when they come back;
        # unacked events of revoked partitions are processed again by their next owner.
        # Under the lock: a batch or checkpoint in progress finishes first, so nothing marks
        # a symbol dirty after the clear and later writes state for a partition that
        # another worker owns by then.
        async with self.lock:
            self.pipeline.forget_all()  # stage state and positions alike
            self.checkpointer.forget()
            self._last_event.clear()
            # Events of these partitions may sit in a batch already taken (Faust clears
            # only its channel queues): skipped until a partition comes back to us.
            self.fence.revoke(revoked)

    async def on_assigned(self, assigned: Any) -> None:
        # A partition that comes back is fetched again from its committed offset; an event
        # buffered before the revocation that is processed first is fenced by the restored
        # state's offset, and its redelivered copy by the fence the first one set.
        async with self.lock:
            self.fence.assign(assigned)

    # ---- timers -------------------------------------------------------------------------
    async def idle_flush(self) -> None:
        """Close the bars of symbols that went quiet (wall-clock driven; see docs)."""
        if self._event_ms == 0:
            return
        out = Outputs()
        # Event-time estimate: the newest tick's time plus wall time elapsed since we saw it,
        # so replayed history (event times in the past) does not close bars early.
        async with self.lock:
            if self.stopped.is_set():
                return
            now_ms = self._event_ms + int((time.monotonic() - self._event_wall_s) * 1000)
            sources = {sym: (m.topic, m.partition) for sym, m in self._last_event.items()}
            keep_open = waiting_symbols(sources, self._processed_to, self.fetch_state(),
                                        time.time())
            self.pipeline.idle_flush(now_ms, self.bar_idle_flush_ms, out, keep_open)
            if not out.bars:
                return
            # The closed bars (and their features and commands) go out now, and the bar
            # builders' new state joins the next checkpoint: a restart must not reopen them.
            touched = {bar.symbol: self._last_event[bar.symbol] for bar in out.bars
                       if bar.symbol in self._last_event}
            if self.metrics is not None:
                self.metrics.batch(0, out, 0.0)
            self.router.publish(out)
            self.checkpointer.sent(await self.router.flush(), touched)

    def rounded_stats(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.stats.items()}


def _segment_key(symbol: str, segment: int) -> bytes:
    return f"{symbol}/{segment}".encode()


def _load_announced(models: ModelStore, announced: dict[str, Any]) -> None:
    """Use an announced model from the next bar on; a bad announcement never stops us."""
    version = str(announced.get("version"))
    current = models.current
    if current is not None and current.version == version:
        return
    try:
        models.load_version(version, announced.get("path"))
        log.info("announced model %s loaded", version)
    except Exception as exc:
        log.error("announced model %s not loaded: %s", version, exc)


def _encode_tick(codec: Any, t: Tick, topic: str) -> bytes:
    """A tick released later (held by the validator) is dead-lettered in its own encoding."""
    return bytes(codec.encode(RawTick(
        broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, last=t.last, volume=t.volume,
        time_msc=t.time_msc, recv_time_us=t.recv_time_us, seq=t.seq,
    ), topic))



class StateRestoreError(RuntimeError):
    """A symbol's stored state could not be restored: the worker must not go on."""


def fatal(message: str, exc: BaseException | None = None) -> None:
    """Log one CRITICAL line and end the process with :data:`EXIT_FATAL`.

    Used where going on would silently corrupt outputs. The process ends at once, as a
    SIGKILL would (the checkpoint protocol makes that safe: what was not checkpointed is
    processed again by the next owner); a graceful stop would write checkpoints of a
    worker known to be broken.
    """
    log.critical("%s", message)
    if exc is not None:
        log.debug("restore failure", exc_info=exc)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_FATAL)


def encode_state(state: dict[str, Any]) -> bytes:
    """A state record as JSON, refusing NaN and infinities (``orjson`` writes them as
    ``null``, which a restore cannot read back as the float it was): a snapshot must
    round-trip exactly what it holds, or fail loudly where it is written."""
    return json.dumps(state, allow_nan=False, separators=(",", ":")).encode()
