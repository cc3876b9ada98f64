"""The loader's history encoders, one tick or a batch at once, write exactly the bytes the
codec writes for a RawTick."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.history.batch import TickBatch
from offline.load_encoding import encode_batch, history_encoder
from schemas.codec import Codec, make_codec
from schemas.records import RawTick
from stages.types import Tick

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=20)
PRICE = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False)
OPTIONAL = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(
    Tick, broker=TEXT, symbol=TEXT, time_msc=st.integers(-(2**52), 2**52), bid=PRICE,
    ask=PRICE, last=OPTIONAL, volume=OPTIONAL), min_size=1, max_size=5))
def test_history_encoder_bytes_equal_the_codec_bytes(ticks: list[Tick]) -> None:
    codec = make_codec(None)
    encode = history_encoder(codec, "t.ticks.history")
    for t in ticks:
        expected = codec.encode(RawTick(
            broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, last=t.last,
            volume=t.volume, time_msc=t.time_msc, recv_time_us=t.time_msc * 1000, seq=None,
            source="HISTORY"), "t.ticks.history")
        got = encode(t)
        assert got == expected
        assert Codec().decode(got, RawTick, "t.ticks.history").source == "HISTORY"


def codec_bytes(codec: Codec, t: Tick, topic: str) -> bytes:
    return codec.encode(RawTick(
        broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, last=t.last,
        volume=t.volume, time_msc=t.time_msc, recv_time_us=t.time_msc * 1000, seq=None,
        source="HISTORY"), topic)


FLOATS = st.floats(allow_nan=False)
#: Times around every varint length boundary, negative ones, and some too big for µs in
#: 64 bits (the batch then goes row by row, as the codec would).
TIMES = st.one_of(st.integers(-(2**40), 2**44), st.sampled_from(
    [0, -1, 63, 64, -65, 2**20, 2**34 - 1, 2**34, 2**41, 2**52, -(2**52), 2**62 // 1000]))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_batch_encoder_bytes_equal_the_codec_bytes(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    brokers = tuple(data.draw(st.lists(TEXT, min_size=1, max_size=3, unique=True)))
    symbols = tuple(data.draw(st.lists(TEXT, min_size=1, max_size=3, unique=True)))

    def column(strategy: st.SearchStrategy[float]) -> np.ndarray:
        return np.array(data.draw(st.lists(strategy, min_size=n, max_size=n)), np.float64)

    batch = TickBatch(
        brokers, symbols,
        np.array(data.draw(st.lists(st.integers(0, len(brokers) - 1), min_size=n,
                                    max_size=n)), np.int32),
        np.array(data.draw(st.lists(st.integers(0, len(symbols) - 1), min_size=n,
                                    max_size=n)), np.int32),
        np.array(data.draw(st.lists(TIMES, min_size=n, max_size=n)), np.int64),
        column(PRICE), column(PRICE),
        last=column(FLOATS) if data.draw(st.booleans()) else None,
        volume=column(FLOATS) if data.draw(st.booleans()) else None)
    codec = make_codec(None)
    topic = "t.ticks.history"
    assert encode_batch(codec, topic, batch) == [codec_bytes(codec, t, topic)
                                                 for t in batch.ticks()]
