"""Local stand-in for the calendar and news sources: an aiohttp server on 127.0.0.1 serving
calendar exports (XML/JSON) and RSS/Atom feeds, scriptable per request.

Each path serves a *standing* document (replace it between polls to change an actual) and,
before it, any queued one-shot replies (a 429 once, a 500 once, a malformed document once)::

    async with FeedServer() as srv:
        srv.serve("/cal.xml", ff_xml([...]))
        srv.then("/cal.xml", TOO_MANY, SERVER_ERROR)     # the next two requests fail
        ...
        srv.serve("/cal.xml", ff_xml([... actual filled ...]))

It counts requests per path; with ``etags=True`` it answers conditional requests with 304.
Also here: builders of the documents and recorded payloads (trimmed copies of the layouts
the real sources publish) for the parser tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = [
    "RECORDED_ATOM",
    "RECORDED_FF_JSON",
    "RECORDED_FF_XML",
    "RECORDED_RSS",
    "SERVER_ERROR",
    "TOO_MANY",
    "FeedServer",
    "Reply",
    "atom",
    "ff_json",
    "ff_xml",
    "rss",
    "until",
]


@dataclass(frozen=True)
class Reply:
    """One scripted response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)


TOO_MANY = Reply(429, b"rate limited", headers={"Retry-After": "0"})
SERVER_ERROR = Reply(500, b"internal error")


@dataclass
class _Path:
    standing: Reply | None = None
    queued: deque[Reply] = field(default_factory=deque)


class FeedServer:
    """Scriptable HTTP server for the collector tests (see the module docstring)."""

    def __init__(self, *, etags: bool = False) -> None:
        self.etags = etags
        self._paths: dict[str, _Path] = {}
        self.hits: Counter[str] = Counter()
        self.conditional_hits: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- scripting ----------------------------------------------------------------------
    def serve(self, path: str, body: bytes | str, content_type: str = "application/xml") -> None:
        """Make ``body`` the document ``path`` serves from now on."""
        data = body.encode() if isinstance(body, str) else body
        self._paths.setdefault(path, _Path()).standing = Reply(200, data, content_type)

    def then(self, path: str, *replies: Reply) -> None:
        """Queue one-shot replies served, in order, before the standing document."""
        self._paths.setdefault(path, _Path()).queued.extend(replies)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> FeedServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FeedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        entry = self._paths.get(path)
        if entry is None:
            return web.Response(status=404, text="no such feed")
        reply = entry.queued.popleft() if entry.queued else entry.standing
        if reply is None:
            return web.Response(status=404, text="nothing to serve")
        headers = dict(reply.headers)
        if self.etags and reply.status == 200:
            etag = '"' + hashlib.sha1(reply.body).hexdigest()[:16] + '"'
            headers["ETag"] = etag
            if request.headers.get("If-None-Match") == etag:
                self.conditional_hits[path] += 1
                return web.Response(status=304, headers=headers)
        return web.Response(
            status=reply.status, body=reply.body, headers=headers,
            content_type=reply.content_type,
        )


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    """Wait for ``predicate`` to hold, checking every 10 ms; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


# ---- document builders ----------------------------------------------------------------------

_FF_PLAIN = ("title", "country")
_FF_CDATA = ("date", "time", "impact", "forecast", "previous", "actual", "url")


def ff_xml(events: Iterable[Mapping[str, str]], encoding: str = "windows-1252") -> bytes:
    """A ForexFactory-style weekly XML export; a key left out is a tag left out."""
    lines = [f'<?xml version="1.0" encoding="{encoding}"?>', "<weeklyevents>"]
    for ev in events:
        lines.append("\t<event>")
        for tag in (*_FF_PLAIN, *_FF_CDATA):
            if tag not in ev:
                continue
            value = ev[tag]
            if tag in _FF_PLAIN:
                lines.append(f"\t\t<{tag}>{escape(value)}</{tag}>")
            elif value:
                lines.append(f"\t\t<{tag}><![CDATA[{value}]]></{tag}>")
            else:
                lines.append(f"\t\t<{tag} />")
        lines.append("\t</event>")
    lines.append("</weeklyevents>")
    return ("\n".join(lines) + "\n").encode(encoding)


def ff_json(events: Iterable[object]) -> bytes:
    """A ForexFactory-style weekly JSON export (entries as given, malformed ones too)."""
    return json.dumps(list(events), ensure_ascii=False).encode()


def rss(items: Iterable[Mapping[str, str]], title: str = "FX news") -> bytes:
    """An RSS 2.0 feed; item keys: title, link, guid, pubDate, description."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<rss version="2.0">', "<channel>",
           f"<title>{escape(title)}</title>", "<link>https://news.example.invalid/</link>"]
    for it in items:
        out.append("<item>")
        for tag in ("title", "link", "guid", "pubDate", "description"):
            if tag in it:
                out.append(f"<{tag}>{escape(it[tag])}</{tag}>")
        out.append("</item>")
    out += ["</channel>", "</rss>"]
    return "\n".join(out).encode()


