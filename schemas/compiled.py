"""Avro binary writers and readers generated per record schema: fastavro's bytes, faster.

Profiling the worker showed ``fastavro.schemaless_writer`` at 5.3 µs for one CleanTick (the
largest single cost of the agent) and ``schemaless_reader`` at 3.6 µs for one RawTick. Both
walk the parsed schema for every record. Here each record schema is turned once into a
straight-line Python function (``exec`` of generated source) that reads the fields by name
and writes them in order:

* consecutive ``double`` fields are packed by one :class:`struct.Struct`;
* ``int``/``long`` use zig-zag varints; the low 28 bits come from a table (14 at a time) and
  the high part from a small cache (a timestamp keeps it for minutes to hours), so an
  8-byte varint costs three lookups;
* strings of a field are encoded once and cached (bounded per field);
* two-branch unions with ``null`` and enums are a branch and a dict lookup.

The encoding is Avro's, so the bytes equal fastavro's for every valid record
(``tests/unit/schemas/test_schemas_compiled.py`` checks it on generated records of every
schema, and on random and truncated bytes for the readers). Schemas using anything else
(arrays, maps, nested records, wider unions, fixed) are not compiled: :func:`compile_writer` and
:func:`compile_reader` return ``None`` and the codec keeps using fastavro for them.

Errors: a reader raises :class:`EOFError` (or ``IndexError``/``struct.error``) for a body
that ends early and :class:`ValueError` for impossible content (bad union or enum index,
negative length, a varint beyond 64 bits, invalid UTF-8); the codec turns them into
``MalformedRecord``. A writer raises ``ValueError`` for an unknown enum symbol and
``TypeError`` for a value of the wrong type, as fastavro does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .avro import Schema

__all__ = ["Reader", "Writer", "compile_reader", "compile_writer", "encode_long"]

#: ``writer(record) -> body bytes`` (attribute access) or ``writer(dict) -> body bytes``.
Writer = Callable[[Any], bytes]
#: ``reader(data, pos) -> (dict of the fields, position after the body)``.
Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_STRING_CACHE_MAX = 1024  # distinct values cached per string field (broker, symbol, ...)
_LOW_BITS = 14
_LOW_MASK = (1 << _LOW_BITS) - 1
_PRIMITIVE = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})


def _varint(n: int) -> bytes:
    """Plain varint of a non-negative ``n`` (already zig-zagged)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# n < 2**14: its complete varint; otherwise the two low groups with continuation bits set.
_WHOLE = [_varint(i) for i in range(1 << _LOW_BITS)]
_LOW = [bytes(((i & 0x7F) | 0x80, ((i >> 7) & 0x7F) | 0x80)) for i in range(1 << _LOW_BITS)]
_HIGH: dict[int, bytes] = {}
_HIGH_MAX = 4096


