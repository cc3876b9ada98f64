"""The fused per-symbol pipeline agent: ``ticks.raw`` in; clean ticks, bars, features,
commands and dead letters out.

The agent only moves data: it decodes, hands ticks to :class:`stages.pipeline.Pipeline`
(the same object ``tickstream process`` drives), publishes the outputs and checkpoints the
per-symbol state into the ``pipeline_state`` table.

Checkpoint protocol (at-least-once output, exactly-once state). Per batch of events taken
with :func:`agents.take.take_ready` (what is ready now, no timer):

1. run the batch through the pipeline;
2. send every output (without waiting: the next batch is processed while they fly);

and at most every ``TICKSTREAM_CHECKPOINT_INTERVAL_MS`` (default 1 s; also when the input
goes quiet):

3. **wait for the broker's acknowledgement** of every output sent since the last one;
4. write the dedupe window segments that changed, then each touched symbol's state
   snapshot, tagged with the last source offset it reflects, to the tables (their
   changelogs go through the same producer);
5. only then ack the events processed since the last checkpoint. Faust flushes the
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
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from faust.types import TP
from mode import CrashingSupervisor

from agents import AgentSpec
from agents.context import ContextSync
from agents.control import MODEL_KEY, ControlView
from agents.publish import BatchPublisher
from agents.rejects import rejected
from agents.tables import make_table
from agents.take import ack_all, take_ready
from schemas.codec import MalformedRecord, make_codec
from schemas.records import RawTick, Record
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.score import ModelStore
from stages.types import BAD_KEY, Tick
from topology.settings import Settings
from topology.tables import (
    BROKER_QUALITY,
    CONTEXT,
    CONTROL_STATE,
    DEDUPE_SEGMENTS,
    PIPELINE_STATE,
)

log = logging.getLogger(__name__)
RAW_TICK = RawTick.SCHEMA

SPEC = AgentSpec(
    name="pipeline",
    sources=("ticks.raw",),
    stages=("decode", "dedupe", "validate", "consolidate", "bars", "indicators + context",
            "score", "risk"),
    outputs=("ticks.clean", "bars.m1", "features", "trading.commands", "ticks.rejected"),
    tables=(PIPELINE_STATE.name, DEDUPE_SEGMENTS.name, BROKER_QUALITY.name),
    reads=(CONTEXT.name, CONTROL_STATE.name),
)
QUALITY_EVERY_S = 1.0

BATCH_MAX = 2000
#: Exit status of a worker stopped by :func:`fatal` (e.g. a symbol's stored state is
#: unreadable): its supervisor restarts it, and an operator finds one CRITICAL line why.
EXIT_FATAL = 3


@contextlib.contextmanager
def _as_current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write lands on its partition.

    Faust's table stores and changelog writes take the partition from the *current event*;
    in a batch that spans partitions that would be the last event's partition. Each
    symbol's state is written with that symbol's own last event as the current event.
    """
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def register(
    app: Any, settings: Settings, topics: dict[str, Any], shared: dict[str, Any]
) -> None:
    registry = settings.schema_registry_url.get() if settings.schema_registry_url else None
    codec = make_codec(registry)
    models = ModelStore(settings.model_dir, reload_interval_s=5.0)
    pipeline = Pipeline(
        PipelineConfig.from_settings(settings), models=models,
        clock_us=lambda: time.time_ns() // 1000,
    )
    app.tickstream_pipeline = pipeline
    raw_topic = topics["ticks.raw"]
    out_topics = {
        name: (topics[name], settings.topic(name))
        for name in ("ticks.clean", "bars.m1", "features", "trading.commands", "ticks.rejected")
    }
    state_table = make_table(app, PIPELINE_STATE, settings)
    segment_table = make_table(app, DEDUPE_SEGMENTS, settings)
    quality_table = make_table(app, BROKER_QUALITY, settings)
    quality_written: dict[str, float] = {}  # symbol -> monotonic time of the last write
    context_sync: ContextSync = shared["context"]
    control: ControlView = shared["control"]
    seen_announcement: list[dict[str, Any] | None] = [None]
    # symbol -> {source topic-partition: last offset reflected in its state}. Offsets are
    # only comparable within one partition; a tick whose key is not its symbol never gets
    # this far (bad_key), so a symbol's ticks come from one partition per source topic.
    fenced: dict[str, dict[Any, int]] = {}
    # Original bytes of ticks the validator holds (pending confirmation), by object id.
    held: dict[int, tuple[bytes, bytes | None, str, int, int]] = {}
    stats: dict[str, float] = {
        "replayed_skipped": 0, "malformed": 0, "batches": 0, "events": 0,
        "process_s": 0.0, "publish_wait_s": 0.0, "checkpoints": 0, "checkpoint_s": 0.0,
        "left_at_stop": 0, "revoked_skipped": 0, "bad_key": 0,
    }
    app.tickstream_stats = stats
    app.tickstream_models = models
    clock: dict[str, Any] = {"event_ms": 0, "wall_s": 0.0}
    checkpoint_s = settings.checkpoint_interval_ms / 1000.0
    lock = asyncio.Lock()  # one batch, checkpoint or idle flush at a time
    dirty: dict[str, Any] = {}  # symbol -> its last event since the last checkpoint
    last_event: dict[str, Any] = {}  # symbol -> its last event processed (idle bar closes)
    unacked: list[Any] = []  # events processed but not yet covered by a checkpoint
    in_flight: list[Any] = []  # delivery futures of outputs sent since the last checkpoint
    ckpt: dict[str, Any] = {"at": time.monotonic(), "stream": None}
    stopped = asyncio.Event()  # set once the last checkpoint (SIGTERM) is written
    revoked_tps: set[tuple[str, int]] = set()  # taken from us, not (yet) assigned back

    def restore(symbol: str, msg: Any) -> None:
        raw = state_table.get(symbol.encode())
        if raw is None or symbol not in settings.symbols:
            return
        try:
            data = orjson.loads(raw)
            meta = data["state"]["stages"]["dedupe"]
            segments: dict[int, list[Any] | None] = {}
            for seg in meta.get("segments", {}):
                stored = segment_table.get(_segment_key(symbol, int(seg)))
                segments[int(seg)] = orjson.loads(stored) if stored is not None else None
            pipeline.restore_symbol(symbol, data["state"], segments)
            fenced[symbol] = restored_fence(data, msg.tp)
        except Exception as exc:
            # Processing on without this symbol's state would corrupt every output of it,
            # and a restarted agent would skip the failing batch silently: stop the worker.
            pipeline.states.pop(symbol, None)
            fatal(
                f"cannot restore the state of {symbol} from table {PIPELINE_STATE.name} "
                f"(changelog partition {msg.partition}, first event at {msg.topic} "
                f"partition {msg.partition} offset {msg.offset}): "
                f"{type(exc).__name__}: {exc}; the worker stops. Fix or remove that state "
                "(tickstream reset) and restart",
                exc,
            )

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        # State of symbols we may lose is reloaded from the table when they come back.
        # Unacked events of revoked partitions are processed again by their next owner.
        # Under the lock: a batch or checkpoint in progress finishes first, so nothing
        # marks a symbol dirty after the clear and later writes state for a partition that
        # another worker owns by then.
        async with lock:
            pipeline.forget_all()  # stage state and positions alike
            fenced.clear()
            dirty.clear()
            last_event.clear()
            unacked.clear()
            # Events of these partitions may sit in a batch already taken (Faust clears
            # only its channel queues): they are skipped until a partition comes back to us.
            revoked_tps.update((tp.topic, tp.partition) for tp in revoked)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        # A partition that comes back is fetched again from its committed offset; an event
        # buffered before the revocation that is processed first is fenced by the restored
        # state's offset, and its redelivered copy by the fence the first one set.
        async with lock:
            revoked_tps.difference_update((tp.topic, tp.partition) for tp in assigned)

    publisher = BatchPublisher(app, {
        physical: settings.partitions for _topic, physical in out_topics.values()
    })

    encoders: dict[str, Callable[[Record], bytes]] = {}  # output name -> its encoder
    symbol_keys: dict[str, bytes] = {}

    def publish(out: Outputs) -> None:
        add = publisher.add
        for name, records in (
            ("ticks.clean", out.clean), ("bars.m1", out.bars), ("features", out.features),
            ("trading.commands", out.commands),
        ):
            if not records:
                continue
            _topic, physical = out_topics[name]
            encode = encoders.get(name)
            if encode is None:
                encode = encoders[name] = codec.encoder(records[0].SCHEMA, physical)
            for rec in records:
                symbol = rec.symbol  # type: ignore[attr-defined]
                key = symbol_keys.get(symbol)
                if key is None:
                    key = symbol_keys[symbol] = symbol.encode()
                add(physical, key, encode(rec))

    def dead_letter(record: Record, key: bytes | None) -> None:
        _topic, physical = out_topics["ticks.rejected"]
        publisher.add(physical, key, codec.encode(record, physical))

    # A crash of this agent stops the worker (its supervisor restarts the process) rather
    # than restarting the agent in place: Faust's default would start a fresh agent that
    # never acks the events the dead one held, a stall that looks healthy.
    @app.agent(  # type: ignore[untyped-decorator]
        raw_topic, name="pipeline", supervisor_strategy=CrashingSupervisor,
    )
    async def run(stream: Any) -> None:
        out = Outputs()
        ckpt["stream"] = stream
        try:
            async for events in take_ready(stream, BATCH_MAX):
                async with lock:
                    if stopped.is_set():
                        # After the last checkpoint nothing is processed: these events are
                        # not acked, so the next owner takes them (processing them here
                        # would send outputs no checkpoint covers: they would come out twice).
                        stats["left_at_stop"] += len(events)
                        continue
                    await process_batch(stream, events, out)
        except Exception as exc:  # a bug: never go on half-alive (see fatal)
            log.exception("pipeline agent failed")
            fatal(f"pipeline agent failed: {type(exc).__name__}: {exc}; the worker stops")

    async def process_batch(stream: Any, events: list[Any], out: Outputs) -> None:
        t_batch = time.perf_counter()
        pipeline.kill_switch = control.kill_switch  # global table: survives restarts
        announced = control.get(MODEL_KEY)
        if announced is not None and announced is not seen_announcement[0]:
            seen_announcement[0] = announced
            _load_announced(models, announced)
        context_sync.sync(pipeline.context)
        last_event_of_symbol: dict[str, Any] = {}
        if revoked_tps:
            # Buffered before a rebalance gave their partition to another worker: the new
            # owner processes them, so they are neither processed nor acked here (their
            # state would go into a changelog partition that worker owns now).
            mine = [e for e in events
                    if (e.message.topic, e.message.partition) not in revoked_tps]
            stats["revoked_skipped"] += len(events) - len(mine)
            events = mine
        for event in events:
            msg = event.message
            try:
                # Straight to the stage tick: the reader schema guarantees every field
                # (defaults filled in), so no RawTick object is built per event.
                rt = codec.decode_dict(RAW_TICK, event.value, msg.topic)
            except MalformedRecord as exc:
                stats["malformed"] += 1
                dead_letter(
                    rejected(event.value, event.key, msg.topic, msg.partition, msg.offset,
                             exc.reason, exc.detail, "decode"),
                    event.key,
                )
                continue
            sym = rt["symbol"]
            key = symbol_keys.get(sym)
            if key is None:
                key = symbol_keys[sym] = sym.encode()
            if event.key != key:
                # Keyed by something else (or not at all), the tick may sit on another
                # partition than its symbol's state: it would break the per-symbol order
                # and the replay fence. Dead-lettered, never processed.
                stats["bad_key"] += 1
                dead_letter(
                    rejected(event.value, event.key, msg.topic, msg.partition, msg.offset,
                             BAD_KEY, f"record key {event.key!r} is not the symbol {sym!r}",
                             "decode"),
                    event.key,
                )
                continue
            if sym not in pipeline.states:
                restore(sym, msg)
            fence = fenced.get(sym)
            if fence is None:
                fence = fenced[sym] = {}
            tp = msg.tp
            if msg.offset <= fence.get(tp, -1):
                stats["replayed_skipped"] += 1
                continue
            tick = Tick(rt["broker"], sym, rt["time_msc"], rt["bid"], rt["ask"],
                        rt["recv_time_us"], rt["seq"], rt["last"], rt["volume"])
            before = len(out.rejects)
            if tick.recv_time_us > 0:
                pipeline.on_tick(tick, out)
            else:  # no receive time: the record's timestamp is the reference clock
                pipeline.on_tick(tick, out, int((msg.timestamp or 0) * 1000))
            origin = (event.value, event.key, msg.topic, msg.partition, msg.offset)
            for t, rej in out.rejects[before:]:
                if t is tick:
                    src = origin
                else:  # a tick the validator held earlier, released now as rejected
                    src = held.pop(id(t), None) or (  # type: ignore[arg-type]
                        _encode_tick(codec, t, msg.topic), event.key, msg.topic,
                        msg.partition, -1,
                    )
                dead_letter(
                    rejected(*src, rej.reason, rej.detail, "validate"), src[1]
                )
            st = pipeline.states.get(sym)
            if st is not None and st.validator.holding:
                held[id(tick)] = origin
            if len(held) > 10_000:  # only ticks still held need their bytes
                held.clear()
            if sym in settings.symbols:
                last_event_of_symbol[sym] = event
                fence[tp] = msg.offset
        if events:
            newest = max(clock["event_ms"], max(
                (c.time_msc for c in out.clean), default=clock["event_ms"]))
            if newest > clock["event_ms"]:
                clock["event_ms"] = newest
                clock["wall_s"] = time.monotonic()
        t_publish = time.perf_counter()
        publish(out)
        out.clear()
        # Delivery is awaited at the checkpoint, not per batch: the next batch is processed
        # while these are in flight, and the state is still written only after its outputs.
        in_flight.extend(await publisher.flush())
        stats["process_s"] += t_publish - t_batch
        stats["batches"] += 1
        stats["events"] += len(events)
        dirty.update(last_event_of_symbol)
        last_event.update(last_event_of_symbol)
        unacked.extend(events)
        if time.monotonic() - ckpt["at"] >= checkpoint_s:
            await checkpoint(stream)

    async def checkpoint(stream: Any) -> None:
        """Write the touched symbols' state (tagged with their source offsets), then ack.

        Runs at most every ``checkpoint_interval_ms``: a snapshot costs O(state), not O(batch),
        so checkpointing per batch would make the cost grow with the input rate. Events are
        acked only here, after their state is in the table, so committed offsets never run
        ahead of the state; outputs of events after the last checkpoint may be produced
        again after a crash, identical, with the same natural keys.
        """
        t0 = time.perf_counter()
        if in_flight:
            await asyncio.gather(*in_flight)  # outputs are on the broker before the state
            in_flight.clear()
        stats["publish_wait_s"] += time.perf_counter() - t0
        now = time.monotonic()
        for sym, event in dirty.items():
            st = pipeline.states.get(sym)
            if st is None:
                continue
            changed, dropped = st.dedupe.take_changes()
            with _as_current_event(event):
                # Segments first, then the state naming their lengths (see Deduplicator).
                for seg, entries in changed.items():
                    segment_table[_segment_key(sym, seg)] = orjson.dumps(entries)
                for seg in dropped:
                    segment_table.pop(_segment_key(sym, seg), None)
                state_table[sym.encode()] = encode_state({
                    "offset": event.message.offset,
                    "offsets": [[tp.topic, tp.partition, off]
                                for tp, off in fenced.get(sym, {}).items()],
                    "state": pipeline.snapshot_symbol(sym, segmented=True),
                })
                if now - quality_written.get(sym, 0.0) >= QUALITY_EVERY_S:
                    quality_written[sym] = now
                    quality_table[sym.encode()] = orjson.dumps(st.consolidator.quality())
        dirty.clear()
        ack_all(stream, unacked)
        unacked.clear()
        ckpt["at"] = now
        stats["checkpoints"] += 1
        stats["checkpoint_s"] += time.perf_counter() - t0

    async def checkpoint_before_stop() -> None:
        """SIGTERM: write the last checkpoint and ack it, so the consumer commits everything
        processed and the next owner replays nothing. (Timers have stopped by then, and
        without it Faust would wait forever for acks that only a checkpoint gives.)"""
        stream = ckpt.get("stream")
        if stream is None:
            return
        async with lock:
            if unacked or dirty:
                await checkpoint(stream)
            stopped.set()
        log.info("pipeline stopped: %s", {k: round(v, 3) for k, v in stats.items()})

    app.before_stop.append(checkpoint_before_stop)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def log_stats() -> None:
        if stats["batches"]:
            log.info("pipeline stats: %s", {k: round(v, 3) for k, v in stats.items()})

    @app.timer(interval=max(0.05, checkpoint_s))  # type: ignore[untyped-decorator]
    async def checkpoint_when_quiet() -> None:
        """Input went quiet after a batch: checkpoint it now rather than at the next one."""
        stream = ckpt.get("stream")
        if stream is None or not (unacked or dirty):
            return
        async with lock:
            if stopped.is_set():
                return
            if (unacked or dirty) and time.monotonic() - ckpt["at"] >= checkpoint_s:
                await checkpoint(stream)

    @app.task  # type: ignore[untyped-decorator]
    async def load_model() -> None:
        await asyncio.get_running_loop().run_in_executor(None, models.latest)
        status = models.status()
        log.info("model status: %s", status)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def reload_model() -> None:
        """A newer model in the directory is used from the next bar on, without restart."""
        if models.maybe_reload(time.monotonic()):
            log.info("model now %s", models.current.version if models.current else None)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def idle_flush() -> None:
        """Close the bars of symbols that went quiet (wall-clock driven; see docs)."""
        out = Outputs()
        if clock["event_ms"] == 0:
            return
        # Event-time estimate: the newest tick's time plus wall time elapsed since we saw it,
        # so replayed history (event times in the past) does not close bars early.
        async with lock:
            if stopped.is_set():
                return
            now_ms = clock["event_ms"] + int((time.monotonic() - clock["wall_s"]) * 1000)
            pipeline.idle_flush(now_ms, settings.bar_idle_flush_ms, out)
            if not out.bars:
                return
            # The closed bars (and their features and commands) go out now, and the bar
            # builders' new state joins the next checkpoint: a restart must not reopen them.
            for bar in out.bars:
                event = last_event.get(bar.symbol)
                if event is not None:
                    dirty[bar.symbol] = event
            publish(out)
            out.clear()
            in_flight.extend(await publisher.flush())


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


def restored_fence(data: Mapping[str, Any], tp: Any) -> dict[Any, int]:
    """The per-partition offsets a stored state reflects (older states name one offset:
    it is the partition the symbol's events come from, the one being read now)."""
    offsets = data.get("offsets")
    if offsets is None:
        return {tp: int(data["offset"])}
    return {TP(str(topic), int(part)): int(off) for topic, part, off in offsets}
