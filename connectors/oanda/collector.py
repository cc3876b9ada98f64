"""OANDA v20 pricing-stream collector: one HTTP stream per session, NDJSON lines → ticks.

Session (:meth:`OandaCollector._connect`): ``GET {stream_url}/v3/accounts/{account}/pricing/
stream?instruments=EUR_USD,...&snapshot=true`` with ``Authorization: Bearer <token>`` and
``Accept-Datetime-Format: RFC3339``. Status handling:

* 200 — stream;
* 401 / 403 — :class:`FatalCollectorError` (a bad or unauthorised token: retrying cannot fix
  it); 400 / 404 / 405 likewise (bad account id or instrument list: a configuration error);
* 429 and 5xx — retried with backoff, never sooner than ``Retry-After`` (seconds or an HTTP
  date, capped by ``max_retry_after_s``);
* anything else — retried with backoff.

Streaming (:meth:`OandaCollector._stream`): bytes are split into lines by hand (a chunk may
hold many lines or part of one). Only complete, newline-terminated lines are parsed, so a
connection dropped mid-line never yields a tick; the partial line is counted
(``truncated``) and dropped — OANDA resends the latest price of every instrument on the
next connection (``snapshot=true``). That snapshot would duplicate the last tick emitted
before the drop, so the first price per instrument after a reconnect is skipped when it
equals (time, bid, ask) the last one emitted (``duplicates``); the last tick emitted per
instrument is also the collector's durable position (:mod:`connectors.positions`), so a
restarted process skips that snapshot too (a live stream replays nothing else: the bound
on re-sent ticks after a SIGKILL is one per instrument, after a SIGTERM none). Any PRICE
or HEARTBEAT proves the stream alive; when neither arrives for ``heartbeat_timeout_s``
the session is dropped and reconnected. Malformed lines go to the dead-letter topic with
their exact bytes and a reason; non-tradeable prices are counted and dead-lettered as
``not_tradeable`` (``non_tradeable: skip`` only counts them). A line longer than
``max_line_bytes`` (a misbehaving server) is dead-lettered (its first 64 KiB) instead of
being buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import orjson

from connectors.base.collector import Collector, RecordSink, SessionEnded
from connectors.base.resilience import (
    Backoff,
    CircuitBreaker,
    FatalCollectorError,
    HeartbeatTimeout,
    RateLimiter,
    RetryLater,
    retry_after_s,
)
from connectors.oanda.config import OandaConfig
from connectors.oanda.parse import NOT_TRADEABLE, Heartbeat, ParseError, PriceParser
from connectors.positions import Position
from schemas.records import RawTick

log = logging.getLogger(__name__)

_FATAL_STATUS: dict[int, str] = {
    400: "OANDA refused the request (HTTP 400 Bad Request; check instruments and account_id)",
    401: "OANDA rejected the API token (HTTP 401 Unauthorized)",
    403: "the API token is not authorised for this account (HTTP 403 Forbidden)",
    404: "OANDA does not know this account or endpoint (HTTP 404; check account_id and "
         "environment)",
    405: "the endpoint refused the method (HTTP 405; check stream_url)",
}
_MAX_DEAD_LETTER_BYTES = 64 * 1024


def error_message(body: bytes) -> str:
    """OANDA's ``errorMessage`` from an error body, else a short excerpt of the body."""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        msg = orjson.loads(body).get("errorMessage")
        if isinstance(msg, str):
            return msg[:300]
    return body[:200].decode("utf-8", "replace")


