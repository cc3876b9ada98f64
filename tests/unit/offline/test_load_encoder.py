"""The loader's history encoder writes exactly the bytes the codec writes for a RawTick."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from offline.load import history_encoder
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
