"""Column-at-a-time Avro decoding of many bodies of one flat record schema, with numpy.

The storage sink turns tens of thousands of records per batch into columns. Decoding them one
by one (:mod:`schemas.compiled`: ~9 µs for a CleanTick) and then gathering each field into a
column (~3 µs) cost more than the rest of the sink together. Here one pass per *field* reads
that field of every body at once: all bodies sit in one byte array, a position per body moves
through it, and each step is a handful of numpy operations over all rows:

* ``int``/``long``: the next ten bytes of every row are gathered, the varint's length is the
  first byte without the continuation bit, the 7-bit groups are shifted into place and
  zig-zag decoded;
* ``float``/``double``: four or eight bytes gathered and viewed as little-endian floats;
* ``string``/``bytes``/``enum``: the length (index) as a varint; short strings of a field
  (broker, symbol, reason, ...) are grouped by their bytes with ``np.unique`` and each
  distinct value decoded once; longer ones (ids, details, raw bytes) are sliced per row;
* a two-branch union with ``null``: the branch byte, then the other branch for the rows that
  have it.

Anything unusual about a row — a varint longer than ten bytes or past 64 bits, a negative
length, a body that ends early or has trailing bytes, a bad union or enum index, invalid
UTF-8, an ``int`` outside 32 bits — marks the row *not done* instead of raising: the caller
decodes those rows one by one with the codec, which decides exactly as before (a good row
the fast path declined is decoded the slow way; a bad one becomes a reject). So for every
row accepted here the values are those :func:`schemas.compiled.compile_reader` returns, and
nothing else changes (``tests/unit/schemas/test_columnar.py`` checks both on generated,
random and corrupted bodies of every stored schema).

Columns come out as numpy arrays: ``float64`` for ``float``/``double`` (an optional one
holds NaN for null, as the stores take it, or ``None`` in an object array on request),
``int64`` for ``int``/``long``, ``bool`` for ``boolean``, and object arrays (``str``,
``bytes``, or ``None`` for null; Python ints for an optional ``long``) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import avro
from .avro import Schema
from .compiled import _kinds

if TYPE_CHECKING:
    from .codec import Codec

__all__ = ["ColumnReader", "compile_column_reader", "decode_columns", "decode_rows"]

Array = np.ndarray[Any, Any]
#: Rows a reader works on: every row (``slice(None)``, views, no copies) or some of them.
Sel = slice | Array
_EVERY = slice(None)
_TEN = np.arange(10, dtype=np.int64)
_SHIFTS = (7 * _TEN).astype(np.uint64)
_TINY = 7  # strings up to this long are keyed by one uint64 (bytes and length)
_SHORT = 24  # up to this long grouped with np.unique over their bytes; longer ones sliced
_INT32 = (-(1 << 31), (1 << 31) - 1)


@dataclass(slots=True)
class _Rows:
    """The byte array, every row's current position and end, and which rows are still good."""

    data: bytes  # every body, back to back
    buf: Array  # ``data`` as uint8, padded: a window read past any position stays in bounds
    pos: Array  # int64 per row
    end: Array  # int64 per row
    ok: Array  # bool per row
    windows: dict[int, Array]

    def window(self, pos: Array, width: int) -> Array:
        """The ``width`` bytes at each of ``pos`` (rows x width, one gather)."""
        view = self.windows.get(width)
        if view is None:
            view = self.windows[width] = np.lib.stride_tricks.as_strided(
                self.buf, shape=(len(self.buf) - width + 1, width), strides=(1, 1),
                writeable=False)
        return view[pos]  # type: ignore[no-any-return]

    def bad(self, sel: Sel, bad: Array) -> None:
        if bad.any():
            if isinstance(sel, slice):
                self.ok[bad] = False
            else:
                self.ok[sel[bad]] = False


def _varints(rows: _Rows, sel: Sel) -> Array:
    """Zig-zag varints at the positions of rows ``sel``; advances them, marks bad ones."""
    pos = rows.pos[sel]
    b = rows.window(pos, 10)
    term = b < 0x80
    n = term.argmax(axis=1) + 1
    ended = term.any(axis=1)
    if not ended.all():  # no last byte within ten: argmax said 1; as ten, it is checked below
        n[~ended] = 10
    longest = int(n.max()) if len(n) else 1
    if longest == 1:
        z = b[:, 0].astype(np.uint64)
    else:
        head = b[:, :longest]
        groups = (head & 0x7F).astype(np.uint64) << _SHIFTS[:longest]
        if int(n.min()) != longest:
            groups[_TEN[None, :longest] >= n[:, None]] = 0
        z = np.bitwise_or.reduce(groups, axis=1)
        if longest == 10:
            rows.bad(sel, ~ended | ((n == 10) & (b[:, 9] > 1)))
    rows.pos[sel] = pos + n
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)


