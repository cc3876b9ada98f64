"""The MetaTrader 5 collector: one instance per broker terminal, polling ``copy_ticks_from``.

Session = ``initialize`` (with the account from the config) + ``symbol_select`` of every
symbol; the stream polls each symbol from its :class:`~connectors.mt5.parse.SymbolCursor`
at ``poll_interval_s`` (at once again when a batch came back full). A call that returns
``None``/``False`` raises :class:`~connectors.mt5.api.Mt5Error` with ``last_error()``; the
base class then calls ``shutdown`` and re-initializes with backoff. Cursors and carried
quotes live on the collector, not the session, so a reconnect resumes exactly where the
last handled row was: nothing lost, nothing repeated.

Across restarts (:mod:`connectors.positions`) the position is every symbol's cursor (its
last handled ``time_msc`` in server time, the rows already handled in that millisecond and
the carried quote), stored between poll batches once delivery is confirmed; a restarted
collector resumes each symbol from its stored cursor instead of the live edge (or
``backfill_s``), so it re-sends at most the bounded tail described there.

Failures that retrying cannot fix stop the collector (:class:`FatalCollectorError`): wrong
account credentials, a symbol the server does not know, the native package missing.

Every terminal call is synchronous (the native module blocks on IPC, the bridge on a
socket) and runs in a worker thread via :func:`asyncio.to_thread`, one call at a time, so
the event loop stays free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from connectors.base.collector import Collector, RecordSink
from connectors.base.resilience import Backoff, CircuitBreaker, FatalCollectorError, RateLimiter
from connectors.mt5.api import (
    IPC_ERRORS,
    RES_E_AUTH_FAILED,
    BridgeApi,
    Mt5Api,
    Mt5Error,
    load_native,
    utc,
)
from connectors.mt5.config import Mt5Config
from connectors.mt5.parse import (
    RejectedRow,
    SymbolCursor,
    TickFormatError,
    convert,
    detect_offset_ms,
    price,
)
from connectors.positions import Position
from schemas.records import RawTick

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A poll that comes back full without a new row doubles its count, up to this.
MAX_BATCH = 1_000_000


def api_factory(config: Mt5Config) -> Callable[[], Mt5Api]:
    """How a session obtains its API: the bridge when configured, else the native module."""
    if config.bridge is not None:
        host, port = config.bridge
        return lambda: BridgeApi(host, port, timeout_s=config.bridge_timeout_s)
    return load_native


class Mt5Collector(Collector):
    """Polls one MetaTrader 5 terminal; see the module docstring."""

    kind: ClassVar[str] = "mt5"
    source: ClassVar[str] = "MT5"
    resumable: ClassVar[bool] = True

    def __init__(
        self,
        config: Mt5Config,
        sink: RecordSink,
        *,
        api: Callable[[], Mt5Api] | None = None,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        b = config.backoff
        super().__init__(
            config.name,
            sink,
            backoff=backoff or Backoff(base_s=b.base_s, cap_s=b.cap_s,
                                       max_attempts=b.max_attempts),
            breaker=breaker or CircuitBreaker(threshold=5, reset_s=max(1.0, b.cap_s)),
            rate_limit=(RateLimiter(config.max_requests_per_s, burst=len(config.symbols))
                        if config.max_requests_per_s else None),
            secrets=config.secrets(),
        )
        self.config = config
        self._api_factory = api or api_factory(config)
        self._api: Mt5Api | None = None
        self._clock = clock
        self.cursors: dict[str, SymbolCursor] = {}
        self._batch: dict[str, int] = {}
        self.offset_ms = config.server_utc_offset_ms
        self._offset_checked_mono: float | None = None
        self.polls = 0
        self.position_every = config.position_every
        self.position_interval_s = config.position_interval_s
        self.resumed: list[str] = []  # symbols whose cursor came from a stored position

    # ---- positions ----------------------------------------------------------------------
    def _position(self) -> Position:
        symbols = self.config.symbols
        return {"symbols": {
            canonical: {
                "terminal": symbols.get(canonical, canonical),
                "time_msc": c.time_msc,
                "seen": sorted([i, raw.hex()] for t, i, raw in c.seen if t == c.time_msc),
                "out_of_order": sorted([t, raw.hex()] for t, raw in c.out_of_order),
                "bid": c.bid, "ask": c.ask,
            }
            for canonical, c in self.cursors.items()
        }}

    def _restore(self, position: Position | None) -> None:
        stored = (position or {}).get("symbols") or {}
        for canonical, sym in self.config.symbols.items():
            p = stored.get(canonical)
            if not isinstance(p, dict) or p.get("terminal") != sym:
                continue  # new symbol (or another terminal symbol): start as configured
            t = int(p["time_msc"])
            self.cursors[canonical] = SymbolCursor(
                time_msc=t,
                seen={(t, int(i), bytes.fromhex(h)) for i, h in p.get("seen", [])},
                out_of_order={(int(ts), bytes.fromhex(h)) for ts, h in p.get("out_of_order", [])},
                bid=p.get("bid"), ask=p.get("ask"),
            )
            self.resumed.append(canonical)
        if self.resumed:
            log.info("%s: resuming %s from stored positions", self.name,
                     ", ".join(self.resumed))

    # ---- session hooks ------------------------------------------------------------------
    async def _connect(self) -> None:
        cfg = self.config
        self._api = await asyncio.to_thread(self._api_factory)
        kwargs: dict[str, Any] = {"timeout": cfg.timeout_ms, "portable": cfg.portable}
        if cfg.login is not None:
            kwargs["login"] = cfg.login
        if cfg.password is not None:
            kwargs["password"] = cfg.password.get()
        if cfg.server is not None:
            kwargs["server"] = cfg.server
        args = (cfg.terminal_path,) if cfg.terminal_path else ()
        if not await self._call(self._api.initialize, *args, **kwargs):
            code, message = await self._call(self._api.last_error)
            if code == RES_E_AUTH_FAILED:
                raise FatalCollectorError(
                    f"{cfg.name}: terminal refused login {cfg.login} at server {cfg.server}: "
                    f"({code}, {message!r})"
                )
            raise Mt5Error("initialize", code, message)
        for canonical, sym in cfg.symbols.items():
            if not await self._call(self._api.symbol_select, sym, True):
                code, message = await self._call(self._api.last_error)
                if code in IPC_ERRORS:
                    raise Mt5Error(f"symbol_select({sym!r})", code, message)
                raise FatalCollectorError(
                    f"{cfg.name}: symbol {sym!r} ({canonical}) is not available at server "
                    f"{cfg.server}: ({code}, {message!r}); fix 'symbols' in "
                    f"{cfg.source_file or 'the collector config'}"
                )
        if cfg.detect_server_offset:
            await self._detect_offset()
        for canonical, sym in cfg.symbols.items():
            if canonical not in self.cursors:
                self.cursors[canonical] = await self._start_cursor(sym)
        log.info("%s: connected (%d symbols, server offset %+.2f h)", cfg.name,
                 len(cfg.symbols), self.offset_ms / 3_600_000)

    async def _stream(self) -> None:
        cfg = self.config
        while not self.stopping:
            more = False
            for canonical, sym in cfg.symbols.items():
                if self.stopping:
                    return
                more |= await self._poll(canonical, sym)
                self.checkpoint_if_due()  # between batches: every cursor is consistent
            self.mark_alive()
            if (cfg.detect_server_offset and self._offset_checked_mono is not None
                    and time.monotonic() - self._offset_checked_mono > cfg.offset_redetect_s):
                await self._detect_offset()
            if not more:
                await self._sleep(cfg.poll_interval_s)

    async def _disconnect(self) -> None:
        api, self._api = self._api, None
        if api is None:
            return
        try:
            await asyncio.to_thread(api.shutdown)
        except Exception as exc:
            log.debug("%s: shutdown: %s", self.name, self.redact(str(exc)))
        close = getattr(api, "close", None)
        if callable(close):
            await asyncio.to_thread(close)

    # ---- polling ------------------------------------------------------------------------
    async def _poll(self, canonical: str, sym: str) -> bool:
        """Poll one symbol once; True when the batch was full (poll again at once)."""
        api = self._require_api()
        cursor = self.cursors[canonical]
        count = self._batch.get(canonical, self.config.batch_size)
        rows = await self._call(api.copy_ticks_from, sym, utc(cursor.request_from_s), count,
                                self.config.copy_flags_value)
        recv_us = time.time_ns() // 1000
        self.polls += 1
        if rows is None:
            code, message = await self._call(api.last_error)
            raise Mt5Error(f"copy_ticks_from({sym!r})", code, message)
        try:
            done = convert(rows, cursor, broker=self.config.broker, symbol=canonical,
                           terminal_symbol=sym, offset_ms=self.offset_ms, recv_time_us=recv_us)
        except TickFormatError as exc:
            self.reject(repr(rows)[:4000], "malformed", str(exc), key=canonical)
            raise
        for item in done.items:
            if isinstance(item, RawTick):
                self.emit_tick(item)
            else:
                self._reject_row(item, canonical)
        full = len(rows) >= count
        if full and done.new_rows == 0:
            # Every row of the batch was re-read (more ticks in this second than `count`).
            self._batch[canonical] = min(count * 2, MAX_BATCH)
        elif not full:
            self._batch.pop(canonical, None)
        return full

    def _reject_row(self, row: RejectedRow, key: str) -> None:
        self.reject(row.payload, row.reason, row.detail, key=key)

    async def _start_cursor(self, sym: str) -> SymbolCursor:
        """Start at the symbol's latest tick (minus ``backfill_s``), in server time."""
        api = self._require_api()
        tick = await self._call(api.symbol_info_tick, sym)
        latest = int(getattr(tick, "time_msc", 0) or 0) if tick is not None else 0
        if latest <= 0:  # no tick yet: start at the server's "now"
            latest = int(self._clock() * 1000) + self.offset_ms
        cursor = SymbolCursor(time_msc=max(0, latest - int(self.config.backfill_s * 1000)))
        if not self.config.backfill_s:
            # Starting at the live edge: the current quote is what a one-sided tick at the
            # cursor carries forward (with a backfill the history itself provides it).
            cursor.bid = price(getattr(tick, "bid", None))
            cursor.ask = price(getattr(tick, "ask", None))
        return cursor

    async def _detect_offset(self) -> None:
        """Set the server offset from the freshest symbol tick; keep the old one if stale."""
        api = self._require_api()
        newest = 0
        for sym in self.config.symbols.values():
            tick = await self._call(api.symbol_info_tick, sym)
            if tick is not None:
                newest = max(newest, int(getattr(tick, "time_msc", 0) or 0))
        self._offset_checked_mono = time.monotonic()
        found = detect_offset_ms(newest, int(self._clock() * 1000)) if newest > 0 else None
        if found is None:
            log.warning("%s: cannot detect the server's UTC offset (no fresh tick); keeping "
                        "%+.2f h", self.name, self.offset_ms / 3_600_000)
            return
        if found != self.offset_ms:
            log.info("%s: server UTC offset detected: %+.2f h (was %+.2f h)", self.name,
                     found / 3_600_000, self.offset_ms / 3_600_000)
            self.offset_ms = found

    # ---- helpers ------------------------------------------------------------------------
    def _require_api(self) -> Mt5Api:
        if self._api is None:
            raise ConnectionError("not connected to the terminal")
        return self._api

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.rate_limit is not None:
            await self.rate_limit.acquire()
        return await asyncio.to_thread(fn, *args, **kwargs)
