"""Simulated calendar and news sources for ``tickstream demo``: a local HTTP server the real
``tickstream collect calendar`` and ``tickstream collect news`` collectors poll, since the
demo must run without the internet.

``/calendar.xml`` is a ForexFactory-style weekly XML export (GMT clock times) with a few
entries per currency around now: the past ones carry their actual, so a poll after an
entry's time files its release. ``/news.xml`` is an RSS 2.0 feed with one headline every
:data:`HEADLINE_EVERY_S` seconds (a currency pair and a word of sentiment in each), the
latest :data:`HEADLINES` of them. Both are generated from the wall clock at each request.
The configurations are the example files in ``config/collectors/`` with the URLs, the
state files and faster polls replaced.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "collectors"
HEADLINE_EVERY_S = 15
HEADLINES = 8
CALENDAR_STEP_MIN = 10
CURRENCIES = ("USD", "EUR", "NZD", "GBP", "JPY")
_TITLES = ("CPI m/m", "Retail Sales m/m", "Unemployment Rate", "PMI", "Trade Balance")
_HEADLINES = (
    "EUR/USD rallies as ECB officials sound hawkish",
    "NZD/USD slumps after weak dairy auction",
    "GBP/USD rises on strong UK wage growth",
    "USD/JPY falls as Treasury yields drop",
    "EUR/USD steady ahead of US inflation data",
    "NZD/USD gains as RBNZ signals higher rates",
    "GBP/USD drops on disappointing retail sales",
    "USD/JPY surges after BoJ keeps policy unchanged",
)


def calendar_xml(now_s: float) -> bytes:
    step_s = CALENDAR_STEP_MIN * 60
    first = int(now_s // step_s)
    lines = ['<?xml version="1.0" encoding="windows-1252"?>', "<weeklyevents>"]
    for n in range(first - 3, first + 7):  # one entry per slot, the same on every poll
        t = datetime.fromtimestamp(n * step_s, UTC)
        cur = CURRENCIES[n % len(CURRENCIES)]
        title = _TITLES[(n // len(CURRENCIES)) % len(_TITLES)]
        hour = t.hour % 12 or 12
        clock = f"{hour}:{t.minute:02d}{'am' if t.hour < 12 else 'pm'}"
        fields = [f"\t\t<title>{escape(title)}</title>", f"\t\t<country>{cur}</country>",
                  f"\t\t<date><![CDATA[{t:%m-%d-%Y}]]></date>",
                  f"\t\t<time><![CDATA[{clock}]]></time>",
                  "\t\t<impact><![CDATA[High]]></impact>",
                  "\t\t<forecast><![CDATA[0.3%]]></forecast>",
                  "\t\t<previous><![CDATA[0.2%]]></previous>"]
        if n * step_s <= now_s:
            fields.append(f"\t\t<actual><![CDATA[{0.1 * (n % 5):.1f}%]]></actual>")
        lines += ["\t<event>", *fields, "\t</event>"]
    lines.append("</weeklyevents>")
    return ("\n".join(lines) + "\n").encode("windows-1252")


def news_rss(now_s: float) -> bytes:
    last = int(now_s // HEADLINE_EVERY_S)
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<rss version="2.0">', "<channel>",
           "<title>tickstream demo wire</title>", "<link>http://127.0.0.1/</link>"]
    for n in range(last, last - HEADLINES, -1):
        when = datetime.fromtimestamp(n * HEADLINE_EVERY_S, UTC)
        title = _HEADLINES[n % len(_HEADLINES)]
        out += ["<item>", f"<title>{escape(title)}</title>",
                f"<link>http://127.0.0.1/news/{n}</link>", f"<guid>demo-{n}</guid>",
                f"<pubDate>{format_datetime(when, usegmt=True)}</pubDate>", "</item>"]
    out += ["</channel>", "</rss>"]
    return "\n".join(out).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        now = time.time()
        if self.path.startswith("/calendar.xml"):
            body, kind = calendar_xml(now), "application/xml"
        elif self.path.startswith("/news.xml"):
            body, kind = news_rss(now), "application/rss+xml"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the collectors log what they fetched


class FeedServer:
    """The two documents on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="demo-feeds", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def configs(self, workdir: Path) -> dict[str, Path]:
        """``calendar`` and ``news`` collector configurations pointing here."""
        url = f"http://127.0.0.1:{self.port}"
        cal = yaml.safe_load((CONFIG_DIR / "calendar.yaml").read_text())
        cal.update({"name": "demo-calendar", "url": f"{url}/calendar.xml", "format": "xml",
                    "source": "demo-calendar",
                    "timezone": "UTC", "poll_interval_s": 5,
                    "state_path": str(workdir / "calendar-state.json"),
                    "conditional_requests": False, "health_interval_s": 2})
        cal["rate_limit"] = {"per_s": 1.0, "burst": 1}
        news = yaml.safe_load((CONFIG_DIR / "news.yaml").read_text())
        news.update({"name": "demo-news", "poll_interval_s": 5, "max_age_s": 3600,
                     "feeds": [{"name": "demo-wire", "url": f"{url}/news.xml"}],
                     "state_path": str(workdir / "news-state.json"), "health_interval_s": 2})
        news["rate_limit"] = {"per_s": 1.0, "burst": 1}
        out = {}
        for kind, cfg in (("calendar", cal), ("news", news)):
            path = workdir / f"{kind}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            out[kind] = path
        return out
