"""Binary codecs for the tickstream records: Avro body + a framing that identifies the writer.

Two framings are supported:

* :class:`SingleObjectFraming` - Avro "single-object encoding": ``C3 01`` + 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema + body. Self-describing without any service: the
  writer schema is looked up among the current and historical versions shipped in this package.
* :class:`ConfluentFraming` - Confluent wire format: ``00`` + 4-byte big-endian schema id + body,
  with schemas kept in a Schema Registry (TopicNameStrategy subjects ``<topic>-value``).

Decoding never lets a library exception escape for bad *data*: anything that is not a valid
message for the requested type raises :class:`MalformedRecord` (reason ``"malformed"``), which
the topology routes to the dead-letter topic. A registry that cannot be reached is not the
record's fault and raises :class:`~schemas.registry.SchemaRegistryError` instead, so the caller
can retry rather than dead-letter good data.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import fastavro

from . import avro
from .avro import Schema
from .compiled import Reader, Writer, compile_reader, compile_writer
from .records import Record
from .registry import SchemaRegistryClient, SchemaRegistryError

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MARKER",
    "Buffer",
    "Codec",
    "ConfluentFraming",
    "Framing",
    "MalformedRecord",
    "SingleObjectFraming",
    "make_codec",
]

R = TypeVar("R", bound=Record)

#: What decoding accepts: Kafka clients hand out ``bytes``; slices of buffers work as well.
Buffer = bytes | bytearray | memoryview

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

_SO_HEADER = len(SINGLE_OBJECT_MARKER) + 8
_CF_HEADER = struct.Struct(">bI")  # magic byte, schema id
_DETAIL_MAX = 300


class MalformedRecord(Exception):
    """The bytes are not a valid message of the requested record type.

    ``reason`` is a stable machine-readable code (always ``"malformed"`` for decode failures,
    matching ``RejectedRecord.reason``); ``detail`` says what exactly was wrong.
    """

    def __init__(self, detail: str, reason: str = "malformed") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Framing(Protocol):
    """How the writer schema is identified in front of the Avro body."""

    #: Length of the header in front of every body (it identifies the writer schema).
    header_size: int

    def header(self, name: str, topic: str) -> bytes:
        """Bytes to put before a body written with the current schema ``name``."""
        ...

    def writer(self, data: Buffer, topic: str) -> tuple[Schema, int]:
        """Writer schema of ``data`` and the offset where its body starts.

        Raises :class:`MalformedRecord` when the header is invalid or names no known schema.
        """
        ...


class SingleObjectFraming:
    """Avro single-object encoding; writer schemas come from this package (current + history)."""

    __slots__ = ("_headers",)
    header_size = _SO_HEADER

    def __init__(self) -> None:
        self._headers: dict[str, bytes] = {}

    def header(self, name: str, topic: str) -> bytes:
        head = self._headers.get(name)
        if head is None:
            head = SINGLE_OBJECT_MARKER + avro.fingerprint(avro.schema(name))
            self._headers[name] = head
        return head

    def writer(self, data: Buffer, topic: str) -> tuple[Schema, int]:
        if len(data) < _SO_HEADER:
            raise MalformedRecord(f"truncated header: {len(data)} bytes, need {_SO_HEADER}")
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise MalformedRecord(f"bad marker {bytes(data[:2]).hex()}, expected c301")
        fp = bytes(data[2:_SO_HEADER])
        parsed = avro.by_fingerprint(fp)
        if parsed is None:
            raise MalformedRecord(f"unknown schema fingerprint {fp.hex()}")
        return parsed, _SO_HEADER


class ConfluentFraming:
    """Confluent wire format backed by a Schema Registry.

    Encoding registers the current schema under ``<topic>-value`` once per (topic, schema) and
    caches the id; decoding fetches writer schemas by id once and caches them.
    """

    __slots__ = ("_ids", "_registry", "_writers")
    header_size = _CF_HEADER.size

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self._registry = registry
        self._ids: dict[tuple[str, str], bytes] = {}
        self._writers: dict[int, Schema] = {}

    @property
    def registry(self) -> SchemaRegistryClient:
        return self._registry

    def header(self, name: str, topic: str) -> bytes:
        key = (topic, name)
        head = self._ids.get(key)
        if head is None:
            if not topic:
                raise ValueError("Confluent framing needs the topic to derive the subject")
            schema_id = self._registry.register(f"{topic}-value", avro.schema_json(name))
            head = _CF_HEADER.pack(0, schema_id)
            self._ids[key] = head
            # we know what we wrote: no need to fetch it back when decoding our own messages
            self._writers.setdefault(schema_id, avro.schema(name))
        return head

    def writer(self, data: Buffer, topic: str) -> tuple[Schema, int]:
        if len(data) < _CF_HEADER.size:
            raise MalformedRecord(f"truncated header: {len(data)} bytes, need {_CF_HEADER.size}")
        if data[0] != 0:
            raise MalformedRecord(f"bad magic byte {data[0]:#04x}, expected 0x00")
        schema_id = int.from_bytes(data[1:5], "big")
        parsed = self._writers.get(schema_id)
        if parsed is None:
            parsed = self._fetch(schema_id)
        return parsed, _CF_HEADER.size

    def _fetch(self, schema_id: int) -> Schema:
        try:
            schema_str = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.not_found:
                raise MalformedRecord(f"unknown schema id {schema_id}") from None
            raise
        try:
            parsed = cast(Schema, fastavro.parse_schema(json.loads(schema_str)))
        except Exception as exc:  # the registry holds something we cannot use for this id
            raise MalformedRecord(
                f"schema id {schema_id} is not a usable Avro schema: {_short(exc)}"
            ) from None
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise MalformedRecord(f"schema id {schema_id} is not an Avro record schema")
        self._writers[schema_id] = parsed
        return parsed


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


class Codec:
    """Encode records (or dicts) to framed Avro bytes and decode them back.

    Parsed schemas, headers and writer/reader resolution decisions are cached. Bodies are
    written and read by the functions :mod:`schemas.compiled` generates per schema (the same
    bytes as fastavro, several times faster); fastavro remains for what they do not cover:
    schemas with arrays or nested records, and reading a writer version that differs from the
    current schema (resolution).
    """

    __slots__ = ("_compiled_readers", "_dict_writers", "_framing", "_headers_read", "_readers",
                 "_record_writers")

    def __init__(self, framing: Framing | None = None) -> None:
        self._framing: Framing = framing if framing is not None else SingleObjectFraming()
        # (id(writer), reader name) -> (writer, schema to read with, reader or None)
        self._readers: dict[tuple[int, str], tuple[Schema, Schema, Schema | None]] = {}
        # schema name -> compiled body writer (None: not compilable, use fastavro)
        self._record_writers: dict[str, Writer | None] = {}
        self._dict_writers: dict[str, Writer | None] = {}
        # id(schema to read with) -> compiled body reader (kept alive by ``_readers``)
        self._compiled_readers: dict[int, Reader | None] = {}
        # (header bytes, reader name) -> compiled reader, for headers already resolved to one
        # (a header names its writer schema for good: an id or a fingerprint)
        self._headers_read: dict[tuple[bytes, str], Reader] = {}

    @property
    def framing(self) -> Framing:
        return self._framing

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, record: Record, topic: str = "") -> bytes:
        """Frame and serialise ``record`` with its current schema.

        Invalid field values (wrong type, unknown enum symbol) raise fastavro's ``ValueError``/
        ``TypeError``: producing such a record is a programming error, not bad input.
        """
        name = record.SCHEMA
        write = self._writer(self._record_writers, name, attributes=True)
        if write is None:
            return self.encode_dict(name, record.to_dict(), topic)
        return self._framing.header(name, topic) + write(record)

    @staticmethod
    def _writer(cache: dict[str, Writer | None], name: str, *, attributes: bool) -> Writer | None:
        """The compiled body writer of schema ``name`` (None: fastavro writes it)."""
        try:
            return cache[name]
        except KeyError:
            write = cache[name] = compile_writer(avro.schema(name), attributes=attributes)
            return write

    def encoder(self, schema_name: str, topic: str = "") -> Callable[[Record], bytes]:
        """:meth:`encode` for records of one schema bound for one topic, lookups done once
        (the header is fixed per schema and topic: with a registry it is registered here)."""
        write = self._writer(self._record_writers, schema_name, attributes=True)
        if write is None:
            return lambda record: self.encode(record, topic)
        header = self._framing.header(schema_name, topic)
        body = write

        def encode(record: Record) -> bytes:
            return header + body(record)

        return encode

    def encode_dict(self, schema_name: str, data: dict[str, Any], topic: str = "") -> bytes:
        """Like :meth:`encode` for a plain dict laid out as schema ``schema_name``."""
        write = self._writer(self._dict_writers, schema_name, attributes=False)
        if write is not None:
            return self._framing.header(schema_name, topic) + write(data)
        buf = io.BytesIO()
        buf.write(self._framing.header(schema_name, topic))
        fastavro.schemaless_writer(buf, avro.schema(schema_name), data)
        return buf.getvalue()

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, data: Buffer, record_type: type[R], topic: str = "") -> R:
        """Decode ``data`` as ``record_type``; raise :class:`MalformedRecord` if it is not one."""
        values = self.decode_dict(record_type.SCHEMA, data, topic)
        try:
            # The reader schema yields exactly the record's fields (the dataclasses mirror
            # the .avsc files, tests/test_schemas_*), so no per-field filtering is needed.
            return record_type(**values)
        except TypeError:  # pragma: no cover - a dataclass out of step with its schema
            pass
        try:
            return record_type.from_dict(values)
        except Exception as exc:  # pragma: no cover - resolution guarantees all fields
            raise MalformedRecord(f"cannot build {record_type.__name__}: {_short(exc)}") from None

    def current_headers(self, schema_name: str) -> frozenset[bytes]:
        """The headers decoded so far that name a writer with exactly the current layout of
        ``schema_name``: a body after one reads with the current schema, no resolution
        (what :mod:`schemas.columnar` may read column-wise)."""
        return frozenset(h for (h, name) in self._headers_read if name == schema_name)

    def decode_dict(self, schema_name: str, data: Buffer, topic: str = "") -> dict[str, Any]:
        """Decode ``data`` into a dict laid out as the current schema ``schema_name``.

        Older (or newer) writer versions are resolved to the current reader schema, so fields
        added since take their defaults and removed ones are dropped.
        """
        size = self._framing.header_size
        if type(data) is bytes:
            read = self._headers_read.get((data[:size], schema_name))
            if read is not None:
                return self._read_compiled(read, data, size)
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedRecord(f"expected bytes, got {type(data).__name__}")
        writer, offset = self._framing.writer(data, topic)
        writer, reader = self._resolve(writer, schema_name)
        if reader is None:
            try:
                read = self._compiled_readers[id(writer)]
            except KeyError:
                read = self._compiled_readers[id(writer)] = compile_reader(writer)
            if read is not None:
                if offset == size:
                    self._headers_read[(bytes(data[:size]), schema_name)] = read
                return self._read_compiled(read, data, offset)
        buf = io.BytesIO(data)
        buf.seek(offset)
        try:
            values = fastavro.schemaless_reader(buf, writer, reader)
        except EOFError as exc:
            raise MalformedRecord(f"truncated body: {_short(exc)}") from None
        except Exception as exc:  # fastavro/struct/unicode/index errors on garbage
            raise MalformedRecord(f"undecodable body: {_short(exc)}") from None
        end = buf.tell()
        if end != len(data):
            raise MalformedRecord(f"{len(data) - end} trailing bytes after the body")
        if not isinstance(values, dict):  # pragma: no cover - record schemas yield dicts
            raise MalformedRecord("body is not a record")
        return values

    @staticmethod
    def _read_compiled(read: Reader, data: Buffer, offset: int) -> dict[str, Any]:
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            values, end = read(body, offset)
        except (EOFError, IndexError, struct.error) as exc:
            raise MalformedRecord(f"truncated body: {_short(exc)}") from None
        except Exception as exc:  # bad union/enum index, bad UTF-8, oversized varint
            raise MalformedRecord(f"undecodable body: {_short(exc)}") from None
        if end != len(body):
            raise MalformedRecord(f"{len(body) - end} trailing bytes after the body")
        return values

    def _resolve(self, writer: Schema, schema_name: str) -> tuple[Schema, Schema | None]:
        """(schema to read with, reader schema or None when no resolution is needed)."""
        key = (id(writer), schema_name)
        entry = self._readers.get(key)
        if entry is None:
            reader = avro.schema(schema_name)
            expected, actual = avro.full_name(reader), avro.full_name(writer)
            aliases = set(reader.get("aliases", ()))
            if actual != expected and actual not in aliases:
                raise MalformedRecord(f"type mismatch: message is {actual}, expected {expected}")
            if writer is reader or avro.canonical_form(writer) == avro.canonical_form(reader):
                # same wire layout (e.g. our own schema fetched back from a registry): skip
                # fastavro's per-call schema comparison and resolution entirely
                entry = (writer, reader, None)
            else:
                entry = (writer, writer, reader)
            # the entry keeps ``writer`` alive, so its id() cannot be reused by another schema
            self._readers[key] = entry
        return entry[1], entry[2]


def make_codec(schema_registry_url: str | None) -> Codec:
    """Single-object codec when no registry is configured, else Confluent wire format."""
    if not schema_registry_url:
        return Codec(SingleObjectFraming())
    return Codec(ConfluentFraming(SchemaRegistryClient(schema_registry_url)))
