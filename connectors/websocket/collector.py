"""One configurable collector for vendors that push JSON quotes over WebSocket.

A session (:meth:`WebSocketCollector._connect`) opens ``url`` (with ``headers``), then sends
the ``subscribe`` messages: JSON templates (or plain strings) in which ``${token}``,
``${symbols}`` (the subscribed symbols, each written with ``symbol_format`` and joined by
``separator``), ``${symbol}`` (with ``per_symbol: true``: once per symbol) and
``${symbols_list}`` (a whole-string placeholder replaced by a JSON list) are substituted.
``${token}`` may also appear in the URL and in header values; the credential comes from
``token_env`` / ``token_file`` and is redacted from every log line and error.

Every text or binary frame is decoded as JSON and mapped by
:class:`~connectors.websocket.parse.QuoteMapper`: quotes become ticks on ``ticks.raw``
(keyed by symbol), quotes that cannot be mapped go to ``ticks.rejected`` with the frame's
exact bytes and a reason (``malformed``, ``unknown_symbol``), frames that are not JSON are
dead-lettered as ``malformed``, and messages that are not quotes (``match`` does not hold:
acknowledgements, status, vendor heartbeats) are counted as ``ignored``. A message matching
``fatal`` (e.g. ``{status: auth_failed}``) stops the collector with
:class:`~connectors.base.resilience.FatalCollectorError`, as do handshake answers 400, 401, 403
and 404; 429 and 5xx are retried no sooner than ``Retry-After``. Any JSON message proves the
feed alive; none for ``heartbeat_timeout_s`` drops and reconnects the session. As for OANDA,
the first quote per symbol after a reconnect is skipped when it repeats the last one emitted
(vendors that replay the latest quote on subscribe). The file is read by
:func:`connectors.websocket.config.load_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

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
from connectors.websocket.config import WebSocketConfig, expand
from connectors.websocket.parse import FieldPath, QuoteMapper
from schemas.records import RawTick

log = logging.getLogger(__name__)

_FATAL_STATUS: Final = {
    400: "the vendor refused the WebSocket request (HTTP 400; check url)",
    401: "the vendor rejected the credential (HTTP 401 Unauthorized)",
    403: "the credential is not authorised for this feed (HTTP 403 Forbidden)",
    404: "the vendor has no WebSocket at this URL (HTTP 404; check url)",
}


class WebSocketCollector(Collector):
    """Streams vendor WebSocket quotes into ``ticks.raw`` (see the module docstring)."""

    kind: ClassVar[str] = "websocket"
    source: ClassVar[str] = "WEBSOCKET"

    def __init__(
        self,
        config: WebSocketConfig,
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
            # the URL-encoded form too: that is how a key in a query string shows in errors
            secrets=([config.token.get(), quote(config.token.get(), safe="")]
                     if config.token is not None else []),
        )
        self.config = config
        self.mapper = QuoteMapper(config.mapping, config.broker, source=self.source)
        self._fatal = [(FieldPath(k), v) for k, v in config.fatal.items()]
        self.ignored = 0
        self.duplicates = 0
        self.sessions = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._not_before = 0.0
        self._last: dict[str, RawTick] = {}
        self._replay_guard: dict[str, RawTick] = {}
        self._warned_reject = False

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
        values = cfg.values()
        url = expand(cfg.url, values)
        headers = {k: expand(v, values) for k, v in cfg.headers.items()}
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s),
        )
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                self._ws = await self._session.ws_connect(
                    url, headers=headers, heartbeat=cfg.ping_interval_s, autoping=True,
                    max_msg_size=cfg.max_message_bytes,
                )
                for message in cfg.subscribe_messages():
                    if isinstance(message, str):
                        await self._ws.send_str(message)
                    else:
                        await self._ws.send_str(orjson.dumps(message).decode())
        except aiohttp.WSServerHandshakeError as exc:
            self._raise_for_status(exc.status, exc.headers or {})
        except TimeoutError:
            raise ConnectionError(
                f"no WebSocket session within {cfg.connect_timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ConnectionError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        self.sessions += 1
        self._replay_guard = dict(self._last) if cfg.skip_replayed_quote else {}
        log.info("%s: subscribed to %d symbols on %s", self.name, len(cfg.subscribe.symbols),
                 self.redact(url))

    def _raise_for_status(self, status: int, headers: Mapping[str, str]) -> None:
        if status in _FATAL_STATUS:
            hint = (f"; the credential came from {self.config.token_source}"
                    if status in (401, 403) else "")
            raise FatalCollectorError(f"{_FATAL_STATUS[status]}{hint}")
        if status == 429 or status >= 500:
            after = retry_after_s(headers.get("Retry-After"))
            if after is not None:
                after = min(after, self.config.max_retry_after_s)
                self._not_before = time.monotonic() + after
            shown = f"; Retry-After {after:g} s" if after is not None else ""
            raise RetryLater(f"WebSocket handshake answered HTTP {status}{shown}", after)
        raise ConnectionError(f"WebSocket handshake answered HTTP {status}")

    async def _stream(self) -> None:
        if self._ws is None or self.stopping:
            return
        await self._until_stopped(self._read(self._ws))

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        session, self._session = self._session, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()
        if session is not None:
            await session.close()

    # ---- the read loop -----------------------------------------------------------------
    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hb = self.config.heartbeat_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hb
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise HeartbeatTimeout(f"no message for {hb:g} s")
            try:
                msg = await ws.receive(timeout=remaining)
            except TimeoutError:
                raise HeartbeatTimeout(f"no message for {hb:g} s") from None
            kind = msg.type
            if kind is text or kind is binary:
                if self._on_message(msg.data, time.time_ns() // 1000):
                    self.mark_alive()
                    deadline = loop.time() + hb
                continue
            if kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
                raise SessionEnded(f"the vendor closed the WebSocket (code {ws.close_code})")
            if kind is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(self.redact(f"WebSocket error: {ws.exception()}"))
            # PING / PONG are answered by aiohttp (autoping)

    def _on_message(self, data: str | bytes, recv_us: int) -> bool:
        """Map one frame; True when it was valid JSON (the feed is alive)."""
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._reject(data, "malformed", f"not JSON: {exc}", None)
            return False
        if self._fatal:
            self._check_fatal(message, data)
        result = self.mapper.map(message, recv_us)
        for tick in result.ticks:
            self._on_tick(tick)
        for rej in result.rejections:
            self._reject(data, rej.reason, rej.detail, rej.key)
        self.ignored += result.ignored
        return True

    def _check_fatal(self, message: Any, data: str | bytes) -> None:
        for element in message if isinstance(message, list) else (message,):
            if all(path.get(element, None) in accepted for path, accepted in self._fatal):
                shown = data if isinstance(data, str) else data.decode("utf-8", "replace")
                raise FatalCollectorError(f"the vendor reported: {self.redact(shown[:300])}")

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

    def _reject(self, data: str | bytes, reason: str, detail: str, key: str | None) -> None:
        self.reject(data, reason, detail, key=key)
        level = logging.DEBUG if self._warned_reject else logging.WARNING
        self._warned_reject = True
        log.log(level, "%s: dead-lettered a message (%s: %s)", self.name, reason,
                self.redact(detail))

    def health_dict(self) -> dict[str, Any]:
        out = super().health_dict()
        out.update(ignored=self.ignored, duplicates=self.duplicates, sessions=self.sessions)
        return out
