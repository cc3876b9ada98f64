"""Codec round trips, spec-exact framing and robustness against malformed input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import fastavro
import pytest
from conftest import REPO_ROOT
from fake_schema_registry import FakeSchemaRegistry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import avro
from schemas.codec import (
    Codec,
    ConfluentFraming,
    MalformedRecord,
    SingleObjectFraming,
    make_codec,
)
from schemas.records import (
    RECORD_TYPES,
    Bar,
    CleanTick,
    CollectorHealth,
    ControlMessage,
    FeatureVector,
    MarketEvent,
    RawTick,
    Record,
    RejectedRecord,
    TradingCommand,
)
from schemas.registry import SchemaRegistryClient, SchemaRegistryError

# --------------------------------------------------------------------------------------------
# realistic instances of every record type
# --------------------------------------------------------------------------------------------

T_MS = 1_717_171_200_000  # 2024-05-31T16:00:00Z
T_US = T_MS * 1000

SAMPLES: list[Record] = [
    RawTick(
        broker="icmarkets",
        symbol="EURUSD",
        bid=1.08512,
        ask=1.08515,
        last=None,
        volume=1_250_000.0,
        time_msc=T_MS + 123,
        recv_time_us=T_US + 123_456,
        seq=987_654_321,
        source="MT5",
    ),
    CleanTick(
        broker="oanda",
        symbol="GBPJPY",
        time_msc=T_MS + 7,
        recv_time_us=T_US + 7_250,
        bid=199.871,
        ask=199.889,
        mid=199.8795,
        spread=0.011,
        best_bid=199.874,
        best_ask=199.885,
        best_bid_broker="icmarkets",
        best_ask_broker="pepperstone",
        fresh_brokers=3,
        dispersion=0.0021,
        seq=None,
        processed_time_us=T_US + 7_900,
    ),
    Bar(
        symbol="USDJPY",
        bar_time=T_MS,
        open=157.301,
        high=157.355,
        low=157.288,
        close=157.342,
        bid_close=157.340,
        ask_close=157.344,
        tick_count=412,
        mean_spread=0.0043,
        fresh_brokers=2,
        dispersion=0.0009,
        trigger_recv_time_us=T_US + 60_000_017,
    ),
    FeatureVector(
        symbol="EURUSD",
        bar_time=T_MS,
        close=1.08513,
        sma_20=1.08490,
        ema_12=1.08501,
        ema_26=1.08478,
        rsi_14=61.2,
        macd=0.00023,
        macd_signal=0.00019,
        macd_hist=0.00004,
        bb_upper=1.08560,
        bb_middle=1.08490,
        bb_lower=1.08420,
        atr_14=0.00031,
        volatility_20=None,  # still warming up
        momentum_10=-0.00012,
        spread=0.00003,
        tick_count=97,
        dispersion=0.00001,
        fresh_brokers=3,
        minutes_to_next_event=14.5,
        minutes_since_last_event=None,
        news_count_1h=4,
        news_sentiment_1h=-0.25,
        trigger_recv_time_us=T_US + 60_000_100,
    ),
    TradingCommand(
        command_id="0b7f6c1e-5d0a-4c57-9a55-51a6a2b7e0f3",
        action="SELL",
        symbol="EURUSD",
        volume=0.5,
        price=1.08513,
        stop_loss=1.08713,
        take_profit=None,
        confidence=0.71,
        model_version="xgb-2024.05.31-1",
        reason="p(down)=0.71 > 0.65; rsi 61",
        bar_time=T_MS,
        trigger_recv_time_us=T_US + 60_000_100,
        created_time_us=T_US + 60_002_480,
    ),
    MarketEvent(
        event_id="ff-2024-06-07-nfp",
        kind="CALENDAR",
        currency="USD",
        currencies=["USD"],
        title="Non-Farm Employment Change",
        event_time_ms=1_717_763_400_000,
        published_ms=1_717_000_000_000,
        impact="HIGH",
        forecast="185K",
        previous="175K",
        actual=None,
        sentiment=None,
        source="forexfactory",
        url="https://www.forexfactory.com/calendar?day=jun7.2024",
    ),
    MarketEvent(
        event_id="news-8812",
        kind="NEWS",
        currency="EUR",
        currencies=["EUR", "USD"],
        title="ECB's Lagarde: rate cut \u201clikely\u201d in June \u2014 \u20ac strengthens",
        event_time_ms=T_MS - 60_000,
        published_ms=T_MS - 60_000,
        sentiment=0.4,
        source="rss:reuters",
    ),
    RejectedRecord(
        original=b"\xc3\x01\xde\xad\xbe\xef\x00\xff garbage",
        key=b"icmarkets|EURUSD",
        source_topic="ticks.raw",
        source_partition=5,
        source_offset=1_234_567,
        reason="malformed",
        detail="unknown schema fingerprint deadbeef00ff2067",
        stage="decode",
        time_us=T_US + 1,
    ),
    ControlMessage(
        command="model_announce",
        reason="nightly retrain passed validation",
        issued_by="trainer@host-3",
        time_ms=T_MS,
        model_version="xgb-2024.05.31-1",
        model_path="/models/xgb-2024.05.31-1.ubj",
    ),
    CollectorHealth(
        name="mt5-icmarkets",
        kind="mt5",
        state="RUNNING",
        connected=True,
        time_ms=T_MS + 5_000,
        started_ms=T_MS - 3_600_000,
        last_tick_time_ms=T_MS + 4_987,
        ticks=1_234_567,
        events=0,
        rejected=3,
        errors=2,
        reconnects=1,
        ticks_per_s=342.9,
        last_error="ConnectionError: terminal not responding",
        circuit="closed",
        last_alive_ms=T_MS + 4_990,
        interval_s=5.0,
        host="collector-1",
        pid=4242,
        detail='{"server_offset_s":7200}',
    ),
]


def _sample_id(record: Record) -> str:
    return type(record).__name__


def test_samples_cover_every_record_type() -> None:
    assert {type(r).SCHEMA for r in SAMPLES} == set(RECORD_TYPES)
    assert {name.rsplit(".", 1)[1] for name in RECORD_TYPES} == set(avro.SCHEMA_NAMES)


def test_records_match_schemas() -> None:
    """Dataclass fields mirror the Avro fields (names, order, defaults)."""
    for name, cls in RECORD_TYPES.items():
        parsed = avro.schema(name)
        assert avro.full_name(parsed) == name
        assert tuple(f["name"] for f in parsed["fields"]) == cls.FIELDS
        for fld in parsed["fields"]:
            if "default" in fld:  # every Avro default is the dataclass default too
                kwargs = {
                    f["name"]: _example(f["type"]) for f in parsed["fields"] if "default" not in f
                }
                assert getattr(cls(**kwargs), fld["name"]) == fld["default"], (name, fld["name"])


def _example(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return None
    if isinstance(avro_type, dict):
        if avro_type["type"] == "enum":
            return avro_type["symbols"][0]
        if avro_type["type"] == "array":
            return []
        avro_type = avro_type["type"]
    return {"string": "x", "bytes": b"x", "double": 1.5, "int": 1, "long": 2}[avro_type]


def test_to_dict_from_dict_round_trip() -> None:
    for record in SAMPLES:
        as_dict = record.to_dict()
        assert list(as_dict) == list(type(record).FIELDS)
        assert type(record).from_dict(as_dict) == record
        assert type(record).from_dict({**as_dict, "unexpected": 1}) == record


# --------------------------------------------------------------------------------------------
# single-object framing
# --------------------------------------------------------------------------------------------

CODEC = Codec(SingleObjectFraming())


@pytest.mark.parametrize("record", SAMPLES, ids=_sample_id)
def test_single_object_round_trip(record: Record) -> None:
    data = CODEC.encode(record)
    decoded = CODEC.decode(data, type(record))
    assert type(decoded) is type(record)
    assert decoded == record
    # a fresh codec (cold caches) decodes it the same way
    assert Codec().decode(data, type(record)) == record


@pytest.mark.parametrize("record", SAMPLES, ids=_sample_id)
def test_dict_hot_path_matches_record_path(record: Record) -> None:
    data = CODEC.encode_dict(record.SCHEMA, record.to_dict())
    assert data == CODEC.encode(record)
    assert CODEC.decode_dict(record.SCHEMA, data) == record.to_dict()
    short = record.SCHEMA.rsplit(".", 1)[1]
    assert CODEC.decode_dict(short, CODEC.encode_dict(short, record.to_dict())) == record.to_dict()


# --- spec-exact fingerprint: independent Parsing Canonical Form + 64-bit Rabin CRC -----------

EMPTY64 = 0xC15D213AA4D7A795
_FP_TABLE: list[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (EMPTY64 & -(_fp & 1))
    _FP_TABLE.append(_fp)


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO exactly as written in the Avro specification (Schema Fingerprints)."""
    fp = EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def spec_pcf(schema: Any, namespace: str | None = None, seen: set[str] | None = None) -> str:
    """Parsing Canonical Form per the spec: FULLNAMES, STRIP, ORDER, PRIMITIVES, no whitespace."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return json.dumps(schema)
        return json.dumps(schema if "." in schema or not namespace else f"{namespace}.{schema}")
    if isinstance(schema, list):
        return "[" + ",".join(spec_pcf(s, namespace, seen) for s in schema) + "]"
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name else (f"{ns}.{name}" if ns else name)
        if full in seen:
            return json.dumps(full)
        seen.add(full)
        inner_ns = full.rpartition(".")[0] or None
        out = f'{{"name":{json.dumps(full)},"type":"{kind}"'
        if kind == "record":
            fields = ",".join(
                f'{{"name":{json.dumps(f["name"])},"type":{spec_pcf(f["type"], inner_ns, seen)}}}'
                for f in schema["fields"]
            )
            out += f',"fields":[{fields}]'
        elif kind == "enum":
            out += ',"symbols":' + json.dumps(schema["symbols"], separators=(",", ":"))
        else:
            out += f',"size":{int(schema["size"])}'
        return out + "}"
    if kind == "array":
        return f'{{"type":"array","items":{spec_pcf(schema["items"], namespace, seen)}}}'
    if kind == "map":
        return f'{{"type":"map","values":{spec_pcf(schema["values"], namespace, seen)}}}'
    return spec_pcf(kind, namespace, seen)  # {"type": "int"} -> "int"


def test_reference_rabin_matches_published_vectors() -> None:
    # published CRC-64-AVRO fingerprints (wire/little-endian byte order) of "int" and "long"
    assert rabin64(b'"int"').to_bytes(8, "little").hex() == "8f5c393f1ad57572"
    assert rabin64(b'"long"').to_bytes(8, "little").hex() == "b71df49344e154d0"


def _all_raw_versions() -> Iterator[tuple[str, dict[str, Any]]]:
    from importlib import resources

    base = resources.files("schemas")
    for name in avro.SCHEMA_NAMES:
        yield name, json.loads(base.joinpath(f"{name}.avsc").read_text())
        for entry in base.joinpath("history").iterdir():
            if entry.name.startswith(f"{name}.v") and entry.name.endswith(".avsc"):
                yield name, json.loads(entry.read_text())


def test_fingerprint_is_spec_crc64_of_canonical_form() -> None:
    seen = 0
    for _name, raw in _all_raw_versions():
        parsed: dict[str, Any] = fastavro.parse_schema(raw)  # type: ignore[assignment]
        pcf = spec_pcf(raw)
        assert avro.canonical_form(parsed) == pcf
        assert avro.fingerprint(parsed) == rabin64(pcf.encode()).to_bytes(8, "little")
        seen += 1
    assert seen == 2 * len(avro.SCHEMA_NAMES)


@pytest.mark.parametrize("record", SAMPLES, ids=_sample_id)
def test_single_object_header_is_spec_marker_and_fingerprint(record: Record) -> None:
    data = CODEC.encode(record)
    short = record.SCHEMA.rsplit(".", 1)[1]
    expected_fp = rabin64(spec_pcf(avro.raw_schema(short)).encode()).to_bytes(8, "little")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected_fp
    assert avro.by_fingerprint(expected_fp) is avro.schema(short)


def test_all_fingerprints_are_distinct() -> None:
    versions = avro.all_versions()
    assert len(versions) == 2 * len(avro.SCHEMA_NAMES)


# --- malformed input ---------------------------------------------------------------------------

TICK = SAMPLES[0]
assert isinstance(TICK, RawTick)
TICK_BYTES = CODEC.encode(TICK)


def _malformed(data: bytes, record_type: type[Record] = RawTick, codec: Codec = CODEC) -> str:
    with pytest.raises(MalformedRecord) as info:
        codec.decode(data, record_type)
    assert info.value.reason == "malformed"
    assert info.value.detail
    return info.value.detail


def test_empty_bytes() -> None:
    assert "truncated" in _malformed(b"")


def test_random_bytes() -> None:
    rng = random.Random(1234)
    for size in (1, 2, 9, 10, 11, 50, 500):
        _malformed(rng.randbytes(size))


def test_wrong_marker() -> None:
    assert "marker" in _malformed(b"\xc3\x02" + TICK_BYTES[2:])
    assert "marker" in _malformed(b"\x00" + TICK_BYTES[1:])


def test_unknown_fingerprint() -> None:
    detail = _malformed(TICK_BYTES[:2] + b"\x00" * 8 + TICK_BYTES[10:])
    assert "fingerprint" in detail and "0000000000000000" in detail


def test_truncated_body_at_every_length() -> None:
    for end in range(len(TICK_BYTES)):
        _malformed(TICK_BYTES[:end])
    assert "truncated" in _malformed(TICK_BYTES[:-1])


def test_trailing_garbage() -> None:
    assert "trailing" in _malformed(TICK_BYTES + b"\x00")
    assert "trailing" in _malformed(TICK_BYTES + TICK_BYTES)


def test_type_mismatch() -> None:
    detail = _malformed(TICK_BYTES, Bar)
    assert "RawTick" in detail and "Bar" in detail
    assert CODEC.decode(TICK_BYTES, RawTick) == TICK  # the cache did not poison the right type


def test_corrupted_enum_and_union_index() -> None:
    # the last byte of a RawTick body is the SourceKind enum index: make it out of range
    assert TICK_BYTES[-1] == 2  # zig-zag(1) = MT5
    _malformed(TICK_BYTES[:-1] + b"\x7e")
    # invalid UTF-8 inside the broker string
    assert TICK_BYTES[11:20] == b"icmarkets"
    _malformed(TICK_BYTES[:11] + b"\xff" + TICK_BYTES[12:])


def test_not_bytes() -> None:
    with pytest.raises(MalformedRecord):
        CODEC.decode("not bytes", RawTick)  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert CODEC.decode(bytearray(TICK_BYTES), RawTick) == TICK
    assert CODEC.decode(memoryview(TICK_BYTES), RawTick) == TICK


def test_encoding_invalid_record_fails_loudly() -> None:
    bad = TradingCommand(**{**SAMPLES[4].to_dict(), "action": "HOLD"})
    with pytest.raises(ValueError):
        CODEC.encode(bad)


# --- property-based ---------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
source_kinds = avro.raw_schema("RawTick")["fields"][-1]["type"]["symbols"]

raw_ticks = st.builds(
    RawTick,
    broker=st.text(max_size=20),
    symbol=st.text(max_size=12),
    bid=finite,
    ask=finite,
    last=st.none() | finite,
    volume=st.none() | finite,
    time_msc=longs,
    recv_time_us=longs,
    seq=st.none() | longs,
    source=st.sampled_from(source_kinds),
)


@given(raw_ticks)
@settings(max_examples=300, deadline=None)
def test_raw_tick_round_trip_property(tick: RawTick) -> None:
    assert CODEC.decode(CODEC.encode(tick), RawTick) == tick


_VALID_MESSAGES = [CODEC.encode(r) for r in SAMPLES]
_FINGERPRINTS = sorted(avro.all_versions())
_TYPES = sorted(RECORD_TYPES.values(), key=lambda c: c.SCHEMA)


def _mutate(data: bytes, positions: list[int], values: list[int]) -> bytes:
    out = bytearray(data)
    for pos, val in zip(positions, values, strict=False):
        out[pos % len(out)] = val
    return bytes(out)


single_object_garbage = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda body: b"\xc3\x01" + body, st.binary(max_size=80)),
    st.builds(
        lambda fp, body: b"\xc3\x01" + fp + body,
        st.sampled_from(_FINGERPRINTS),
        st.binary(max_size=200),
    ),
    st.builds(
        _mutate,
        st.sampled_from(_VALID_MESSAGES),
        st.lists(st.integers(min_value=10, max_value=10_000), min_size=1, max_size=4),
        st.lists(st.integers(min_value=0, max_value=255), min_size=1, max_size=4),
    ),
    st.builds(lambda m, cut: m[:cut], st.sampled_from(_VALID_MESSAGES), st.integers(0, 300)),
)


@given(single_object_garbage, st.sampled_from(_TYPES))
@settings(max_examples=600, deadline=None)
def test_arbitrary_bytes_only_raise_malformed(data: bytes, record_type: type[Record]) -> None:
    try:
        decoded = CODEC.decode(data, record_type)
    except MalformedRecord as exc:
        assert exc.reason == "malformed"
    else:
        assert type(decoded) is record_type


# --------------------------------------------------------------------------------------------
# Confluent framing against the fake registry
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeSchemaRegistry]:
    with FakeSchemaRegistry() as fake:
        yield fake


TOPICS = {
    "io.tickstream.RawTick": "ticks.raw",
    "io.tickstream.CleanTick": "ticks.clean",
    "io.tickstream.Bar": "bars.1m",
    "io.tickstream.FeatureVector": "features.1m",
    "io.tickstream.TradingCommand": "commands",
    "io.tickstream.MarketEvent": "events",
    "io.tickstream.RejectedRecord": "dlq",
    "io.tickstream.ControlMessage": "control",
    "io.tickstream.CollectorHealth": "collectors.health",
}


@pytest.mark.parametrize("record", SAMPLES, ids=_sample_id)
def test_confluent_round_trip(registry: FakeSchemaRegistry, record: Record) -> None:
    topic = TOPICS[record.SCHEMA]
    assert isinstance(make_codec(registry.url).framing, ConfluentFraming)
    subject = f"{topic}-value"
    post = ("POST", f"/subjects/{subject}/versions")
    before = registry.requests.count(post)
    producer = make_codec(registry.url)
    data = producer.encode(record, topic)
    assert producer.encode(record, topic) == data
    assert registry.requests.count(post) == before + 1  # registered once, then cached

    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    client = SchemaRegistryClient(registry.url)
    assert json.loads(client.get_schema(schema_id)) == avro.raw_schema(record.SCHEMA)
    assert subject in client.subjects()

    assert producer.decode(data, type(record), topic) == record  # from its own cache
    consumer = make_codec(registry.url)  # cold: fetches the writer schema by id
    assert consumer.decode(data, type(record), topic) == record
    assert ("GET", f"/schemas/ids/{schema_id}") in registry.requests


def test_confluent_unknown_id_and_bad_frames(registry: FakeSchemaRegistry) -> None:
    codec = make_codec(registry.url)
    good = codec.encode(TICK, "ticks.raw")
    assert "unknown schema id 999999" in _malformed(
        b"\x00" + (999_999).to_bytes(4, "big") + good[5:], codec=codec
    )
    assert "magic" in _malformed(b"\x01" + good[1:], codec=codec)
    assert "truncated" in _malformed(good[:4], codec=codec)
    assert "truncated" in _malformed(good[:-1], codec=codec)
    assert "trailing" in _malformed(good + b"\x00", codec=codec)
    assert "type mismatch" in _malformed(good, Bar, codec=codec)
    # a single-object message is not a Confluent one
    _malformed(TICK_BYTES, codec=codec)


def test_confluent_encode_needs_topic(registry: FakeSchemaRegistry) -> None:
    with pytest.raises(ValueError):
        make_codec(registry.url).encode(TICK)


def test_confluent_unreachable_registry_is_not_malformed() -> None:
    with FakeSchemaRegistry() as fake:
        url = fake.url
        data = make_codec(url).encode(TICK, "ticks.raw")
    codec = make_codec(url)  # registry gone: a retryable error, not a dead-letter
    with pytest.raises(SchemaRegistryError) as info:
        codec.decode(data, RawTick)
    assert not isinstance(info.value, MalformedRecord)


@given(single_object_garbage, st.binary(min_size=5, max_size=60), st.sampled_from(_TYPES))
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_confluent_arbitrary_bytes_only_raise_malformed(
    registry: FakeSchemaRegistry, garbage: bytes, raw: bytes, record_type: type[Record]
) -> None:
    codec = make_codec(registry.url)
    codec.encode(TICK, "ticks.raw")  # at least one real id exists
    for data in (garbage, b"\x00" + raw, b"\x00\x00\x00\x00\x01" + raw):
        try:
            decoded = codec.decode(data, record_type)
        except MalformedRecord as exc:
            assert exc.reason == "malformed"
        else:
            assert type(decoded) is record_type


def test_make_codec() -> None:
    assert isinstance(make_codec(None).framing, SingleObjectFraming)
    assert isinstance(make_codec("").framing, SingleObjectFraming)
    codec = make_codec("https://user:hunter2@registry.example:8081")
    assert isinstance(codec.framing, ConfluentFraming)
    assert "hunter2" not in repr(codec.framing.registry)


def test_import_is_lazy() -> None:
    """``import schemas`` reads no schema file (workers that only need dataclasses stay cheap)."""
    code = (
        "import schemas, schemas.avro as a\n"
        "assert a._raw.cache_info().currsize == 0, 'schema files read at import'\n"
        "assert a._parsed.cache_info().currsize == 0\n"
        "assert a._fingerprint_index.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_samples_are_independent_of_codec_cache() -> None:
    # decoding returns fresh objects: mutating one does not affect the next decode
    a = CODEC.decode(CODEC.encode(SAMPLES[5]), MarketEvent)
    a.currencies.append("JPY")
    assert CODEC.decode(CODEC.encode(SAMPLES[5]), MarketEvent) == SAMPLES[5]


def test_public_classes_exported() -> None:
    import schemas

    for name in ("Codec", "MalformedRecord", "make_codec", "RawTick", "SchemaRegistryClient"):
        assert hasattr(schemas, name)
    assert {CleanTick, ControlMessage, FeatureVector, RejectedRecord} <= set(RECORD_TYPES.values())


def test_encoder_bound_to_schema_and_topic_equals_encode(registry: FakeSchemaRegistry) -> None:
    """``Codec.encoder`` (the worker's publishing path) gives ``encode``'s bytes, for every
    record type (MarketEvent through the fastavro fallback) and both framings."""
    for codec in (CODEC, make_codec(registry.url)):
        for record in SAMPLES:
            encode = codec.encoder(record.SCHEMA, "enc-topic")
            assert encode(record) == codec.encode(record, "enc-topic")
            assert codec.decode(encode(record), type(record), "enc-topic") == record
