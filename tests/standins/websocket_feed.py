"""A scriptable WebSocket quote feed on 127.0.0.1 (aiohttp), shaped like Polygon's forex feed.

``GET /quotes?apiKey=<token>`` upgrades to a WebSocket (a wrong key → HTTP 401 before the
upgrade). The client must then send ``{"action":"auth","params":"<token>"}`` (wrong →
``[{"ev":"status","status":"auth_failed",...}]`` and close) and
``{"action":"subscribe","params":"C.EUR/USD,C.USD/JPY"}`` (recorded in
:attr:`WebSocketStandIn.subscriptions`); each is acknowledged with a status message.
Quotes look like ``{"ev":"C","p":"EUR/USD","b":1.1,"a":1.10013,"t":1700000000123}`` (epoch
ms; ``quote_format`` changes the shape, e.g. to ISO times).

Each connection plays the next session of the script: a :class:`Reply` (refuse the upgrade
with a status and ``Retry-After``) or a list of actions: :class:`Quotes` (the next ``n``
quotes of a sequence continuing across connections, ``per_frame`` per frame, as a JSON list
when more than one), :class:`Status` (a control message), :class:`Text` (a raw frame, e.g.
malformed JSON), :class:`Replay` (the last quote of every symbol again), :class:`Drop` (cut
the TCP connection without a close frame), :class:`CloseWs` (a close frame) and
:class:`Hang` (send nothing). After the script: a status heartbeat every
``heartbeat_interval_s`` until the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

START_MS = 1_700_000_000_123


@dataclass(frozen=True, slots=True)
class Quotes:
    n: int
    per_frame: int = 1


@dataclass(frozen=True, slots=True)
class Status:
    status: str = "heartbeat"


@dataclass(frozen=True, slots=True)
class Text:
    data: str


@dataclass(frozen=True, slots=True)
class Replay:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    pass


@dataclass(frozen=True, slots=True)
class CloseWs:
    code: int = 1000


@dataclass(frozen=True, slots=True)
class Hang:
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    retry_after: str | None = None


Action = Quotes | Status | Text | Replay | Drop | CloseWs | Hang
Session = Reply | Sequence[Action]


def polygon_quote(symbol: str, i: int) -> dict[str, Any]:
    jpy = symbol.endswith("JPY")
    step = 0.001 if jpy else 0.00001
    bid = round((150.0 if jpy else 1.1) + (i % 5000) * step, 3 if jpy else 5)
    return {"ev": "C", "p": symbol, "x": 48, "b": bid, "a": round(bid + 13 * step, 6),
            "t": START_MS + i}


class WebSocketStandIn:
    """See the module docstring. Use as ``async with WebSocketStandIn(...) as feed:``."""

    def __init__(
        self,
        *,
        token: str = "ws-standin-key",
        symbols: Iterable[str] = ("EUR/USD", "USD/JPY"),
        sessions: Iterable[Session | Any] = (),
        heartbeat_interval_s: float = 0.05,
        quote_format: Callable[[str, int], dict[str, Any]] = polygon_quote,
    ) -> None:
        self.token = token
        self.symbols = list(symbols)
        self.sessions: list[Session] = list(sessions)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.quote_format = quote_format
        self.connections = 0
        self.handshake_statuses: list[int] = []
        self.auth_messages: list[Any] = []
        self.subscriptions: list[Any] = []
        self.sent_quotes: list[dict[str, Any]] = []
        self.replayed: list[dict[str, Any]] = []
        self.heartbeats_sent = 0
        self._next = 0
        self._last: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()
        self._open: set[web.WebSocketResponse] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/quotes"

    async def start(self) -> WebSocketStandIn:
        app = web.Application()
        app.router.add_get("/quotes", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing.set()
        for ws in list(self._open):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebSocketStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def take_quotes(self, n: int) -> list[dict[str, Any]]:
        out = []
        for k in range(n):
            i = self._next + k
            symbol = self.symbols[i % len(self.symbols)]
            quote = self.quote_format(symbol, i)
            self._last[symbol] = quote
            out.append(quote)
        self._next += n
        self.sent_quotes += out
        return out

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        if request.query.get("apiKey") != self.token:
            self.handshake_statuses.append(401)
            return web.json_response({"status": "unauthorized"}, status=401)
        session = self.sessions.pop(0) if self.sessions else None
        if isinstance(session, Reply):
            self.handshake_statuses.append(session.status)
            headers = {"Retry-After": session.retry_after} if session.retry_after else {}
            return web.json_response({"status": "error"}, status=session.status,
                                     headers=headers)
        self.handshake_statuses.append(101)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._open.add(ws)
        try:
            if await self._handshake(ws):
                await self._play(request, ws, session)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(ws)
        return ws

    async def _receive_json(self, ws: web.WebSocketResponse) -> Any:
        msg = await ws.receive(timeout=5)
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        return orjson.loads(msg.data)

    async def _handshake(self, ws: web.WebSocketResponse) -> bool:
        await ws.send_str(orjson.dumps([{"ev": "status", "status": "connected"}]).decode())
        auth = await self._receive_json(ws)
        self.auth_messages.append(auth)
        if not (isinstance(auth, dict) and auth.get("action") == "auth"
                and auth.get("params") == self.token):
            await ws.send_str(orjson.dumps([{"ev": "status", "status": "auth_failed",
                                             "message": "authentication failed"}]).decode())
            await ws.close(code=1008)
            return False
        await ws.send_str(orjson.dumps([{"ev": "status", "status": "auth_success"}]).decode())
        sub = await self._receive_json(ws)
        self.subscriptions.append(sub)
        await ws.send_str(orjson.dumps([{"ev": "status", "status": "success",
                                         "message": f"subscribed to: {sub}"}]).decode())
        return True

    async def _play(
        self, request: web.Request, ws: web.WebSocketResponse, session: Sequence[Action] | None
    ) -> None:
        for action in session or ():
            if isinstance(action, Quotes):
                quotes = self.take_quotes(action.n)
                for k in range(0, len(quotes), action.per_frame):
                    frame = quotes[k:k + action.per_frame]
                    await ws.send_str(orjson.dumps(frame if action.per_frame > 1
                                                   else frame[0]).decode())
            elif isinstance(action, Status):
                await ws.send_str(orjson.dumps([{"ev": "status",
                                                 "status": action.status}]).decode())
            elif isinstance(action, Text):
                await ws.send_str(action.data)
            elif isinstance(action, Replay):
                for symbol in self.symbols:
                    if symbol in self._last:
                        self.replayed.append(self._last[symbol])
                        await ws.send_str(orjson.dumps(self._last[symbol]).decode())
            elif isinstance(action, Drop):
                if request.transport is not None:
                    request.transport.close()
                return
            elif isinstance(action, CloseWs):
                await ws.close(code=action.code)
                return
            elif isinstance(action, Hang):
                await self._hang(ws)
                return
        if session is None:
            while not self._closing.is_set() and not ws.closed:
                await ws.send_str(orjson.dumps([{"ev": "status",
                                                 "status": "heartbeat"}]).decode())
                self.heartbeats_sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.heartbeat_interval_s)
            return
        await self._hang(ws)

    async def _hang(self, ws: web.WebSocketResponse) -> None:
        """Send nothing; return when the client closes (or the stand-in does)."""
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                msg = await ws.receive(timeout=0.05)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                WSMsgType.ERROR):
                    return


__all__ = [
    "START_MS",
    "CloseWs",
    "Drop",
    "Hang",
    "Quotes",
    "Replay",
    "Reply",
    "Status",
    "Text",
    "WebSocketStandIn",
    "polygon_quote",
]
