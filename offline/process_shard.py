"""One shard of ``tickstream process``: the per-symbol stages over the rows routed to it.

A shard owns whole symbols, so its dedupe, validation, consolidation, bars and features are
exactly what one process over every row would compute for them. What spans symbols, the
model score and the risk limits, is left to the caller: the shard's pipeline defers each
scored bar (:attr:`~stages.pipeline.Pipeline.defer_decisions`) with the *key* of the input
row that produced it, and :func:`offline.process.run_process` decides every bar of every
shard in key order, which is the order one process would have decided them in.

Keys: ``file_index << 40 | record_number`` for what a row produced; what the end-of-input
flush produced gets ``FLUSH_KEY | key of the symbol's first row`` (one process flushes
symbols in the order it first saw them). With ``--out``, a keyed shard writes each row
prefixed with its key so the caller can merge the shards' files into the one-process order.

With ``record_ticks`` (a model to decide with) a shard also keeps each symbol's accepted
ticks on a :class:`~offline.decide.Tape`, and each decision's place among them, so the
caller can check open positions on every tick (:func:`offline.decide.decide_in_order`).
"""

from __future__ import annotations

import csv
import mmap
import traceback
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from connectors.files import BadRow
from connectors.history.batch import TickBatch
from offline.decide import Tape
from offline.forking import child_ignores_interrupts
from schemas.records import Bar, CleanTick, FeatureVector, Record
from stages.context import ContextBook
from stages.pipeline import Outputs, PendingDecision, Pipeline, PipelineConfig
from stages.types import MALFORMED, Tick

FILE_SHIFT = 40
FLUSH_KEY = 1 << 62
DRAIN_EVERY = 4096

REJECT_HEADER = ("source", "line", "broker", "symbol", "time_msc", "bid", "ask", "reason",
                 "detail", "original")


#: The CSV files a shard writes, with their headers.
SHARD_OUTPUTS: dict[str, Sequence[str]] = {
    "clean": CleanTick.FIELDS, "rejected": REJECT_HEADER, "bars": Bar.FIELDS,
    "features": FeatureVector.FIELDS,
}


_GETTERS: dict[type[Record], Callable[[Record], tuple[Any, ...]]] = {}


def record_row(r: Record) -> tuple[Any, ...]:
    """A record's values in schema order, for ``csv.writer``: it writes ``None`` as an empty
    field and a float as ``repr`` (shortest round-trip form, so comparisons stay bit-exact)."""
    get = _GETTERS.get(type(r))
    if get is None:
        get = _GETTERS[type(r)] = attrgetter(*r.FIELDS)
    return get(r)


@dataclass(slots=True)
class ShardResult:
    ticks_in: int = 0
    clean: int = 0
    duplicates: int = 0
    bars: int = 0
    features: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    decisions: list[tuple[int, PendingDecision]] = field(default_factory=list)
    tapes: dict[str, Tape] = field(default_factory=dict)


