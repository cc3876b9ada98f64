"""Economic-calendar collector: poll a weekly export over HTTP, emit only new or changed entries.

Each poll (through the collector's rate limiter) fetches the export, parses it
(:mod:`connectors.calendar.parse`) and compares every entry with what was already emitted for
its ``event_id``: a new entry, or one whose time, impact, forecast, previous or actual changed
(the actual appearing after the release), is emitted on ``events.calendar`` keyed by its
currency, with ``published_ms`` = the fetch time (and always later than the previous version
of the same event, so the context stage sees it as a newer version). An unchanged entry emits
nothing. Entries and documents that cannot be parsed go, once each, to the dead-letter topic
with their bytes and a reason; the collector keeps polling.

HTTP 429 and 5xx (and network errors) end the session: the base class backs off with jitter
(a ``Retry-After`` is waited out first) and polls again. 401/403 are fatal. The emitted state
lives in a small JSON file (``state_path``), written after the records it covers have been
flushed to the broker, so a restart does not emit everything again; an absent or unreadable
file starts from nothing.

The file is read by :mod:`connectors.calendar.config`; the HTTP and state-file helpers live
in :mod:`connectors.base.http` and :mod:`connectors.base.state`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from connectors.base.collector import Collector, RecordSink
from connectors.base.http import Conditional, HttpSessionMixin, HTTPStatusError, fetch_document
from connectors.base.resilience import Backoff, CircuitBreaker, RateLimiter
from connectors.base.secrets import url_secrets
from connectors.base.state import DAY_MS, RejectMemo, StateFile, now_ms, reject_payload
from connectors.calendar.config import load_config
from connectors.calendar.parse import FORMATS, DocumentError, parse_calendar
from schemas.records import MarketEvent

log = logging.getLogger(__name__)

__all__ = ["CalendarCollector", "CalendarTracker", "build_calendar"]


@dataclass(slots=True)
class _Seen:
    fingerprint: str
    published_ms: int
    seen_ms: int


class CalendarTracker:
    """What was emitted per ``event_id``: decides what a poll must emit.

    An entry is pruned when it has not been in the export for ``retention_ms``.
    """

    def __init__(self, retention_ms: int = 14 * DAY_MS) -> None:
        self.retention_ms = retention_ms
        self.events: dict[str, _Seen] = {}
        self.rejects = RejectMemo()

    @staticmethod
    def fingerprint(ev: MarketEvent) -> str:
        fields = [ev.title, ev.event_time_ms, ev.impact, ev.forecast, ev.previous, ev.actual]
        return hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:16]

    def pending(self, ev: MarketEvent, now: int) -> MarketEvent | None:
        """The version to emit (``published_ms`` set), or None if ``ev`` is already known."""
        seen = self.events.get(ev.event_id)
        if seen is not None:
            seen.seen_ms = now
            if seen.fingerprint == self.fingerprint(ev):
                return None
        published = now if seen is None else max(now, seen.published_ms + 1)
        return dataclasses.replace(ev, published_ms=published)

    def commit(self, ev: MarketEvent, now: int) -> None:
        """Remember an emitted version."""
        self.events[ev.event_id] = _Seen(self.fingerprint(ev), ev.published_ms, now)

    def prune(self, now: int) -> int:
        cutoff = now - self.retention_ms
        old = [k for k, s in self.events.items() if s.seen_ms < cutoff]
        for k in old:
            del self.events[k]
        return len(old) + self.rejects.prune(cutoff)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": {
                k: [s.fingerprint, s.published_ms, s.seen_ms] for k, s in self.events.items()
            },
            "rejected": self.rejects.seen,
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        try:
            events = {
                str(k): _Seen(str(fp), int(pub), int(seen))
                for k, (fp, pub, seen) in data.get("events", {}).items()
            }
            rejects = {str(k): int(v) for k, v in data.get("rejected", {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            log.warning("calendar state unreadable (%s): starting from nothing", exc)
            return
        self.events = events
        self.rejects = RejectMemo(rejects)


class CalendarCollector(HttpSessionMixin, Collector):
    """Polls one calendar export; see the module docstring."""

    kind: ClassVar[str] = "calendar"

    def __init__(
        self,
        name: str,
        sink: RecordSink,
        *,
        url: str,
        fmt: str = "auto",
        tz: tzinfo = UTC,
        source: str | None = None,
        poll_interval_s: float = 300.0,
        timeout_s: float = 30.0,
        state_path: str | Path | None = None,
        retention_s: float = 14 * 86_400.0,
        currencies: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 8 * 1024 * 1024,
        max_retry_after_s: float = 600.0,
        flush_timeout_s: float = 30.0,
        conditional: bool = True,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.headers = dict(headers or {})
        super().__init__(
            name, sink, backoff=backoff, breaker=breaker,
            rate_limit=rate_limit or RateLimiter(1.0 / max(poll_interval_s, 1e-3)),
            secrets=[*self.headers.values(), *url_secrets(url)],
        )
        self.url = url
        self.fmt = fmt
        self.tz = tz
        self.source_name = source or name
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_retry_after_s = max_retry_after_s
        self.flush_timeout_s = flush_timeout_s
        self.currencies = None if currencies is None else frozenset(currencies)
        self.state = StateFile(state_path, kind="calendar")
        self.tracker = CalendarTracker(int(retention_s * 1000))
        self.tracker.load_json(self.state.load())
        self._conditional = Conditional() if conditional else None
        self._session: aiohttp.ClientSession | None = None
        self._saved_ms = 0
        #: Completed polls (a document fetched and handled, or 304), for operators and tests.
        self.polls = 0
        #: Entries skipped because their currency is not in ``currencies``.
        self.filtered = 0

    async def _stream(self) -> None:
        while not self.stopping:
            await self.poll_once()
            await self._sleep(self.poll_interval_s)

    async def poll_once(self) -> int:
        """One fetch and diff; returns the number of events emitted."""
        if self._session is None:
            raise RuntimeError("poll_once() outside a session")
        if self.rate_limit is not None:
            await self.rate_limit.acquire()
        try:
            body = await fetch_document(
                self._session, self.url, timeout_s=self.timeout_s, max_bytes=self.max_bytes,
                conditional=self._conditional,
            )
        except HTTPStatusError as exc:
            if exc.retry_after_s:
                await self._sleep(min(exc.retry_after_s, self.max_retry_after_s))
            raise
        now = now_ms()
        if body is None:  # 304: nothing changed since the last full response
            self.mark_alive()
            self.polls += 1
            return 0
        dirty = False
        try:
            parsed = parse_calendar(
                body, fmt=self.fmt, tz=self.tz, source=self.source_name, published_ms=now
            )
        except DocumentError as exc:
            dirty = self._reject_once(body, exc.reason, exc.detail, now)
            if self._conditional is not None:  # refetch the whole document next time
                self._conditional.forget()
            await self._commit(dirty, now)
            self.polls += 1
            return 0
        self.mark_alive()
        for err in parsed.errors:
            dirty |= self._reject_once(err.raw, err.reason, err.detail, now)
        emitted = 0
        for ev in parsed.events:
            if self.currencies is not None and ev.currency not in self.currencies:
                self.filtered += 1
                continue
            version = self.tracker.pending(ev, now)
            if version is None:
                continue
            self.emit_event(version)
            self.tracker.commit(version, now)
            emitted += 1
        if emitted:
            log.info("%s: %d new or changed calendar event(s)", self.name, emitted)
        dirty |= self.tracker.prune(now) > 0
        await self._commit(dirty or emitted > 0, now)
        self.polls += 1
        return emitted

    def _reject_once(self, raw: bytes, reason: str, detail: str, now: int) -> bool:
        if not self.tracker.rejects.first_time(reason, raw, now):
            return False
        payload, note = reject_payload(raw)
        self.reject(payload, reason, f"{self.url}: {detail}{note}")
        log.warning("%s: dead-lettered %s: %s", self.name, reason, self.redact(detail))
        return True

    async def _commit(self, dirty: bool, now: int) -> None:
        """Flush what was sent, then persist the state that covers it (hourly regardless)."""
        if not dirty and now - self._saved_ms < 3_600_000:
            return
        remaining = await asyncio.to_thread(self.sink.flush, self.flush_timeout_s)
        if remaining:
            log.warning("%s: %d record(s) not yet delivered; state not saved",
                        self.name, remaining)
            return
        self.state.save(self.tracker.to_json())
        self._saved_ms = now


def build_calendar(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> CalendarCollector:
    """A :class:`CalendarCollector` from a configuration mapping (see ``config/collectors``)."""
    cfg = load_config(config, config_path=config_path)
    return CalendarCollector(
        cfg.name, sink,
        url=cfg.url,
        fmt=cfg.fmt,
        tz=cfg.tz,
        source=cfg.source,
        poll_interval_s=cfg.poll_interval_s,
        timeout_s=cfg.timeout_s,
        state_path=cfg.state_path,
        retention_s=cfg.retention_s,
        currencies=cfg.currencies,
        headers=cfg.headers,
        max_bytes=cfg.max_bytes,
        max_retry_after_s=cfg.max_retry_after_s,
        flush_timeout_s=cfg.flush_timeout_s,
        conditional=cfg.conditional,
        backoff=cfg.backoff.backoff(),
        breaker=cfg.breaker.breaker(),
        rate_limit=cfg.rate_limit.limiter(),
    )
