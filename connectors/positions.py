"""Durable collector positions: a restarted collector resumes after what it delivered.

A collector that can say where it stands (the simulator: its seed and how many ticks and
events it has sent; MT5: the last handled ``time_msc`` of every symbol) hands every record
to a :class:`PositionTracker` instead of the producer. The tracker groups the records
into *epochs*: an epoch ends at a checkpoint, when the collector gives the position it
has reached, every ``position_every`` records or ``position_interval_s`` seconds (both
configurable). The position of an epoch is written to the store only once the broker has
acknowledged every record of that epoch and of every earlier one (the producer's delivery
callbacks, one shared callback per epoch), so a stored position never covers a record
that was not delivered. At start-up the collector reads its position back and continues
after it.

**Bound.** Before a new epoch starts, the position of the epoch before the one just
closed must be acknowledged by the store (the tracker serves delivery callbacks until it
is: backpressure, normally no wait at all). So at any moment the records sent after the
last *stored* position are at most those of two epochs: a SIGKILL makes a restart re-send
at most ``2 * position_every`` records (for MT5, whose positions are taken between poll
batches, plus up to two batches: ``2 * (position_every + batch_size - 1)``). After a clean
stop (SIGTERM) the final position is stored after everything was delivered, and a restart
re-sends nothing. A record the broker refused (a delivery error) stops the position where
it is and the collector fails, so a restart sends it again: nothing is lost.

Stores: :class:`KafkaPositionStore` keeps positions on the compacted topic
``collectors.positions`` (key = collector name, value = a JSON object; see
:func:`read_positions` for how it is read back on a broker whose ListOffsets is wrong);
:class:`MemoryPositionStore` is for unit tests.

Values are JSON rather than Avro: they are private to the collector that wrote them (each
venue has its own shape, only it reads them back), never joined or processed downstream,
and carry their own format version (``v``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from connectors.base.resilience import FatalCollectorError
from schemas.records import Record

if TYPE_CHECKING:
    from connectors.kafka_client import KafkaClientSettings as Settings
    from connectors.producer import RecordProducer

log = logging.getLogger(__name__)

POSITIONS_TOPIC = "collectors.positions"
FORMAT_VERSION = 1
#: Defaults of the ``position_every`` / ``position_interval_s`` collector settings.
DEFAULT_POSITION_EVERY = 1000
DEFAULT_POSITION_INTERVAL_S = 1.0
#: How long start-up may take to read the stored positions back.
READ_TIMEOUT_S = 30.0

Position = dict[str, Any]
DeliveryCallback = Callable[[Any, Any], None]


class PositionError(FatalCollectorError):
    """Records or a position write were not delivered, or positions cannot be read back.

    Fatal: the collector stops and a restart resumes from the last stored position.
    """


class DeliverySink(Protocol):
    """What the tracker sends through: :class:`~connectors.producer.RecordProducer`."""

    def send(
        self, topic: str, key: str | bytes, record: Record,
        on_delivery: DeliveryCallback | None = None,
    ) -> None: ...

    def poll(self, timeout_s: float = 0.0) -> int: ...

    def flush(self, timeout_s: float = 30.0) -> int: ...


class PositionStore(Protocol):
    """Where positions are kept, keyed by collector name."""

    def load(self, key: str) -> Position | None:
        """The last stored position of ``key`` (None: never stored)."""
        ...

    def save(self, key: str, position: Position, on_saved: Callable[[str | None], None]) -> None:
        """Start writing ``position``; ``on_saved(error)`` runs once it is durable (error
        None) or has failed, from a later ``poll`` of the producer."""
        ...


@dataclass
class MemoryPositionStore:
    """In-memory store for tests: a save is durable at once, or when :meth:`confirm` is
    called (``confirm_at_once=False``, to test what a kill between the two leaves)."""

    positions: dict[str, Position] = field(default_factory=dict)
    confirm_at_once: bool = True
    saves: int = 0
    _pending: list[tuple[str, Position, Callable[[str | None], None]]] = field(
        default_factory=list)

    def load(self, key: str) -> Position | None:
        p = self.positions.get(key)
        return None if p is None else orjson.loads(orjson.dumps(p))

    def save(self, key: str, position: Position, on_saved: Callable[[str | None], None]) -> None:
        self.saves += 1
        self._pending.append((key, orjson.loads(orjson.dumps(position)), on_saved))
        if self.confirm_at_once:
            self.confirm()

    def confirm(self) -> None:
        pending, self._pending = self._pending, []
        for key, position, on_saved in pending:
            self.positions[key] = position
            on_saved(None)


class _Epoch:
    """The records sent between two checkpoints; one delivery callback shared by all."""

    __slots__ = ("error", "number", "on_delivery", "pending", "position")

    def __init__(self, number: int) -> None:
        self.number = number
        self.pending = 0
        self.position: Position | None = None
        self.error: str | None = None
        self.on_delivery: DeliveryCallback = self._delivered

    def _delivered(self, err: Any, _msg: Any) -> None:
        self.pending -= 1
        if err is not None and self.error is None:
            self.error = str(err)


class PositionTracker:
    """The :class:`~connectors.base.collector.RecordSink` of a resumable collector; see the
    module docstring. ``loaded`` is the position read back at construction."""

    def __init__(
        self,
        store: PositionStore,
        key: str,
        sink: DeliverySink,
        *,
        every: int = DEFAULT_POSITION_EVERY,
        interval_s: float = DEFAULT_POSITION_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every < 1 or interval_s <= 0:
            raise ValueError("position_every must be >= 1 and position_interval_s > 0")
        self.store, self.key, self.sink = store, key, sink
        self.every, self.interval_s, self._clock = every, interval_s, clock
        self.loaded = store.load(key)
        #: Records sent since the last checkpoint (what :meth:`due` compares).
        self.open_sent = 0
        self._open = _Epoch(1)
        self._closed: deque[_Epoch] = deque()
        self._last_checkpoint = clock()
        self._confirmed = 0  # newest epoch whose records (and all before) are delivered
        self._written = 0  # newest epoch whose position write was started
        self._durable = 0  # newest epoch whose position is stored
        self._confirmed_position: Position | None = None
        self.error: str | None = None
        self.writes = 0

    # ---- the sink ------------------------------------------------------------------------
    def send(self, topic: str, key: str | bytes, record: Record) -> None:
        epoch = self._open
        self.sink.send(topic, key, record, epoch.on_delivery)
        # Counted once queued (a send that raised queued nothing). Its callback may already
        # have run inside send; pending is only read by _settle, never in between.
        epoch.pending += 1
        self.open_sent += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        return self.sink.flush(timeout_s)

    # ---- checkpoints ---------------------------------------------------------------------
    def due(self) -> bool:
        """Whether the collector should call :meth:`checkpoint` now."""
        n = self.open_sent
        return n >= self.every or (n > 0 and
                                   self._clock() - self._last_checkpoint >= self.interval_s)

    def checkpoint(self, position: Position) -> None:
        """Close the current epoch at ``position`` (where the collector stands after every
        record sent so far); store what delivery has confirmed. Waits (serving delivery
        callbacks) until the previous epoch's position is stored: that is the bound.

        Raises :class:`PositionError` when a record or a position write failed.
        """
        epoch = self._open
        epoch.position = position
        self._closed.append(epoch)
        self._open = _Epoch(epoch.number + 1)
        self.open_sent = 0
        self._last_checkpoint = self._clock()
        self._settle()
        while self._durable < epoch.number - 1:
            self.sink.poll(0.01)
            self._settle()

    def close(self, position: Position, timeout_s: float = 30.0) -> bool:
        """Final checkpoint at a stop: flush, then store ``position``; True once stored."""
        epoch = self._open
        epoch.position = position
        self._closed.append(epoch)
        self._open = _Epoch(epoch.number + 1)
        self.open_sent = 0
        deadline = time.monotonic() + timeout_s
        self.sink.flush(timeout_s)
        while True:
            self._settle()
            if self._durable >= epoch.number:
                return True
            if time.monotonic() >= deadline:
                log.warning("%s: final position not stored within %.0f s", self.key, timeout_s)
                return False
            self.sink.poll(0.01)

    @property
    def stored_epochs(self) -> int:
        return self._durable

    def _settle(self) -> None:
        if self.error is not None:
            raise PositionError(f"{self.key}: {self.error}; positions stop here")
        closed = self._closed
        while closed and closed[0].pending <= 0:
            epoch = closed.popleft()
            if epoch.error is not None:
                self.error = f"a record was not delivered ({epoch.error})"
                raise PositionError(f"{self.key}: {self.error}; positions stop here")
            self._confirmed = epoch.number
            self._confirmed_position = epoch.position
        if self._confirmed > self._written and self._confirmed_position is not None:
            number = self._written = self._confirmed
            self.writes += 1
            self.store.save(self.key, self._confirmed_position,
                            lambda err: self._saved(number, err))

    def _saved(self, number: int, err: str | None) -> None:
        if err is not None:
            if self.error is None:
                self.error = f"position write failed ({err})"
            return
        self._durable = max(self._durable, number)


# ---- the Kafka-backed store ---------------------------------------------------------------
def encode(key: str, position: Position) -> bytes:
    return orjson.dumps({"v": FORMAT_VERSION, "collector": key, "position": position})


def decode(value: bytes) -> Position | None:
    """The position in a stored value; None for a format this code does not know."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
        return None
    position = doc.get("position")
    return position if isinstance(position, dict) else None


