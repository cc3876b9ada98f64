"""HTTP polling helpers shared by the calendar and news collectors.

Conditional GETs with a size cap (:func:`fetch_document`), the session a polling collector
opens per connection (:class:`HttpSessionMixin`), the typed reader of collector
configuration files (:class:`ConfigReader` and the policy factories), the JSON state file a
polling collector keeps between restarts (:class:`StateFile`) and the once-only memory of
dead-lettered payloads (:class:`RejectMemo`). Venue logic stays in the venue packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from connectors.collector import CollectorConfigError
from connectors.resilience import (
    Backoff,
    CircuitBreaker,
    FatalCollectorError,
    RateLimiter,
    retry_after_s,
)

log = logging.getLogger(__name__)


class HttpSessionMixin:
    """``_connect``/``_disconnect`` of a polling collector: one aiohttp session per
    connection, with the collector's ``headers`` and our User-Agent."""

    headers: dict[str, str]
    _session: aiohttp.ClientSession | None

    async def _connect(self) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT, **self.headers})

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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


def reject_payload(raw: bytes) -> tuple[bytes, str]:
    if len(raw) <= MAX_REJECT_BYTES:
        return raw, ""
    return raw[:MAX_REJECT_BYTES], f" (payload truncated from {len(raw)} bytes)"


# ---- calendar ---------------------------------------------------------------------------