def encode_long(n: int) -> bytes:
    """Avro ``long``: zig-zag varint, as fastavro writes it (``OverflowError`` past 64 bits).

    Up to 28 bits: two table lookups. Beyond: the low 28 bits from the table (two groups of
    14) and the rest from a small cache, which a timestamp keeps for long (2**27 ms is 37
    hours, 2**27 µs over two minutes); with the cache on the bits above 14 only, a µs
    timestamp missed it on every call."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x4000:
        if z < 0:
            raise OverflowError(f"{n} does not fit a 64-bit long")
        return _WHOLE[z]
    if z < 0x10000000:
        return _LOW[z & _LOW_MASK] + _WHOLE[z >> _LOW_BITS]
    high = z >> (2 * _LOW_BITS)
    tail = _HIGH.get(high)
    if tail is None:
        if high >> (64 - 2 * _LOW_BITS):
            raise OverflowError(f"{n} does not fit a 64-bit long")
        if len(_HIGH) >= _HIGH_MAX:
            _HIGH.clear()
        tail = _HIGH[high] = _varint(high)
    return _LOW[z & _LOW_MASK] + _LOW[(z >> _LOW_BITS) & _LOW_MASK] + tail


def _string_encoder() -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def encode(value: str) -> bytes:
        out = cache.get(value)
        if out is None:
            if not isinstance(value, str):
                raise TypeError(f"expected str, got {type(value).__name__}")
            raw = value.encode()
            out = encode_long(len(raw)) + raw
            if len(cache) < _STRING_CACHE_MAX:
                cache[value] = out
        return out

    return encode


def _bytes_encode(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return encode_long(len(value)) + bytes(value)


def _field_kind(ftype: Any) -> tuple[str, Any] | None:
    """(kind, detail) for a field type we compile, or None.

    Kinds: a primitive name; ``enum`` (detail: symbols); ``optional`` (detail:
    (index of null, kind of the other branch)).
    """
    if isinstance(ftype, str):
        return (ftype, None) if ftype in _PRIMITIVE else None
    if isinstance(ftype, dict):
        if ftype.get("type") == "enum":
            return ("enum", tuple(ftype["symbols"]))
        if ftype.get("type") in _PRIMITIVE and not ftype.get("logicalType"):
            return (ftype["type"], None)
        return None
    if isinstance(ftype, list) and len(ftype) == 2 and "null" in ftype:
        null_index = ftype.index("null")
        other = _field_kind(ftype[1 - null_index])
        if other is None or other[0] in ("null", "optional"):
            return None
        return ("optional", (null_index, other))
    return None


def _kinds(schema: Schema) -> list[tuple[str, str, Any]] | None:
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    out = []
    for field in schema["fields"]:
        kind = _field_kind(field["type"])
        if kind is None:
            return None
        out.append((field["name"], kind[0], kind[1]))
    return out


# -- writers ---------------------------------------------------------------------------------


def compile_writer(schema: Schema, *, attributes: bool) -> Writer | None:
    """A function writing the Avro body of ``schema`` (None if the schema is not supported).

    ``attributes=True`` reads the fields as attributes (the record dataclasses), else as
    dict items.
    """
    kinds = _kinds(schema)
    if kinds is None:
        return None
    env: dict[str, Any] = {
        "_long": encode_long, "_bytes": _bytes_encode, "_struct_error": struct.error,
    }
    parts: list[str] = []
    doubles: list[str] = []

    def get(name: str) -> str:
        return f"r.{name}" if attributes else f"r[{name!r}]"

    def flush_doubles() -> None:
        if doubles:
            packer = f"_pack{len(env)}"
            env[packer] = struct.Struct("<" + "d" * len(doubles)).pack
            parts.append(f"{packer}({', '.join(doubles)})")
            doubles.clear()

    def value_expr(kind: str, detail: Any, expr: str, slot: str) -> str:
        if kind == "null":
            return 'b""'
        if kind == "boolean":
            return f'(b"\\x01" if {expr} else b"\\x00")'
        if kind in ("int", "long"):
            return f"_long({expr})"
        if kind in ("float", "double"):
            packer = f"_pack_{kind}"
            env[packer] = struct.Struct("<f" if kind == "float" else "<d").pack
            return f"{packer}({expr})"
        if kind == "string":
            env[slot] = _string_encoder()
            return f"{slot}({expr})"
        if kind == "bytes":
            return f"_bytes({expr})"
        if kind == "enum":
            env[slot] = {sym: encode_long(i) for i, sym in enumerate(detail)}
            env[slot + "_check"] = _enum_error(detail)
            return f"({slot}.get({expr}) or {slot}_check({expr}))"
        raise AssertionError(kind)  # pragma: no cover - _field_kind admits nothing else

    lines = ["def write(r):", "    try:"]
    for i, (name, kind, detail) in enumerate(kinds):
        slot = f"_f{i}"
        if kind == "double":
            doubles.append(get(name))
            continue
        flush_doubles()
        if kind == "optional":
            null_index, (okind, odetail) = detail
            none_tag = encode_long(null_index)
            some_tag = encode_long(1 - null_index)
            lines.append(f"        v{i} = {get(name)}")
            inner = value_expr(okind, odetail, f"v{i}", slot)
            parts.append(f"({none_tag!r} if v{i} is None else {some_tag!r} + {inner})")
        else:
            parts.append(value_expr(kind, detail, get(name), slot))
    flush_doubles()
    lines.append(f"        return b''.join(({', '.join(parts)},))")
    lines.append("    except _struct_error as exc:")
    lines.append("        raise TypeError(str(exc)) from None")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<avro writer {schema.get('name')}>", "exec"), env, namespace)
    return namespace["write"]  # type: ignore[no-any-return]


def _enum_error(symbols: tuple[str, ...]) -> Callable[[Any], bytes]:
    def fail(value: Any) -> bytes:
        raise ValueError(f"{value!r} is not in list {list(symbols)!r}")

    return fail


# -- readers ---------------------------------------------------------------------------------

# Inline varint read into ``{var}`` (zig-zag decoded); ``data``/``pos`` are the locals.
_READ_LONG = """\
    b = data[pos]; pos += 1
    if b < 0x80:
        {var} = (b >> 1) ^ -(b & 1)
    else:
        z = b & 0x7F; shift = 7
        while b & 0x80:
            b = data[pos]; pos += 1; z |= (b & 0x7F) << shift; shift += 7
        if z >> 64:
            raise ValueError("varint longer than 64 bits")
        {var} = (z >> 1) ^ -(z & 1)"""


def _indent(block: str, levels: int) -> str:
    pad = "    " * levels
    return "\n".join(pad + line for line in block.splitlines())


def compile_reader(schema: Schema) -> Reader | None:
    """A function reading the Avro body of ``schema`` (None if the schema is not supported).

    The result is the dict fastavro's ``schemaless_reader`` returns for the same bytes.
    """
    kinds = _kinds(schema)
    if kinds is None:
        return None
    env: dict[str, Any] = {}
    lines = ["def read(data, pos):", "    end = len(data)"]

    def read_value(kind: str, detail: Any, var: str, slot: str, level: int) -> None:
        def emit(block: str) -> None:
            lines.append(_indent(block, level - 1))

        if kind == "null":
            emit(f"    {var} = None")
        elif kind == "boolean":
            emit(f"    {var} = data[pos] != 0; pos += 1")
        elif kind in ("int", "long"):
            emit(_READ_LONG.format(var=var))
        elif kind in ("float", "double"):
            unpacker = f"_unpack_{kind}"
            env[unpacker] = struct.Struct("<f" if kind == "float" else "<d").unpack_from
            emit(f"    {var}, = {unpacker}(data, pos); pos += {4 if kind == 'float' else 8}")
        elif kind in ("string", "bytes"):
            emit(_READ_LONG.format(var="n"))
            emit("    if n < 0:\n        raise ValueError(f'negative length {n}')")
            emit("    e = pos + n\n    if e > end:\n        raise EOFError('string past the end')")
            if kind == "bytes":
                emit(f"    {var} = bytes(data[pos:e]); pos = e")
            else:
                env[slot] = {}
                emit(
                    f"    s = data[pos:e]; pos = e\n    {var} = {slot}.get(s)\n"
                    f"    if {var} is None:\n        {var} = s.decode()\n"
                    f"        if len({slot}) < {_STRING_CACHE_MAX}:\n            {slot}[s] = {var}"
                )
        elif kind == "enum":
            env[slot] = detail
            emit(_READ_LONG.format(var="n"))
            emit(
                f"    if not 0 <= n < {len(detail)}:\n"
                f"        raise ValueError(f'enum index {{n}} out of range')\n"
                f"    {var} = {slot}[n]"
            )
        elif kind == "optional":
            null_index, (okind, odetail) = detail
            emit("    u = data[pos]; pos += 1")
            emit(f"    if u == {2 * null_index}:\n        {var} = None")
            emit(f"    elif u == {2 * (1 - null_index)}:")
            read_value(okind, odetail, var, slot, level + 1)
            emit("    else:\n        raise ValueError(f'union index byte {u} out of range')")
        else:  # pragma: no cover - _field_kind admits nothing else
            raise AssertionError(kind)

    for i, (_name, kind, detail) in enumerate(kinds):
        read_value(kind, detail, f"v{i}", f"_f{i}", 1)
    items = ", ".join(f"{name!r}: v{i}" for i, (name, _k, _d) in enumerate(kinds))
    lines.append(f"    return {{{items}}}, pos")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<avro reader {schema.get('name')}>", "exec"), env, namespace)
    return namespace["read"]  # type: ignore[no-any-return]
