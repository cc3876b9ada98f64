"""News collector: the RSS/Atom parsers on recorded feeds, currency detection, the packaged
sentiment word list, de-duplication, and the collector against the local stand-in server (and,
marked integration, through the real broker)."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka.partitioner import DefaultPartitioner
from sinks import ListSink
from standins.feeds import (
    RECORDED_ATOM,
    RECORDED_RSS,
    SERVER_ERROR,
    TOO_MANY,
    FeedServer,
    atom,
    rss,
    until,
)

from connectors.base.collector import CollectorConfigError
from connectors.base.resilience import RateLimiter
from connectors.news import build
from connectors.news.collector import NewsCollector
from connectors.news.currencies import currencies_in
from connectors.news.parse import (
    DocumentError,
    NewsItem,
    canonical_link,
    dedupe_keys,
    news_event_id,
    news_events,
    parse_feed,
)
from connectors.news.sentiment import Lexicon, default_lexicon, score
from connectors.producer import RecordProducer
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import MarketEvent, RejectedRecord
from topology.admin import ensure_topics
from topology.settings import Settings

RSS_PATH = "/rss/news"
ATOM_PATH = "/press.atom"


def _utc_ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def _rfc822(minutes_ago: float) -> str:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return email.utils.format_datetime(when.replace(microsecond=0), usegmt=True)


def _iso(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(microsecond=0).isoformat()


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1000.0, burst=1000)
        self.calls = 0

    async def acquire(self) -> None:
        self.calls += 1
        await super().acquire()


class Running:
    def __init__(self, collector: NewsCollector) -> None:
        self.collector = collector
        self.task = asyncio.create_task(collector.run())

    async def stop(self) -> None:
        await self.collector.stop()
        await asyncio.wait_for(self.task, 10)


def _config(srv: FeedServer, tmp_path: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "news-test",
        "feeds": [{"name": "wire", "url": srv.url(RSS_PATH)},
                  {"name": "banks", "url": srv.url(ATOM_PATH)}],
        "poll_interval_s": 0.02,
        "max_age_s": 3600,
        "state_path": str(tmp_path / "news-state.json"),
        "rate_limit": {"per_s": 1000, "burst": 1000},
        "backoff": {"base_s": 0.001, "cap_s": 0.01},
    }
    cfg.update(over)
    return cfg


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop, not the session one
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as srv:
        yield srv


# ---- parsers on recorded feeds -------------------------------------------------------------


def test_rss_recorded_feed() -> None:
    got = parse_feed(RECORDED_RSS)
    assert got.feed_format == "rss"
    assert [i.title for i in got.items] == [
        "US: Nonfarm Payrolls rise 119K in September vs. 50K expected",
        "EUR/USD slumps toward 1.1500 as the Fed\u2019s hawkish tone lifts the Dollar",
        "Gold steadies after early swings",
    ]
    nfp = got.items[0]
    assert nfp.published_ms == _utc_ms(2025, 11, 20, 13, 30, 5)
    assert nfp.guid == "FXS-2025-11-20-0001"
    assert nfp.link == ("https://www.fxstreet.example/news/us-nfp-119k-202511201330"
                        "?utm_source=rss&utm_medium=feed")
    assert nfp.summary == "The BLS said payrolls beat expectations."
    assert got.items[2].published_ms == _utc_ms(2025, 11, 20, 14, 5)  # dc:date
    assert [(e.reason, e.raw[:6]) for e in got.errors] == [("missing_field", b"<item>"),
                                                           ("bad_date", b"<item>")]
    assert b"sometime on Thursday" in got.errors[1].raw
    assert "sometime on Thursday" in got.errors[1].detail


def test_atom_recorded_feed() -> None:
    got = parse_feed(RECORDED_ATOM)
    assert got.feed_format == "atom"
    boe, snb = got.items
    assert boe.title == "Bank of England cuts Bank Rate to 3.75% & signals caution"
    assert boe.published_ms == _utc_ms(2025, 11, 6, 12, 0)
    assert boe.guid == "tag:bankofengland.example,2025:mpc-2025-11"
    assert boe.summary == "The Monetary Policy Committee voted 5-4 to reduce Bank Rate."
    assert snb.link == "https://www.snb.example/en/mmr/reference/pre_20251106"  # not rel=self
    assert snb.published_ms == _utc_ms(2025, 11, 6, 7, 30)  # <updated>, +01:00
    [err] = got.errors
    assert err.reason == "missing_field" and b"000000000002" in err.raw


def test_rss1_rdf_feed() -> None:
    doc = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://cb.example/"><title>CB</title></channel>
  <item rdf:about="https://cb.example/a1">
    <title>Bank of Canada holds rates</title><link>https://cb.example/a1</link>
    <dc:date>2025-10-29T13:45:00-04:00</dc:date>
  </item>
</rdf:RDF>"""
    [item] = parse_feed(doc).items
    assert item == NewsItem(title="Bank of Canada holds rates", link="https://cb.example/a1",
                            guid="https://cb.example/a1",
                            published_ms=_utc_ms(2025, 10, 29, 17, 45), summary="")