def atom(entries: Iterable[Mapping[str, str]], title: str = "Central bank news") -> bytes:
    """An Atom 1.0 feed; entry keys: title, link, id, published, updated, summary."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<feed xmlns="http://www.w3.org/2005/Atom">', f"<title>{escape(title)}</title>",
           "<id>urn:example:feed</id>", "<updated>2025-11-07T14:00:00Z</updated>"]
    for e in entries:
        out.append("<entry>")
        if "title" in e:
            out.append(f"<title>{escape(e['title'])}</title>")
        if "link" in e:
            out.append(f'<link rel="alternate" href="{escape(e["link"], {chr(34): "&quot;"})}"/>')
        for tag in ("id", "published", "updated", "summary"):
            if tag in e:
                out.append(f"<{tag}>{escape(e[tag])}</{tag}>")
        out.append("</entry>")
    out.append("</feed>")
    return "\n".join(out).encode()


# ---- recorded payloads ------------------------------------------------------------------------
# Trimmed from the layouts the sources publish (week of 3-7 Nov 2025). The XML export writes
# GMT clock times (NFP at 8:30 New York = 1:30pm); the JSON export writes New York offsets.

RECORDED_FF_XML = b"""<?xml version="1.0" encoding="windows-1252"?>
<weeklyevents>
	<event>
		<title>Bank Holiday</title>
		<country>JPY</country>
		<date><![CDATA[11-03-2025]]></date>
		<time><![CDATA[All Day]]></time>
		<impact><![CDATA[Holiday]]></impact>
		<forecast />
		<previous />
		<url><![CDATA[https://www.forexfactory.com/calendar/1-jp-bank-holiday]]></url>
	</event>
	<event>
		<title>Cash Rate</title>
		<country>AUD</country>
		<date><![CDATA[11-04-2025]]></date>
		<time><![CDATA[3:30am]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast><![CDATA[3.60%]]></forecast>
		<previous><![CDATA[3.60%]]></previous>
		<actual><![CDATA[3.60%]]></actual>
		<url><![CDATA[https://www.forexfactory.com/calendar/2-au-cash-rate]]></url>
	</event>
	<event>
		<title>ECB President Lagarde Speaks</title>
		<country>EUR</country>
		<date><![CDATA[11-05-2025]]></date>
		<time><![CDATA[4:00pm]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast />
		<previous />
	</event>
	<event>
		<title>ECB President Lagarde Speaks</title>
		<country>EUR</country>
		<date><![CDATA[11-05-2025]]></date>
		<time><![CDATA[8:15am]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast />
		<previous />
	</event>
	<event>
		<title>Official Bank Rate</title>
		<country>GBP</country>
		<date><![CDATA[11-06-2025]]></date>
		<time><![CDATA[12:00pm]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast><![CDATA[4.00%]]></forecast>
		<previous><![CDATA[4.00%]]></previous>
	</event>
	<event>
		<title>Bundesbank Pr\xe4sident Nagel Speaks</title>
		<country>EUR</country>
		<date><![CDATA[11-06-2025]]></date>
		<time><![CDATA[Tentative]]></time>
		<impact><![CDATA[Low]]></impact>
		<forecast />
		<previous />
	</event>
	<event>
		<title>Non-Farm Employment Change</title>
		<country>USD</country>
		<date><![CDATA[11-07-2025]]></date>
		<time><![CDATA[1:30pm]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast><![CDATA[110K]]></forecast>
		<previous><![CDATA[254K]]></previous>
	</event>
	<event>
		<title>Unemployment Rate</title>
		<country>USD</country>
		<date><![CDATA[11-07-2025]]></date>
		<time><![CDATA[1:30pm]]></time>
		<impact><![CDATA[High]]></impact>
		<forecast><![CDATA[4.3%]]></forecast>
		<previous><![CDATA[4.3%]]></previous>
	</event>
	<event>
		<title>G20 Meetings</title>
		<country>All</country>
		<date><![CDATA[11-07-2025]]></date>
		<time><![CDATA[Day 1]]></time>
		<impact><![CDATA[Non-Economic]]></impact>
		<forecast />
		<previous />
	</event>
</weeklyevents>
"""

RECORDED_FF_JSON = json.dumps([
    {"title": "Bank Holiday", "country": "JPY", "date": "2025-11-03T00:00:00-05:00",
     "impact": "Holiday", "forecast": "", "previous": ""},
    {"title": "Cash Rate", "country": "AUD", "date": "2025-11-03T22:30:00-05:00",
     "impact": "High", "forecast": "3.60%", "previous": "3.60%", "actual": "3.60%"},
    {"title": "Official Bank Rate", "country": "GBP", "date": "2025-11-06T07:00:00-05:00",
     "impact": "High", "forecast": "4.00%", "previous": "4.00%"},
    {"title": "Non-Farm Employment Change", "country": "USD",
     "date": "2025-11-07T08:30:00-05:00", "impact": "High", "forecast": "110K",
     "previous": "254K"},
    {"title": "Unemployment Rate", "country": "USD", "date": "2025-11-07T08:30:00-05:00",
     "impact": "High", "forecast": "4.3%", "previous": "4.3%"},
]).encode()

RECORDED_RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
<title>FX Street News</title>
<link>https://www.fxstreet.example/news</link>
<description>Latest Forex news</description>
<item>
  <title>US: Nonfarm Payrolls rise 119K in September vs. 50K expected</title>
  <link>https://www.fxstreet.example/news/us-nfp-119k-202511201330?utm_source=rss&amp;utm_medium=feed</link>
  <guid isPermaLink="false">FXS-2025-11-20-0001</guid>
  <pubDate>Thu, 20 Nov 2025 13:30:05 GMT</pubDate>
  <description><![CDATA[<p>The <b>BLS</b> said payrolls beat expectations.</p>]]></description>
</item>
<item>
  <title>EUR/USD slumps toward 1.1500 as the Fed&#8217;s hawkish tone lifts the Dollar</title>
  <link>https://www.fxstreet.example/news/eurusd-slumps-202511201400</link>
  <guid isPermaLink="false">FXS-2025-11-20-0002</guid>
  <pubDate>Thu, 20 Nov 2025 14:00:00 +0000</pubDate>
  <description>EUR/USD extends its decline.</description>
</item>
<item>
  <title>Gold steadies after early swings</title>
  <link>https://www.fxstreet.example/news/gold-steadies</link>
  <guid isPermaLink="false">FXS-2025-11-20-0003</guid>
  <dc:date>2025-11-20T14:05:00Z</dc:date>
</item>
<item>
  <link>https://www.fxstreet.example/news/untitled</link>
  <pubDate>Thu, 20 Nov 2025 14:10:00 GMT</pubDate>
</item>
<item>
  <title>Bank of Japan's Ueda: not in a hurry to raise rates, yen weakness a concern</title>
  <link>https://www.fxstreet.example/news/boj-ueda</link>
  <pubDate>sometime on Thursday</pubDate>
</item>
</channel>
</rss>
"""

RECORDED_ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Central bank press releases</title>
  <id>urn:example:cb-press</id>
  <updated>2025-11-06T12:05:00Z</updated>
  <entry>
    <title type="html">Bank of England cuts Bank Rate to 3.75% &amp;amp; signals caution</title>
    <link rel="alternate" href="https://www.bankofengland.example/news/2025/november/mpc"/>
    <id>tag:bankofengland.example,2025:mpc-2025-11</id>
    <published>2025-11-06T12:00:00Z</published>
    <updated>2025-11-06T12:05:00Z</updated>
    <summary>The Monetary Policy Committee voted 5-4 to reduce Bank Rate.</summary>
  </entry>
  <entry>
    <title>Swiss National Bank keeps policy rate unchanged</title>
    <link rel="self" href="https://www.snb.example/feed/entry/1"/>
    <link href="https://www.snb.example/en/mmr/reference/pre_20251106"/>
    <id>urn:uuid:6b0a1a4e-0000-4000-8000-000000000001</id>
    <updated>2025-11-06T08:30:00+01:00</updated>
  </entry>
  <entry>
    <id>urn:uuid:6b0a1a4e-0000-4000-8000-000000000002</id>
    <updated>2025-11-06T09:00:00Z</updated>
  </entry>
</feed>
"""