class RowSink:
    """A shard's CSV output files, written as final files with their header."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, IO[str]] = {}
        self.writers: dict[str, Any] = {}

    def write(self, name: str, key: int, rows: Iterable[Sequence[Any]]) -> None:
        w = self.writers.get(name)
        if w is None:
            fh = self.files[name] = open(  # noqa: SIM115
                self.directory / f"{name}.csv", "w", newline="", encoding="utf-8")
            w = self.writers[name] = csv.writer(fh, lineterminator="\n")
            w.writerow(SHARD_OUTPUTS[name])
        w.writerows(rows)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


class KeyedParts(RowSink):
    """A shard's CSV rows as parts to be merged by key (:func:`merge_parts`).

    Per output: ``NAME.K.csv`` holds the formatted rows (no header), ``NAME.K.keys`` each
    row's key and ``NAME.K.ends`` the byte offset where it ends (native int64 arrays).
    """

    def __init__(self, directory: Path, shard: int) -> None:
        super().__init__(directory)
        self.shard = shard
        self.lines: list[str] = []
        self.keys: dict[str, array[int]] = {}
        self.ends: dict[str, array[int]] = {}
        self.pos: dict[str, int] = {}
        self.binary: dict[str, IO[bytes]] = {}

    def write(self, name: str, key: int, rows: Iterable[Sequence[Any]]) -> None:
        w = self.writers.get(name)
        if w is None:
            self.binary[name] = open(part_path(self.directory, name, self.shard, "csv"), "wb")  # noqa: SIM115
            # csv.writer calls write() once per row: collect the formatted lines
            w = self.writers[name] = csv.writer(_Lines(self.lines), lineterminator="\n")
            self.keys[name], self.ends[name], self.pos[name] = array("q"), array("q"), 0
        w.writerows(rows)
        keys, ends, pos = self.keys[name], self.ends[name], self.pos[name]
        data = [line.encode() for line in self.lines]
        self.lines.clear()
        for d in data:
            pos += len(d)
            ends.append(pos)
        keys.extend([key] * len(data))
        self.pos[name] = pos
        self.binary[name].write(b"".join(data))

    def close(self) -> None:
        for name, fh in self.binary.items():
            fh.close()
            with open(part_path(self.directory, name, self.shard, "keys"), "wb") as kf:
                self.keys[name].tofile(kf)
            with open(part_path(self.directory, name, self.shard, "ends"), "wb") as ef:
                self.ends[name].tofile(ef)


class _Lines:
    __slots__ = ("write",)

    def __init__(self, lines: list[str]) -> None:
        self.write = lines.append


def part_path(directory: Path, name: str, shard: int, kind: str) -> Path:
    return directory / f"{name}.{shard}.{kind}"


def merge_parts(directory: Path, name: str, shards: int, dest: Path) -> None:
    """Merge the shards' parts of one output into ``dest`` (header first), in key order.

    Each shard's rows are already in key order, so a stable sort of all keys gives runs of
    consecutive rows from one shard; each run is copied as one slice of that shard's file.
    Nothing is written when no shard produced a row of this output.
    """
    present = [k for k in range(shards) if part_path(directory, name, k, "keys").exists()]
    if not present:
        return
    keys = [np.fromfile(part_path(directory, name, k, "keys"), dtype=np.int64) for k in present]
    ends = [np.fromfile(part_path(directory, name, k, "ends"), dtype=np.int64) for k in present]
    shard = np.concatenate([np.full(len(a), i, dtype=np.int64) for i, a in enumerate(keys)])
    local = np.concatenate([np.arange(len(a), dtype=np.int64) for a in keys])
    order = np.argsort(np.concatenate(keys), kind="stable")
    shard, local = shard[order], local[order]
    cut = np.flatnonzero(np.diff(shard)) + 1
    firsts = np.concatenate(([0], cut))
    lasts = np.concatenate((cut, [len(shard)])) - 1
    with dest.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerow(SHARD_OUTPUTS[name])
    with ExitStack() as stack:
        datas = []  # mapped, not read: a part can be larger than memory
        for k in present:
            part = stack.enter_context(part_path(directory, name, k, "csv").open("rb"))
            datas.append(stack.enter_context(
                mmap.mmap(part.fileno(), 0, access=mmap.ACCESS_READ)))
        out = stack.enter_context(dest.open("ab"))
        for s, i, j in zip(shard[firsts].tolist(), local[firsts].tolist(),
                           local[lasts].tolist(), strict=True):
            e = ends[s]
            out.write(datas[s][int(e[i - 1]) if i else 0:int(e[j])])


class Shard:
    """The per-symbol stages over the rows of the symbols it owns (any order of calls to
    :meth:`feed`, as long as each symbol's rows come in file order)."""

    def __init__(self, config: PipelineConfig, context: ContextBook, files: Sequence[Path],
                 sink: RowSink | None, record_ticks: bool = False) -> None:
        self.pipeline = Pipeline(config, context=context, defer_decisions=True,
                                 checkpointed=False)
        self.record_ticks = record_ticks
        # Since the last drain, with ``record_ticks``: the key of each row that added
        # accepted ticks and the length of ``out.clean`` after it (the ticks go on their
        # tapes at the drain, see _tape), and where this window's decisions begin in
        # ``result.decisions`` (their ``tick_pos`` is still an index in ``out.clean``).
        self._row_keys: list[int] = []
        self._row_ends: list[int] = []
        self._window_decisions = 0
        self.files = files
        self.sink = sink
        self.out = Outputs()
        self.result = ShardResult()
        self.first_seen: dict[str, int] = {}

    def feed(self, file_index: int, items: Iterable[tuple[int, Tick | BadRow]]) -> None:
        """The records ``items`` (record number, parsed row) of file ``file_index``."""
        base = file_index << FILE_SHIFT
        res, out, on_tick, first_seen = self.result, self.out, self.pipeline.on_tick, \
            self.first_seen
        decisions, clean = res.decisions, out.clean
        sink = self.sink
        record = self.record_ticks
        row_key, row_end = self._row_keys.append, self._row_ends.append
        mark = len(clean)  # out.clean entries whose row is noted
        n = 0
        for line, item in items:
            n += 1
            if isinstance(item, BadRow):
                res.rejected[MALFORMED] += 1
                if sink is not None:
                    sink.write("rejected", base | line, [[
                        str(self.files[file_index]), item.line, "", "", "", "", "", MALFORMED,
                        item.detail, item.text]])
                continue
            if item.symbol not in first_seen:
                first_seen[item.symbol] = base | line
            on_tick(item, out)
            if record and len(clean) != mark:
                mark = len(clean)
                row_key(base | line)
                row_end(mark)
            if sink is not None:  # rows are written with the key of the row they came from
                self._drain(base | line)
                mark = 0
                continue
            if out.decisions:
                decisions.extend((base | line, d) for d in out.decisions)
                out.decisions.clear()
            if n % DRAIN_EVERY == 0:  # only counts left to take: batch them
                self._drain(base | line)
                mark = 0
        res.ticks_in += n
        self._drain(base)

    def finish(self) -> ShardResult:
        for symbol in list(self.pipeline.states):
            self.pipeline.flush_symbol(symbol, self.out)
            if self.record_ticks and self.out.clean:
                self._row_keys.append(FLUSH_KEY | self.first_seen[symbol])
                self._row_ends.append(len(self.out.clean))
            self._drain(FLUSH_KEY | self.first_seen[symbol])
        if self.sink is not None:
            self.sink.close()
        return self.result

    def _tape(self) -> None:
        """Put the accepted ticks of this window (``out.clean``) on their symbols' tapes,
        each with the key of the row it came from, and turn the window's decisions'
        positions in ``out.clean`` into positions on their symbol's tape.

        A row adds ticks of its own symbol only, so a decision at ``out.clean`` index ``p``
        stands after the window's ticks of its symbol before ``p``: that count plus the
        tape's length at the window's start. Done once per window, column by column.
        """
        out, res = self.out, self.result
        clean, keys, ends = out.clean, self._row_keys, self._row_ends
        pending = res.decisions
        first = self._window_decisions
        self._window_decisions = len(pending) + len(out.decisions)
        if len(keys) == len(clean):  # each noted row added one tick: the common case
            per_tick = keys
        else:
            per_tick, start = [], 0
            for k, e in zip(keys, ends, strict=True):
                per_tick.extend([k] * (e - start))
                start = e
        symbols = [c.symbol for c in clean]
        groups: dict[str, list[int] | None]
        if not symbols:
            groups = {}
        elif symbols.count(symbols[0]) == len(symbols):
            groups = {symbols[0]: None}  # one symbol: the whole window, in order
        else:
            groups = {}
            for i, sym in enumerate(symbols):
                at = groups.get(sym)
                if at is None:
                    groups[sym] = [i]
                else:
                    at.append(i)
        tapes = res.tapes
        before: dict[str, int] = {}
        for sym, at in groups.items():
            tape = tapes.get(sym)
            if tape is None:
                tape = tapes[sym] = Tape()
            before[sym] = len(tape)
            ticks = clean if at is None else [clean[i] for i in at]
            tape.keys.extend(per_tick if at is None else [per_tick[i] for i in at])
            tape.times.extend([c.time_msc for c in ticks])
            tape.recvs.extend([c.recv_time_us for c in ticks])
            tape.bids.extend([c.best_bid for c in ticks])
            tape.asks.extend([c.best_ask for c in ticks])

        def on_tape(d: PendingDecision) -> PendingDecision:
            sym = d.symbol
            if sym not in groups:  # no tick of its symbol in this window: after the tape
                tape = tapes.get(sym)
                return d._replace(tick_pos=len(tape) if tape is not None else 0)
            at = groups[sym]
            pos = d.tick_pos if at is None else bisect_left(at, d.tick_pos)
            return d._replace(tick_pos=before[sym] + pos)

        for k in range(first, len(pending)):
            key, d = pending[k]
            pending[k] = (key, on_tape(d))
        if out.decisions:
            out.decisions[:] = [on_tape(d) for d in out.decisions]
        keys.clear()
        ends.clear()

    def _drain(self, key: int) -> None:
        if self.record_ticks:
            self._tape()
        out, res, sink = self.out, self.result, self.sink
        res.clean += len(out.clean)
        res.duplicates += out.duplicates
        res.bars += len(out.bars)
        res.features += len(out.features)
        for _t, rej in out.rejects:
            res.rejected[rej.reason] += 1
        if out.decisions:
            res.decisions.extend((key, d) for d in out.decisions)
        if sink is not None:
            for name, recs in (("clean", out.clean), ("bars", out.bars),
                               ("features", out.features)):
                if recs:
                    sink.write(name, key, [record_row(r) for r in recs])
            if out.rejects:
                sink.write("rejected", key, [
                    ["pipeline", "", t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask),
                     rej.reason, rej.detail, ""] for t, rej in out.rejects
                ])
        out.clear()


