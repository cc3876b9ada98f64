"""Loading, parsing and fingerprinting of the packaged Avro schemas.

The ``.avsc`` files next to this module are the source of truth for every record on the wire;
``history/<Name>.vN.avsc`` keeps the versions that were shipped before, so that data written by
an older producer can still be decoded (and so tests can prove compatibility).

Everything is loaded lazily and cached: importing this module touches no files, which keeps
``import schemas`` cheap for tools that only need the dataclasses.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, cast

import fastavro
import fastavro.schema

__all__ = [
    "NAMESPACE",
    "SCHEMA_NAMES",
    "Schema",
    "all_versions",
    "by_fingerprint",
    "canonical_form",
    "fingerprint",
    "full_name",
    "history",
    "raw_schema",
    "schema",
    "schema_json",
]

#: A fastavro parsed schema (a dict carrying fastavro's private ``__fastavro_parsed`` markers).
Schema = dict[str, Any]

NAMESPACE = "io.tickstream"

#: Short names of all current schemas; each has ``<name>.avsc`` and ``history/<name>.v*.avsc``.
SCHEMA_NAMES: tuple[str, ...] = (
    "RawTick",
    "CleanTick",
    "Bar",
    "FeatureVector",
    "TradingCommand",
    "MarketEvent",
    "RejectedRecord",
    "ControlMessage",
    "CollectorHealth",
)

_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


def _package_dir() -> Traversable:
    return resources.files(__package__ or "schemas")


def _short_name(name: str) -> str:
    """Accept ``RawTick`` as well as ``io.tickstream.RawTick``; reject anything unknown early."""
    short = name.rsplit(".", 1)[-1]
    if short not in SCHEMA_NAMES or (short != name and name != f"{NAMESPACE}.{short}"):
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return short


def _load_json(path: Traversable) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: top-level schema must be a record object")
    return data


@cache
def _raw(short: str) -> dict[str, Any]:
    return _load_json(_package_dir().joinpath(f"{short}.avsc"))


@cache
def _json(short: str) -> str:
    return json.dumps(_raw(short), separators=(",", ":"))


@cache
def _parsed(short: str) -> Schema:
    return cast(Schema, fastavro.parse_schema(_raw(short)))


def raw_schema(name: str) -> dict[str, Any]:
    """The current schema as plain JSON data (a shared cached object: do not mutate)."""
    return _raw(_short_name(name))


def schema_json(name: str) -> str:
    """The current schema as a compact JSON string, e.g. for Schema Registry registration."""
    return _json(_short_name(name))


def schema(name: str) -> Schema:
    """The current parsed schema for ``name`` (short or full name).

    Parsed once per process and always the same object, so callers can compare by identity.
    """
    return _parsed(_short_name(name))


@cache
def _history(short: str) -> tuple[Schema, ...]:
    directory = _package_dir().joinpath("history")
    found: list[tuple[int, Schema]] = []
    if directory.is_dir():
        for entry in directory.iterdir():
            m = _HISTORY_FILE.match(entry.name)
            if m is None or m.group("name") != short:
                continue
            parsed = cast(Schema, fastavro.parse_schema(_load_json(entry)))
            found.append((int(m.group("version")), parsed))
    found.sort(key=lambda item: item[0])
    return tuple(parsed for _, parsed in found)


def history(name: str) -> list[Schema]:
    """Previously shipped versions of ``name``, oldest first (possibly empty)."""
    return list(_history(_short_name(name)))


def full_name(parsed: Schema) -> str:
    """Full name (``namespace.name``) of a parsed record schema."""
    name = parsed["name"]
    if "." in name:
        return str(name)
    namespace = parsed.get("namespace")
    return f"{namespace}.{name}" if namespace else str(name)


def canonical_form(parsed: Schema) -> str:
    """Avro Parsing Canonical Form: what two schemas must share to read each other's bytes 1:1."""
    pcf: str = fastavro.schema.to_parsing_canonical_form(parsed)
    return pcf


def fingerprint(parsed: Schema) -> bytes:
    """8-byte CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form, little-endian.

    This is exactly the fingerprint that Avro single-object encoding puts after ``C3 01``.
    fastavro returns it as hex already in little-endian byte order (as the Java
    implementation writes it); ``tests/unit/schemas/test_schemas_codec.py`` checks this against an
    independent implementation of the spec.
    """
    return bytes.fromhex(fastavro.schema.fingerprint(canonical_form(parsed), "CRC-64-AVRO"))


@cache
def _fingerprint_index() -> dict[bytes, Schema]:
    index: dict[bytes, Schema] = {}
    for short in SCHEMA_NAMES:
        # history first so that, should a current schema be byte-identical to an old one,
        # the current parsed schema (the reader's own) wins and resolution is skipped.
        for parsed in (*_history(short), schema(short)):
            fp = fingerprint(parsed)
            other = index.get(fp)
            if other is not None and full_name(other) != full_name(parsed):
                raise ValueError(
                    f"fingerprint collision between {full_name(other)} and {full_name(parsed)}"
                )
            index[fp] = parsed
    return index


def all_versions() -> dict[bytes, Schema]:
    """Every known schema version (current and historical, all names) keyed by fingerprint."""
    return dict(_fingerprint_index())


def by_fingerprint(fp: bytes) -> Schema | None:
    """The writer schema with fingerprint ``fp`` among all known versions, or None."""
    return _fingerprint_index().get(bytes(fp))
