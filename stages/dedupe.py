"""Drop exact re-deliveries of a tick (collector retries, at-least-once replays).

A tick is a duplicate when the same broker already delivered the same symbol, broker time
``time_msc``, bid and ask within the horizon. The same prices with a *new* timestamp are not
a duplicate: real feeds (Dukascopy, MT5) repeat unchanged quotes on volume-only updates, and
those are genuine observations.

Memory is bounded by *event* time, not by arrival count: per broker, an entry is expired once
its ``time_msc`` is older than ``highest time_msc seen from that broker - window_ms``. The
horizon is kept per broker because a key can only ever match its own broker, and brokers'
clocks differ: a lagging broker must not have its memory wiped by a faster one.

A tick older than its broker's horizon cannot be checked (its twin may already be forgotten),
so it is reported as *not* a duplicate and not remembered. That is safe in the pipeline: the
validator that follows rejects such a tick as ``stale_timestamp`` (live, against the receive
clock) or ``out_of_order`` (it is older than the broker's last accepted tick).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from stages.types import Tick

_SNAPSHOT_VERSION = 1
_SEGMENTED_VERSION = 1
SEGMENT_MS = 10_000  # persisted window segments: ~10 s of one symbol's ticks per record

# (symbol, time_msc, bid, ask): the broker is implied by the per-broker state holding the key.
_Key = tuple[str, int, float, float]


class _BrokerMemory:
    """The keys one broker delivered inside its horizon, plus their arrival order."""

    __slots__ = ("keys", "max_time", "order")

    def __init__(self, max_time: int) -> None:
        self.keys: set[_Key] = set()
        self.order: deque[_Key] = deque()
        self.max_time = max_time


class Deduplicator:
    """Exact-duplicate filter for one symbol's ticks (all brokers), bounded by event time.

    Promises:

    * ``is_duplicate`` is True only for a tick whose (broker, symbol, time_msc, bid, ask) was
      already seen and is still inside the broker's horizon; it then counts the tick in
      ``duplicates_by_broker`` and remembers nothing new.
    * Every held entry has ``time_msc`` within ``2 * window_ms`` of its broker's highest
      ``time_msc`` (within ``window_ms`` when a broker's ticks arrive in time order), so
      memory stays bounded whatever the tick rate or the arrival order.
    * Expiry is amortised O(1) per tick (a set for lookups, a deque in arrival order).
    """

    __slots__ = ("_brokers", "_dirty", "_segments", "_track", "duplicates_by_broker",
                 "segment_ms", "window_ms")

    def __init__(self, window_ms: int = 600_000, segment_ms: int = SEGMENT_MS,
                 track_changes: bool = True) -> None:
        """``track_changes=False`` (offline runs, never checkpointed): the window is not
        also kept as segments for :meth:`take_changes`, which then reports nothing. Over a
        whole history those segments would hold every tick's key to the end of the run."""
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if segment_ms <= 0:
            raise ValueError(f"segment_ms must be > 0, got {segment_ms}")
        self.window_ms = window_ms
        self.segment_ms = segment_ms
        self._brokers: dict[str, _BrokerMemory] = {}
        self.duplicates_by_broker: dict[str, int] = {}
        # The same entries again, append-only, by segment of event time: the unit in which
        # the live worker persists the window (see take_changes). Only append and drop.
        self._segments: dict[int, list[tuple[str, _Key]]] = {}
        self._dirty: set[int] = set()
        self._track = track_changes

    def is_duplicate(self, tick: Tick) -> bool:
        """True when ``tick`` repeats one already seen within its broker's horizon."""
        t = tick.time_msc
        mem = self._brokers.get(tick.broker)
        if mem is None:
            mem = self._brokers[tick.broker] = _BrokerMemory(t)
        elif t > mem.max_time:
            mem.max_time = t
        horizon = mem.max_time - self.window_ms
        if t < horizon:
            return False  # beyond the horizon: cannot be checked (see module docstring)
        order = mem.order
        keys = mem.keys
        # Arrival order is near time order, so the oldest entries sit at the left. An entry
        # stuck behind a newer head lingers at most until the head expires (the 2x bound);
        # it can never cause a false match, because older-than-horizon ticks skip the lookup.
        while order and order[0][1] < horizon:
            keys.discard(order.popleft())
        key = (tick.symbol, t, tick.bid, tick.ask)
        if key in keys:
            dup = self.duplicates_by_broker
            dup[tick.broker] = dup.get(tick.broker, 0) + 1
            return True
        keys.add(key)
        order.append(key)
        if not self._track:
            return False
        seg = t // self.segment_ms
        entries = self._segments.get(seg)
        if entries is None:
            entries = self._segments[seg] = []
        entries.append((tick.broker, key))
        self._dirty.add(seg)
        return False

    def __len__(self) -> int:
        """Entries currently held, all brokers together."""
        return sum(len(m.order) for m in self._brokers.values())

    @property
    def duplicates(self) -> int:
        """Duplicates counted so far, all brokers together."""
        return sum(self.duplicates_by_broker.values())

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: per broker its highest time and its entries in arrival order.

        Prices are stored as JSON numbers; ``json``/``orjson`` write floats in shortest
        round-trip form, so they read back bit-identical and keys still match after a restore.
        Entries are the key tuples themselves (serialised as arrays): no copy per entry.
        """
        return {
            "version": _SNAPSHOT_VERSION,
            "brokers": {
                broker: {"max_time": mem.max_time, "entries": list(mem.order)}
                for broker, mem in self._brokers.items()
            },
            "duplicates_by_broker": dict(self.duplicates_by_broker),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace this instance's state with ``state`` from :meth:`snapshot`.

        The window stays the one given to the constructor (configuration, not state); entries
        that a smaller window no longer covers are expired on the broker's next tick.
        """
        if state.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported Deduplicator snapshot version {state.get('version')}")
        brokers: dict[str, _BrokerMemory] = {}
        segments: dict[int, list[tuple[str, _Key]]] = {}
        for broker, raw in state["brokers"].items():
            mem = _BrokerMemory(int(raw["max_time"]))
            for symbol, t, bid, ask in raw["entries"]:
                key = (str(symbol), int(t), float(bid), float(ask))
                mem.keys.add(key)
                mem.order.append(key)
                segments.setdefault(key[1] // self.segment_ms, []).append((str(broker), key))
            brokers[str(broker)] = mem
        self._brokers = brokers
        self._segments = segments
        self._dirty = set(segments)
        self.duplicates_by_broker = {
            str(k): int(v) for k, v in state["duplicates_by_broker"].items()
        }

    # ---- segmented persistence (the live worker) -----------------------------------------
    # A full snapshot grows with the window (a busy symbol holds tens of thousands of keys:
    # megabytes, more than a Kafka record may hold). The worker instead writes the window
    # as append-only segments of event time, only those that changed, and a small meta
    # record that names each live segment with its length at the checkpoint: restoring
    # takes exactly that prefix of each segment, so a segment written after the last
    # checkpoint (a crash between the two writes) cannot leak later entries into the state.

    def take_changes(self) -> tuple[dict[int, list[tuple[str, _Key]]], list[int]]:
        """Segments changed since the last call (full contents) and segments now dropped.

        A segment is dropped once every broker's horizon has passed its end by a window
        (entries there can no longer match anything; see the 2x bound above).
        """
        changed = {seg: self._segments[seg] for seg in self._dirty if seg in self._segments}
        self._dirty.clear()
        dropped: list[int] = []
        if self._brokers:
            oldest = min(m.max_time for m in self._brokers.values()) - 2 * self.window_ms
            for seg in list(self._segments):
                if (seg + 1) * self.segment_ms <= oldest:
                    del self._segments[seg]
                    changed.pop(seg, None)
                    dropped.append(seg)
        return changed, dropped

    def snapshot_meta(self) -> dict[str, Any]:
        """Everything but the entries, plus ``segments``: {segment id: entries at this point}."""
        return {
            "version": _SEGMENTED_VERSION,
            "segmented": True,
            "max_time": {b: m.max_time for b, m in self._brokers.items()},
            "segments": {str(seg): len(entries) for seg, entries in self._segments.items()},
            "duplicates_by_broker": dict(self.duplicates_by_broker),
        }

    def restore_segmented(
        self, meta: dict[str, Any], segments: dict[int, list[Any] | None]
    ) -> None:
        """Rebuild from :meth:`snapshot_meta` and the stored segments (prefixes per meta).

        Behaves exactly as the instance the meta was taken from: entries below a broker's
        horizon can never match (lookups skip ticks older than the horizon), so keeping or
        dropping them changes nothing.
        """
        if meta.get("version") != _SEGMENTED_VERSION or not meta.get("segmented"):
            raise ValueError("not a segmented Deduplicator snapshot")
        brokers = {str(b): _BrokerMemory(int(t)) for b, t in meta["max_time"].items()}
        self._segments = {}
        self._dirty = set()
        for seg_s, length in sorted(meta["segments"].items(), key=lambda kv: int(kv[0])):
            seg = int(seg_s)
            stored = segments.get(seg) or []
            entries: list[tuple[str, _Key]] = []
            for broker, (symbol, t, bid, ask) in stored[: int(length)]:
                key = (str(symbol), int(t), float(bid), float(ask))
                entries.append((str(broker), key))
                mem = brokers.get(str(broker))
                if mem is None or key in mem.keys:
                    continue
                mem.keys.add(key)
                mem.order.append(key)
            self._segments[seg] = entries
        self._brokers = brokers
        self.duplicates_by_broker = {
            str(k): int(v) for k, v in meta["duplicates_by_broker"].items()
        }
