"""OANDA v20 pricing stream: the parser on documented payloads, the configuration, and the
collector against a local stand-in server (tests/fixtures/standins/oanda.py) and the real broker."""

from __future__ import annotations

import asyncio
import logging
import random
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
from standins.oanda import (
    START_NS,
    Close,
    CutMidLine,
    Hang,
    Heartbeats,
    OandaStandIn,
    Prices,
    Raw,
    Reply,
    Snapshot,
    price_line,
    rfc3339_ns,
)

from connectors.base.collector import CollectorConfigError
from connectors.base.resilience import FatalCollectorError, retry_after_s
from connectors.oanda import build
from connectors.oanda.collector import OandaCollector
from connectors.oanda.config import LIVE_STREAM_URL, PRACTICE_STREAM_URL, load_config
from connectors.oanda.parse import (
    MALFORMED,
    NOT_TRADEABLE,
    UNKNOWN_TYPE,
    Heartbeat,
    ParseError,
    PriceParser,
    symbol_to_instrument,
)
from connectors.producer import RecordProducer
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import RawTick, RejectedRecord
from topology.admin import ensure_topics
from topology.settings import Settings

REPO = REPO_ROOT

# The documented v20 payloads (developer.oanda.com, "Pricing Endpoints" stream example).
DOC_PRICE = (
    b'{"type":"PRICE","instrument":"EUR_USD","time":"2016-09-20T15:05:47.960449532Z",'
    b'"tradeable":true,"bids":[{"price":"1.11594","liquidity":10000000},'
    b'{"price":"1.11593","liquidity":10000000}],"asks":[{"price":"1.11607",'
    b'"liquidity":10000000},{"price":"1.11608","liquidity":10000000}],'
    b'"closeoutBid":"1.11579","closeoutAsk":"1.11622","status":"tradeable"}'
)
DOC_HEARTBEAT = b'{"type":"HEARTBEAT","time":"2016-09-20T15:05:50.163791738Z"}'
DOC_TIME_MS = 1474383947960  # 2016-09-20T15:05:47.960Z


def _doc(**changes: Any) -> bytes:
    msg = orjson.loads(DOC_PRICE)
    for k, v in changes.items():
        if v is ...:
            msg.pop(k)
        else:
            msg[k] = v
    return orjson.dumps(msg)


# ---- parser ------------------------------------------------------------------------------
def test_documented_price_becomes_a_raw_tick() -> None:
    tick = PriceParser().parse(DOC_PRICE, 1_474_383_948_000_123)
    assert tick == RawTick(
        broker="OANDA", symbol="EURUSD", bid=1.11594, ask=1.11607, last=None, volume=None,
        time_msc=DOC_TIME_MS, recv_time_us=1_474_383_948_000_123, seq=None, source="OANDA",
    )


def test_documented_heartbeat() -> None:
    assert PriceParser().parse(DOC_HEARTBEAT, 0) == Heartbeat(1474383950163)


def test_broker_name_and_symbol_overrides() -> None:
    p = PriceParser(broker="OANDA-LIVE", symbols={"DE30_EUR": "GER30"})
    tick = p.parse(_doc(instrument="DE30_EUR"), 1)
    assert isinstance(tick, RawTick)
    assert (tick.broker, tick.symbol) == ("OANDA-LIVE", "GER30")
    usd_jpy = p.parse(_doc(instrument="USD_JPY", bids=[{"price": "151.201"}],
                           asks=[{"price": "151.214"}]), 1)
    assert isinstance(usd_jpy, RawTick)
    assert (usd_jpy.symbol, usd_jpy.bid, usd_jpy.ask) == ("USDJPY", 151.201, 151.214)


def test_non_tradeable_price_is_not_a_tick() -> None:
    p = PriceParser()
    assert p.parse(_doc(tradeable=False), 1) == ParseError(
        NOT_TRADEABLE, "EUR_USD is not tradeable", "EURUSD"
    )
    # without the flag the deprecated status field decides; with neither it is tradeable
    assert isinstance(p.parse(_doc(tradeable=..., status="non-tradeable"), 1), ParseError)
    assert isinstance(p.parse(_doc(tradeable=..., status=...), 1), RawTick)
    # a closed market may quote no book at all: still not_tradeable, not malformed
    closed = p.parse(_doc(tradeable=False, bids=[], asks=[]), 1)
    assert isinstance(closed, ParseError) and closed.reason == NOT_TRADEABLE


