"""Economic-calendar collector: the XML/JSON parsers on recorded exports, the emit-only-changes
tracker and its state file, and the collector against the local stand-in server (and, marked
integration, through the real broker)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiokafka.partitioner import DefaultPartitioner
from sinks import ListSink
from standins.feeds import (
    RECORDED_FF_JSON,
    RECORDED_FF_XML,
    SERVER_ERROR,
    TOO_MANY,
    FeedServer,
    Reply,
    ff_json,
    ff_xml,
    until,
)

from connectors.base.collector import CollectorConfigError
from connectors.base.resilience import RateLimiter
from connectors.base.state import StateFile
from connectors.calendar import build
from connectors.calendar.collector import CalendarCollector, CalendarTracker
from connectors.calendar.parse import (
    DocumentError,
    calendar_event_id,
    parse_calendar,
)
from connectors.producer import RecordProducer
from devstack.kafka_io import Message, TopicReader
from schemas.codec import make_codec
from schemas.records import MarketEvent, RejectedRecord
from topology.admin import ensure_topics
from topology.settings import Settings

PATH = "/ff_calendar_thisweek.xml"


def _utc_ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def _nfp(actual: str | None = None, **over: str) -> dict[str, str]:
    ev = {"title": "Non-Farm Employment Change", "country": "USD", "date": "11-07-2025",
          "time": "1:30pm", "impact": "High", "forecast": "110K", "previous": "254K"}
    if actual is not None:
        ev["actual"] = actual
    ev.update(over)
    return ev


WEEK = [
    {"title": "Official Bank Rate", "country": "GBP", "date": "11-06-2025", "time": "12:00pm",
     "impact": "High", "forecast": "4.00%", "previous": "4.00%"},
    {"title": "ECB President Lagarde Speaks", "country": "EUR", "date": "11-05-2025",
     "time": "4:00pm", "impact": "High", "forecast": "", "previous": ""},
    {"title": "Bank Holiday", "country": "JPY", "date": "11-03-2025", "time": "All Day",
     "impact": "Holiday", "forecast": "", "previous": ""},
    _nfp(),
]
BAD_DATE_ITEM = {"title": "Retail Sales m/m", "country": "USD", "date": "13-45-2025",
                 "time": "1:30pm", "impact": "High"}


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1000.0, burst=1000)
        self.calls = 0

    async def acquire(self) -> None:
        self.calls += 1
        await super().acquire()


def _config(url: str, tmp_path: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "cal-test", "url": url, "timezone": "UTC", "poll_interval_s": 0.02,
        "state_path": str(tmp_path / "calendar-state.json"),
        "rate_limit": {"per_s": 1000, "burst": 1000},
        "backoff": {"base_s": 0.001, "cap_s": 0.01},
        "conditional_requests": False,
    }
    cfg.update(over)
    return cfg


class Running:
    """A collector's run() as a task; stopping it joins the task."""

    def __init__(self, collector: CalendarCollector) -> None:
        self.collector = collector
        self.task = asyncio.create_task(collector.run())

    async def stop(self) -> None:
        await self.collector.stop()
        await asyncio.wait_for(self.task, 10)


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop, not the session one
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as srv:
        yield srv


# ---- parsers on recorded payloads ----------------------------------------------------------