class OandaCollector(Collector):
    """Streams OANDA v20 prices into ``ticks.raw`` (see the module docstring)."""

    kind: ClassVar[str] = "oanda"
    source: ClassVar[str] = "OANDA"
    resumable: ClassVar[bool] = True

    def __init__(
        self,
        config: OandaConfig,
        sink: RecordSink,
        *,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        policy = config.reconnect
        super().__init__(
            config.name,
            sink,
            backoff=backoff or policy.backoff(),
            breaker=breaker or policy.breaker(),
            rate_limit=RateLimiter(config.connections_per_s, burst=2),
            secrets=[config.token.get()],
        )
        self.config = config
        self.parser = PriceParser(config.broker, config.symbols, source=self.source)
        self.heartbeats = 0
        self.not_tradeable = 0
        self.truncated = 0
        self.duplicates = 0
        self.sessions = 0
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._not_before = 0.0
        self._last: dict[str, RawTick] = {}
        self._replay_guard: dict[str, RawTick] = {}
        self._warned_reject = False
        self.position_every = config.position_every
        self.position_interval_s = config.position_interval_s

    # ---- positions ---------------------------------------------------------------------
    def _position(self) -> Position:
        return {"last": {s: [t.time_msc, t.bid, t.ask] for s, t in self._last.items()}}

    def _restore(self, position: Position | None) -> None:
        last = (position or {}).get("last") or {}
        for symbol, (time_msc, bid, ask) in last.items():
            self._last[symbol] = RawTick(broker=self.config.broker, symbol=symbol, bid=bid,
                                         ask=ask, time_msc=time_msc, recv_time_us=0,
                                         source=self.source)

    # ---- hooks -------------------------------------------------------------------------
    async def _connect(self) -> None:
        cfg = self.config
        wait = self._not_before - time.monotonic()
        if wait > 0:
            log.info("%s: waiting %.2f s more (Retry-After)", self.name, wait)
            await self._sleep(wait)
        if self.stopping:
            return
        if self.rate_limit is not None:
            await self.rate_limit.acquire()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                          sock_connect=cfg.connect_timeout_s),
            auto_decompress=True,
        )
        headers = {
            "Authorization": f"Bearer {cfg.token.get()}",
            "Accept-Datetime-Format": "RFC3339",
            "Accept": "application/json",
            "User-Agent": "tickstream-oanda/1",
        }
        params = {"instruments": ",".join(cfg.instruments),
                  "snapshot": "true" if cfg.snapshot else "false"}
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                resp = await self._session.get(cfg.stream_endpoint, params=params,
                                               headers=headers)
                if resp.status != 200:
                    body = await resp.content.read(4096)
                    resp.release()
                    self._raise_for_status(resp.status, resp.headers, body)
        except TimeoutError:
            raise ConnectionError(
                f"no response from {cfg.stream_url} within {cfg.connect_timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ConnectionError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        self._response = resp
        self.sessions += 1
        self._replay_guard = dict(self._last)
        log.info("%s: streaming %s from %s", self.name, ",".join(cfg.instruments),
                 cfg.stream_url)

    def _raise_for_status(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        detail = self.redact(error_message(body))
        if status in _FATAL_STATUS:
            hint = (f"; the token came from {self.config.token_source}"
                    if status in (401, 403) else "")
            raise FatalCollectorError(f"{_FATAL_STATUS[status]}: {detail}{hint}")
        if status == 429 or status >= 500:
            after = retry_after_s(headers.get("Retry-After"))
            if after is not None:
                after = min(after, self.config.max_retry_after_s)
                self._not_before = time.monotonic() + after
            shown = f"; Retry-After {after:g} s" if after is not None else ""
            raise RetryLater(f"HTTP {status}: {detail}{shown}", after)
        raise ConnectionError(f"unexpected HTTP {status}: {detail}")

    async def _stream(self) -> None:
        if self._response is None or self.stopping:
            return
        await self._until_stopped(self._read(self._response))

    async def _disconnect(self) -> None:
        resp, self._response = self._response, None
        session, self._session = self._session, None
        if resp is not None:
            resp.close()
        if session is not None:
            await session.close()

    # ---- the read loop -----------------------------------------------------------------
    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        cfg = self.config
        hb = cfg.heartbeat_timeout_s
        max_line = cfg.max_line_bytes
        loop = asyncio.get_running_loop()
        parse = self.parser.parse
        on_tick = self._on_tick
        buf = b""
        skipping = False  # discarding the rest of an over-long line
        try:
            async with asyncio.timeout(hb) as deadline:
                async for chunk in resp.content.iter_any():
                    recv_us = time.time_ns() // 1000
                    if skipping:
                        cut = chunk.find(b"\n")
                        if cut < 0:
                            continue
                        chunk, skipping = chunk[cut + 1:], False
                    data = buf + chunk if buf else chunk
                    lines = data.split(b"\n")
                    buf = lines.pop()
                    check_long = len(data) > max_line
                    alive = False
                    for line in lines:
                        if not line or line == b"\r":
                            continue
                        if check_long and len(line) > max_line:
                            self._reject_long(line)
                            continue
                        result = parse(line, recv_us)
                        if type(result) is RawTick:
                            on_tick(result)
                            alive = True
                        elif type(result) is Heartbeat:
                            self.heartbeats += 1
                            alive = True
                        else:
                            assert isinstance(result, ParseError)
                            alive = self._on_error(line, result) or alive
                    if alive:
                        self.mark_alive()
                        deadline.reschedule(loop.time() + hb)
                        self.checkpoint_if_due()
                    if len(buf) > max_line:
                        self._reject_long(buf)
                        buf, skipping = b"", True
        except TimeoutError:
            raise HeartbeatTimeout(f"no price or heartbeat for {hb:g} s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        finally:
            if buf.strip():
                self.truncated += 1
                log.warning("%s: dropped an incomplete line of %d bytes at the end of the "
                            "session", self.name, len(buf))
        raise SessionEnded("OANDA ended the stream")

    def _reject_long(self, line: bytes) -> None:
        limit = self.config.max_line_bytes
        self.reject(line[:_MAX_DEAD_LETTER_BYTES], "malformed",
                    f"line longer than {limit} bytes (max_line_bytes; at most the first "
                    f"{_MAX_DEAD_LETTER_BYTES} bytes kept)")

    def _on_tick(self, tick: RawTick) -> None:
        guard = self._replay_guard
        if guard:
            prev = guard.pop(tick.symbol, None)
            if (prev is not None and prev.time_msc == tick.time_msc and prev.bid == tick.bid
                    and prev.ask == tick.ask):
                self.duplicates += 1
                return
        self._last[tick.symbol] = tick
        self.emit_tick(tick)

    def _on_error(self, line: bytes, err: ParseError) -> bool:
        """Route a line that is not a tick; True when it still proves the stream alive."""
        if err.reason == NOT_TRADEABLE:
            self.not_tradeable += 1
            if self.config.non_tradeable == "reject":
                self.reject(line, err.reason, err.detail, key=err.key)
            return True
        self.reject(line, err.reason, err.detail, key=err.key)
        if not self._warned_reject:
            self._warned_reject = True
            log.warning("%s: dead-lettered a line (%s: %s); further ones are logged at debug",
                        self.name, err.reason, self.redact(err.detail))
        else:
            log.debug("%s: dead-lettered a line (%s: %s)", self.name, err.reason,
                      self.redact(err.detail))
        return False

    def health_dict(self) -> dict[str, Any]:
        out = super().health_dict()
        out.update(heartbeats=self.heartbeats, not_tradeable=self.not_tradeable,
                   truncated=self.truncated, duplicates=self.duplicates,
                   sessions=self.sessions)
        return out
