"""News collector: poll RSS/Atom feeds, emit each new headline once per currency it concerns.

Every ``poll_interval_s`` each due feed is fetched through the collector's rate limiter and
parsed (:mod:`connectors.news.parse`). A headline already seen, in this feed or another, on this
poll or an earlier one (same canonical link, guid, or title on the same day), is skipped; so
is one published more than ``max_age_s`` ago. A new headline gets the currencies its title and
summary name (:mod:`connectors.news.currencies`) and a sentiment score from the packaged word
list (:mod:`connectors.news.sentiment`), and is emitted on ``events.news`` once per currency,
keyed by it, every copy with the same ``event_id``, ``published_ms`` = the fetch time and
``event_time_ms`` = its publication time. A headline naming no tracked currency is remembered
and not emitted. Items and documents that cannot be parsed go, once each, to the dead-letter
topic with their bytes and a reason.

Feeds fail independently: HTTP 429/5xx or a network error on one feed defers that feed alone
(exponential backoff with jitter, at least its ``Retry-After``), counted in the health; the
others keep being polled and the session does not end. 401/403 are fatal. The seen-state is
persisted (``state_path``) after the records it covers are flushed, like the calendar's. The
file is read by :mod:`connectors.news.config`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from connectors.base.collector import Collector, RecordSink
from connectors.base.http import Conditional, HttpSessionMixin, HTTPStatusError, fetch_document
from connectors.base.resilience import Backoff, CircuitBreaker, FatalCollectorError, RateLimiter
from connectors.base.secrets import url_secrets
from connectors.base.state import DAY_MS, RejectMemo, StateFile, now_ms, reject_payload
from connectors.news.config import load_config
from connectors.news.currencies import MAJORS, currencies_in
from connectors.news.parse import (
    DocumentError,
    dedupe_keys,
    news_event_id,
    news_events,
    parse_feed,
)
from connectors.news.sentiment import Lexicon, default_lexicon

log = logging.getLogger(__name__)

__all__ = ["Feed", "NewsCollector", "NewsTracker", "build_news"]


@dataclass(slots=True)
class Feed:
    """One feed and its own failure state."""

    name: str
    url: str
    backoff: Backoff = field(default_factory=lambda: Backoff(max_attempts=0))
    conditional: Conditional | None = field(default_factory=Conditional)
    next_due: float = 0.0  # monotonic time before which the feed is not polled
    polls: int = 0  # documents fetched and handled (or 304)
    failures: int = 0  # HTTP/network failures


class NewsTracker:
    """Dedupe keys seen (key -> event id, last-seen ms) and dead letters already sent.

    A key is forgotten when it has not been seen for ``window_ms``; it is refreshed whenever
    the item is seen again, so an item that stays in a feed is never emitted twice.
    """

    def __init__(self, window_ms: int = 7 * DAY_MS) -> None:
        self.window_ms = window_ms
        self.keys: dict[str, tuple[str, int]] = {}
        self.rejects = RejectMemo()
        self.dirty = False

    def known(self, keys: Sequence[str], now: int) -> str | None:
        """The event id under which any of ``keys`` was seen (all keys refreshed), or None."""
        event_id = next((self.keys[k][0] for k in keys if k in self.keys), None)
        if event_id is not None:
            self.remember(keys, event_id, now)
        return event_id

    def remember(self, keys: Iterable[str], event_id: str, now: int) -> None:
        refresh_ms = self.window_ms // 4
        for k in keys:
            seen = self.keys.get(k)
            if seen is None or now - seen[1] >= refresh_ms:
                self.keys[k] = (event_id, now)
                self.dirty = True

    def prune(self, now: int) -> int:
        cutoff = now - self.window_ms
        old = [k for k, (_, seen) in self.keys.items() if seen < cutoff]
        for k in old:
            del self.keys[k]
        dropped = len(old) + self.rejects.prune(cutoff)
        self.dirty |= dropped > 0
        return dropped

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": {k: [eid, seen] for k, (eid, seen) in self.keys.items()},
            "rejected": self.rejects.seen,
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        try:
            keys = {str(k): (str(eid), int(seen)) for k, (eid, seen) in
                    data.get("keys", {}).items()}
            rejects = {str(k): int(v) for k, v in data.get("rejected", {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            log.warning("news state unreadable (%s): starting from nothing", exc)
            return
        self.keys = keys
        self.rejects = RejectMemo(rejects)


class NewsCollector(HttpSessionMixin, Collector):
    """Polls several news feeds; see the module docstring."""

    kind: ClassVar[str] = "news"

    def __init__(
        self,
        name: str,
        sink: RecordSink,
        *,
        feeds: Sequence[Feed],
        poll_interval_s: float = 120.0,
        timeout_s: float = 20.0,
        max_age_s: float | None = 6 * 3600.0,
        dedupe_window_s: float = 7 * 86_400.0,
        currencies: Iterable[str] | None = MAJORS,
        use_summary: bool = True,
        lexicon: Lexicon | None = None,
        state_path: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 4 * 1024 * 1024,
        max_retry_after_s: float = 900.0,
        flush_timeout_s: float = 30.0,
        breaker: CircuitBreaker | None = None,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        if not feeds:
            raise ValueError("at least one feed is needed")
        self.headers = dict(headers or {})
        super().__init__(
            name, sink, breaker=breaker,
            rate_limit=rate_limit or RateLimiter(1.0),
            secrets=[*self.headers.values(), *(s for f in feeds for s in url_secrets(f.url))],
        )
        self.feeds = list(feeds)
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.max_age_ms = None if not max_age_s else int(max_age_s * 1000)
        self.currencies = None if currencies is None else frozenset(currencies)
        self.use_summary = use_summary
        self.lexicon = lexicon or default_lexicon()
        self.max_bytes = max_bytes
        self.max_retry_after_s = max_retry_after_s
        self.flush_timeout_s = flush_timeout_s
        self.state = StateFile(state_path, kind="news")
        self.tracker = NewsTracker(int(dedupe_window_s * 1000))
        self.tracker.load_json(self.state.load())
        self._session: aiohttp.ClientSession | None = None
        self._saved_ms = 0
        #: Completed rounds over the feeds, for operators and tests.
        self.rounds = 0
        #: Headlines not emitted: naming no tracked currency / older than ``max_age_s``.
        self.unrelated = 0
        self.stale = 0

    async def _stream(self) -> None:
        while not self.stopping:
            await self.poll_round()
            await self._sleep(self.poll_interval_s)

    async def poll_round(self) -> int:
        """Poll every due feed once; returns the number of events emitted."""
        emitted = 0
        for feed in self.feeds:
            if self.stopping:
                break
            if time.monotonic() >= feed.next_due:
                emitted += await self.poll_feed(feed)
        now = now_ms()
        self.tracker.prune(now)
        await self._commit(now)
        self.rounds += 1
        return emitted

    async def poll_feed(self, feed: Feed) -> int:
        """Fetch and handle one feed; HTTP/network failures defer the feed, never raise."""
        if self._session is None:
            raise RuntimeError("poll_feed() outside a session")
        if self.rate_limit is not None:
            await self.rate_limit.acquire()
        try:
            body = await fetch_document(
                self._session, feed.url, timeout_s=self.timeout_s, max_bytes=self.max_bytes,
                conditional=feed.conditional,
            )
        except FatalCollectorError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # HTTPStatusError too
            self._feed_failed(feed, exc)
            return 0
        feed.backoff.reset()
        feed.next_due = 0.0
        now = now_ms()
        if body is None:  # 304 Not Modified
            self.mark_alive()
            feed.polls += 1
            return 0
        try:
            parsed = parse_feed(body)
        except DocumentError as exc:
            self._reject_once(feed, body, exc.reason, exc.detail, now)
            if feed.conditional is not None:
                feed.conditional.forget()
            feed.polls += 1
            return 0
        self.mark_alive()
        for err in parsed.errors:
            self._reject_once(feed, err.raw, err.reason, err.detail, now)
        emitted = 0
        for item in parsed.items:
            keys = dedupe_keys(item, feed.name)
            if self.tracker.known(keys, now) is not None:
                continue
            if (
                self.max_age_ms is not None
                and item.published_ms is not None
                and item.published_ms < now - self.max_age_ms
            ):
                self.stale += 1
                continue
            event_id = news_event_id(item, feed.name)
            text = f"{item.title}\n{item.summary}" if self.use_summary else item.title
            currencies = currencies_in(text, self.currencies)
            if currencies:
                for ev in news_events(
                    item, event_id=event_id, currencies=currencies,
                    sentiment=self.lexicon.score(text), source=feed.name, published_ms=now,
                ):
                    self.emit_event(ev)
                    emitted += 1
            else:
                self.unrelated += 1
            self.tracker.remember(keys, event_id, now)
        if emitted:
            log.info("%s: %s: %d news event(s)", self.name, feed.name, emitted)
        feed.polls += 1
        return emitted

    def _feed_failed(self, feed: Feed, exc: BaseException) -> None:
        self._note_error(exc)
        feed.failures += 1
        delay = feed.backoff.next_delay()
        if isinstance(exc, HTTPStatusError) and exc.retry_after_s:
            delay = max(delay, min(exc.retry_after_s, self.max_retry_after_s))
        feed.next_due = time.monotonic() + delay
        log.warning("%s: %s failed (%s); next try in >= %.2f s", self.name, feed.name,
                    self.health.last_error, delay)

    def _reject_once(self, feed: Feed, raw: bytes, reason: str, detail: str, now: int) -> None:
        if not self.tracker.rejects.first_time(reason, raw, now):
            return
        self.tracker.dirty = True
        payload, note = reject_payload(raw)
        self.reject(payload, reason, f"{feed.name} {feed.url}: {detail}{note}")
        log.warning("%s: %s: dead-lettered %s: %s", self.name, feed.name, reason,
                    self.redact(detail))

    async def _commit(self, now: int) -> None:
        """Flush what was sent, then persist the state that covers it (hourly regardless)."""
        if not self.tracker.dirty and now - self._saved_ms < 3_600_000:
            return
        remaining = await asyncio.to_thread(self.sink.flush, self.flush_timeout_s)
        if remaining:
            log.warning("%s: %d record(s) not yet delivered; state not saved",
                        self.name, remaining)
            return
        self.state.save(self.tracker.to_json())
        self.tracker.dirty = False
        self._saved_ms = now


def build_news(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> NewsCollector:
    """A :class:`NewsCollector` from a configuration mapping (see ``config/collectors``)."""
    cfg = load_config(config, config_path=config_path)
    return NewsCollector(
        cfg.name, sink,
        feeds=[Feed(name=f.name, url=f.url, backoff=cfg.backoff.backoff()) for f in cfg.feeds],
        poll_interval_s=cfg.poll_interval_s,
        timeout_s=cfg.timeout_s,
        max_age_s=cfg.max_age_s,
        dedupe_window_s=cfg.dedupe_window_s,
        currencies=cfg.currencies,
        use_summary=cfg.use_summary,
        lexicon=cfg.lexicon,
        state_path=cfg.state_path,
        headers=cfg.headers,
        max_bytes=cfg.max_bytes,
        max_retry_after_s=cfg.max_retry_after_s,
        flush_timeout_s=cfg.flush_timeout_s,
        rate_limit=cfg.rate_limit.limiter(),
    )