def test_xml_export_recorded_week() -> None:
    got = parse_calendar(RECORDED_FF_XML, tz=UTC, source="ff", published_ms=5)
    assert got.errors == []
    assert len(got.events) == 9
    by_title = {e.title: e for e in got.events}
    nfp = by_title["Non-Farm Employment Change"]
    assert nfp == MarketEvent(
        event_id=calendar_event_id("USD", "Non-Farm Employment Change",
                                   datetime(2025, 11, 7).date()),
        kind="CALENDAR", currency="USD", currencies=["USD"],
        title="Non-Farm Employment Change", event_time_ms=_utc_ms(2025, 11, 7, 13, 30),
        published_ms=5, impact="HIGH", forecast="110K", previous="254K", actual=None,
        sentiment=None, source="ff", url=None,
    )
    holiday = by_title["Bank Holiday"]
    assert (holiday.impact, holiday.event_time_ms) == ("HOLIDAY", _utc_ms(2025, 11, 3))
    assert holiday.url == "https://www.forexfactory.com/calendar/1-jp-bank-holiday"
    assert by_title["Cash Rate"].actual == "3.60%"
    assert by_title["Cash Rate"].event_time_ms == _utc_ms(2025, 11, 4, 3, 30)
    assert by_title["Official Bank Rate"].event_time_ms == _utc_ms(2025, 11, 6, 12, 0)
    # windows-1252 decoded; 'Tentative' and 'Day 1' are scheduled at midnight of their date
    nagel = by_title["Bundesbank Pr\u00e4sident Nagel Speaks"]
    assert (nagel.impact, nagel.event_time_ms) == ("LOW", _utc_ms(2025, 11, 6))
    g20 = by_title["G20 Meetings"]
    assert (g20.currency, g20.impact, g20.event_time_ms) == ("ALL", "NONE", _utc_ms(2025, 11, 7))
    # the same speaker twice in a day: two ids, numbered by time, not by position
    lagarde = sorted((e for e in got.events if e.title.startswith("ECB")),
                     key=lambda e: e.event_time_ms)
    base = calendar_event_id("EUR", "ECB President Lagarde Speaks", datetime(2025, 11, 5).date())
    assert [e.event_id for e in lagarde] == [base, base + "-2"]
    assert [e.event_time_ms for e in lagarde] == [_utc_ms(2025, 11, 5, 8, 15),
                                                  _utc_ms(2025, 11, 5, 16, 0)]
    assert len({e.event_id for e in got.events}) == 9


def test_json_export_recorded_week_agrees_with_xml() -> None:
    xml = {e.event_id: e for e in parse_calendar(RECORDED_FF_XML).events}
    got = parse_calendar(RECORDED_FF_JSON, tz=ZoneInfo("America/New_York"))
    assert got.errors == []
    assert [e.title for e in got.events] == [
        "Bank Holiday", "Cash Rate", "Official Bank Rate", "Non-Farm Employment Change",
        "Unemployment Rate",
    ]
    for ev in got.events:
        twin = xml[ev.event_id]  # same id from either export (incl. the evening-in-NY entry)
        assert (ev.currency, ev.impact, ev.forecast, ev.previous, ev.actual) == (
            twin.currency, twin.impact, twin.forecast, twin.previous, twin.actual)
        if ev.title != "Bank Holiday":  # all-day: midnight New York vs midnight GMT
            assert ev.event_time_ms == twin.event_time_ms
    assert got.events[0].event_time_ms == _utc_ms(2025, 11, 3, 5, 0)


def test_timezone_of_the_xml_export_is_configurable() -> None:
    doc = ff_xml([_nfp(time="8:30am")])
    [utc] = parse_calendar(doc, tz=UTC).events
    [ny] = parse_calendar(doc, tz=ZoneInfo("America/New_York")).events
    assert utc.event_time_ms == _utc_ms(2025, 11, 7, 8, 30)
    assert ny.event_time_ms == _utc_ms(2025, 11, 7, 13, 30)  # EST, UTC-5
    [summer] = parse_calendar(ff_xml([_nfp(time="8:30am", date="07-03-2025")]),
                              tz=ZoneInfo("America/New_York")).events
    assert summer.event_time_ms == _utc_ms(2025, 7, 3, 12, 30)  # EDT, UTC-4
    [noon] = parse_calendar(ff_xml([_nfp(time="12:00am")])).events
    assert noon.event_time_ms == _utc_ms(2025, 11, 7, 0, 0)


def test_event_id_is_stable_across_polls_and_positions() -> None:
    first = parse_calendar(ff_xml(WEEK)).events
    shuffled = parse_calendar(ff_xml(list(reversed(WEEK)))).events
    assert {e.title: e.event_id for e in first} == {e.title: e.event_id for e in shuffled}
    released = parse_calendar(ff_xml([*WEEK[:3], _nfp(actual="119K")])).events
    assert released[3].event_id == first[3].event_id and released[3].actual == "119K"
    as_json = parse_calendar(ff_json([{"title": "Non-Farm Employment Change", "country": "usd",
                                       "date": "2025-11-07T08:30:00-05:00",
                                       "impact": "High", "actual": 119}])).events
    assert as_json[0].event_id == first[3].event_id and as_json[0].actual == "119"


