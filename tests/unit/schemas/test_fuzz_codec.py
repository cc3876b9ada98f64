"""Fuzzing the Avro codec: both framings, every record type, every shipped schema version.

Inputs are valid messages built from each writer schema (current and historical versions,
values drawn from the schema itself), then mutated: bytes flipped, inserted, deleted,
truncated, appended, headers swapped. The property: decoding raises nothing but
:class:`~schemas.codec.MalformedRecord` (reason ``malformed``), and what decodes is a record
of the requested type that encodes again and decodes to the same bytes. Unmutated messages
of any version must decode. One codec per framing is shared by all examples so the caches
(headers resolved to compiled readers, resolution decisions, fetched schema ids) are in
play as they are in a worker.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from typing import Any, cast

import fastavro
import pytest
from fake_schema_registry import FakeSchemaRegistry
from fuzzing import AVRO_SPECIAL, mutated_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import avro
from schemas.avro import Schema
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MARKER, Codec, MalformedRecord, make_codec
from schemas.records import RECORD_TYPES, Record

#: Examples per test: modest, so every fuzz test together runs in well under a minute;
#: TICKSTREAM_FUZZ_EXAMPLES=5000 for a long hunt.
FUZZ = settings(max_examples=int(os.environ.get("TICKSTREAM_FUZZ_EXAMPLES", "80")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

NAMES = sorted(RECORD_TYPES)
#: (record name, writer schema) for the current and every historical version.
VERSIONS: list[tuple[str, Schema]] = [
    (name, parsed) for name in NAMES for parsed in (*avro.history(name), avro.schema(name))
]

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def datum(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for a parsed Avro schema (the types our schemas use)."""
    if isinstance(schema, list):
        return st.one_of([datum(branch, named) for branch in schema])
    if isinstance(schema, str):
        if schema in named:
            return datum(named[schema], named)
        return {
            "null": st.none(), "boolean": st.booleans(), "int": INT32, "long": INT64,
            "float": st.floats(width=32), "double": st.floats(),
            "string": st.text(max_size=20), "bytes": st.binary(max_size=20),
        }[schema]
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries(
            {f["name"]: datum(f["type"], named) for f in schema["fields"]})
    if kind == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(datum(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), datum(schema["values"], named), max_size=3)
    return datum(kind, named)  # {"type": "long", "logicalType": ...}


def body(writer: Schema, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, value)
    return buf.getvalue()


_DATUMS: dict[int, st.SearchStrategy[Any]] = {}


def datum_of(writer: Schema) -> st.SearchStrategy[Any]:
    """:func:`datum` of a whole writer schema, built once."""
    key = id(writer)
    if key not in _DATUMS:
        _DATUMS[key] = datum(writer, {})
    return _DATUMS[key]



