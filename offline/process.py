"""``tickstream process``: the stage chain over tick files, no Kafka.

The very same :class:`~stages.pipeline.Pipeline` the worker drives. Every input row is
accounted for: ``ticks_in == clean + duplicates + sum(rejected)`` (malformed rows count as
``malformed`` rejects). With ``jobs`` > 1 the per-symbol stages run in forked processes
(:mod:`offline.process_shard`) and give the same results.
"""

from __future__ import annotations

import csv
import heapq
import logging
import multiprocessing
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from multiprocessing.connection import Connection
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from connectors.files import BadRow
from connectors.history.batch import TickBatch
from connectors.history.batch_readers import numbered_csv, numbered_rows
from offline.decide import decide_in_order
from offline.forking import interrupts_deferred, reap, receive
from offline.process_shard import (
    SHARD_OUTPUTS,
    Chunk,
    KeyedParts,
    RowSink,
    Shard,
    ShardResult,
    child_main,
    merge_parts,
    record_row,
)
from schemas.records import MarketEvent, TradingCommand
from stages import native
from stages.context import ContextBook
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.pipeline import PipelineSettings as Settings
from stages.score import ModelStore
from stages.score import require_model as require_model_in
from stages.types import Tick
from storage.backend import Backend
from storage.url import StoreURL, parse_store_url

log = logging.getLogger(__name__)
T = TypeVar("T")