@pytest.mark.parametrize(
    ("line", "reason", "detail"),
    [
        (b"not json", MALFORMED, "not JSON"),
        (DOC_PRICE[:-20], MALFORMED, "not JSON"),
        (b"[1, 2]", MALFORMED, "not a JSON object"),
        (b'{"time":"2016-09-20T15:05:50.163791738Z"}', MALFORMED, "no 'type'"),
        (b'{"type":"ORDER_FILL"}', UNKNOWN_TYPE, "ORDER_FILL"),
        (_doc(instrument=...), MALFORMED, "no 'instrument'"),
        (_doc(instrument=42), MALFORMED, "instrument is 42"),
        (_doc(time=...), MALFORMED, "no 'time'"),
        (_doc(time="2016-09-20T25:05:47.960449532Z"), MALFORMED, "bad time of day"),
        (_doc(time="2016-02-30T15:05:47.960449532Z"), MALFORMED, "bad date"),
        (_doc(time="yesterday"), MALFORMED, "not a number"),
        (_doc(time=1474383947), MALFORMED, "not a string"),
        (_doc(tradeable="yes"), MALFORMED, "'tradeable' is 'yes'"),
        (_doc(bids=[]), MALFORMED, "'bids'"),
        (_doc(asks=...), MALFORMED, "'asks'"),
        (_doc(bids=[{"liquidity": 1}]), MALFORMED, "bids[0].price is None"),
        (_doc(asks=[{"price": "1.1x"}]), MALFORMED, "asks[0].price '1.1x' is not a number"),
        (_doc(bids=[{"price": "NaN"}]), MALFORMED, "bids[0].price is 'NaN'"),
        (b'{"type":"HEARTBEAT","time":"soon"}', MALFORMED, "HEARTBEAT"),
    ],
)
def test_malformed_lines_name_the_reason(line: bytes, reason: str, detail: str) -> None:
    result = PriceParser().parse(line, 1)
    assert isinstance(result, ParseError)
    assert result.reason == reason
    assert detail in result.detail


def test_time_fast_path_agrees_with_the_exact_value() -> None:
    p = PriceParser()
    rng = random.Random(7)
    for _ in range(5000):
        ns = rng.randrange(946_684_800 * 10**9, 4_102_444_800 * 10**9)  # 2000 .. 2100
        assert p.time_ms(rfc3339_ns(ns)) == ns // 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-09-20T15:05:47.960449532Z", DOC_TIME_MS),
        ("2016-09-20T15:05:47.96Z", DOC_TIME_MS),
        ("2016-09-20T15:05:47Z", DOC_TIME_MS - 960),
        ("2016-09-20T17:05:47.960449532+02:00", DOC_TIME_MS),
        ("2016-09-20T15:05:47.960449532", DOC_TIME_MS),
        ("1474383947.960449532", DOC_TIME_MS),  # Accept-Datetime-Format: UNIX
        ("2016-12-31T23:59:60.5Z", int(datetime(2017, 1, 1, tzinfo=UTC).timestamp() * 1000)
         + 500),
    ],
)
def test_time_forms(text: str, expected: int) -> None:
    assert PriceParser().time_ms(text) == expected


def test_symbol_to_instrument() -> None:
    assert symbol_to_instrument("EURUSD") == "EUR_USD"
    assert symbol_to_instrument("eur_usd") == "EUR_USD"
    with pytest.raises(ValueError, match="DE30_EUR"):
        symbol_to_instrument("DE30EUR")


# ---- configuration -----------------------------------------------------------------------
TOKEN = "0123456789abcdef-secret-token-fedcba9876543210"
BASE = {"account_id": "101-001-1234567-001", "instruments": ["EURUSD", "USD_JPY"]}


def test_config_defaults_and_token_from_env() -> None:
    cfg = load_config(BASE, env={"OANDA_API_TOKEN": TOKEN})
    assert cfg.token.get() == TOKEN
    assert cfg.instruments == ("EUR_USD", "USD_JPY")
    assert cfg.stream_url == PRACTICE_STREAM_URL
    assert cfg.stream_endpoint == (
        f"{PRACTICE_STREAM_URL}/v3/accounts/101-001-1234567-001/pricing/stream"
    )
    assert cfg.heartbeat_timeout_s == 10.0
    assert cfg.non_tradeable == "reject"
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg)
    live = load_config({**BASE, "environment": "live"}, env={"OANDA_API_TOKEN": TOKEN})
    assert live.stream_url == LIVE_STREAM_URL