def test_feed_document_errors() -> None:
    for body, reason in [(b"<rss><channel><item><title>x", "malformed_document"),
                         (b"Service Unavailable", "malformed_document"),
                         (b"<html><body>captcha</body></html>", "unexpected_document"),
                         (b"<rss version='2.0'/>", "unexpected_document")]:
        with pytest.raises(DocumentError) as info:
            parse_feed(body)
        assert info.value.reason == reason, body


# ---- currencies, sentiment, identity -----------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Fed holds rates steady; dollar firm", ["USD"]),
    ("ECB's Lagarde warns on euro zone growth", ["EUR"]),
    ("Bank of Japan keeps policy loose, yen slides", ["JPY"]),
    ("Sterling slips as BoE signals a cut", ["GBP"]),
    ("Australian dollar jumps after RBA decision", ["AUD"]),
    ("Loonie rises as Canada adds jobs", ["CAD"]),
    ("Kiwi slides after RBNZ", ["NZD"]),
    ("SNB keeps the Swiss franc in check", ["CHF"]),
    ("EUR/USD tests 1.10 ahead of US data", ["EUR", "USD"]),
    ("USDJPY climbs as Treasury yields rise", ["JPY", "USD"]),
    ("U.S. payrolls beat forecasts", ["USD"]),
    ("UK inflation cools more than expected", ["GBP"]),
    ("German factory orders fall", ["EUR"]),
    ("Hong Kong dollar peg holds", []),
    ("Investors fed up with us, says analyst", []),
    ("Gold steadies after early swings", []),
    ("PBOC sets yuan fixing", []),  # CNY detected, but not in the majors asked for
])
def test_currencies_in_headlines(text: str, expected: list[str]) -> None:
    assert currencies_in(text, ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD"]) == (
        expected)


def test_currencies_cny_when_asked() -> None:
    assert currencies_in("PBOC sets yuan fixing") == ["CNY"]


def test_packaged_word_list_and_scores() -> None:
    lex = default_lexicon()
    polarities = list(lex.polarity.values())
    assert len(lex) >= 300 and polarities.count(1) >= 100 and polarities.count(-1) >= 100
    assert score("Dollar rallies as payrolls beat forecasts") == 1.0
    assert score("Stocks slump on recession fears") == -1.0
    assert score("Growth beats forecasts but inflation fears linger") == pytest.approx(1 / 3)
    assert score("ECB holds rates steady") is None
    assert score("Yen is not weak") == 1.0  # negation flips
    assert score("Yen isn't strong") == -1.0
    assert score("Sell-off deepens") == -1.0  # hyphenated word listed whole
    assert score("better-than-expected retail sales") == 1.0  # parts of a hyphenated token
    for text in ("gains gains loss", "crisis crisis crisis upbeat", "weak weak"):
        s = score(text)
        assert s is not None and -1.0 <= s <= 1.0


def test_word_list_format_errors(tmp_path: Path) -> None:
    assert Lexicon.parse("# c\n+ up\n- down  # trailing\n").polarity == {"up": 1, "down": -1}
    with pytest.raises(ValueError, match="both polarities"):
        Lexicon.parse("+ rise\n- rise\n")
    with pytest.raises(ValueError, match=":1:"):
        Lexicon.parse("rise +\n")
    path = tmp_path / "words.txt"
    path.write_text("+ moon\n")
    assert Lexicon.load(path).score("to the moon") == 1.0


