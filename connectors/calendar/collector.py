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

The HTTP, configuration and state-file helpers here are shared with the news collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from connectors.calendar.parse import FORMATS, DocumentError, parse_calendar
from connectors.collector import Collector, CollectorConfigError, RecordSink
from connectors.resilience import (
    Backoff,
    CircuitBreaker,
    FatalCollectorError,
    RateLimiter,
    retry_after_s,
)
from schemas.records import MarketEvent

log = logging.getLogger(__name__)

__all__ = [
    "USER_AGENT",
    "CalendarCollector",
    "CalendarTracker",
    "Conditional",
    "ConfigReader",
    "HTTPStatusError",
    "RejectMemo",
    "StateFile",
    "backoff_from",
    "breaker_from",
    "fetch_document",
    "limiter_from",
    "now_ms",
    "url_secrets",
]

USER_AGENT = "tickstream-collector/0.1"
DAY_MS = 86_400_000
#: Largest payload kept in a dead letter (the broker's default message limit is 1 MB).
MAX_REJECT_BYTES = 512 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- HTTP -------------------------------------------------------------------------------


class HTTPStatusError(ConnectionError):
    """A non-success HTTP status worth retrying later (429, 5xx, other unexpected codes)."""

    def __init__(self, url: str, status: int, retry_after_s: float | None = None) -> None:
        after = "" if retry_after_s is None else f" (Retry-After {retry_after_s:g} s)"
        super().__init__(f"{url}: HTTP {status}{after}")
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Conditional:
    """ETag / Last-Modified of the last full response, for conditional requests."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


async def fetch_document(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    conditional: Conditional | None = None,
) -> bytes | None:
    """GET ``url``: the body, or None for 304 Not Modified.

    Raises :class:`FatalCollectorError` for 401/403 (retrying cannot fix credentials),
    :class:`HTTPStatusError` for any other non-200 status, ``ConnectionError`` for a body
    over ``max_bytes``, and aiohttp/timeout errors as they come.
    """
    headers = conditional.headers() if conditional else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.get(url, headers=headers, timeout=timeout) as resp:
        if resp.status == 304 and conditional is not None:
            return None
        if resp.status in (401, 403):
            raise FatalCollectorError(f"{url}: HTTP {resp.status} (access denied)")
        if resp.status != 200:
            raise HTTPStatusError(
                url, resp.status, retry_after_s(resp.headers.get("Retry-After"))
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise ConnectionError(f"{url}: response larger than {max_bytes} bytes")
            chunks.append(chunk)
        if conditional is not None:
            conditional.etag = resp.headers.get("ETag")
            conditional.last_modified = resp.headers.get("Last-Modified")
        return b"".join(chunks)


def url_secrets(url: str) -> list[str]:
    """Query values of ``url`` that look like credentials (for log redaction)."""
    words = ("key", "token", "secret", "pass", "auth", "sig")
    return [
        v for k, v in parse_qsl(urlsplit(url).query)
        if v and any(w in k.lower() for w in words)
    ]


# ---- configuration ----------------------------------------------------------------------


class ConfigReader:
    """Typed access to one collector configuration mapping; errors name the field and file."""

    def __init__(self, config: Mapping[str, Any], where: str, prefix: str = "") -> None:
        if not isinstance(config, Mapping):
            raise CollectorConfigError(f"{where}: expected a mapping of settings")
        self.config = config
        self.where = where
        self.prefix = prefix
        self._used: set[str] = set()

    def fail(self, key: str, expected: str, got: object) -> NoReturn:
        raise CollectorConfigError(
            f"{self.where}: {self.prefix}{key}: expected {expected}, got {got!r}"
        )

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self.config.get(key)

    def text(self, key: str, default: str) -> str:
        value = self.optional_text(key)
        return default if value is None else value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "a non-empty string", value)
        return value.strip()

    def required_text(self, key: str) -> str:
        value = self.optional_text(key)
        if value is None:
            self.fail(key, "a non-empty string (required)", None)
        return value

    def url(self, key: str) -> str:
        value = self.required_text(key)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(key, "an http(s) URL", value)
        return value

    def choice(self, key: str, choices: Collection[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.fail(key, f"one of {sorted(choices)}", value)
        return value

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, above: bool = False
    ) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, "a number", value)
        if value < minimum or (above and value == minimum):
            self.fail(key, f"a number {'>' if above else '>='} {minimum:g}", value)
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"an integer >= {minimum}", value)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def currencies(self, key: str) -> frozenset[str] | None:
        """A list of 3-letter codes (upper-cased); None when absent or empty."""
        value = self._get(key)
        if value is None or value == []:
            return None
        if not isinstance(value, list) or not all(
            isinstance(c, str) and len(c.strip()) == 3 and c.strip().isalpha() for c in value
        ):
            self.fail(key, "a list of 3-letter currency codes", value)
        return frozenset(c.strip().upper() for c in value)

    def headers(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.fail(key, "a mapping of header name to string value", value)
        return dict(value)

    def section(self, key: str) -> ConfigReader:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.fail(key, "a mapping", value)
        return ConfigReader(value, self.where, f"{self.prefix}{key}.")

    def sections(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list) or not value:
            self.fail(key, "a non-empty list", value)
        return value

    def finish(self) -> None:
        """Reject keys nobody asked for (a typo must not silently fall back to a default)."""
        unknown = sorted(str(k) for k in self.config if k not in self._used)
        if unknown:
            raise CollectorConfigError(
                f"{self.where}: unknown setting(s) {', '.join(self.prefix + k for k in unknown)}"
            )


def backoff_from(
    r: ConfigReader, *, base_s: float = 2.0, cap_s: float = 300.0, max_attempts: int = 0
) -> Backoff:
    b = Backoff(
        base_s=r.number("base_s", base_s, above=True),
        factor=r.number("factor", 2.0, minimum=1.0),
        cap_s=r.number("cap_s", cap_s, above=True),
        max_attempts=r.integer("max_attempts", max_attempts),
    )
    r.finish()
    return b


def breaker_from(r: ConfigReader) -> CircuitBreaker:
    b = CircuitBreaker(
        threshold=r.integer("threshold", 5, minimum=1),
        reset_s=r.number("reset_s", 60.0),
    )
    r.finish()
    return b


def limiter_from(r: ConfigReader, *, per_s: float, burst: int = 1) -> RateLimiter:
    limiter = RateLimiter(
        r.number("per_s", per_s, above=True), burst=r.integer("burst", burst, minimum=1)
    )
    r.finish()
    return limiter


def unwrap(config: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """Accept ``{kind: {...}}`` as well as the flat mapping."""
    if set(config) == {kind} and isinstance(config[kind], Mapping):
        inner: Mapping[str, Any] = config[kind]
        return inner
    return config


# ---- persisted state --------------------------------------------------------------------


class StateFile:
    """A small JSON document written atomically; absent or unreadable reads as empty."""

    def __init__(self, path: str | Path | None, kind: str, version: int = 1) -> None:
        self.path = None if path is None else Path(path)
        self.kind = kind
        self.version = version

    def load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s): starting from nothing", self.path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("kind") != self.kind
            or data.get("version") != self.version
        ):
            log.warning("state file %s is not a %s state v%d: starting from nothing",
                        self.path, self.kind, self.version)
            return {}
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"kind": self.kind, "version": self.version, **data}, separators=(",", ":"),
            sort_keys=True,
        ).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class RejectMemo:
    """Digests of payloads already dead-lettered, so a poll repeats no dead letter."""

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        self.seen: dict[str, int] = dict(entries or {})

    @staticmethod
    def digest(reason: str, raw: bytes) -> str:
        return hashlib.sha1(reason.encode() + b"\0" + raw).hexdigest()

    def first_time(self, reason: str, raw: bytes, now: int) -> bool:
        """True (and remembered) if this payload was not dead-lettered before."""
        key = self.digest(reason, raw)
        first = key not in self.seen
        self.seen[key] = now
        return first

    def prune(self, before_ms: int) -> int:
        old = [k for k, t in self.seen.items() if t < before_ms]
        for k in old:
            del self.seen[k]
        return len(old)


def _reject_payload(raw: bytes) -> tuple[bytes, str]:
    if len(raw) <= MAX_REJECT_BYTES:
        return raw, ""
    return raw[:MAX_REJECT_BYTES], f" (payload truncated from {len(raw)} bytes)"


# ---- calendar ---------------------------------------------------------------------------


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


class CalendarCollector(Collector):
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

    async def _connect(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT, **self.headers})

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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
                self._conditional.etag = self._conditional.last_modified = None
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
        payload, note = _reject_payload(raw)
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
    r = ConfigReader(unwrap(config, "calendar"), config_path or "<calendar config>")
    kind = r.text("kind", "calendar")
    if kind != "calendar":
        r.fail("kind", "'calendar'", kind)
    name = r.text("name", "calendar")
    url = r.url("url")
    fmt = r.choice("format", FORMATS, "auto")
    tzname = r.text("timezone", "UTC")
    try:
        tz: tzinfo = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("timezone", "an IANA time-zone name such as UTC or America/New_York", tzname)
    poll_interval_s = r.number("poll_interval_s", 300.0, above=True)
    collector = CalendarCollector(
        name, sink,
        url=url,
        fmt=fmt,
        tz=tz,
        source=r.text("source", name),
        poll_interval_s=poll_interval_s,
        timeout_s=r.number("timeout_s", 30.0, above=True),
        state_path=r.optional_text("state_path"),
        retention_s=r.number("state_retention_days", 14.0, above=True) * 86_400.0,
        currencies=r.currencies("currencies"),
        headers=r.headers("headers"),
        max_bytes=r.integer("max_bytes", 8 * 1024 * 1024, minimum=1024),
        max_retry_after_s=r.number("max_retry_after_s", 600.0),
        flush_timeout_s=r.number("flush_timeout_s", 30.0, above=True),
        conditional=r.flag("conditional_requests", True),
        backoff=backoff_from(r.section("backoff")),
        breaker=breaker_from(r.section("circuit")),
        rate_limit=limiter_from(r.section("rate_limit"), per_s=0.2),
    )
    r.finish()
    return collector
