"""A run of history ticks as columns: what the fast readers give the loader.

:class:`TickBatch` holds ticks in file order as numpy columns, with the broker and symbol of
each row as a code into small name tables, so a loader encodes and counts a whole run with
array operations instead of one :class:`~stages.types.Tick` object per row.
:meth:`TickBatch.ticks` turns it back into those objects, exactly the ones the row readers
of :mod:`connectors.history.parse` yield for the same lines (the tests hold the two equal on
every real sample and on generated files).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stages.types import Tick

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Ticks in file order. ``last``, ``volume``, ``seq`` and ``recv_time_us`` are either
    absent for every row (None) or present for every row; ``broker_code[i]`` and
    ``symbol_code[i]`` index ``brokers`` and ``symbols``."""

    brokers: tuple[str, ...]
    symbols: tuple[str, ...]
    broker_code: Codes
    symbol_code: Codes
    time_msc: Ints
    bid: Floats
    ask: Floats
    last: Floats | None = None
    volume: Floats | None = None
    seq: Ints | None = None
    recv_time_us: Ints | None = None

    @classmethod
    def of_stream(cls, broker: str, symbol: str, time_msc: Ints, bid: Floats, ask: Floats,
                  volume: Floats | None = None) -> TickBatch:
        """One broker's ticks of one symbol."""
        zeros = np.zeros(len(time_msc), np.int32)
        return cls((broker,), (symbol,), zeros, zeros, time_msc, bid, ask, volume=volume)

    def __len__(self) -> int:
        return len(self.time_msc)

    def stream_code(self) -> Codes:
        """One code per row for its (broker, symbol): ``broker * len(symbols) + symbol``."""
        return (self.broker_code * len(self.symbols) + self.symbol_code).astype(np.int32)

    def stream_names(self, code: int) -> tuple[str, str]:
        return self.brokers[code // len(self.symbols)], self.symbols[code % len(self.symbols)]

    def take(self, rows: npt.NDArray[np.intp] | slice) -> TickBatch:
        """The rows ``rows`` (an index array or a slice), in that order."""

        def pick(a: npt.NDArray[np.generic] | None) -> npt.NDArray[np.generic] | None:
            return None if a is None else a[rows]

        return TickBatch(self.brokers, self.symbols, self.broker_code[rows],  # type: ignore[arg-type]
                         self.symbol_code[rows], self.time_msc[rows], self.bid[rows],
                         self.ask[rows], pick(self.last), pick(self.volume),  # type: ignore[arg-type]
                         pick(self.seq), pick(self.recv_time_us))  # type: ignore[arg-type]

    def chunks(self, rows: int) -> Iterator[TickBatch]:
        """This batch in consecutive pieces of at most ``rows`` rows."""
        if len(self) <= rows:
            yield self
            return
        for start in range(0, len(self), rows):
            yield self.take(slice(start, start + rows))

    def ticks(self) -> Iterator[Tick]:
        """The rows as :class:`Tick` objects, equal to what the row readers yield."""
        n = len(self)
        none: list[None] = [None] * n
        brokers = [self.brokers[c] for c in self.broker_code.tolist()]
        symbols = [self.symbols[c] for c in self.symbol_code.tolist()]
        recv = [0] * n if self.recv_time_us is None else self.recv_time_us.tolist()
        seq = none if self.seq is None else self.seq.tolist()
        last = none if self.last is None else self.last.tolist()
        volume = none if self.volume is None else self.volume.tolist()
        for row in zip(brokers, symbols, self.time_msc.tolist(), self.bid.tolist(),
                       self.ask.tolist(), recv, seq, last, volume, strict=True):
            yield Tick(*row)


def concat(batches: list[TickBatch]) -> TickBatch:
    """The rows of ``batches`` one after the other, their name tables merged. Optional
    columns must be present in all or in none of them."""
    brokers: list[str] = []
    symbols: list[str] = []
    bcodes: list[Codes] = []
    scodes: list[Codes] = []
    for b in batches:
        bmap = np.array([_index(brokers, name) for name in b.brokers], np.int32)
        smap = np.array([_index(symbols, name) for name in b.symbols], np.int32)
        bcodes.append(bmap[b.broker_code])
        scodes.append(smap[b.symbol_code])

    def cat(name: str) -> npt.NDArray[np.generic] | None:
        cols = [getattr(b, name) for b in batches]
        if all(c is None for c in cols):
            return None
        if any(c is None for c in cols):
            raise ValueError(f"column {name} is present in some batches only")
        return np.concatenate(cols)

    return TickBatch(tuple(brokers), tuple(symbols), np.concatenate(bcodes),
                     np.concatenate(scodes), np.concatenate([b.time_msc for b in batches]),
                     np.concatenate([b.bid for b in batches]),
                     np.concatenate([b.ask for b in batches]),
                     cat("last"), cat("volume"), cat("seq"), cat("recv_time_us"))  # type: ignore[arg-type]


def _index(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)