def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few byte edits, set edits using bytes that mean something to Avro."""
    return mutated_bytes(data, AVRO_SPECIAL, 8)

@st.composite
def valid_message(draw: st.DrawFn) -> tuple[str, Schema, bytes]:
    """(record name, writer schema, Avro body) for a random version of a random record."""
    name, writer = draw(st.sampled_from(VERSIONS))
    return name, writer, body(writer, draw(datum_of(writer)))




def check_decode(codec: Codec, data: Any, record_type: type[Record], topic: str) -> Record | None:
    """Decode; only MalformedRecord may escape; a decoded record must encode again."""
    try:
        record = codec.decode(data, record_type, topic)
    except MalformedRecord as exc:
        assert exc.reason == "malformed" and exc.detail
        return None
    assert type(record) is record_type
    again = codec.encode(record, topic)
    assert codec.encode(codec.decode(again, record_type, topic), topic) == again
    return record


def same_record(a: Record, b: Record) -> bool:
    """Equality with NaN equal to itself (doubles drawn by hypothesis include NaN)."""
    da, db = a.to_dict(), b.to_dict()

    def eq(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (math.isnan(x) and math.isnan(y))
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(eq(i, j) for i, j in zip(x, y, strict=True))
        return bool(x == y)

    return da.keys() == db.keys() and all(eq(da[k], db[k]) for k in da)


# ---- single-object framing ----------------------------------------------------------------
SO_CODEC = Codec()


def so_header(writer: Schema) -> bytes:
    return SINGLE_OBJECT_MARKER + avro.fingerprint(writer)


@FUZZ
@given(valid_message())
def test_single_object_every_valid_message_of_every_version_decodes(
    message: tuple[str, Schema, bytes],
) -> None:
    name, writer, raw = message
    record = check_decode(SO_CODEC, so_header(writer) + raw, RECORD_TYPES[name], "t")
    assert record is not None, f"a valid {name} message was rejected"


@FUZZ
@given(valid_message(), st.data(), st.sampled_from(NAMES))
def test_single_object_mutated_messages_only_raise_malformed(
    message: tuple[str, Schema, bytes], data: st.DataObject, other: str,
) -> None:
    name, writer, raw = message
    framed = so_header(writer) + raw
    candidates = [framed[:-1], framed + b"\x00", framed[:10], data.draw(mutated(framed)),
                  so_header(writer) + data.draw(mutated(raw))]
    for blob in candidates:
        for as_type in {name, other}:
            check_decode(SO_CODEC, blob, RECORD_TYPES[as_type], "t")


@FUZZ
@given(st.binary(max_size=80), st.sampled_from(NAMES))
def test_single_object_arbitrary_bytes_only_raise_malformed(blob: bytes, name: str) -> None:
    check_decode(SO_CODEC, blob, RECORD_TYPES[name], "t")
    check_decode(SO_CODEC, SINGLE_OBJECT_MARKER + blob, RECORD_TYPES[name], "t")


@FUZZ
@given(valid_message(), st.data())
def test_buffer_types_decode_like_bytes(message: tuple[str, Schema, bytes],
                                        data: st.DataObject) -> None:
    name, writer, raw = message
    blob = data.draw(st.one_of(st.just(so_header(writer) + raw), mutated(so_header(writer) + raw)))
    record_type = RECORD_TYPES[name]
    as_bytes = check_decode(SO_CODEC, blob, record_type, "t")
    for view in (bytearray(blob), memoryview(blob), memoryview(b"xx" + blob)[2:]):
        other = check_decode(SO_CODEC, view, record_type, "t")
        assert (as_bytes is None) == (other is None)
        if as_bytes is not None and other is not None:
            assert same_record(as_bytes, other)


@pytest.mark.parametrize("value", ["text", 12, None, [b"\x00"], 1.5])
def test_non_buffers_are_malformed(value: Any) -> None:
    with pytest.raises(MalformedRecord, match="expected bytes"):
        SO_CODEC.decode(value, RECORD_TYPES[NAMES[0]])


# ---- Confluent framing (schema ids from a registry) ---------------------------------------
SUBJECT_TOPIC = "fuzz"


def incompatible(writer: Schema) -> dict[str, Any]:
    """The writer's record with every field's type changed (a registry entry of the same
    name that cannot be resolved to the reader, or only partly)."""
    swap = {"double": "string", "string": "long", "long": "boolean", "int": "string",
            "boolean": "double", "bytes": "int"}
    fields = []
    for f in writer["fields"]:
        t = f["type"]
        new = swap.get(t, "bytes") if isinstance(t, str) else ["null", "string"]
        fields.append({"name": f["name"], "type": new})
    return {"type": "record", "name": writer["name"], "fields": fields}


@pytest.fixture(scope="module")
def confluent() -> Iterator[tuple[Codec, list[tuple[str, Schema, int]]]]:
    """A codec on a fake registry holding every version and a mangled twin of each record."""
    with FakeSchemaRegistry() as registry:
        ids: list[tuple[str, Schema, int]] = []
        for name, writer in VERSIONS:
            text = json.dumps(avro.raw_schema(name)) if writer is avro.schema(name) else \
                json.dumps(_history_json(name, writer))
            ids.append((name, writer, registry.register(f"{SUBJECT_TOPIC}-value", text)))
        for name in NAMES:
            twin = incompatible(avro.schema(name))
            ids.append((name, cast(Schema, fastavro.parse_schema(twin)),
                        registry.register(f"{SUBJECT_TOPIC}-twin-value", json.dumps(twin))))
        yield make_codec(registry.url), ids


def _history_json(name: str, writer: Schema) -> Any:
    """A historical version as JSON text a registry can hold (fastavro's parsed form is
    valid Avro JSON itself, without the internal keys)."""
    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node
    return clean(writer)


@st.composite
def confluent_message(draw: st.DrawFn, ids: list[tuple[str, Schema, int]]
                      ) -> tuple[str, bytes, bool]:
    """(record name, framed message, whether it is a valid message of a reader version)."""
    name, writer, schema_id = draw(st.sampled_from(ids))
    header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
    return name, header + body(writer, draw(datum_of(writer))), ids.index(
        (name, writer, schema_id)) < len(VERSIONS)


@FUZZ
@given(st.data(), st.sampled_from(NAMES))
def test_confluent_messages_valid_mutated_and_mangled_only_raise_malformed(
    confluent: tuple[Codec, list[tuple[str, Schema, int]]], data: st.DataObject, other: str,
) -> None:
    codec, ids = confluent
    name, framed, valid = data.draw(confluent_message(ids))
    record = check_decode(codec, framed, RECORD_TYPES[name], SUBJECT_TOPIC)
    if valid:
        assert record is not None, f"a valid {name} message was rejected"
    check_decode(codec, framed, RECORD_TYPES[other], SUBJECT_TOPIC)
    for blob in (data.draw(mutated(framed)), framed[:5] + data.draw(mutated(framed[5:])),
                 CONFLUENT_MAGIC + data.draw(st.binary(min_size=4, max_size=4)) + framed[5:]):
        check_decode(codec, blob, RECORD_TYPES[name], SUBJECT_TOPIC)


@FUZZ
@given(st.binary(max_size=60), st.sampled_from(NAMES))
def test_confluent_arbitrary_bytes_only_raise_malformed(
    confluent: tuple[Codec, list[tuple[str, Schema, int]]], blob: bytes, name: str,
) -> None:
    codec, _ = confluent
    check_decode(codec, blob, RECORD_TYPES[name], SUBJECT_TOPIC)
    check_decode(codec, CONFLUENT_MAGIC + blob, RECORD_TYPES[name], SUBJECT_TOPIC)