def read_positions(
    settings: Settings, topic: str, timeout_s: float = READ_TIMEOUT_S
) -> dict[str, Position]:
    """Every key's last position on ``topic``, read from the beginning to its end (the Fetch
    high watermark, not Tansu's short ListOffsets: :mod:`connectors.compacted`); a value in
    a format this code does not know counts as no position. Raises :class:`PositionError`
    when the topic is missing or cannot be read to its end within ``timeout_s``."""
    from connectors.compacted import CompactedReadError, read_compacted

    try:
        raw = read_compacted(settings, topic, timeout_s)
    except CompactedReadError as exc:
        raise PositionError(f"positions {exc}") from None
    return {k: p for k, v in raw.items() if (p := decode(v)) is not None}


class KafkaPositionStore:
    """Positions on the compacted ``collectors.positions`` topic, through the collector's
    own producer (so a position write is ordered after nothing it does not cover: it is
    issued only after the records' delivery callbacks)."""

    def __init__(
        self, settings: Settings, producer: RecordProducer,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.topic = settings.topic(POSITIONS_TOPIC)
        self._read_timeout_s = read_timeout_s
        self._positions: dict[str, Position] | None = None

    def load(self, key: str) -> Position | None:
        if self._positions is None:
            self._positions = read_positions(self.settings, self.topic, self._read_timeout_s)
        return self._positions.get(key)

    def save(self, key: str, position: Position, on_saved: Callable[[str | None], None]) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            on_saved(None if err is None else str(err))

        self.producer.send_raw(self.topic, key, encode(key, position), on_delivery=delivered)