def read_events(path: Path) -> list[MarketEvent]:
    """MarketEvents from a JSON-lines file (one ``MarketEvent.to_dict()`` per line)."""
    events = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(MarketEvent.from_dict(orjson.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{n}: not a MarketEvent: {exc}") from None
    return events


def write_events(events: Iterable[MarketEvent], path: Path) -> int:
    n = 0
    with path.open("wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev.to_dict()) + b"\n")
            n += 1
    return n


def run_process(
    files: Sequence[Path], settings: Settings, model_dir: Path | None, out_dir: Path | None,
    events: Sequence[Path] = (), jobs: int = 1, store: StoreURL | str | None = None,
    progress: Callable[[int], None] | None = None, require_model: bool = False,
) -> dict[str, Any]:
    """Run the stages over ``files``; calendar/news ``events`` are joined as of each bar.

    ``require_model`` (``tickstream process --model``): a ``model_dir`` without a usable
    model is a :class:`ModelError` before any work, as for ``backtest``; otherwise it only
    warns and the run makes no commands, as the worker does until a model appears.

    Every event is loaded first: the book answers as of each bar's time with only what was
    published by then, so the result equals the worker's, where events stream in live.

    ``jobs`` > 1 runs the per-symbol stages in that many forked processes (symbols dealt out
    in the order they first appear) and scores and decides every bar here, in the order one
    process would have: the counts, every ``--out`` file and every command are the same as
    with ``jobs=1`` (tested), so only the time differs.

    ``store`` (a URL): the outputs also go to the store's tables, the ones the live sink
    fills (:mod:`offline.store`); it is opened and migrated before any work starts.

    ``progress`` is called with the number of input rows taken on, every few thousand rows
    (a progress bar's ``update``).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if store is not None:
        url = parse_store_url(store) if isinstance(store, str) else store
        # A bad URL or an absent store fails before the work; closed again meanwhile, so
        # forked shards never inherit an embedded engine.
        _open_store(url).close()
        scratch = None
        if out_dir is None:  # the CSV outputs are what gets stored
            out_dir = scratch = Path(tempfile.mkdtemp(prefix="tickstream-process-"))
        try:
            started_us = time.time_ns() // 1000
            result = run_process(files, settings, model_dir, out_dir, events, jobs,
                                 progress=progress, require_model=require_model)
            from offline.store import store_outputs

            t0 = time.perf_counter()
            backend = _open_store(url)
            try:
                result["stored"] = store_outputs(backend, out_dir, files, started_us)
            finally:
                backend.close()
            result["store"] = str(url)
            result["store_seconds"] = round(time.perf_counter() - t0, 3)
            return result
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    if jobs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        jobs = 1  # the shards share the loaded settings and events by forking
    models: ModelStore | None = None
    if model_dir is not None and require_model:
        models = require_model_in(model_dir)
    elif model_dir is not None:
        if not model_dir.is_dir():  # a typo must not run the whole input for no command
            require_model_in(model_dir)  # raises, naming the problem
        models = ModelStore(model_dir)
        models.latest()  # warns when there is none, as the worker does
    # ``seconds`` and ``ticks_per_s`` time the work on the input: from here, after the model
    # and the library it needs (xgboost imports scikit-learn: a second) are loaded.
    started = time.perf_counter()
    book = ContextBook(prune_lag_ms=None)
    n_events = 0
    for path in events:
        for ev in read_events(path):
            book.add(ev)
            n_events += 1
    config = PipelineConfig.from_settings(settings)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    files = list(files)
    log.info("processing %d file(s) with %d shard(s)%s", len(files), jobs,
             f", model {models.current.version}" if models and models.current else "")
    if jobs == 1:
        sink = RowSink(out_dir) if out_dir is not None else None
        shard = Shard(config, book, files, sink, record_ticks=models is not None)
        try:
            for i, path in enumerate(files):
                rows = numbered_rows(numbered_csv(path))
                shard.feed(i, rows if progress is None else _counted(rows, progress))
            results = [shard.finish()]
        finally:
            if sink is not None:
                sink.close()
    else:
        results = _run_forked(files, config, book, out_dir, jobs, models is not None,
                              progress)

    # Score and decide every bar in one place, in the one-process order (risk spans symbols),
    # and check open positions on each of their symbol's ticks (offline.decide).
    decider = Pipeline(config, models=models, context=book)
    out = Outputs()
    decide_in_order(decider, heapq.merge(*(r.decisions for r in results), key=itemgetter(0)),
                    {s: t for r in results for s, t in r.tapes.items()}, out)
    actions = Counter(c.action for c in out.commands)
    if out_dir is not None:  # always written: a run without commands must not leave an
        # older run's commands.csv behind to be taken for its own
        with (out_dir / "commands.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(TradingCommand.FIELDS)
            w.writerows(record_row(c) for c in out.commands)
    rejected: Counter[str] = Counter()
    for r in results:
        rejected.update(r.rejected)
    elapsed = time.perf_counter() - started
    ticks_in = sum(r.ticks_in for r in results)
    return {
        "ticks_in": ticks_in,
        "events_in": n_events,
        "clean": sum(r.clean for r in results),
        "duplicates": sum(r.duplicates for r in results),
        "rejected": dict(sorted(rejected.items())),
        "bars": sum(r.bars for r in results),
        "features": sum(r.features for r in results),
        "commands": {a: actions.get(a, 0) for a in ("BUY", "SELL", "CLOSE")},
        "model_version": (models.current.version if models and models.current else None),
        "jobs": jobs,
        "stages_compiled": native.compiled(),
        "seconds": round(elapsed, 3),
        "ticks_per_s": round(ticks_in / elapsed) if elapsed > 0 else None,
    }


def _open_store(url: StoreURL) -> Backend:
    from storage.backend import open_backend
    from storage.migrations import migrate

    backend = open_backend(url)
    try:
        migrate(backend)
    except BaseException:
        backend.close()
        raise
    return backend


def _run_forked(files: Sequence[Path], config: PipelineConfig, book: ContextBook,
                out_dir: Path | None, jobs: int, record_ticks: bool = False,
                progress: Callable[[int], None] | None = None) -> list[ShardResult]:
    """Deal the rows out to ``jobs`` forked shards by symbol; collect their results."""
    ctx = multiprocessing.get_context("fork")
    parts: Path | None = None
    pipes: list[tuple[Any, Any]] = []  # (child reads, parent writes)
    backs: list[tuple[Any, Any]] = []  # (parent reads, child writes)
    procs = []
    try:
        # Forked with Ctrl-C deferred (offline/forking.py). The parts directory and the pipes
        # are made inside it too: a Ctrl-C right after the directory was made left it
        # behind in --out.
        with interrupts_deferred():
            parts = Path(tempfile.mkdtemp(prefix=".parts-", dir=out_dir)) if out_dir else None
            pipes = [ctx.Pipe(duplex=False) for _ in range(jobs)]
            for _r, w in pipes:
                widen_pipe(w)
            backs = [ctx.Pipe(duplex=False) for _ in range(jobs)]
            for k in range(jobs):
                sink = KeyedParts(parts, k) if parts is not None else None
                shard = Shard(config, book, files, sink, record_ticks)
                mine = (pipes[k][0], backs[k][1])
                foreign = [c for pair in pipes + backs for c in pair if c not in mine]
                p = ctx.Process(target=child_main, args=(shard, *mine, foreign),
                                name=f"tickstream-process-{k}", daemon=True)
                p.start()
                procs.append(p)
        for r, _w in pipes:
            r.close()
        for _r, w in backs:
            w.close()
        _route(files, [w for _r, w in pipes], jobs, progress)
        results = [receive(r, procs[k], f"process shard {k}")
                   for k, (r, _w) in enumerate(backs)]
        if out_dir is not None and parts is not None:
            for name in SHARD_OUTPUTS:
                merge_parts(parts, name, jobs, out_dir / f"{name}.csv")
        return results
    finally:
        for pair in pipes + backs:  # first: a shard blocked on a pipe gets EPIPE and exits
            for c in pair:
                c.close()
        reap(procs)
        if parts is not None:
            shutil.rmtree(parts, ignore_errors=True)


CHUNK = 2048
#: Bytes a shard's input pipe holds (Linux's default is 64 KiB, less than one chunk).
PIPE_BYTES = 1 << 20


def widen_pipe(conn: Connection) -> None:
    """Let the parent parse ahead of the shards: with Linux's 64 KiB pipe the parent blocked
    on every chunk it sent, so a shard starved whenever the parent was parsing the next
    block. Up to ``PIPE_BYTES`` (capped by ``/proc/sys/fs/pipe-max-size``); a platform
    without ``F_SETPIPE_SZ`` keeps its default."""
    import fcntl

    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    with suppress(OSError):  # over the system's cap (an unprivileged process): the default
        fcntl.fcntl(conn.fileno(), setsize, PIPE_BYTES)


def _counted(records: Iterable[T], progress: Callable[[int], None]) -> Iterator[T]:
    """``records`` as they are, reporting every :data:`CHUNK` of them to ``progress``."""
    n = 0
    for record in records:
        yield record
        n += 1
        if n == CHUNK:
            progress(n)
            n = 0
    if n:
        progress(n)


def _route(files: Sequence[Path], shards: Sequence[Connection], jobs: int,
           progress: Callable[[int], None] | None = None) -> None:
    """Send every record to the shard owning its symbol (dealt out in order of first sight).

    The file is parsed here, once (:func:`~connectors.history.batch_readers.numbered_csv`):
    a block of plain rows goes to the shards as columns, split by symbol with numpy, so a
    shard's process spends its time on the stages. A malformed row has no symbol to own it:
    it goes to shard 0, which reports it under its record number as any shard would.
    """
    owner: dict[str, int] = {}
    dead: set[int] = set()
    pending: list[list[tuple[int, Tick | BadRow]]] = [[] for _ in range(jobs)]

    def send(k: int, chunk: Chunk | None) -> None:
        if k not in dead:
            try:
                shards[k].send(chunk)
            except OSError:  # that shard is gone; the caller finds its result pipe empty
                dead.add(k)

    def flush(i: int, k: int) -> None:
        rows = pending[k]
        if rows:
            if progress is not None:
                progress(len(rows))
            send(k, (i, None, rows))
            pending[k] = []

    def owner_of(symbol: str) -> int:
        k = owner.get(symbol)
        if k is None:
            k = owner[symbol] = len(owner) % jobs
        return k

    try:
        for i, path in enumerate(files):
            for n, item in numbered_csv(path):
                if isinstance(item, TickBatch):
                    for k in range(jobs):  # each shard's records stay in file order
                        flush(i, k)
                    _send_batch(i, n, item, owner_of, jobs, send, progress)
                    continue
                k = 0 if isinstance(item, BadRow) else owner_of(item.symbol)
                pending[k].append((n, item))
                if len(pending[k]) >= CHUNK:
                    flush(i, k)
            for k in range(jobs):
                flush(i, k)
    finally:
        for k in range(jobs):
            send(k, None)


def _send_batch(i: int, first: int, batch: TickBatch, owner_of: Callable[[str], int],
                jobs: int, send: Callable[[int, Chunk], None],
                progress: Callable[[int], None] | None) -> None:
    """Records ``first ..`` of file ``i``, ``batch``, to the shards owning their symbols."""
    codes = batch.symbol_code
    present, at = np.unique(codes, return_index=True)
    shard_of = np.full(len(batch.symbols), -1, dtype=np.int64)
    for code in present[np.argsort(at, kind="stable")].tolist():
        shard_of[code] = owner_of(batch.symbols[code])
    target = shard_of[codes]
    numbers = np.arange(first, first + len(batch), dtype=np.int64)
    parts: list[tuple[int, npt.NDArray[np.int64], TickBatch]] = []
    for k in range(jobs):
        rows = np.flatnonzero(target == k)
        if len(rows) == len(batch):
            parts.append((k, numbers, batch))
        elif len(rows):
            parts.append((k, numbers[rows], batch.take(rows)))
    # In chunks of CHUNK rows, the shards in turn: each starts on the block's first rows
    # at once, and the progress bar moves as they go.
    longest = max(len(b) for _k, _n, b in parts)
    for start in range(0, longest, CHUNK):
        for k, nums, part in parts:
            if start < len(part):
                piece = slice(start, start + CHUNK)
                if progress is not None:
                    progress(min(CHUNK, len(part) - start))
                send(k, (i, nums[piece], part.take(piece)))