def _lengths(rows: _Rows, sel: Sel) -> tuple[Array, Array]:
    """(start, length) of the string/bytes at rows ``sel``; advances past them."""
    n = _varints(rows, sel)
    start = rows.pos[sel].copy()  # a view when sel is every row
    bad = (n < 0) | (n > rows.end[sel] - start)  # negative, or past the body's end
    if bad.any():
        rows.bad(sel, bad)
        n = np.where(bad, 0, n)
    rows.pos[sel] = start + n
    return start, n


def _distinct(keys: Array) -> tuple[Array, Array]:
    """(distinct keys, each row's index into them). A field's short strings take few values
    (brokers, symbols, reasons): one comparison pass per value beats sorting; many values
    fall back to ``np.unique``."""
    if keys.dtype == np.uint64:
        inverse = np.full(len(keys), -1, dtype=np.int64)
        found: list[Any] = []
        left = keys
        where = np.arange(len(keys))
        while len(left) and len(found) < 8:
            hit = left == left[0]
            inverse[where[hit]] = len(found)
            found.append(left[0])
            left, where = left[~hit], where[~hit]
        if not len(left):
            return np.array(found, dtype=np.uint64), inverse
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, inv.ravel()


def _strings(rows: _Rows, sel: Sel, decode: bool) -> Array:
    start, n = _lengths(rows, sel)
    out = np.empty(len(n), dtype=object)
    if not len(n):
        return out
    longest = int(n.max())
    if longest <= _SHORT and len(n) > 32:
        width = max(longest, 1)
        grid = rows.window(start, width)
        if longest < width or int(n.min()) < longest:
            grid = np.where(np.arange(width)[None, :] < n[:, None], grid, 0).astype(np.uint8)
        if longest <= _TINY:
            packed = np.zeros((len(n), 8), dtype=np.uint8)
            packed[:, :width] = grid
            packed[:, 7] = n
            uniq, inverse = _distinct(packed.view("<u8").ravel())
            bodies = [int(k).to_bytes(8, "little") for k in uniq.tolist()]
            pieces = [b[:b[7]] for b in bodies]
        else:
            keyed = np.concatenate([n.astype("<i8").view(np.uint8).reshape(-1, 8), grid], axis=1)
            keys = np.ascontiguousarray(keyed).view(np.dtype((np.void, width + 8))).ravel()
            uniq, inverse = _distinct(keys)
            pieces = []
            for key in uniq:
                k = bytes(key)
                pieces.append(k[8:8 + int.from_bytes(k[:8], "little")])
        values, bad = _values(pieces, decode)
        out[:] = values[inverse]
        rows.bad(sel, bad[inverse])
        return out
    data = rows.data
    out, bad = _values([data[s:s + k] for s, k in zip(start.tolist(), n.tolist(),
                                                      strict=True)], decode)
    rows.bad(sel, bad)
    return out


def _values(pieces: Sequence[bytes], decode: bool) -> tuple[Array, Array]:
    """The pieces as an object array (decoded as UTF-8 for strings) and which did not
    decode."""
    values = np.empty(len(pieces), dtype=object)
    bad = np.zeros(len(pieces), dtype=bool)
    if not decode:
        values[:] = pieces
        return values, bad
    for i, piece in enumerate(pieces):
        try:
            values[i] = piece.decode()
        except UnicodeDecodeError:
            bad[i] = True
    return values, bad


def _fixed(rows: _Rows, sel: Sel, widths: Sequence[int]) -> list[Array]:
    """A run of consecutive float/double fields: one gather for all of them."""
    pos = rows.pos[sel]
    total = sum(widths)
    b = rows.window(pos, total)
    rows.pos[sel] = pos + total
    out, at = [], 0
    for w in widths:
        part = np.ascontiguousarray(b[:, at:at + w])
        out.append(part.view("<f8" if w == 8 else "<f4").ravel().astype(np.float64, copy=False))
        at += w
    return out


Reader = Callable[[_Rows, Sel], Array]


