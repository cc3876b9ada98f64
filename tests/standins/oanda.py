"""A scriptable stand-in for OANDA's v20 pricing stream, served by aiohttp on 127.0.0.1.

``GET /v3/accounts/{account}/pricing/stream?instruments=EUR_USD,USD_JPY`` with
``Authorization: Bearer <token>`` streams newline-delimited JSON exactly as documented
(PRICE with string prices and a ``tradeable`` flag, HEARTBEAT, RFC 3339 nanosecond times).
Each connection plays the next *session* of the script:

* a :class:`Reply` (an error response: 401, 429 with ``Retry-After``, 503, ...), or
* a list of actions: :class:`Prices` (the next ``n`` prices of a deterministic sequence
  that continues across connections), :class:`Heartbeats`, :class:`Raw` bytes (malformed
  lines), :class:`Snapshot` (the last complete price of every instrument again, as OANDA
  does on every new connection), :class:`CutMidLine` (half of the next price line, then the
  connection is dropped; that price is sent again, whole, by the next session),
  :class:`Hang` (stay open, send nothing: heartbeats stop) and :class:`Close` (end the
  response cleanly).

When the script is exhausted a connection gets heartbeats every ``heartbeat_interval_s``
until the client leaves. Wrong token → 401, wrong account → 400, instruments missing or
unknown → 400, with OANDA's ``errorMessage`` bodies. Every request is logged in
:attr:`OandaStandIn.requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

START_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


@dataclass(frozen=True, slots=True)
class Prices:
    n: int
    tradeable: bool = True
    per_write: int = 1  # lines per chunk written


@dataclass(frozen=True, slots=True)
class Heartbeats:
    n: int


@dataclass(frozen=True, slots=True)
class Raw:
    data: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    pass


@dataclass(frozen=True, slots=True)
class CutMidLine:
    pass


@dataclass(frozen=True, slots=True)
class Hang:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    retry_after: str | None = None
    body: dict[str, Any] | None = None


Action = Prices | Heartbeats | Raw | Snapshot | CutMidLine | Hang | Close
Session = Reply | Sequence[Action]


@dataclass(slots=True)
class RequestLog:
    mono: float
    path: str
    instruments: list[str]
    query: dict[str, str]
    authorization_ok: bool
    status: int = 0


def rfc3339_ns(ns: int) -> str:
    """``2016-09-20T15:05:47.960449532Z`` for epoch nanoseconds."""
    sec, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def price_line(
    instrument: str, time_ns: int, bid: float, ask: float, tradeable: bool = True,
    digits: int = 5,
) -> bytes:
    """One documented PRICE message (with its newline)."""
    b, a = f"{bid:.{digits}f}", f"{ask:.{digits}f}"
    msg = {
        "type": "PRICE", "instrument": instrument, "time": rfc3339_ns(time_ns),
        "tradeable": tradeable,
        "bids": [{"price": b, "liquidity": 10000000}, {"price": f"{bid - 0.0001:.{digits}f}",
                                                        "liquidity": 10000000}],
        "asks": [{"price": a, "liquidity": 10000000}, {"price": f"{ask + 0.0001:.{digits}f}",
                                                        "liquidity": 10000000}],
        "closeoutBid": f"{bid - 0.00015:.{digits}f}", "closeoutAsk": f"{ask + 0.00015:.{digits}f}",
        "status": "tradeable" if tradeable else "non-tradeable",
    }
    return orjson.dumps(msg) + b"\n"


def heartbeat_line(time_ns: int) -> bytes:
    return orjson.dumps({"type": "HEARTBEAT", "time": rfc3339_ns(time_ns)}) + b"\n"


class OandaStandIn:
    """See the module docstring. Use as ``async with OandaStandIn(...) as oanda:``."""

    def __init__(
        self,
        *,
        token: str = "standin-token",
        account_id: str = "101-001-1234567-001",
        instruments: Iterable[str] = ("EUR_USD", "USD_JPY", "GBP_USD"),
        sessions: Iterable[Session | Any] = (),
        heartbeat_interval_s: float = 0.05,
    ) -> None:
        self.token = token
        self.account_id = account_id
        self.instruments = list(instruments)
        self.sessions: list[Session] = list(sessions)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.requests: list[RequestLog] = []
        self.sent_prices: list[bytes] = []  # every complete, new PRICE line, in order
        self.snapshot_lines: list[bytes] = []
        self.heartbeats_sent = 0
        self.cuts = 0
        self._next_price = 0
        self._last_by_instrument: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL to configure as the collector's ``stream_url``."""
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> OandaStandIn:
        app = web.Application()
        app.router.add_get("/v3/accounts/{account}/pricing/stream", self._stream)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OandaStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- the price sequence ------------------------------------------------------------
    def price(self, i: int, tradeable: bool = True) -> bytes:
        instrument = self.instruments[i % len(self.instruments)]
        base = 150.0 if instrument.endswith("JPY") else 1.1
        digits = 3 if instrument.endswith("JPY") else 5
        step = 0.001 if digits == 3 else 0.00001
        bid = base + (i % 5000) * step
        ask = bid + 13 * step
        return price_line(instrument, START_NS + i * 1_000_123, bid, ask, tradeable, digits)

    def take_prices(self, n: int, tradeable: bool = True) -> list[bytes]:
        """The next ``n`` lines of the sequence, recorded as sent."""
        lines = [self.price(self._next_price + k, tradeable) for k in range(n)]
        self._next_price += n
        if tradeable:
            self.sent_prices += lines
        for line in lines:
            self._last_by_instrument[orjson.loads(line)["instrument"]] = line
        return lines

    def render_prices(self, n: int) -> bytes:
        """``n`` prices as one payload (for the benchmark: render before the clock starts)."""
        return b"".join(self.take_prices(n))

    # ---- the handler -------------------------------------------------------------------
    def _next_session(self) -> Session | None:
        return self.sessions.pop(0) if self.sessions else None

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._serve(request)
        finally:
            self._handlers.discard(task)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        instruments = [i for i in query.get("instruments", "").split(",") if i]
        ok = request.headers.get("Authorization") == f"Bearer {self.token}"
        log = RequestLog(time.monotonic(), request.path, instruments, query, ok)
        self.requests.append(log)
        if not ok:
            return self._error(log, 401, "Insufficient authorization to perform request.")
        if request.match_info["account"] != self.account_id:
            return self._error(log, 400, "Invalid value specified for 'accountID'")
        if not instruments or any(i not in self.instruments for i in instruments):
            return self._error(log, 400, "Invalid value specified for 'instruments'")
        session = self._next_session()
        if isinstance(session, Reply):
            log.status = session.status
            headers = {"Retry-After": session.retry_after} if session.retry_after else {}
            body = session.body or {"errorMessage": f"stand-in reply {session.status}"}
            return web.json_response(body, status=session.status, headers=headers)
        log.status = 200
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for action in session if session is not None else ():
                if not await self._play(request, resp, action):
                    return resp
            if session is None:
                while not self._closing.is_set():
                    await self._heartbeat(resp)
                    await asyncio.sleep(self.heartbeat_interval_s)
                return resp
            await self._hang(request)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    async def _heartbeat(self, resp: web.StreamResponse) -> None:
        await resp.write(heartbeat_line(START_NS + self.heartbeats_sent * 5_000_000_000))
        self.heartbeats_sent += 1

    async def _play(self, request: web.Request, resp: web.StreamResponse, action: Action) -> bool:
        """Play one action; False when the connection is over."""
        if isinstance(action, Prices):
            lines = self.take_prices(action.n, action.tradeable)
            for k in range(0, len(lines), action.per_write):
                await resp.write(b"".join(lines[k:k + action.per_write]))
        elif isinstance(action, Heartbeats):
            for _ in range(action.n):
                await self._heartbeat(resp)
        elif isinstance(action, Raw):
            await resp.write(action.data)
        elif isinstance(action, Snapshot):
            for instrument in self.instruments:
                line = self._last_by_instrument.get(instrument)
                if line is not None:
                    self.snapshot_lines.append(line)
                    await resp.write(line)
        elif isinstance(action, CutMidLine):
            line = self.price(self._next_price)  # not taken: the next session sends it whole
            await resp.write(line[: len(line) // 2])
            self.cuts += 1
            self._drop(request)
            return False
        elif isinstance(action, Hang):
            await self._hang(request)
            return False
        elif isinstance(action, Close):
            await resp.write_eof()
            return False
        return True

    @staticmethod
    def _drop(request: web.Request) -> None:
        """Close the TCP connection under the response (no terminating chunk)."""
        transport = request.transport
        if transport is not None:
            transport.close()

    async def _hang(self, request: web.Request) -> None:
        """Send nothing until the client goes away or the stand-in closes."""
        while not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 0.02)

    def _error(self, log: RequestLog, status: int, message: str) -> web.Response:
        log.status = status
        return web.json_response({"errorMessage": message}, status=status)


__all__ = [
    "START_NS",
    "Close",
    "CutMidLine",
    "Hang",
    "Heartbeats",
    "OandaStandIn",
    "Prices",
    "Raw",
    "Reply",
    "RequestLog",
    "Snapshot",
    "heartbeat_line",
    "price_line",
    "rfc3339_ns",
]