def test_malformed_xml_items_are_reported_with_their_bytes() -> None:
    doc = ff_xml([
        WEEK[0],
        {"country": "USD", "date": "11-07-2025", "time": "1:30pm", "impact": "High"},
        BAD_DATE_ITEM,
        _nfp(time="25:99pm"),
        _nfp(impact="Earth-shattering"),
        _nfp(country="US Dollar"),
        WEEK[1],
    ])
    got = parse_calendar(doc)
    assert [e.title for e in got.events] == ["Official Bank Rate", "ECB President Lagarde Speaks"]
    assert [e.reason for e in got.errors] == [
        "missing_field", "bad_date", "bad_time", "bad_impact", "bad_currency"]
    raw = got.errors[1].raw
    assert raw.startswith(b"<event>") and raw.endswith(b"</event>")
    assert b"13-45-2025" in raw and b"Retail Sales m/m" in raw
    assert "13-45-2025" in got.errors[1].detail


def test_malformed_json_items_and_documents() -> None:
    doc = ff_json([{"title": "CPI y/y", "country": "EUR", "date": "2025-11-31T10:00:00+01:00",
                    "impact": "Medium"}, "not an object",
                   {"title": "CPI y/y", "country": "EUR", "date": "2025-11-28T10:00:00+01:00",
                    "impact": "Medium", "forecast": {"x": 1}},
                   {"title": "CPI y/y", "country": "EUR", "date": "2025-11-28T10:00:00+01:00",
                    "impact": "Medium", "forecast": "2.1%"}])
    got = parse_calendar(doc)
    assert [e.reason for e in got.errors] == ["bad_date", "malformed_item", "malformed_item"]
    assert json.loads(got.errors[0].raw)["date"] == "2025-11-31T10:00:00+01:00"
    assert got.errors[1].raw == b'"not an object"'
    [ev] = got.events
    assert (ev.event_time_ms, ev.forecast) == (_utc_ms(2025, 11, 28, 9, 0), "2.1%")
    for body, reason in [(b"<weeklyevents><event>", "malformed_document"),
                         (b"<html><body>maintenance</body></html>", "unexpected_document"),
                         (b'{"error": "busy"}', "unexpected_document"),
                         (b"[{]", "malformed_document"),
                         (b"", "malformed_document")]:
        with pytest.raises(DocumentError) as info:
            parse_calendar(body)
        assert info.value.reason == reason, body


# ---- tracker and state file ----------------------------------------------------------------


def test_tracker_emits_only_new_and_changed_versions() -> None:
    tracker = CalendarTracker()
    [ev] = parse_calendar(ff_xml([_nfp()])).events
    first = tracker.pending(ev, now=1_000)
    assert first is not None and first.published_ms == 1_000
    tracker.commit(first, 1_000)
    assert tracker.pending(ev, now=2_000) is None
    [released] = parse_calendar(ff_xml([_nfp(actual="119K")])).events
    update = tracker.pending(released, now=1_000)  # same clock ms: still a later version
    assert update is not None
    assert (update.event_id, update.actual, update.published_ms) == (ev.event_id, "119K", 1_001)
    tracker.commit(update, 1_000)
    assert tracker.pending(released, now=3_000) is None


def test_state_file_absent_corrupt_and_round_trip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sub" / "state.json"
    state = StateFile(path, kind="calendar")
    assert state.load() == {}
    tracker = CalendarTracker()
    [ev] = parse_calendar(ff_xml([_nfp()])).events
    version = tracker.pending(ev, 10)
    assert version is not None
    tracker.commit(version, 10)
    tracker.rejects.first_time("bad_date", b"<event/>", 10)
    state.save(tracker.to_json())
    again = CalendarTracker()
    again.load_json(state.load())
    assert again.pending(ev, 20) is None
    assert not again.rejects.first_time("bad_date", b"<event/>", 20)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert state.load() == {}
    assert "unreadable" in caplog.text
    path.write_text(json.dumps({"kind": "news", "version": 1}))
    assert state.load() == {}