def test_same_story_in_two_feeds_shares_a_key() -> None:
    a = NewsItem(title="Fed holds rates steady", guid="A-1", published_ms=_utc_ms(2025, 11, 5),
                 link="https://www.wire.example/fed-holds/?utm_source=rss#top")
    b = NewsItem(title="FED holds rates, steady", guid="B-77", published_ms=_utc_ms(2025, 11, 5),
                 link="http://wire.example/fed-holds")
    assert canonical_link(a.link or "") == canonical_link(b.link or "") == "wire.example/fed-holds"
    assert set(dedupe_keys(a, "one")) & set(dedupe_keys(b, "two"))
    assert news_event_id(a, "one") == news_event_id(b, "two")
    c = NewsItem(title="Fed holds rates steady", guid="A-1", published_ms=_utc_ms(2025, 11, 6))
    assert not set(dedupe_keys(a, "one")) & set(dedupe_keys(c, "two"))  # another day, feed


def test_news_events_one_copy_per_currency() -> None:
    item = NewsItem(title="EUR/USD slumps", link="https://x.example/a", published_ms=1_000)
    evs = news_events(item, event_id="news-1", currencies=["USD", "EUR"], sentiment=-1.0,
                      source="wire", published_ms=5_000)
    assert [(e.currency, e.currencies) for e in evs] == [("EUR", ["EUR", "USD"]),
                                                        ("USD", ["EUR", "USD"])]
    assert {(e.event_id, e.kind, e.event_time_ms, e.published_ms, e.sentiment) for e in evs} == {
        ("news-1", "NEWS", 1_000, 5_000, -1.0)}
    undated = NewsItem(title="x")
    [ev] = news_events(undated, event_id="n", currencies=["JPY"], sentiment=None, source="s",
                       published_ms=7)
    assert ev.event_time_ms == 7


def test_build_rejects_bad_configuration(tmp_path: Path) -> None:
    good: dict[str, Any] = {"feeds": ["http://127.0.0.1:1/a.xml"],
                            "state_path": str(tmp_path / "s.json")}
    assert isinstance(build(good, ListSink()), NewsCollector)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "feeds"),
        ({"feeds": []}, "feeds"),
        ({"feeds": [{"url": "http://a.example/x", "nme": "a"}]}, "feeds[0].nme"),
        ({"feeds": [{"url": "http://a.example/x"}, {"url": "http://a.example/y"}]},
         "feeds[1].name"),
        ({**good, "max_age_s": -1}, "max_age_s"),
        ({**good, "use_summary": "yes"}, "use_summary"),
        ({**good, "word_list": str(tmp_path / "missing.txt")}, "word_list"),
    ]
    for cfg, field_name in cases:
        with pytest.raises(CollectorConfigError) as info:
            build(cfg, ListSink(), config_path="conf/news.yaml")
        assert str(info.value).startswith(f"conf/news.yaml: {field_name}: ")


# ---- collector against the stand-in server (no broker) ----------------------------------------


def _wire(minutes_ago: float = 5) -> list[dict[str, str]]:
    return [
        {"title": "EUR/USD slumps as Fed signals patience", "guid": "w-1",
         "link": "https://www.wire.example/eurusd-slumps?utm_source=rss",
         "pubDate": _rfc822(minutes_ago), "description": "<p>The euro fell.</p>"},
        {"title": "Bank of Japan keeps rates unchanged", "guid": "w-2",
         "link": "https://www.wire.example/boj-holds", "pubDate": _rfc822(minutes_ago + 1)},
        {"title": "Gold steadies after early swings", "guid": "w-3",
         "link": "https://www.wire.example/gold", "pubDate": _rfc822(minutes_ago + 2)},
        {"title": "Sterling rallies as UK growth beats forecasts", "guid": "w-4",
         "link": "https://www.wire.example/gbp", "pubDate": _rfc822(600)},  # too old
    ]


