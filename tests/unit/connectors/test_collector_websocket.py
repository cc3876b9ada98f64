"""Generic WebSocket quote feed: the pure mapping and time formats, the configuration, and
the collector against a local WebSocket stand-in (tests/fixtures/standins/websocket_feed.py) and the
real broker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka.partitioner import murmur2
from conftest import REPO_ROOT
from sinks import ListSink
from standins.websocket_feed import (
    START_MS,
    CloseWs,
    Drop,
    Hang,
    Quotes,
    Replay,
    Reply,
    Status,
    Text,
    WebSocketStandIn,
)

from connectors.base.collector import CollectorConfigError
from connectors.base.config import ConfigReader
from connectors.base.resilience import FatalCollectorError
from connectors.producer import RecordProducer
from connectors.websocket import build
from connectors.websocket.collector import WebSocketCollector
from connectors.websocket.config import expand, load_config, spec_from_config
from connectors.websocket.parse import (
    MappingError,
    MappingSpec,
    QuoteMapper,
    epoch_to_ms,
    iso8601_to_ms,
    normalise_symbol,
)
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import RawTick, RejectedRecord
from topology.admin import ensure_topics
from topology.settings import Settings

REPO = REPO_ROOT
T_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


# ---- time formats ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (1_700_000_000, "epoch_s", T_MS - 123),
        (1_700_000_000.123, "epoch_s", T_MS),
        ("1700000000.123999", "epoch_s", T_MS),
        ("1700000000", "epoch_s", T_MS - 123),
        (T_MS, "epoch_ms", T_MS),
        (float(T_MS), "epoch_ms", T_MS),
        (str(T_MS), "epoch_ms", T_MS),
        (T_MS * 1000 + 999, "epoch_us", T_MS),
        (str(T_MS * 1000 + 999), "epoch_us", T_MS),
        (T_MS * 1_000_000 + 999_999, "epoch_ns", T_MS),
        (str(T_MS * 1_000_000 + 1), "epoch_ns", T_MS),
    ],
)
def test_epoch_formats(value: Any, fmt: str, expected: int) -> None:
    assert epoch_to_ms(value, fmt) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20.123Z",
        "2023-11-14T22:13:20.123456789Z",
        "2023-11-14t22:13:20.1239z",
        "2023-11-14 22:13:20.123",  # no offset: UTC
        "2023-11-14T22:13:20,123Z",
        "2023-11-15T00:13:20.123+02:00",
        "2023-11-14T17:13:20.123-0500",
        "2023-11-15T01:13:20.123+03",
    ],
)
def test_iso8601_forms(text: str) -> None:
    assert iso8601_to_ms(text) == T_MS


def test_iso8601_agrees_with_datetime_over_many_days() -> None:
    for day in range(0, 40_000, 37):  # 1970 .. 2079, leap years included
        ms = day * 86_400_000 + 45_296_789
        text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        assert iso8601_to_ms(text) == ms, text


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        (True, "epoch_ms"), (None, "epoch_ms"), ("12a", "epoch_ms"), (float("nan"), "epoch_s"),
        ("1.2.3", "epoch_s"), ([1], "epoch_ms"),
    ],
)
def test_bad_epoch_values(value: Any, fmt: str) -> None:
    with pytest.raises(MappingError):
        epoch_to_ms(value, fmt)


@pytest.mark.parametrize(
    "text", ["2023-11-14", "2023-13-14T00:00:00Z", "2023-02-29T00:00:00Z",
             "2023-11-14T24:00:00Z", "2023-11-14T22:13:20+25:00", "yesterday"],
)
def test_bad_iso_values(text: str) -> None:
    with pytest.raises(MappingError):
        iso8601_to_ms(text)


# ---- mapping -----------------------------------------------------------------------------
def test_symbol_normalisation() -> None:
    assert [normalise_symbol(s) for s in ("EUR/USD", "eur_usd", "C:EURUSD", "EUR-USD")] == [
        "EURUSD"] * 4


POLYGON = MappingSpec(symbol="p", bid="b", ask="a", time="t", match={"ev": ("C",)})


def test_polygon_shape_with_control_messages() -> None:
    m = QuoteMapper(POLYGON, "POLYGON")
    frame = orjson.loads(
        b'[{"ev":"status","status":"auth_success"},'
        b'{"ev":"C","p":"EUR/USD","x":48,"a":1.10013,"b":1.1,"t":1700000000123},'
        b'{"ev":"C","p":"USD/JPY","x":48,"a":"150.013","b":"150.0","t":1700000000124}]'
    )
    out = m.map(frame, 42)
    assert out.ignored == 1 and out.rejections == []
    assert out.ticks == [
        RawTick(broker="POLYGON", symbol="EURUSD", bid=1.1, ask=1.10013, time_msc=T_MS,
                recv_time_us=42, source="WEBSOCKET"),
        RawTick(broker="POLYGON", symbol="USDJPY", bid=150.0, ask=150.013, time_msc=T_MS + 1,
                recv_time_us=42, source="WEBSOCKET"),
    ]


def test_positional_records_iso_times_and_symbol_map() -> None:
    # Tiingo-like: {"service":"fx","messageType":"A","data":["Q","eurusd",time,size,bid,...]}
    spec = spec_from_config(ConfigReader({
        "match": {"messageType": "A"},
        "fields": {"symbol": "data.1", "time": "data.2", "bid": "data.4", "ask": "data.7",
                   "volume": "data.3"},
        "time_format": "iso8601",
        "symbols": {"eurusd": "EURUSD", "xauusd": "GOLD"},
    }, "test", "mapping."))
    m = QuoteMapper(spec, "TIINGO")
    msg = {"service": "fx", "messageType": "A",
           "data": ["Q", "xauusd", "2023-11-14T22:13:20.123456+00:00", 1000000.0, 1990.5,
                    1990.6, 1000000.0, 1990.7]}
    out = m.map(msg, 1)
    assert [(t.symbol, t.time_msc, t.bid, t.ask, t.volume) for t in out.ticks] == [
        ("GOLD", T_MS, 1990.5, 1990.7, 1000000.0)]
    assert m.map({"messageType": "H", "response": {"code": 200}}, 1).ignored == 1


def test_records_path_and_optional_fields() -> None:
    spec = MappingSpec(symbol="s", bid="q.b", ask="q.a", time="ts", time_format="epoch_s",
                       last="q.l", seq="n", records="payload.quotes")
    m = QuoteMapper(spec, "V")
    msg = {"payload": {"quotes": [
        {"s": "GBPUSD", "q": {"b": 1.25, "a": 1.2501}, "ts": "1700000000.123", "n": "17"},
        {"s": "GBPUSD", "q": {"b": 1.25, "a": 1.2502, "l": 1.25015}, "ts": 1700000000, "n": 18},
    ]}}
    out = m.map(msg, 1)
    assert [(t.time_msc, t.last, t.seq) for t in out.ticks] == [
        (T_MS, None, 17), (T_MS - 123, 1.25015, 18)]
    assert m.map({"payload": {}}, 1).ignored == 1


def test_unmappable_quotes_are_rejections_naming_field_and_record() -> None:
    spec = MappingSpec(symbol="p", bid="b", ask="a", time="t", match={"ev": ("C",)},
                       symbols={"EUR/USD": "EURUSD"}, only_mapped_symbols=True)
    m = QuoteMapper(spec, "V")
    frame = [
        {"ev": "C", "p": "EUR/USD", "b": 1.1, "a": 1.2, "t": T_MS},
        {"ev": "C", "p": "EUR/USD", "a": 1.2, "t": T_MS},
        {"ev": "C", "p": "EUR/USD", "b": "x", "a": 1.2, "t": T_MS},
        {"ev": "C", "p": "EUR/USD", "b": 1.1, "a": 1.2, "t": True},
        {"ev": "C", "p": "XAU/USD", "b": 1.1, "a": 1.2, "t": T_MS},
        {"ev": "C", "p": 7, "b": 1.1, "a": 1.2, "t": T_MS},
    ]
    out = m.map(frame, 1)
    assert len(out.ticks) == 1
    assert [(r.reason, r.key) for r in out.rejections] == [
        ("malformed", "EURUSD"), ("malformed", "EURUSD"), ("malformed", "EURUSD"),
        ("unknown_symbol", "XAU/USD"), ("malformed", None)]
    details = [r.detail for r in out.rejections]
    assert details[0] == "record 1 of 6: missing field 'b'"
    assert details[1] == "record 2 of 6: bid is 'x', not a number"
    assert "time is True" in details[2]
    assert "not in the symbol map" in details[3]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"fields": {"symbol": "p", "bid": "b", "ask": "a"}}, "mapping.fields: lacks time"),
        ({"fields": {"symbol": "p", "bid": "b", "ask": "a", "time": "t", "px": "x"}},
         "mapping.fields.px: unknown setting"),
        ({"fields": {"symbol": "p", "bid": "b", "ask": "a", "time": "t"},
          "time_format": "epoch_minutes"},
         "mapping.time_format: expected one of 'epoch_s', 'epoch_ms', "),
        ({"fields": {"symbol": "p", "bid": "b..x", "ask": "a", "time": "t"}},
         "mapping.fields.bid: bad field path 'b..x'"),
        ({"fields": "p,b,a,t"}, "mapping.fields: expected a mapping, got 'p,b,a,t'"),
        ({"fields": {"symbol": "p", "bid": "b", "ask": "a", "time": "t"}, "match": {"a..b": 1}},
         "mapping.match: bad field path 'a..b'"),
        ({"fields": {"symbol": "p", "bid": "b", "ask": "a", "time": "t"}, "record": "x"},
         "mapping.record: unknown setting"),
    ],
)
def test_mapping_config_errors(section: dict[str, Any], message: str) -> None:
    with pytest.raises(CollectorConfigError) as err:
        spec_from_config(ConfigReader(section, "f.yaml", "mapping."))
    assert str(err.value).startswith(f"f.yaml: {message}")


# ---- configuration -----------------------------------------------------------------------
TOKEN = "wsk_0123456789abcdef0123456789abcdef"


def base_config(url: str = "wss://feed.example/quotes?apiKey=${token}") -> dict[str, Any]:
    return {
        "name": "feed-test", "broker": "POLYGON", "url": url, "token_env": "FEED_KEY",
        "subscribe": {
            "symbols": ["EUR/USD", "USD/JPY"], "symbol_format": "C.${symbol}",
            "messages": [{"action": "auth", "params": "${token}"},
                         {"action": "subscribe", "params": "${symbols}"}],
        },
        "mapping": {"match": {"ev": "C"}, "fields": {"symbol": "p", "bid": "b", "ask": "a",
                                                     "time": "t"}},
        "fatal": {"status": "auth_failed"},
    }


def test_templates_expand_tokens_and_symbols() -> None:
    cfg = load_config(base_config(), env={"FEED_KEY": TOKEN})
    assert cfg.subscribe_messages() == [
        {"action": "auth", "params": TOKEN},
        {"action": "subscribe", "params": "C.EUR/USD,C.USD/JPY"},
    ]
    assert TOKEN not in repr(cfg)
    per = base_config()
    per["subscribe"].update(per_symbol=True,
                            messages=[{"sub": "${symbol}", "all": "${symbols_list}"}])
    cfg = load_config(per, env={"FEED_KEY": TOKEN})
    assert cfg.subscribe_messages() == [
        {"sub": "C.EUR/USD", "all": ["C.EUR/USD", "C.USD/JPY"]},
        {"sub": "C.USD/JPY", "all": ["C.EUR/USD", "C.USD/JPY"]},
    ]
    assert expand("a=${token}&b", {"token": "x"}) == "a=x&b"


def test_no_credential_needed_when_none_is_used() -> None:
    data = base_config("wss://feed.example/public")
    del data["token_env"]
    data["subscribe"]["messages"] = [{"subscribe": "${symbols}"}]
    cfg = load_config(data, env={})
    assert cfg.token is None and cfg.token_source == "none"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": TOKEN}, "ws.yaml: token: must not be written in the config file"),
        ({"url": "ftp://x"}, "ws.yaml: url: expected a ws:// or wss:// URL, got 'ftp://x'"),
        ({"url": f"ftp://x.example/q?apiKey={TOKEN}"},
         "ws.yaml: url: expected a ws:// or wss:// URL, got 'ftp://x.example/q?apiKey=***'"),
        ({"url": "wss://x.example/q?k=${key}"},
         "ws.yaml: url: uses an unknown placeholder ${key}"),
        ({"subscribe": {"messages": ["${apikey}"]}},
         "ws.yaml: subscribe.messages: uses an unknown placeholder ${apikey}"),
        ({"subscribe": {"symbols": "EUR/USD"}},
         "ws.yaml: subscribe.symbols: expected a list of vendor symbols, got 'EUR/USD'"),
        ({"subscribe": {"symbol": "EUR/USD"}}, "ws.yaml: subscribe.symbol: unknown setting"),
        ({"headers": {"Authorization": f"Bearer {TOKEN}", "X-Retry": 3}},
         "ws.yaml: headers.X-Retry: expected a string value, got type int"),
        ({"mapping": None}, "ws.yaml: mapping: required (a mapping with at least 'fields')"),
        ({"heartbeat": 3}, "ws.yaml: heartbeat: unknown setting (known: broker, "),
        ({"ping_interval_s": 0}, "ws.yaml: ping_interval_s: expected a number from 0.01 to "
         "3600, got 0"),
        ({"token_env": "MISSING_KEY"}, "ws.yaml: token_env: the feed credential is not set: "
         "export MISSING_KEY or point token_file (or MISSING_KEY_FILE) at a secret file"),
    ],
)
def test_config_errors(change: dict[str, Any], message: str) -> None:
    data = {**base_config(), **change}
    with pytest.raises(CollectorConfigError) as err:
        load_config(data, config_path="conf/ws.yaml", env={"FEED_KEY": TOKEN})
    assert str(err.value).startswith("conf/ws.yaml: ")
    assert message in str(err.value)
    assert TOKEN not in str(err.value)


def test_shipped_example_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = REPO / "config" / "collectors" / "websocket-example.yaml"
    data = yaml.safe_load(path.read_text())
    secret = tmp_path / "key"
    secret.write_text(TOKEN + "\n")
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    monkeypatch.setenv("POLYGON_API_KEY_FILE", str(secret))
    collector = build(data, ListSink(), config_path=str(path))
    assert isinstance(collector, WebSocketCollector)
    assert collector.config.token is not None and collector.config.token.get() == TOKEN
    assert collector.config.mapping.time_format == "epoch_ms"
    assert collector.config.subscribe_messages()[1] == {
        "action": "subscribe", "params": "C.EUR/USD,C.GBP/USD,C.USD/JPY"}


# ---- the collector against the stand-in (no broker) --------------------------------------
def make_collector(
    feed: WebSocketStandIn, sink: Any, token: str | None = None, **overrides: Any
) -> WebSocketCollector:
    data = base_config(feed.url + "?apiKey=${token}")
    data["subscribe"]["symbols"] = feed.symbols
    data.update(heartbeat_timeout_s=5.0, connections_per_s=1000,
                reconnect={"base_s": 0.01, "cap_s": 0.05})
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    cfg = load_config(data, env={"FEED_KEY": token or feed.token})
    return WebSocketCollector(cfg, sink)


async def run_until(
    collector: WebSocketCollector, done: Callable[[], bool], timeout_s: float = 15.0
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(collector.run())
    deadline = loop.time() + timeout_s
    try:
        while not done() and not task.done():
            if loop.time() > deadline:
                raise AssertionError(f"not done in {timeout_s} s: {collector.health_dict()}")
            await asyncio.sleep(0.01)
    finally:
        await collector.stop()
        try:
            await asyncio.wait_for(task, 5)
        finally:
            if not task.done():
                task.cancel()


def expected(quotes: list[dict[str, Any]]) -> list[tuple[str, int, float, float]]:
    return [(normalise_symbol(q["p"]), q["t"], float(q["b"]), float(q["a"])) for q in quotes]


def summary(ticks: list[RawTick]) -> list[tuple[str, int, float, float]]:
    return [(t.symbol, t.time_msc, t.bid, t.ask) for t in ticks]


async def test_reconnects_lose_and_duplicate_nothing() -> None:
    sessions = [
        [Quotes(5), Status("heartbeat"), Quotes(4, per_frame=2), Drop()],
        [Replay(), Quotes(6, per_frame=3), CloseWs(1011)],
        [Replay(), Quotes(3)],
    ]
    sink = ListSink()
    async with WebSocketStandIn(sessions=sessions) as feed:
        c = make_collector(feed, sink)
        await run_until(c, lambda: c.health.ticks >= 18 and c.sessions >= 3)
    assert len(feed.sent_quotes) == 18
    assert summary(sink.ticks()) == expected(feed.sent_quotes)  # exact, in order
    assert c.duplicates == 4  # two replays of two symbols
    assert c.health.reconnects == 2
    assert sink.rejects() == []
    assert feed.subscriptions == [{"action": "subscribe", "params": "C.EUR/USD,C.USD/JPY"}] * 3
    assert all(t.broker == "POLYGON" and t.source == "WEBSOCKET" for t in sink.ticks())


async def test_malformed_frames_are_dead_lettered_and_the_feed_goes_on() -> None:
    good = '{"ev":"C","p":"EUR/USD","b":1.2,"a":1.3,"t":1700000009999}'
    bad = [
        "{not json",
        '{"ev":"C","p":"EUR/USD","b":"x","a":1.1,"t":1700000000000}',
        f'[{good},{{"ev":"C","p":"USD/JPY","a":150.1,"t":1700000000000}}]',
    ]
    sink = ListSink()
    async with WebSocketStandIn(sessions=[[Quotes(2), *map(Text, bad), Quotes(2)]]) as feed:
        c = make_collector(feed, sink)
        await run_until(c, lambda: c.health.ticks >= 5 and c.health.rejected >= 3)
    want = [*expected(feed.sent_quotes[:2]), ("EURUSD", 1700000009999, 1.2, 1.3),
            *expected(feed.sent_quotes[2:])]
    assert summary(sink.ticks()) == want
    rejects = sink.rejects()
    assert [r.original for r in rejects] == [b.encode() for b in bad]  # the whole frame
    assert [r.reason for r in rejects] == ["malformed"] * 3
    assert rejects[0].detail.startswith("not JSON")
    assert rejects[1].detail == "bid is 'x', not a number"
    assert rejects[2].detail == "record 1 of 2: missing field 'b'"
    assert [r.key for r in rejects] == [None, b"EURUSD", b"USDJPY"]
    assert all(r.source_topic == "collector:websocket:feed-test" for r in rejects)
    assert c.health.reconnects == 0
    assert c.ignored == 3  # connected, auth_success, subscribed acknowledgements


async def test_silence_reconnects() -> None:
    sink = ListSink()
    async with WebSocketStandIn(sessions=[[Quotes(2), Hang()], [Quotes(1), Hang()],
                                          [Hang()], [Hang()]]) as feed:
        c = make_collector(feed, sink, heartbeat_timeout_s=0.3)
        await run_until(c, lambda: c.health.ticks >= 3 and c.health.reconnects >= 2)
    assert summary(sink.ticks()) == expected(feed.sent_quotes)
    assert c.health.last_error == "HeartbeatTimeout: no message for 0.3 s"


async def test_vendor_heartbeats_keep_the_session() -> None:
    async with WebSocketStandIn() as feed:  # status heartbeats every 50 ms
        c = make_collector(feed, ListSink(), heartbeat_timeout_s=0.5)
        await run_until(c, lambda: feed.heartbeats_sent >= 30)
    assert (c.health.reconnects, c.sessions, c.health.rejected) == (0, 1, 0)
    assert c.ignored >= 30


async def test_handshake_401_is_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with WebSocketStandIn() as feed:
        c = make_collector(feed, ListSink(), token=TOKEN)  # not the feed's key
        with pytest.raises(FatalCollectorError, match="HTTP 401") as err:
            await asyncio.wait_for(c.run(), 10)
    assert feed.handshake_statuses == [401]
    assert "$FEED_KEY" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text
    assert TOKEN not in str(c.health_dict())


async def test_fatal_vendor_message_stops_the_collector() -> None:
    async with WebSocketStandIn() as feed:
        c = make_collector(feed, ListSink(), subscribe={
            "messages": [{"action": "auth", "params": "not-the-key"}]})
        with pytest.raises(FatalCollectorError, match="auth_failed"):
            await asyncio.wait_for(c.run(), 10)
    assert feed.connections == 1


async def test_429_waits_for_retry_after_and_5xx_backs_off() -> None:
    sink = ListSink()
    async with WebSocketStandIn(sessions=[Reply(429, "1"), Reply(503), [Quotes(3)]]) as feed:
        c = make_collector(feed, sink)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await run_until(c, lambda: c.health.ticks >= 3)
        elapsed = loop.time() - t0
    assert feed.handshake_statuses == [429, 503, 101]
    assert elapsed >= 0.99  # Retry-After: 1 honoured (backoff alone is <= 50 ms here)
    assert summary(sink.ticks()) == expected(feed.sent_quotes)
    assert c.health.reconnects == 2


async def test_credentials_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The key travels in the URL query and in the auth message; a vendor error that
    echoes it is redacted too."""
    caplog.set_level(logging.DEBUG)
    sink = ListSink()
    async with WebSocketStandIn(token=TOKEN) as feed:
        feed.sessions = [
            [Quotes(1), Text(f'{{"ev":"C","p":"EUR/USD","b":"{TOKEN}","a":1,"t":1}}'), Drop()],
            [Quotes(1)],
        ]
        c = make_collector(feed, sink)
        await run_until(c, lambda: c.health.ticks >= 2 and c.health.rejected >= 1)
    assert c.health.reconnects == 1
    assert feed.auth_messages[0] == {"action": "auth", "params": TOKEN}
    assert "apiKey=***" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in str(c.health_dict())
    assert all(TOKEN not in r.detail for r in sink.rejects())