def test_build_rejects_bad_configuration(tmp_path: Path) -> None:
    sink = ListSink()
    good = _config("http://127.0.0.1:1/x.xml", tmp_path)
    assert isinstance(build(good, sink), CalendarCollector)
    assert isinstance(build({"calendar": good}, sink), CalendarCollector)
    cases = [
        ({k: v for k, v in good.items() if k != "url"}, "url"),
        ({**good, "url": "ftp://example.invalid/x"}, "url"),
        ({**good, "timezone": "Mars/Olympus"}, "timezone"),
        ({**good, "poll_interval_s": 0}, "poll_interval_s"),
        ({**good, "format": "csv"}, "format"),
        ({**good, "pol_interval_s": 5}, "pol_interval_s"),
        ({**good, "rate_limit": {"per_s": -1}}, "rate_limit.per_s"),
        ({**good, "currencies": ["USDX"]}, "currencies"),
    ]
    for cfg, field_name in cases:
        with pytest.raises(CollectorConfigError) as info:
            build(cfg, sink, config_path="conf/calendar.yaml")
        assert str(info.value).startswith(f"conf/calendar.yaml: {field_name}: ")


# ---- collector against the stand-in server (no broker) ------------------------------------


async def test_backs_off_on_429_and_500_through_the_rate_limiter(
    server: FeedServer, tmp_path: Path
) -> None:
    server.serve(PATH, ff_xml(WEEK))
    server.then(PATH, TOO_MANY, SERVER_ERROR)
    sink = ListSink()
    collector = build(_config(server.url(PATH), tmp_path), sink)
    limiter = CountingLimiter()
    collector.rate_limit = limiter
    run = Running(collector)
    await until(lambda: collector.polls >= 3, what="three polls")
    await run.stop()
    assert collector.health.errors == 2 and collector.health.reconnects == 2
    assert "HTTP 500" in (collector.health.last_error or "")
    assert server.hits[PATH] == collector.polls + 2
    assert limiter.calls == server.hits[PATH]  # every request went through the limiter
    assert sorted(e.title for e in sink.events()) == sorted(e["title"] for e in WEEK)
    assert [(t, k) for t, k, _ in sink.sent] == [("events.calendar", e.currency)
                                                 for e in sink.events()]


async def test_restart_from_state_emits_only_the_change(
    server: FeedServer, tmp_path: Path
) -> None:
    server.serve(PATH, ff_xml([*WEEK, BAD_DATE_ITEM]))
    first_sink = ListSink()
    first = build(_config(server.url(PATH), tmp_path), first_sink)
    run = Running(first)
    await until(lambda: first.polls >= 2, what="two polls")
    await run.stop()
    assert len(first_sink.events()) == 4 and len(first_sink.rejects()) == 1
    nfp_v1 = next(e for e in first_sink.events() if e.currency == "USD")

    sink = ListSink()
    second = build(_config(server.url(PATH), tmp_path), sink)
    run = Running(second)
    await until(lambda: second.polls >= 2, what="two polls after restart")
    assert sink.sent == []  # nothing re-emitted, not even the dead letter
    server.serve(PATH, ff_xml([*WEEK[:3], _nfp(actual="119K"), BAD_DATE_ITEM]))
    polls = second.polls
    await until(lambda: second.polls >= polls + 3, what="polls after the release")
    await run.stop()
    [update] = sink.events()
    assert update.event_id == nfp_v1.event_id and update.actual == "119K"
    assert update.published_ms > nfp_v1.published_ms
    assert update == MarketEvent(**{**nfp_v1.to_dict(), "actual": "119K",
                                    "published_ms": update.published_ms})


async def test_malformed_document_is_dead_lettered_once_and_polling_goes_on(
    server: FeedServer, tmp_path: Path
) -> None:
    garbage = b"<weeklyevents><event><title>NFP</title>"
    server.serve(PATH, garbage)
    sink = ListSink()
    collector = build(_config(server.url(PATH), tmp_path, currencies=["USD", "GBP"]), sink)
    run = Running(collector)
    await until(lambda: collector.polls >= 3, what="three polls of garbage")
    [rejected] = sink.rejects()
    assert rejected.original == garbage and rejected.reason == "malformed_document"
    assert server.url(PATH) in rejected.detail
    assert rejected.source_topic == "collector:calendar:cal-test" and rejected.stage == "collect"
    server.serve(PATH, ff_xml(WEEK))
    await until(lambda: len(sink.events()) == 2, what="events after the fix")
    polls = collector.polls
    await until(lambda: collector.polls >= polls + 2, what="two more polls")
    await run.stop()
    assert sorted(e.currency for e in sink.events()) == ["GBP", "USD"]  # currency filter
    assert collector.filtered >= 2 and len(sink.rejects()) == 1
    assert collector.health.errors == 0


