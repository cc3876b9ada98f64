"""Schema evolution: every current schema stays backward AND forward compatible with history.

Backward: a consumer on the current schema reads data written with an older version (added
fields take their defaults). Forward: a consumer still on an older version reads data written
with the current one (added fields are skipped; unknown enum symbols fall back to the enum
default). Both matter during rolling deploys, when producers and consumers upgrade at different
times and old records stay in the topics.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import fastavro
import pytest
from fake_schema_registry import FakeSchemaRegistry

from schemas import avro
from schemas.avro import Schema
from schemas.codec import Codec, SingleObjectFraming, make_codec
from schemas.records import RawTick, record_type

NAMES = list(avro.SCHEMA_NAMES)


def _example(avro_type: Any, field: str, salt: int) -> Any:
    """A deterministic non-default value, so defaults can be told apart from written data."""
    if isinstance(avro_type, list):  # ["null", T]: always write the non-null branch
        return _example(next(t for t in avro_type if t != "null"), field, salt)
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "enum":
            return avro_type["symbols"][-1]
        if kind == "array":
            return [_example(avro_type["items"], field, salt + i) for i in range(2)]
        avro_type = kind
    return {
        "string": f"{field}-{salt}",
        "bytes": f"{field}-{salt}".encode() + b"\x00\xff",
        "double": 0.5 + salt,
        "int": 7 + salt,
        "long": 1_717_171_200_000_000 + salt,
        "boolean": True,
    }[avro_type]


def example(raw: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: _example(f["type"], f["name"], i) for i, f in enumerate(raw["fields"])}


def _write(parsed: Schema, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    return buf.getvalue()


def _read(data: bytes, writer: Schema, reader: Schema) -> dict[str, Any]:
    buf = io.BytesIO(data)
    value = fastavro.schemaless_reader(buf, writer, reader)
    assert buf.tell() == len(data)
    assert isinstance(value, dict)
    return value


def _history_files() -> Iterator[tuple[str, str]]:
    base = resources.files("schemas").joinpath("history")
    for entry in base.iterdir():
        if entry.name.endswith(".avsc"):
            yield entry.name.split(".", 1)[0], entry.read_text()


def _enum_symbols(parsed: Schema) -> dict[str, tuple[list[str], str | None]]:
    out: dict[str, tuple[list[str], str | None]] = {}
    for f in parsed["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "enum":
            out[f["name"]] = (t["symbols"], t.get("default"))
    return out


def _versions() -> list[tuple[str, int]]:
    return [(name, i) for name in NAMES for i in range(len(avro.history(name)))]


def _vid(case: tuple[str, int]) -> str:
    return f"{case[0]}-v{case[1] + 1}"


# --------------------------------------------------------------------------------------------


def test_every_schema_has_a_history_fixture() -> None:
    """A new .avsc without a previous version (or not listed in SCHEMA_NAMES) fails here."""
    base = resources.files("schemas")
    current = {e.name[: -len(".avsc")] for e in base.iterdir() if e.name.endswith(".avsc")}
    assert current == set(NAMES)
    with_history = {name for name, _ in _history_files()}
    assert current <= with_history, f"missing history for {sorted(current - with_history)}"
    assert with_history <= current, f"history without a current schema: {with_history - current}"
    for name in NAMES:
        assert avro.history(name), name


@pytest.mark.parametrize("case", _versions(), ids=_vid)
def test_history_is_a_real_previous_version(case: tuple[str, int]) -> None:
    name, index = case
    old, new = avro.history(name)[index], avro.schema(name)
    assert avro.full_name(old) == avro.full_name(new) == f"io.tickstream.{name}"
    assert avro.fingerprint(old) != avro.fingerprint(new)
    old_fields = {f["name"] for f in old["fields"]}
    added = [f for f in new["fields"] if f["name"] not in old_fields]
    assert added, "v1 must lack at least one field"
    assert all("default" in f for f in added), "fields added since v1 need defaults"


@pytest.mark.parametrize("case", _versions(), ids=_vid)
def test_backward_current_reader_reads_old_data(case: tuple[str, int]) -> None:
    name, index = case
    old, new = avro.history(name)[index], avro.schema(name)
    written = example(old)
    decoded = _read(_write(old, written), old, new)
    assert set(decoded) == {f["name"] for f in new["fields"]}  # fastavro appends defaults
    for f in new["fields"]:
        expected = written[f["name"]] if f["name"] in written else f["default"]
        assert decoded[f["name"]] == expected, f["name"]
    # and the typed record builds from it
    rec = record_type(name).from_dict(decoded)
    assert rec.to_dict() == decoded


@pytest.mark.parametrize("case", _versions(), ids=_vid)
def test_forward_old_reader_reads_current_data(case: tuple[str, int]) -> None:
    name, index = case
    old, new = avro.history(name)[index], avro.schema(name)
    written = example(avro.raw_schema(name))
    decoded = _read(_write(new, written), new, old)
    assert set(decoded) == {f["name"] for f in old["fields"]}
    old_enums = _enum_symbols(old)
    for f in old["fields"]:
        expected = written[f["name"]]
        if f["name"] in old_enums:
            symbols, default = old_enums[f["name"]]
            if expected not in symbols:  # a symbol the old reader does not know
                assert default is not None, f"enum {f['name']} needs a default"
                expected = default
        assert decoded[f["name"]] == expected, f["name"]


def test_old_reader_maps_new_source_kind_to_unknown() -> None:
    old = avro.history("RawTick")[0]
    old_symbols, _ = _enum_symbols(old)["source"]
    assert "CSV" not in old_symbols
    tick = RawTick(
        broker="csv-import",
        symbol="EURUSD",
        bid=1.1,
        ask=1.1001,
        time_msc=1,
        recv_time_us=2,
        seq=3,
        source="CSV",
    )
    data = _write(avro.schema("RawTick"), tick.to_dict())
    decoded = _read(data, avro.schema("RawTick"), old)
    assert decoded["source"] == "UNKNOWN"
    assert "seq" not in decoded


@pytest.mark.parametrize("case", _versions(), ids=_vid)
def test_single_object_v1_message_decodes_as_current_record(case: tuple[str, int]) -> None:
    name, index = case
    old, new = avro.history(name)[index], avro.schema(name)
    written = example(old)
    message = b"\xc3\x01" + avro.fingerprint(old) + _write(old, written)
    assert avro.by_fingerprint(message[2:10]) is old
    cls = record_type(name)
    decoded = Codec(SingleObjectFraming()).decode(message, cls)
    assert type(decoded) is cls
    for f in new["fields"]:
        expected = written[f["name"]] if f["name"] in written else f["default"]
        assert getattr(decoded, f["name"]) == expected, f["name"]


@pytest.mark.parametrize("name", NAMES)
def test_confluent_v1_writer_decodes_as_current_record(name: str) -> None:
    old = avro.history(name)[0]
    old_text = resources.files("schemas").joinpath("history", f"{name}.v1.avsc").read_text()
    parsed_text: Schema = fastavro.parse_schema(json.loads(old_text))  # type: ignore[assignment]
    assert avro.fingerprint(parsed_text) == avro.fingerprint(old)
    written = example(old)
    with FakeSchemaRegistry() as fake:
        # an old producer registered v1 (with its docs and all) and wrote with it
        schema_id = fake.register(f"{name.lower()}-value", old_text)
        message = b"\x00" + schema_id.to_bytes(4, "big") + _write(old, written)
        decoded = make_codec(fake.url).decode(message, record_type(name))
    for f in avro.schema(name)["fields"]:
        expected = written[f["name"]] if f["name"] in written else f["default"]
        assert getattr(decoded, f["name"]) == expected, f["name"]