def _banks(minutes_ago: float = 5) -> list[dict[str, str]]:
    return [
        # the wire's BoJ story again, under another id and link: a repeat
        {"title": "Bank of Japan keeps rates unchanged", "id": "urn:cb:9",
         "link": "https://cb.example/boj", "published": _iso(minutes_ago + 1)},
        {"title": "Swiss National Bank cuts policy rate", "id": "urn:cb:10",
         "link": "https://cb.example/snb", "published": _iso(minutes_ago)},
    ]


async def test_dedupes_across_feeds_and_polls(server: FeedServer, tmp_path: Path) -> None:
    server.serve(RSS_PATH, rss(_wire()))
    server.serve(ATOM_PATH, atom(_banks()))
    sink = ListSink()
    collector = build(_config(server, tmp_path), sink)
    limiter = CountingLimiter()
    collector.rate_limit = limiter
    run = Running(collector)
    await until(lambda: collector.rounds >= 3, what="three rounds")
    got = sink.events()
    assert sorted((e.currency, e.title) for e in got) == [
        ("CHF", "Swiss National Bank cuts policy rate"),
        ("EUR", "EUR/USD slumps as Fed signals patience"),
        ("JPY", "Bank of Japan keeps rates unchanged"),
        ("USD", "EUR/USD slumps as Fed signals patience"),
    ]
    eur, usd = (e for e in got if e.title.startswith("EUR/USD"))
    assert eur.event_id == usd.event_id and eur.currencies == usd.currencies == ["EUR", "USD"]
    assert eur.sentiment == -1.0 and eur.source == "wire" and eur.published_ms >= eur.event_time_ms
    assert next(e for e in got if e.currency == "JPY").source == "wire"  # first feed wins
    wire = collector.feeds[0]
    # gold names no currency (remembered once); the old GBP item is skipped on every poll
    assert (collector.unrelated, collector.stale) == (1, wire.polls)
    assert [(t, k) for t, k, _ in sink.sent] == [("events.news", e.currency) for e in got]

    # a new headline: exactly its copies, then nothing again
    server.serve(RSS_PATH, rss([{"title": "Aussie dollar jumps after RBA hike", "guid": "w-5",
                                 "link": "https://wire.example/aud",
                                 "pubDate": _rfc822(0)}, *_wire()]))
    await until(lambda: len(sink.events()) == 5, what="the new headline")
    rounds = collector.rounds
    await until(lambda: collector.rounds >= rounds + 2, what="two more rounds")
    await run.stop()
    assert len(sink.events()) == 5 and sink.events()[-1].currency == "AUD"
    assert limiter.calls == server.hits[RSS_PATH] + server.hits[ATOM_PATH]
    assert collector.health.errors == 0


async def test_a_failing_feed_backs_off_alone(server: FeedServer, tmp_path: Path) -> None:
    server.serve(RSS_PATH, rss(_wire()))
    server.then(RSS_PATH, TOO_MANY, SERVER_ERROR)
    server.serve(ATOM_PATH, atom(_banks()))
    sink = ListSink()
    collector = build(_config(server, tmp_path), sink)
    run = Running(collector)
    wire, banks = collector.feeds
    await until(lambda: wire.polls >= 2, what="the wire recovers")
    await run.stop()
    assert (wire.failures, banks.failures) == (2, 0)
    assert collector.health.errors == 2 and collector.health.reconnects == 0
    assert "HTTP 500" in (collector.health.last_error or "")
    assert server.hits[RSS_PATH] == wire.polls + 2
    assert banks.polls >= 3  # the other feed went on meanwhile
    assert sorted(e.currency for e in sink.events()) == ["CHF", "EUR", "JPY", "USD"]


async def test_malformed_input_is_dead_lettered_once(server: FeedServer, tmp_path: Path) -> None:
    bad_item = {"title": "Yen slides", "link": "https://wire.example/yen",
                "pubDate": "the day after tomorrow"}
    server.serve(RSS_PATH, rss([bad_item, *_wire()]))
    server.serve(ATOM_PATH, b"<feed xmlns='http://www.w3.org/2005/Atom'><entry>")
    sink = ListSink()
    collector = build(_config(server, tmp_path), sink)
    run = Running(collector)
    await until(lambda: collector.rounds >= 3, what="three rounds")
    await run.stop()
    by_reason = {r.reason: r for r in sink.rejects()}
    assert sorted(by_reason) == ["bad_date", "malformed_document"]
    assert by_reason["malformed_document"].original == (
        b"<feed xmlns='http://www.w3.org/2005/Atom'><entry>")
    assert b"the day after tomorrow" in by_reason["bad_date"].original
    assert "banks" in by_reason["malformed_document"].detail
    assert by_reason["bad_date"].source_topic == "collector:news:news-test"
    assert len(sink.events()) == 3  # the wire's good items still went out