# ---- end to end on the real broker -------------------------------------------------------
def partition_of(key: bytes, partitions: int) -> int:
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def read_topics(settings: Settings, counts: dict[str, int]) -> dict[str, list[Message]]:
    names = {settings.topic(t): t for t in counts}
    with TopicReader(settings, sorted(names)) as reader:

        def enough(ms: list[Message]) -> bool:
            got = Counter(names[m.topic] for m in ms)
            return all(got[t] >= n for t, n in counts.items())

        msgs = reader.read_until(enough, timeout_s=30)
        msgs += reader.poll(timeout_s=0.5)
    out: dict[str, list[Message]] = {t: [] for t in counts}
    for m in msgs:
        out[names[m.topic]].append(m)
    return out


def iso_quote(symbol: str, i: int) -> dict[str, Any]:
    """A second vendor shape: string prices, ISO times with microseconds."""
    ms = START_MS + i
    when = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")
    return {"ev": "C", "p": symbol, "b": f"{1.1 + i * 1e-5:.5f}", "a": f"{1.1002 + i * 1e-5:.5f}",
            "t": when.replace("+00:00", "Z")}


@pytest.mark.integration
async def test_end_to_end_through_kafka(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ensure_topics(kafka_settings)
    producer = RecordProducer(kafka_settings)
    malformed = ["{truncated", '{"ev":"C","p":"EUR/USD","b":1.1,"a":1.2,"t":"noon"}']
    sessions = [
        [Quotes(30, per_frame=4), *map(Text, malformed), Drop()],
        [Replay(), Quotes(25, per_frame=5)],
    ]
    async with WebSocketStandIn(token=TOKEN, symbols=["EUR/USD", "USD/JPY", "GBP/USD"],
                                sessions=sessions, quote_format=iso_quote) as feed:
        c = make_collector(feed, producer, name="ws-e2e",
                           mapping={"time_format": "rfc3339"})
        await run_until(c, lambda: c.health.ticks >= 55 and c.health.rejected >= 2)
    assert c.flush(30) == 0
    assert (c.health.ticks, c.health.rejected, c.duplicates) == (55, 2, 3)

    got = read_topics(kafka_settings, {"ticks.raw": 55, "ticks.rejected": 2})
    codec = make_codec(None)
    assert len(got["ticks.raw"]) == 55
    decoded = []
    for m in got["ticks.raw"]:
        tick = codec.decode(m.value, RawTick, m.topic)
        assert m.key == tick.symbol.encode()
        assert m.partition == partition_of(m.key, kafka_settings.partitions)
        decoded.append(tick)
    decoded.sort(key=lambda t: t.time_msc)
    want = [(normalise_symbol(q["p"]), START_MS + i, float(q["b"]), float(q["a"]))
            for i, q in enumerate(feed.sent_quotes)]
    assert summary(decoded) == want
    rejects = [codec.decode(m.value, RejectedRecord, m.topic) for m in got["ticks.rejected"]]
    assert sorted(r.original for r in rejects) == sorted(s.encode() for s in malformed)
    assert {r.reason for r in rejects} == {"malformed"}
    assert TOKEN not in caplog.text