async def test_conditional_requests_and_json_export(tmp_path: Path) -> None:
    async with FeedServer(etags=True) as srv:
        srv.serve("/week.json", RECORDED_FF_JSON, "application/json")
        sink = ListSink()
        collector = build(_config(srv.url("/week.json"), tmp_path, conditional_requests=True,
                                  timezone="America/New_York"), sink)
        run = Running(collector)
        await until(lambda: srv.conditional_hits["/week.json"] >= 2, what="two 304s")
        await run.stop()
    assert [e.title for e in sink.events()] == [
        "Bank Holiday", "Cash Rate", "Official Bank Rate", "Non-Farm Employment Change",
        "Unemployment Rate"]
    assert collector.polls == srv.hits["/week.json"]


async def test_access_denied_is_fatal(server: FeedServer, tmp_path: Path) -> None:
    from connectors.base.resilience import FatalCollectorError

    server.then(PATH, Reply(403, b"forbidden"))
    collector = build(_config(server.url(PATH), tmp_path,
                              headers={"Authorization": "Bearer s3cr3t-token"}), ListSink())
    with pytest.raises(FatalCollectorError, match="HTTP 403"):
        await asyncio.wait_for(collector.run(), 10)
    assert collector.polls == 0 and collector.redact("Bearer s3cr3t-token") == "***"


# ---- end to end through the broker -------------------------------------------------------


def _read(settings: Settings, logical: str, expected: int) -> list[Message]:
    """Read ``logical`` until ``expected`` messages arrived (the topic is this test's own,
    and the collector's counters say how many it sent)."""
    with TopicReader(settings, [settings.topic(logical)]) as reader:
        got = reader.read_until(lambda ms: len(ms) >= expected, timeout_s=20)
    by_partition: dict[int, list[int]] = {}
    for m in got:
        by_partition.setdefault(m.partition, []).append(m.offset)
    for offsets in by_partition.values():  # nothing skipped, nothing twice
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
    server.serve(PATH, ff_xml([*WEEK, BAD_DATE_ITEM]))
    producer = RecordProducer(kafka_settings)
    collector = build(_config(server.url(PATH), tmp_path), producer)
    run = Running(collector)
    await until(lambda: collector.polls >= 3, what="three polls")
    assert collector.health.events == 4 and collector.health.rejected == 1
    server.serve(PATH, ff_xml([*WEEK[:3], _nfp(actual="119K"), BAD_DATE_ITEM]))
    await until(lambda: collector.health.events == 5, what="the update")
    polls = collector.polls
    await until(lambda: collector.polls >= polls + 3, what="polls after the update")
    await run.stop()
    assert collector.flush(15) == 0
    assert (collector.health.events, collector.health.rejected) == (5, 1)

    codec = make_codec(None)
    msgs = await asyncio.to_thread(_read, kafka_settings, "events.calendar", 5)
    assert len(msgs) == 5
    events: list[MarketEvent] = []
    for m in msgs:
        ev = codec.decode(m.value, MarketEvent, m.topic)
        assert m.key == ev.currency.encode()
        assert m.partition == _expected_partition(m.key, kafka_settings.partitions)
        events.append(ev)
    assert sorted(e.currency for e in events) == ["EUR", "GBP", "JPY", "USD", "USD"]
    nfp = sorted((e for e in events if e.currency == "USD"), key=lambda e: e.published_ms)
    assert [e.actual for e in nfp] == [None, "119K"]
    assert nfp[0].event_id == nfp[1].event_id and nfp[0].published_ms < nfp[1].published_ms
    assert {m.partition for m in msgs if m.key == b"USD"} == {
        _expected_partition(b"USD", kafka_settings.partitions)}

    [dead] = await asyncio.to_thread(_read, kafka_settings, "ticks.rejected", 1)
    rec = codec.decode(dead.value, RejectedRecord, dead.topic)
    assert rec.reason == "bad_date" and "13-45-2025" in rec.detail
    assert rec.original.startswith(b"<event>") and b"Retail Sales m/m" in rec.original
    assert rec.source_topic == "collector:calendar:cal-test"