def _reader(kind: str, detail: Any, none_for_null: bool = False) -> Reader:
    if kind == "null":
        return lambda rows, sel: np.full(len(rows.pos[sel]), None, dtype=object)
    if kind == "boolean":
        def boolean(rows: _Rows, sel: Sel) -> Array:
            pos = rows.pos[sel]
            b = rows.buf[pos]
            rows.pos[sel] = pos + 1
            return b != 0  # type: ignore[no-any-return]  # as the compiled reader reads it
        return boolean
    if kind == "long":
        return _varints
    if kind == "int":
        def int32(rows: _Rows, sel: Sel) -> Array:
            v = _varints(rows, sel)
            rows.bad(sel, (v < _INT32[0]) | (v > _INT32[1]))
            return v
        return int32
    if kind in ("float", "double"):
        width = 4 if kind == "float" else 8
        return lambda rows, sel: _fixed(rows, sel, (width,))[0]
    if kind in ("string", "bytes"):
        decode = kind == "string"
        return lambda rows, sel: _strings(rows, sel, decode)
    if kind == "enum":
        symbols = np.array(list(detail), dtype=object)

        def enum(rows: _Rows, sel: Sel) -> Array:
            i = _varints(rows, sel)
            bad = (i < 0) | (i >= len(symbols))
            if bad.any():
                rows.bad(sel, bad)
                i = np.where(bad, 0, i)
            return symbols[i]  # type: ignore[no-any-return]
        return enum
    if kind == "optional":
        null_index, (okind, odetail) = detail
        inner = _reader(okind, odetail)
        numeric_float = okind in ("float", "double") and not none_for_null

        def optional(rows: _Rows, sel: Sel) -> Array:
            pos = rows.pos[sel]
            u = rows.buf[pos]
            rows.pos[sel] = pos + 1
            is_null = u == 2 * null_index
            has = u == 2 * (1 - null_index)
            rows.bad(sel, ~(is_null | has))
            some = np.flatnonzero(has) if isinstance(sel, slice) else sel[has]
            values = inner(rows, some)
            if numeric_float:
                out = np.full(len(pos), np.nan)
                out[has] = values
                return out
            obj = np.full(len(pos), None, dtype=object)
            obj[has] = values.astype(object) if values.dtype != object else values
            return obj
        return optional
    raise AssertionError(kind)  # pragma: no cover - _kinds admits nothing else


def _plan(kinds: Sequence[tuple[str, str, Any]],
          none_for_null: bool) -> list[tuple[tuple[str, ...], Any]]:
    """Steps over the fields: a run of plain float/double fields is one step."""
    steps: list[tuple[tuple[str, ...], Any]] = []
    run: list[tuple[str, int]] = []

    def close_run() -> None:
        if run:
            widths = tuple(w for _n, w in run)
            steps.append((tuple(n for n, _w in run),
                          lambda rows, sel, widths=widths: _fixed(rows, sel, widths)))
            run.clear()

    for name, kind, detail in kinds:
        if kind in ("float", "double"):
            run.append((name, 4 if kind == "float" else 8))
            continue
        close_run()
        reader = _reader(kind, detail, none_for_null)
        steps.append(((name,), lambda rows, sel, reader=reader: [reader(rows, sel)]))
    close_run()
    return steps


class ColumnReader:
    """Reads many bodies of one schema into columns (see the module docstring)."""

    __slots__ = ("_pad", "_steps", "fields")

    def __init__(self, kinds: Sequence[tuple[str, str, Any]],
                 none_for_null: bool = False) -> None:
        self.fields = tuple(name for name, _k, _d in kinds)
        self._steps = _plan(kinds, none_for_null)
        # a row's position never runs more than 10 bytes per field past the data (strings
        # are cut at their body's end), and a window reads at most 8 per float field more
        self._pad = 16 + 18 * len(kinds) + _SHORT

    def read(self, data: bytes, starts: Array, ends: Array) -> tuple[dict[str, Array], Array]:
        """Columns of the bodies ``data[starts[i]:ends[i]]`` and which rows they hold: (the
        fields' arrays over the rows that were read, the indices of those rows). Rows not
        returned need the one-by-one path."""
        n = len(starts)
        buf = np.frombuffer(data + bytes(self._pad), dtype=np.uint8)
        rows = _Rows(data, buf, np.array(starts, dtype=np.int64),
                     np.asarray(ends, dtype=np.int64), np.ones(n, dtype=bool), {})
        cols: list[Array] = []
        for _names, step in self._steps:
            cols.extend(step(rows, _EVERY))
        rows.ok &= rows.pos == rows.end
        done = np.flatnonzero(rows.ok)
        if len(done) == n:
            return dict(zip(self.fields, cols, strict=True)), done
        return {f: c[done] for f, c in zip(self.fields, cols, strict=True)}, done