def test_token_from_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "oanda").write_text(TOKEN + "\n")
    cfg_file = tmp_path / "oanda.yaml"
    cfg = load_config({**BASE, "token_file": "secrets/oanda"}, config_path=str(cfg_file),
                      env={})
    assert cfg.token.get() == TOKEN
    assert cfg.token_source == f"file {tmp_path / 'secrets' / 'oanda'}"
    via_env = load_config(BASE, env={"OANDA_API_TOKEN_FILE": str(tmp_path / "secrets/oanda")})
    assert via_env.token.get() == TOKEN


@pytest.mark.parametrize(
    ("data", "env", "message"),
    [
        ({**BASE, "token": TOKEN}, {}, "oanda.yaml: token: must not be written in the config "
         "file: set token_env (the name of an environment variable) or token_file"),
        ({**BASE, "api_key": TOKEN}, {}, "oanda.yaml: api_key: must not be written in the "
         "config file"),
        (BASE, {}, "oanda.yaml: token_env: the OANDA API token is not set: export "
         "OANDA_API_TOKEN or point token_file (or OANDA_API_TOKEN_FILE) at a secret file"),
        ({**BASE, "token_file": "/nonexistent/x"}, {},
         "oanda.yaml: token_file: cannot read '/nonexistent/x': "),
        ({**BASE, "token_env": TOKEN}, {},
         "oanda.yaml: token_env: expected the name of an environment variable"),
        ({**BASE, "token_env": "X", "token_file": "/run/x"}, {},
         "oanda.yaml: token_env: set token_env or token_file, not both"),
        ({**BASE, "instrument": ["EUR_USD"]}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: instrument: unknown setting (known: account_id, account_id_env, "),
        ({**BASE, "instruments": []}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: instruments: expected a non-empty list such as [EUR_USD, USD_JPY], got []"),
        ({**BASE, "environment": "demo"}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: environment: expected one of 'practice', 'live', got 'demo'"),
        ({**BASE, "heartbeat_timeout_s": 0}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: heartbeat_timeout_s: expected a number from 0.01 to 3600, got 0"),
        ({**BASE, "non_tradeable": "emit"}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: non_tradeable: expected one of 'reject', 'skip', got 'emit'"),
        ({**BASE, "reconnect": {"base_s": "x"}}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: reconnect.base_s: expected a number from 0.001 to 3600, got 'x'"),
        ({**BASE, "reconnect": {"base": 1}}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: reconnect.base: unknown setting (known: base_s, breaker_reset_s, "),
        ({"instruments": ["EUR_USD"]}, {"OANDA_API_TOKEN": TOKEN},
         "oanda.yaml: account_id: required: set it, or export OANDA_ACCOUNT_ID"),
    ],
)
def test_config_errors_name_the_file_and_field(
    data: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(CollectorConfigError) as err:
        load_config(data, config_path="conf/oanda.yaml", env=env)
    assert str(err.value).startswith("conf/oanda.yaml: ")
    assert message in str(err.value)
    assert TOKEN not in str(err.value)


def test_shipped_config_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    path = REPO / "config" / "collectors" / "oanda.yaml"
    data = yaml.safe_load(path.read_text())
    monkeypatch.setenv("OANDA_API_TOKEN", TOKEN)
    monkeypatch.setenv("OANDA_ACCOUNT_ID", "101-004-7654321-001")
    collector = build(data, ListSink(), config_path=str(path))
    assert isinstance(collector, OandaCollector)
    assert collector.config.account_id == "101-004-7654321-001"
    assert "EUR_USD" in collector.config.instruments
    assert collector.config.heartbeat_timeout_s == 10.0
    assert collector.redact(f"Bearer {TOKEN}") == "Bearer ***"


def test_retry_after_forms() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


# ---- the collector against the stand-in (no broker) --------------------------------------
def make_collector(
    standin: OandaStandIn, sink: Any, token: str | None = None, **overrides: Any
) -> OandaCollector:
    data = {
        "name": "oanda-test", "account_id": standin.account_id, "stream_url": standin.url,
        "instruments": standin.instruments, "heartbeat_timeout_s": 5.0,
        "reconnect": {"base_s": 0.01, "cap_s": 0.05}, "connections_per_s": 1000,
        **overrides,
    }
    cfg = load_config(data, env={"OANDA_API_TOKEN": token or standin.token})
    return OandaCollector(cfg, sink)


async def run_until(
    collector: OandaCollector, done: Callable[[], bool], timeout_s: float = 15.0
) -> None:
    """Run the collector until ``done()`` (polled), then stop it; fail on the deadline."""
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


def expected_ticks(lines: list[bytes]) -> list[tuple[str, int, float, float]]:
    p = PriceParser()
    out = []
    for line in lines:
        t = p.parse(line.rstrip(b"\n"), 0)
        assert isinstance(t, RawTick)
        out.append((t.symbol, t.time_msc, t.bid, t.ask))
    return out


def summary(ticks: list[RawTick]) -> list[tuple[str, int, float, float]]:
    return [(t.symbol, t.time_msc, t.bid, t.ask) for t in ticks]


async def test_drop_mid_line_then_resume_loses_and_duplicates_nothing() -> None:
    sessions = [
        [Prices(5), Heartbeats(2), Prices(4, per_write=3), CutMidLine()],
        [Snapshot(), Prices(7, per_write=4), CutMidLine()],
        [Snapshot(), Prices(3)],
    ]
    sink = ListSink()
    async with OandaStandIn(sessions=sessions) as oanda:
        c = make_collector(oanda, sink)
        await run_until(c, lambda: c.health.ticks >= 19 and len(oanda.requests) >= 3)
    assert oanda.cuts == 2
    assert len(oanda.sent_prices) == 19
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)  # exact, in order
    assert c.health.ticks == 19
    assert c.duplicates == 6  # two snapshots of three instruments, each skipped
    assert c.truncated == 2
    assert c.health.reconnects == 2
    assert sink.rejects() == []
    assert c.heartbeats == 2
    assert [r.instruments for r in oanda.requests] == [oanda.instruments] * 3
    assert all(r.query["snapshot"] == "true" for r in oanda.requests)
    assert all(t.recv_time_us > 0 and t.source == "OANDA" for t in sink.ticks())


async def test_incomplete_last_line_at_a_clean_end_is_not_a_tick() -> None:
    sink = ListSink()
    partial = price_line("EUR_USD", START_NS, 1.2, 1.3)[:-30]
    async with OandaStandIn(sessions=[[Prices(2), Raw(partial), Close()], [Prices(1)]]) as oanda:
        c = make_collector(oanda, sink)
        await run_until(c, lambda: c.health.ticks >= 3)
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    assert (c.health.ticks, c.truncated, c.health.rejected) == (3, 1, 0)
    assert "SessionEnded" in (c.health.last_error or "")


async def test_malformed_lines_are_dead_lettered_and_the_stream_goes_on() -> None:
    bad = [
        b"{not json",
        b'{"type":"PRICE","instrument":"EUR_USD","time":"2016-09-20T15:05:47.960449532Z",'
        b'"tradeable":true,"bids":[{"price":"oops"}],"asks":[{"price":"1.1"}]}',
        b'{"type":"ORDER_FILL","id":"1"}',
        b'[1,2,3]',
    ]
    sink = ListSink()
    script = [[Prices(3), Raw(b"\n".join(bad) + b"\n\n"), Prices(2, per_write=2)]]
    async with OandaStandIn(sessions=script) as oanda:
        c = make_collector(oanda, sink)
        await run_until(c, lambda: c.health.ticks >= 5 and c.health.rejected >= 4)
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    rejects = sink.rejects()
    assert [r.original for r in rejects] == bad  # byte for byte, without the newline
    assert [r.reason for r in rejects] == [MALFORMED, MALFORMED, UNKNOWN_TYPE, MALFORMED]
    assert "bids[0].price 'oops'" in rejects[1].detail
    assert rejects[1].key == b"EURUSD"
    assert all(r.source_topic == "collector:oanda:oanda-test" and r.stage == "collect"
               for r in rejects)
    assert c.health.reconnects == 0


@pytest.mark.parametrize("mode", ["reject", "skip"])
async def test_non_tradeable_prices_are_counted_and_never_ticks(mode: str) -> None:
    closed = [price_line("EUR_USD", START_NS - k, 1.2, 1.3, tradeable=False) for k in range(3)]
    sink = ListSink()
    async with OandaStandIn(sessions=[[Prices(2), Raw(b"".join(closed)), Prices(2)]]) as oanda:
        c = make_collector(oanda, sink, non_tradeable=mode)
        await run_until(c, lambda: c.health.ticks >= 4 and c.not_tradeable >= 3)
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    assert c.not_tradeable == 3
    rejects = sink.rejects()
    if mode == "reject":
        assert [r.reason for r in rejects] == [NOT_TRADEABLE] * 3
        assert [r.original for r in rejects] == [line.rstrip(b"\n") for line in closed]
    else:
        assert rejects == []


async def test_heartbeats_keep_the_session_and_silence_reconnects() -> None:
    sink = ListSink()
    async with OandaStandIn(sessions=[]) as oanda:  # heartbeats only, every 50 ms
        c = make_collector(oanda, sink, heartbeat_timeout_s=0.5)
        await run_until(c, lambda: oanda.heartbeats_sent >= 30)  # 1.5 s: 3 timeouts' worth
    assert (c.health.reconnects, c.sessions, c.health.ticks, c.health.rejected) == (0, 1, 0, 0)
    assert c.heartbeats >= 20
    sink = ListSink()
    script = [[Heartbeats(3), Hang()], [Prices(2), Hang()], [Hang()], [Hang()]]
    async with OandaStandIn(sessions=script) as oanda:
        c = make_collector(oanda, sink, heartbeat_timeout_s=0.3)
        await run_until(c, lambda: c.health.ticks >= 2 and c.health.reconnects >= 2)
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    assert c.heartbeats == 3
    assert c.health.last_error == "HeartbeatTimeout: no price or heartbeat for 0.3 s"
    assert sink.rejects() == []


async def test_over_long_line_is_dead_lettered_and_skipped() -> None:
    sink = ListSink()
    junk = b'{"type":"PRICE","x":"' + b"x" * 5000 + b'"}\n'
    async with OandaStandIn(sessions=[[Prices(1), Raw(junk[:3000]), Raw(junk[3000:]),
                                       Prices(1)]]) as oanda:
        c = make_collector(oanda, sink, max_line_bytes=1024)
        await run_until(c, lambda: c.health.ticks >= 2)
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    rejects = sink.rejects()
    assert len(rejects) == 1 and "longer than 1024 bytes" in rejects[0].detail
    assert rejects[0].original == junk[: len(rejects[0].original)]


async def test_401_is_fatal_at_once_and_never_shows_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with OandaStandIn() as oanda:
        c = make_collector(oanda, ListSink(), token=TOKEN)  # not the stand-in's token
        with pytest.raises(FatalCollectorError) as err:
            await asyncio.wait_for(c.run(), 10)
    assert len(oanda.requests) == 1 and oanda.requests[0].status == 401
    text = str(err.value)
    assert "HTTP 401" in text and "Insufficient authorization" in text
    assert "$OANDA_API_TOKEN" in text
    assert TOKEN not in text and TOKEN not in caplog.text
    assert TOKEN not in str(c.health_dict())


async def test_bad_instrument_is_a_fatal_configuration_error() -> None:
    async with OandaStandIn(instruments=["EUR_USD"]) as oanda:
        c = make_collector(oanda, ListSink(), instruments=["EUR_USD", "XAU_USD"])
        with pytest.raises(FatalCollectorError, match=r"HTTP 400.*'instruments'"):
            await asyncio.wait_for(c.run(), 10)
    assert len(oanda.requests) == 1


async def test_429_waits_for_retry_after_and_5xx_backs_off() -> None:
    sink = ListSink()
    script = [Reply(429, retry_after="1"), Reply(503), Reply(500), [Prices(4)]]
    async with OandaStandIn(sessions=script) as oanda:
        c = make_collector(oanda, sink)
        await run_until(c, lambda: c.health.ticks >= 4)
    assert [r.status for r in oanda.requests] == [429, 503, 500, 200]
    # Retry-After: 1 is honoured (the stand-in's own clock; backoff alone is <= 50 ms here)
    assert oanda.requests[1].mono - oanda.requests[0].mono >= 0.99
    assert summary(sink.ticks()) == expected_ticks(oanda.sent_prices)
    assert c.health.reconnects == 3


async def test_retry_after_is_capped() -> None:
    async with OandaStandIn(sessions=[Reply(429, retry_after="86400"), [Prices(1)]]) as oanda:
        c = make_collector(oanda, ListSink(), max_retry_after_s=0.2)
        await run_until(c, lambda: c.health.ticks >= 1)
    assert [r.status for r in oanda.requests] == [429, 200]


async def test_credentials_never_logged_even_when_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token in the Authorization header, and a server that echoes it back in an error
    body: neither logs, nor health, nor dead letters show it."""
    caplog.set_level(logging.DEBUG)
    sink = ListSink()
    async with OandaStandIn(token=TOKEN) as oanda:
        oanda.sessions = [
            Reply(503, body={"errorMessage": f"upstream refused Bearer {TOKEN}"}),
            [Prices(2), Raw(b'{"type":"X","note":"oops"}\n'), CutMidLine()],
            [Prices(1)],
        ]
        c = make_collector(oanda, sink)
        await run_until(c, lambda: c.health.ticks >= 3)
    assert c.health.reconnects == 2
    assert "***" in caplog.text  # the echoed token was redacted, not dropped silently
    assert TOKEN not in caplog.text
    assert TOKEN not in str(c.health_dict())
    assert all(TOKEN not in r.detail for r in sink.rejects())


# ---- end to end on the real broker -------------------------------------------------------
def partition_of(key: bytes, partitions: int) -> int:
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def read_topics(settings: Settings, counts: dict[str, int]) -> dict[str, list[Message]]:
    """Read until every logical topic has its expected count, then poll once more."""
    names = {settings.topic(t): t for t in counts}
    with TopicReader(settings, sorted(names)) as reader:

        def enough(ms: list[Message]) -> bool:
            got = Counter(names[m.topic] for m in ms)
            return all(got[t] >= n for t, n in counts.items())

        msgs = reader.read_until(enough, timeout_s=30)
        msgs += reader.poll(timeout_s=0.5)  # anything beyond the expected count shows up
    out: dict[str, list[Message]] = {t: [] for t in counts}
    for m in msgs:
        out[names[m.topic]].append(m)
    return out


@pytest.mark.integration
async def test_end_to_end_through_kafka(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ensure_topics(kafka_settings)
    producer = RecordProducer(kafka_settings)
    malformed = [b'{"type":"PRICE","instrument":"EUR_USD"', b"\x00\xff binary"]
    closed = price_line("GBP_USD", START_NS, 1.25, 1.26, tradeable=False).rstrip(b"\n")
    sessions = [
        [Prices(40, per_write=7), Raw(b"\n".join([*malformed, closed]) + b"\n"), Heartbeats(1),
         CutMidLine()],
        [Snapshot(), Prices(60, per_write=13), Close()],
        [Snapshot(), Prices(5)],
    ]
    async with OandaStandIn(token=TOKEN, sessions=sessions) as oanda:
        c = make_collector(oanda, producer, name="oanda-e2e")
        await run_until(c, lambda: c.health.ticks >= 105 and c.health.rejected >= 3)
    assert c.flush(30) == 0
    assert (c.health.ticks, c.health.rejected, c.duplicates) == (105, 3, 6)

    got = read_topics(kafka_settings, {"ticks.raw": 105, "ticks.rejected": 3})
    codec = make_codec(None)
    ticks = got["ticks.raw"]
    assert len(ticks) == 105
    for m in ticks:
        tick = codec.decode(m.value, RawTick, m.topic)
        assert m.key == tick.symbol.encode()
        assert m.partition == partition_of(m.key, kafka_settings.partitions)
    decoded = sorted((codec.decode(m.value, RawTick, m.topic) for m in ticks),
                     key=lambda t: t.time_msc)
    assert summary(decoded) == expected_ticks(oanda.sent_prices)
    assert {(t.broker, t.source) for t in decoded} == {("OANDA", "OANDA")}

    rejects = [codec.decode(m.value, RejectedRecord, m.topic) for m in got["ticks.rejected"]]
    assert sorted(r.original for r in rejects) == sorted([*malformed, closed])
    assert Counter(r.reason for r in rejects) == {MALFORMED: 2, NOT_TRADEABLE: 1}
    assert all(r.source_topic == "collector:oanda:oanda-e2e" for r in rejects)
    assert TOKEN not in caplog.text
