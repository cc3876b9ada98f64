"""The generated Avro writers/readers (schemas/compiled.py) against fastavro, the reference.

Every schema version shipped (current and history) that compiles is checked on generated
records: the compiled writer's bytes equal fastavro's, and the compiled reader returns what
fastavro reads. On arbitrary bytes the compiled reader never accepts what fastavro rejects,
and what it accepts it reads exactly as fastavro does.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest
from fuzzing import LONGS, avro_values
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro
from schemas.compiled import compile_reader, compile_writer, encode_long
from schemas.records import CleanTick

# (name, index): index into the shipped history, or -1 for the current schema
VERSIONS = [(name, i) for name in avro.SCHEMA_NAMES for i in range(-1, len(avro.history(name)))]


def _schema(name: str, version: int) -> Any:
    return avro.schema(name) if version < 0 else avro.history(name)[version]


def _value(ftype: Any) -> st.SearchStrategy[Any]:
    return avro_values(ftype, nan=False)


def _fastavro_write(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _fastavro_read(schema: Any, data: bytes) -> tuple[Any, int]:
    buf = io.BytesIO(data)
    values = fastavro.schemaless_reader(buf, schema, None)
    return values, buf.tell()


def test_what_compiles() -> None:
    """Every flat schema compiles; MarketEvent (an array field) stays with fastavro."""
    for name, version in VERSIONS:
        schema = _schema(name, version)
        expected = name != "MarketEvent"
        assert (compile_writer(schema, attributes=True) is not None) is expected, name
        assert (compile_reader(schema) is not None) is expected, name


@pytest.mark.parametrize(("name", "version"), [v for v in VERSIONS if v[0] != "MarketEvent"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_bytes_and_values_equal_fastavro(name: str, version: int, data: Any) -> None:
    schema = _schema(name, version)
    record = {f["name"]: data.draw(_value(f["type"]), label=f["name"]) for f in schema["fields"]}
    expected = _fastavro_write(schema, record)
    by_attr = compile_writer(schema, attributes=True)
    by_item = compile_writer(schema, attributes=False)
    read = compile_reader(schema)
    assert by_attr is not None and by_item is not None and read is not None
    assert by_item(record) == expected
    assert by_attr(SimpleNamespace(**record)) == expected
    assert by_attr(SimpleNamespace(**record)) == expected  # cached strings give the same
    values, end = read(expected, 0)
    assert end == len(expected)
    assert values == _fastavro_read(schema, expected)[0]


@pytest.mark.parametrize("name", ["RawTick", "CleanTick", "RejectedRecord", "CollectorHealth"])
@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=120))
def test_compiled_reader_on_arbitrary_bytes(name: str, blob: bytes) -> None:
    """Never accepts what fastavro rejects; reads what it accepts exactly as fastavro.

    (It may reject a little more: a negative enum index, which fastavro resolves by Python's
    negative list indexing, and a varint longer than 64 bits.)
    """
    _same_or_stricter(name, blob)


def _nan_free(result: tuple[Any, int] | None) -> Any:
    """NaN != NaN: compare NaN-valued fields (valid Avro doubles) by what they are."""
    if result is None:
        return None
    values, end = result
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v
            for k, v in values.items()}, end


@functools.cache
def _current_reader(name: str) -> Any:
    return compile_reader(avro.schema(name))


def _same_or_stricter(name: str, blob: bytes) -> None:
    schema, read = avro.schema(name), _current_reader(name)
    assert read is not None
    try:
        ours: tuple[Any, int] | None = read(blob, 0)
    except (EOFError, IndexError, ValueError, struct.error, UnicodeDecodeError):
        ours = None
    try:
        theirs: tuple[Any, int] | None = _fastavro_read(schema, blob)
    except Exception:
        theirs = None
    if ours is not None:
        assert _nan_free(theirs) == _nan_free(ours)


@pytest.mark.parametrize("name", [n for n in avro.SCHEMA_NAMES if n != "MarketEvent"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_compiled_reader_on_every_single_byte_corruption(name: str, data: Any) -> None:
    """Each byte of a valid body replaced by values that matter (0, 1, 2, sign, continuation)."""
    schema = avro.schema(name)
    record = {f["name"]: data.draw(_value(f["type"]), label=f["name"]) for f in schema["fields"]}
    body = _fastavro_write(schema, record)
    for pos in range(len(body)):
        for byte in (0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF):
            _same_or_stricter(name, body[:pos] + bytes((byte,)) + body[pos + 1:])


def test_truncated_bodies_are_rejected_at_every_length() -> None:
    schema = avro.schema("CleanTick")
    tick = CleanTick(
        broker="ICM", symbol="EURUSD", time_msc=1_700_000_000_123,
        recv_time_us=1_700_000_000_123_456, bid=1.1, ask=1.2, mid=1.15, spread=0.1,
        best_bid=1.1, best_ask=1.2, best_bid_broker="ICM", best_ask_broker="PEP",
        fresh_brokers=2, dispersion=0.0, seq=7, processed_time_us=1_700_000_000_200_000,
    )
    write = compile_writer(schema, attributes=True)
    read = compile_reader(schema)
    assert write is not None and read is not None
    body = write(tick)
    assert read(body, 0) == (tick.to_dict(), len(body))
    for cut in range(len(body)):
        with pytest.raises((EOFError, IndexError, struct.error)):
            read(body[:cut], 0)


@given(n=LONGS)
def test_encode_long_is_avro_long(n: int) -> None:
    assert encode_long(n) == _fastavro_write({"type": "long"}, n)  # type: ignore[arg-type]


def test_encode_long_edges_and_overflow() -> None:
    edges = [0, -1, 1, 63, -64, 64, 8191, -8192, 8192, 2**62, -(2**63), 2**63 - 1]
    edges += [s * (2**k + d) for k in (13, 14, 27, 28, 41, 42) for d in (-1, 0, 1)
              for s in (1, -1)]  # around the 14- and 28-bit table splits
    edges += [1_700_000_000_000 + i * 8_191 for i in range(50)]  # ms timestamps
    edges += [1_700_000_000_000_000 + i * 9_973 for i in range(50)]  # µs timestamps
    for n in edges:
        assert encode_long(n) == _fastavro_write({"type": "long"}, n)  # type: ignore[arg-type]
    for n in (2**63, -(2**63) - 1, 2**70):
        with pytest.raises(OverflowError):
            encode_long(n)


def test_writer_rejects_wrong_values_like_fastavro() -> None:
    schema = avro.schema("TradingCommand")
    write = compile_writer(schema, attributes=False)
    assert write is not None
    good = {
        "command_id": "c1", "action": "BUY", "symbol": "EURUSD", "volume": 0.1, "price": 1.1,
        "stop_loss": None, "take_profit": 1.2, "confidence": 0.7, "model_version": "v1",
        "reason": "entry", "bar_time": 1, "trigger_recv_time_us": 2, "created_time_us": 3,
    }
    assert write(good) == _fastavro_write(schema, good)
    with pytest.raises(ValueError):
        write({**good, "action": "HOLD"})  # not an enum symbol
    with pytest.raises(TypeError):
        write({**good, "price": "1.1"})  # not a number
    with pytest.raises(TypeError):
        write({**good, "symbol": 5})  # not a string
    with pytest.raises(TypeError):
        write({**good, "bar_time": 1.5})  # not an integer


def test_string_cache_is_bounded() -> None:
    schema = avro.schema("ControlMessage")
    write = compile_writer(schema, attributes=False)
    assert write is not None
    base = {"command": "kill", "reason": "", "issued_by": "ops", "time_ms": 1,
            "model_version": None, "model_path": None}
    for i in range(3000):  # more distinct values than a field caches: still correct
        record = {**base, "reason": f"r{i}"}
        assert write(record) == _fastavro_write(schema, record)
