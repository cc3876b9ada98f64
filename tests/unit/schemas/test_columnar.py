"""schemas/columnar.py: many bodies read column-wise equal the codec's one-by-one reads.

For each stored schema, generated records (every field type's edge values: null branches,
64-bit longs, NaN and infinities, empty/long/non-ASCII strings, raw bytes) are framed,
then some are corrupted (a byte changed, cut short, a byte appended, garbage, an older
writer version). ``decode_columns`` must accept every clean current-layout row, read it
exactly as ``Codec.decode_dict`` does, and never accept a row the codec rejects.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
from fuzzing import avro_values
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro
from schemas.codec import Codec
from schemas.columnar import decode_columns

STORED = ("CleanTick", "Bar", "FeatureVector", "TradingCommand", "RejectedRecord")
#: what the sink reads (nulls of optional floats as NaN), and what replay reads (as None)
CASES = [(name, False) for name in STORED] + [("RawTick", True), ("FeatureVector", True)]


def _value(ftype: Any) -> st.SearchStrategy[Any]:
    return avro_values(ftype, nan=True)


def _records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = avro.schema(name)["fields"]
    return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in fields})


def _same(a: Any, b: Any, none_for_null: bool = False) -> bool:
    if isinstance(b, np.generic):
        b = b.item()
    if none_for_null and (a is None or b is None):
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:  # an optional double's null reads as NaN here
            other = b if a is None else a
            return isinstance(other, float) and math.isnan(other)
        return (math.isnan(a) and math.isnan(b)) or (a == b and type(a) is type(b))
    return type(a) is type(b) and a == b


def _one_by_one(codec: Codec, name: str, values: list[bytes]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for v in values:
        try:
            out.append(codec.decode_dict(name, v))
        except Exception:
            out.append(None)
    return out


def _check(codec: Codec, name: str, values: list[bytes],
           none_for_null: bool = False) -> tuple[int, set[int]]:
    """Asserts the contract; returns (rows accepted, indices the codec decodes)."""
    want = _one_by_one(codec, name, values)
    cols, done = decode_columns(codec, name, values, none_for_null=none_for_null)
    assert list(done) == sorted(set(done.tolist()))  # each row once, in order
    for j, i in enumerate(done.tolist()):
        row = want[i]
        assert row is not None, (f"accepted row {i} that the codec rejects: "
                                 f"{values[i].hex()} read as {[c[j] for c in cols.values()]}")
        for field, column in cols.items():
            assert _same(row[field], column[j], none_for_null), (i, field, row[field],
                                                                  column[j])
    return len(done), {i for i, w in enumerate(want) if w is not None}


@pytest.mark.parametrize(("name", "none_for_null"), CASES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_clean_rows_are_all_read_as_the_codec_reads_them(name: str, none_for_null: bool,
                                                         data: Any) -> None:
    codec = Codec()
    recs = data.draw(st.lists(_records(name), min_size=1, max_size=12))
    copies = data.draw(st.sampled_from([1, 5]))  # over 32 rows: strings grouped
    values = [codec.encode_dict(name, r) for r in recs] * copies
    accepted, decodable = _check(codec, name, values, none_for_null)
    assert accepted == len(values) == len(decodable)  # every clean row took the fast path


@pytest.mark.parametrize(("name", "none_for_null"), CASES)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_corrupted_rows_are_never_accepted_wrongly(name: str, none_for_null: bool, data: Any,
                                                   seed: int) -> None:
    codec = Codec()
    rng = random.Random(seed)
    recs = data.draw(st.lists(_records(name), min_size=1, max_size=8))
    values = [codec.encode_dict(name, rng.choice(recs)) for _ in range(rng.randrange(40, 90))]
    for i in range(len(values)):
        v = bytearray(values[i])
        how = rng.randrange(6)
        if how == 0:
            v[rng.randrange(len(v))] = rng.randrange(256)
        elif how == 1:
            del v[rng.randrange(len(v)):]
        elif how == 2:
            v += bytes([rng.randrange(256)])
        elif how == 3:
            v = bytearray(rng.randbytes(rng.randrange(40)))
        values[i] = bytes(v)  # how 4, 5: left clean
    accepted, decodable = _check(codec, name, values, none_for_null)
    assert accepted <= len(decodable)


def test_short_and_long_strings_both_paths() -> None:
    """Over 32 rows: short strings of a field are grouped (a pass per value for a few, a
    sort for many), long ones sliced, mixed lengths and trailing NULs kept apart."""
    codec = Codec()
    names = ["ICM", "a", "a\x00", "", "EURUSD", "é€", "x" * 7, "y" * 8, "z" * 30] * 8
    names += [f"S{i}" for i in range(12)] * 3
    recs = [{"symbol": s, "bar_time": i, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
             "bid_close": 1.0, "ask_close": 1.0, "tick_count": i, "mean_spread": 0.0,
             "fresh_brokers": 1, "dispersion": 0.0, "trigger_recv_time_us": 0}
            for i, s in enumerate(names)]
    for subset in (recs, [r for r in recs if len(r["symbol"]) <= 7],
                   [r for r in recs if len(r["symbol"]) <= 24]):
        values = [codec.encode_dict("Bar", r) for r in subset]
        cols, done = decode_columns(codec, "Bar", values)
        assert len(done) == len(values)
        assert cols["symbol"].tolist() == [r["symbol"] for r in subset]


def test_an_older_writer_version_goes_the_codecs_way() -> None:
    codec = Codec()
    name = next(n for n in avro.SCHEMA_NAMES if n in STORED and avro.history(n))
    old = avro.history(name)[0]
    import io

    import fastavro

    rec = {f["name"]: f.get("default") for f in old["fields"]}
    for f in old["fields"]:
        if rec[f["name"]] is None and f["type"] in ("string", "long", "int", "double"):
            rec[f["name"]] = {"string": "x", "long": 1, "int": 1, "double": 1.0}[f["type"]]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, rec)
    value = b"\xc3\x01" + avro.fingerprint(old) + buf.getvalue()
    resolved = codec.decode_dict(name, value)  # the codec reads it, resolved to today's
    current = codec.encode_dict(name, resolved)
    cols, done = decode_columns(codec, name, [value, current] * 20)
    assert done.tolist() == list(range(1, 40, 2))  # the old version's rows are left over
    assert all(_same(resolved[f], c[0]) for f, c in cols.items())


def test_a_varint_without_its_last_byte_within_ten_is_declined() -> None:
    """Eleven bytes of varint (the codec: longer than 64 bits) in one row, short varints in
    the others: the long one is left to the codec, not read as its first byte."""
    codec = Codec()
    rec = {f["name"]: _zero(f["type"]) for f in avro.schema("TradingCommand")["fields"]}
    good = codec.encode_dict("TradingCommand", rec)
    at = good.rindex(b"\x00\x00\x00")  # bar_time, trigger_recv_time_us, created_time_us
    bad = good[:at] + b"\xd4" + b"\x80" * 9 + b"\x01" + b"\x00"
    cols, done = decode_columns(codec, "TradingCommand", [good] * 40 + [bad])
    assert done.tolist() == list(range(40))
    assert cols["bar_time"].tolist() == [0] * 40


def _zero(ftype: Any) -> Any:
    if isinstance(ftype, list):
        return None
    if isinstance(ftype, dict):
        return ftype["symbols"][0]
    return {"string": "", "double": 0.0, "long": 0, "int": 0}[ftype]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_decode_rows_in_passes_gives_each_row_at_its_place(monkeypatch: pytest.MonkeyPatch,
                                                           chunk: int) -> None:
    """Rows read in passes of ``ROWS_CHUNK`` come back in their order, each what the codec
    reads, with ``None`` exactly where a row is malformed, whichever pass it falls in."""
    from schemas import columnar

    monkeypatch.setattr(columnar, "ROWS_CHUNK", chunk)
    codec = Codec()
    rng = random.Random(chunk)
    fields = ("broker", "symbol", "time_msc", "bid", "ask", "seq", "last")
    recs = [{"broker": rng.choice(["OANDA", "FXCM"]), "symbol": rng.choice(["EURUSD", "NZDUSD"]),
             "time_msc": 1_400_000_000_000 + i, "bid": 1.0 + i / 1e5, "ask": 1.0002 + i / 1e5,
             "recv_time_us": 0, "seq": rng.choice([None, i]),
             "last": rng.choice([None, 1.5]), "volume": None, "source": "HISTORY"}
            for i in range(300)]
    values = [codec.encode_dict("RawTick", r) for r in recs]
    bad = set(rng.sample(range(300), 25))
    for i in bad:
        values[i] = values[i][: rng.randrange(len(values[i]))]  # cut short: malformed
    rows = columnar.decode_rows(codec, "RawTick", values, fields)
    assert len(rows) == len(values)
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        if i in bad:
            assert row is None, i
        else:
            want = codec.decode_dict("RawTick", value)
            assert row == tuple(want[f] for f in fields), i
