"""HTTP helpers shared by the polling collectors (calendar, news).

Conditional GETs with a size cap (:func:`fetch_document`) and their status handling
(:class:`HTTPStatusError` for what is worth retrying, :class:`FatalCollectorError` for
401/403), the ETag / Last-Modified memory of the last full response (:class:`Conditional`)
and the session a polling collector opens per connection (:class:`HttpSessionMixin`).
Venue logic stays in the venue packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from connectors.base.resilience import FatalCollectorError, retry_after_s

USER_AGENT = "tickstream-collector/0.1"


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

    def forget(self) -> None:
        """Fetch the whole document next time (the last one could not be used)."""
        self.etag = self.last_modified = None


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