#: A chunk of records for a shard: (file index, record numbers, their ticks as columns) or
#: (file index, None, [(record number, parsed row), ...]).
Chunk = (tuple[int, npt.NDArray[np.int64], TickBatch]
         | tuple[int, None, list[tuple[int, Tick | BadRow]]])


def chunk_rows(chunk: Chunk) -> Iterable[tuple[int, Tick | BadRow]]:
    """A chunk's records one at a time."""
    _file_index, numbers, payload = chunk
    if numbers is None:
        assert isinstance(payload, list)
        return payload
    assert isinstance(payload, TickBatch)
    return zip(numbers.tolist(), payload.ticks(), strict=True)


def child_main(shard: Shard, rows: Connection, results: Connection,
               foreign: Sequence[Connection]) -> None:
    """A forked shard: process chunks from ``rows`` until ``None``, then send the result.

    An error is reported after the input is drained (the parent may be blocked writing to
    this shard), as ``("error", traceback)``.
    """
    child_ignores_interrupts()
    for conn in foreign:  # other shards' pipe ends: a dead shard must give the parent EPIPE
        conn.close()
    try:
        _serve(shard, rows, results)
    except (EOFError, OSError):  # EOF mid-message is an OSError; EPIPE on send
        pass  # the parent stopped (interrupted or failed) and closed its ends: it reports
    finally:
        results.close()


def _serve(shard: Shard, rows: Connection, results: Connection) -> None:
    error: str | None = None
    while True:
        chunk: Chunk | None = rows.recv()
        if chunk is None:
            break
        if error is not None:
            continue
        try:
            shard.feed(chunk[0], chunk_rows(chunk))
        except BaseException:  # reported to the parent, which raises it
            error = traceback.format_exc()
    if error is None:
        try:
            results.send(("ok", shard.finish()))
        except BaseException:
            results.send(("error", traceback.format_exc()))
    else:
        results.send(("error", error))