async def test_restart_from_state_emits_nothing(server: FeedServer, tmp_path: Path) -> None:
    server.serve(RSS_PATH, rss(_wire()))
    server.serve(ATOM_PATH, atom(_banks()))
    first_sink = ListSink()
    first = build(_config(server, tmp_path), first_sink)
    run = Running(first)
    await until(lambda: first.rounds >= 1, what="one round")
    await run.stop()
    assert len(first_sink.events()) == 4
    sink = ListSink()
    second = build(_config(server, tmp_path), sink)
    run = Running(second)
    await until(lambda: second.rounds >= 2, what="two rounds after restart")
    await run.stop()
    assert sink.sent == []


# ---- end to end through the broker -------------------------------------------------------


def _read(settings: Settings, logical: str, expected: int) -> list[Message]:
    with TopicReader(settings, [settings.topic(logical)]) as reader:
        got = reader.read_until(lambda ms: len(ms) >= expected, timeout_s=20)
    by_partition: dict[int, list[int]] = {}
    for m in got:
        by_partition.setdefault(m.partition, []).append(m.offset)
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    return got


def _expected_partition(key: bytes, partitions: int) -> int:
    ids = list(range(partitions))
    return int(DefaultPartitioner()(key, ids, ids))  # Faust's murmur2 partitioner


@pytest.mark.integration
async def test_end_to_end_through_the_broker(
    server: FeedServer, kafka_settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(kafka_settings)
    bad_item = {"link": "https://wire.example/untitled", "pubDate": _rfc822(1)}
    server.serve(RSS_PATH, rss([bad_item, *_wire()]))
    server.serve(ATOM_PATH, atom(_banks()))
    producer = RecordProducer(kafka_settings)
    collector = build(_config(server, tmp_path), producer)
    run = Running(collector)
    await until(lambda: collector.rounds >= 3, what="three rounds")
    assert (collector.health.events, collector.health.rejected) == (4, 1)
    server.serve(ATOM_PATH, atom([*_banks(), {"title": "RBNZ lifts rates; kiwi dollar soars",
                                              "id": "urn:cb:11", "published": _iso(0)}]))
    await until(lambda: collector.health.events == 5, what="the new headline")
    rounds = collector.rounds
    await until(lambda: collector.rounds >= rounds + 2, what="two more rounds")
    await run.stop()
    assert collector.flush(15) == 0
    assert (collector.health.events, collector.health.rejected) == (5, 1)

    codec = make_codec(None)
    msgs = await asyncio.to_thread(_read, kafka_settings, "events.news", 5)
    assert len(msgs) == 5
    events = []
    for m in msgs:
        ev = codec.decode(m.value, MarketEvent, m.topic)
        assert m.key == ev.currency.encode()
        assert m.partition == _expected_partition(m.key, kafka_settings.partitions)
        events.append(ev)
    assert sorted(e.currency for e in events) == ["CHF", "EUR", "JPY", "NZD", "USD"]
    eur = next(e for e in events if e.currency == "EUR")
    usd = next(e for e in events if e.currency == "USD")
    assert eur.event_id == usd.event_id and eur.title == usd.title
    nzd = next(e for e in events if e.currency == "NZD")
    assert nzd.sentiment == 1.0 and nzd.source == "banks" and nzd.url is None

    [dead] = await asyncio.to_thread(_read, kafka_settings, "ticks.rejected", 1)
    rec = codec.decode(dead.value, RejectedRecord, dead.topic)
    assert rec.reason == "missing_field" and b"wire.example/untitled" in rec.original
    assert rec.source_topic == "collector:news:news-test"
