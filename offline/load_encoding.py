"""History ticks → the framed ``RawTick`` bytes the loader produces, one or a batch at once.

Both write exactly what the codec writes for ``RawTick(..., recv_time_us=time_msc * 1000,
seq=None, source=HISTORY)`` (history has no receive clock): the tests hold them equal to
``codec.encode`` for any tick. :func:`history_encoder` does one tick about twice as fast as
the codec (no record object, the header with the broker and symbol built once per stream);
:func:`encode_batch` does a whole :class:`~connectors.history.batch.TickBatch` with numpy,
rows of the same layout (stream, which optional fields, varint lengths) as one byte matrix.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from connectors.history.batch import TickBatch
from schemas import avro
from schemas.compiled import encode_long
from schemas.records import RawTick
from stages.types import Tick

#: Times whose µs fit a signed 64-bit long with room to spare; a batch with a time beyond
#: is encoded row by row (which raises as the codec does).
_MAX_MS = (1 << 62) // 1000
#: 2**7, 2**14, ... 2**63: a zig-zag value below the k-th needs k + 1 varint bytes.
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _source_symbols() -> list[str]:
    fields = avro.schema(RawTick.SCHEMA)["fields"]
    [source] = [f for f in fields if f["name"] == "source"]
    return list(source["type"]["symbols"])


HISTORY_SOURCE = encode_long(_source_symbols().index("HISTORY"))


def _string(text: str) -> bytes:
    raw = text.encode()
    return encode_long(len(raw)) + raw


def history_encoder(codec: Any, topic: str) -> Callable[[Tick], bytes]:
    """One history tick → its framed ``RawTick`` bytes."""
    header = codec.framing.header(RawTick.SCHEMA, topic)
    pack_quote = struct.Struct("<dd").pack
    pack_double = struct.Struct("<d").pack
    source = HISTORY_SOURCE
    prefixes: dict[tuple[str, str], bytes] = {}

    def encode(t: Tick) -> bytes:
        key = (t.broker, t.symbol)
        prefix = prefixes.get(key)
        if prefix is None:
            prefix = prefixes[key] = header + _string(t.broker) + _string(t.symbol)
        last = b"\x00" if t.last is None else b"\x02" + pack_double(t.last)
        volume = b"\x00" if t.volume is None else b"\x02" + pack_double(t.volume)
        ms = t.time_msc
        return b"".join((prefix, pack_quote(t.bid, t.ask), last, volume, encode_long(ms),
                         encode_long(ms * 1000), b"\x00", source))

    return encode


def _zigzag(values: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((values << 1) ^ (values >> 63)).view(np.uint64)


def _varint_lengths(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
    return np.searchsorted(_VARINT_LIMITS, z, side="right") + 1


def _put_varint(out: npt.NDArray[np.uint8], at: int, z: npt.NDArray[np.uint64],
                width: int) -> None:
    for k in range(width):
        byte = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        if k < width - 1:
            byte |= 0x80
        out[:, at + k] = byte


def _put_double(out: npt.NDArray[np.uint8], at: int, values: npt.NDArray[np.float64]) -> None:
    out[:, at:at + 8] = values.astype("<f8").view(np.uint8).reshape(-1, 8)


def encode_batch(codec: Any, topic: str, batch: TickBatch) -> list[bytes]:
    """The framed ``RawTick`` bytes of every row of ``batch``, in row order."""
    n = len(batch)
    if n == 0:
        return []
    ms = batch.time_msc.astype(np.int64)
    if int(np.abs(ms).max()) > _MAX_MS:
        encode = history_encoder(codec, topic)
        return [encode(t) for t in batch.ticks()]
    header = codec.framing.header(RawTick.SCHEMA, topic)
    zm, zu = _zigzag(ms), _zigzag(ms * 1000)
    lm, lu = _varint_lengths(zm), _varint_lengths(zu)
    streams = batch.stream_code()
    # one layout per (stream, ms varint length, µs varint length): rows of one layout have
    # the same length and the same bytes in the same places
    layout = (streams.astype(np.int64) * 11 + lm) * 11 + lu
    kinds, inverse = np.unique(layout, return_inverse=True)
    last, volume = batch.last, batch.volume
    tail = b"\x00" + HISTORY_SOURCE  # seq: null, source: HISTORY
    out: list[bytes] = [b""] * n if len(kinds) > 1 else []
    for k, kind in enumerate(kinds.tolist()):
        rows = np.flatnonzero(inverse == k) if len(kinds) > 1 else None
        width_u, width_m = kind % 11, (kind // 11) % 11
        broker, symbol = batch.stream_names(kind // 121)
        prefix = header + _string(broker) + _string(symbol)

        def pick(a: Any, rows: Any = rows) -> Any:
            return a if rows is None else a[rows]

        count = n if rows is None else len(rows)
        size = (len(prefix) + 16 + (9 if last is not None else 1)
                + (9 if volume is not None else 1) + width_m + width_u + len(tail))
        m = np.empty((count, size), np.uint8)
        at = len(prefix)
        m[:, :at] = np.frombuffer(prefix, np.uint8)
        _put_double(m, at, pick(batch.bid))
        _put_double(m, at + 8, pick(batch.ask))
        at += 16
        for col in (last, volume):
            if col is None:
                m[:, at] = 0
                at += 1
            else:
                m[:, at] = 2
                _put_double(m, at + 1, pick(col))
                at += 9
        _put_varint(m, at, pick(zm), width_m)
        at += width_m
        _put_varint(m, at, pick(zu), width_u)
        at += width_u
        m[:, at:] = np.frombuffer(tail, np.uint8)
        data = m.tobytes()
        values = [data[i:i + size] for i in range(0, count * size, size)]
        if rows is None:
            return values
        for i, v in zip(rows.tolist(), values, strict=True):
            out[i] = v
    return out