def compile_column_reader(schema: Schema, none_for_null: bool = False) -> ColumnReader | None:
    """A :class:`ColumnReader` for ``schema``, or None when it is not a flat record of the
    kinds :mod:`schemas.compiled` supports. ``none_for_null``: an optional float/double
    column is an object array holding ``None`` for null (the codec's values), not NaN."""
    kinds = _kinds(schema)
    return None if kinds is None else ColumnReader(kinds, none_for_null)


_READERS: dict[tuple[str, bool], ColumnReader | None] = {}
_PROBES = 16  # unknown headers tried per call (each once, through the codec)


def column_reader(schema_name: str, none_for_null: bool = False) -> ColumnReader | None:
    """The :class:`ColumnReader` of the current schema ``schema_name`` (cached)."""
    key = (schema_name, none_for_null)
    try:
        return _READERS[key]
    except KeyError:
        reader = _READERS[key] = compile_column_reader(avro.schema(schema_name), none_for_null)
        return reader


def decode_columns(codec: Codec, schema_name: str, values: Sequence[bytes],
                   topic: str = "", *, none_for_null: bool = False
                   ) -> tuple[dict[str, Array], Array]:
    """Columns of the framed ``values`` that carry a header of the current layout (see
    :meth:`Codec.current_headers`) and read cleanly, and the indices of those rows. Every
    other row (another writer version, another framing, anything malformed) is for the
    caller to decode one by one with ``codec.decode_dict``, which decides it exactly as
    it always has. ``none_for_null``: see :func:`compile_column_reader`."""
    reader = column_reader(schema_name, none_for_null)
    if reader is None or not values:
        return {}, np.empty(0, dtype=np.int64)
    size = codec.framing.header_size
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    data = b"".join(values)
    ends = np.cumsum(lens)
    starts = ends - lens
    if not data:
        return {}, np.empty(0, dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)  # no copy; a short row's clamped head is masked
    idx = np.minimum(starts[:, None] + np.arange(size, dtype=np.int64)[None, :], len(buf) - 1)
    heads = buf[idx]
    long_enough = lens >= size

    def matching() -> Array:
        match = np.zeros(len(values), dtype=bool)
        for h in codec.current_headers(schema_name):
            match |= (heads == np.frombuffer(h, dtype=np.uint8)[None, :]).all(axis=1)
        return match & long_enough  # type: ignore[no-any-return]

    match = matching()
    if not match.all():
        # a header not decoded before: decode one row of it the usual way, which tells the
        # codec whether it names the current layout (then its rows are read here too)
        rest = np.flatnonzero(~match & long_enough)
        if len(rest):
            keys = np.ascontiguousarray(heads[rest]).view(np.dtype((np.void, size))).ravel()
            _, first = np.unique(keys, return_index=True)
            for i in rest[np.sort(first)][:_PROBES].tolist():
                try:
                    codec.decode_dict(schema_name, values[i], topic)
                except Exception:  # the caller decodes it again
                    continue
            match = matching()
    sel = np.flatnonzero(match)
    if not len(sel):
        return {}, sel
    cols, done = reader.read(data, starts[sel] + size, ends[sel])
    return cols, sel[done]


#: :func:`decode_rows` reads at most this many rows per pass. The passes' temporaries (a
#: ten-byte window per row and varint, uint64 groups) then stay in the CPU caches: replaying
#: the four Lean days (1.15M RawTicks) decoded in 2.4 s in one pass, 1.2 s in passes of 16k.
ROWS_CHUNK = 16_384


def decode_rows(codec: Codec, schema_name: str, values: Sequence[bytes], fields: Sequence[str],
                topic: str = "") -> list[tuple[Any, ...] | None]:
    """``fields`` of each of ``values`` as a tuple, read column-wise (nulls as ``None``), in
    their order; ``None`` where this path declined the row (another writer version,
    another framing, anything malformed), which the caller decodes on its own with
    ``codec.decode_dict`` — so every row is what ``decode_dict`` would give. Read in passes
    of at most :data:`ROWS_CHUNK` rows."""
    out: list[tuple[Any, ...] | None] = [None] * len(values)
    for at in range(0, len(values), ROWS_CHUNK):
        chunk = values[at:at + ROWS_CHUNK] if len(values) > ROWS_CHUNK else values
        cols, done = decode_columns(codec, schema_name, chunk, topic, none_for_null=True)
        if len(done):
            rows = zip(*(cols[f].tolist() for f in fields), strict=True)
            for i, row in zip((done + at).tolist(), rows, strict=True):
                out[i] = row
    return out
