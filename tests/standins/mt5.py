"""A faithful stand-in for the ``MetaTrader5`` module (Windows-only, not installable here).

Same function names and signatures, constants, return conventions and tick dtype as the
real package (see ``../shared/NOTES.md``, "MetaTrader 5"):

* functions return ``None`` (data calls) or ``False`` (``initialize``/``symbol_select``) on
  failure and set the code and message :func:`last_error` returns, ``(1, 'Success')`` after
  a good call; data calls before ``initialize`` (or after ``shutdown``) fail with
  ``(-10004, 'No IPC connection')``;
* ``copy_ticks_from(symbol, date_from, count, flags)`` returns the first ``count`` ticks
  with ``time_msc >= date_from`` where ``date_from`` (a ``datetime`` or epoch seconds) has
  whole-second resolution, as in the real API; ``copy_ticks_range(symbol, date_from,
  date_to, flags)`` the ticks from ``date_from`` to ``date_to`` inclusive; ``flags``
  ``COPY_TICKS_INFO`` keeps ticks with a BID or ASK change, ``COPY_TICKS_TRADE`` those with
  LAST or VOLUME, ``COPY_TICKS_ALL`` everything. A naive ``datetime`` is local time (the
  pitfall the MetaQuotes documentation warns about);
* arrays are numpy structured arrays of exactly :data:`TICK_DTYPE`, copies in time order.

A :class:`Terminal` is one scriptable terminal: tests add ticks (many in one millisecond,
BID-only/ASK-only flags, malformed rows), cut the link (:meth:`Terminal.disconnect`) and
inject failures (:meth:`Terminal.fail_next`). :meth:`Terminal.as_module` gives a module
object with the real module's names bound to that terminal; this module's own functions
use :data:`DEFAULT`. :class:`BridgeServer` serves a terminal the way the Wine-side
``mt5linux`` server does: rpyc's classic ``SlaveService`` on a TCP port, where
``import MetaTrader5`` resolves to the stand-in.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import socket
import threading
import time
from collections import Counter, namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__version__ = "5.0.4803"
__author__ = "MetaQuotes Ltd. (stand-in)"

COPY_TICKS_ALL = -1
COPY_TICKS_INFO = 1
COPY_TICKS_TRADE = 2

TICK_FLAG_BID = 2
TICK_FLAG_ASK = 4
TICK_FLAG_LAST = 8
TICK_FLAG_VOLUME = 16
TICK_FLAG_BUY = 32
TICK_FLAG_SELL = 64

RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_NO_MEMORY = -3
RES_E_NOT_FOUND = -4
RES_E_INVALID_VERSION = -5
RES_E_AUTH_FAILED = -6
RES_E_UNSUPPORTED = -7
RES_E_AUTO_TRADING_DISABLED = -8
RES_E_INTERNAL_FAIL = -10000
RES_E_INTERNAL_FAIL_SEND = -10001
RES_E_INTERNAL_FAIL_RECEIVE = -10002
RES_E_INTERNAL_FAIL_INIT = -10003
RES_E_INTERNAL_FAIL_CONNECT = -10004
RES_E_INTERNAL_FAIL_TIMEOUT = -10005

MESSAGES = {
    RES_S_OK: "Success",
    RES_E_FAIL: "Terminal: Call failed",
    RES_E_INVALID_PARAMS: "Terminal: Invalid params",
    RES_E_NO_MEMORY: "Terminal: Out of memory",
    RES_E_NOT_FOUND: "Terminal: Not found",
    RES_E_INVALID_VERSION: "Terminal: Invalid version",
    RES_E_AUTH_FAILED: "Terminal: Authorization failed",
    RES_E_UNSUPPORTED: "Terminal: Unsupported method",
    RES_E_AUTO_TRADING_DISABLED: "Terminal: Auto trading disabled",
    RES_E_INTERNAL_FAIL: "Terminal: Internal error",
    RES_E_INTERNAL_FAIL_SEND: "IPC send failed",
    RES_E_INTERNAL_FAIL_RECEIVE: "IPC recv failed",
    RES_E_INTERNAL_FAIL_INIT: "IPC initialize failed, MetaTrader 5 x64 not found",
    RES_E_INTERNAL_FAIL_CONNECT: "No IPC connection",
    RES_E_INTERNAL_FAIL_TIMEOUT: "IPC timeout",
}

TICK_DTYPE = np.dtype(
    [("time", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("last", "<f8"), ("volume", "<u8"),
     ("time_msc", "<i8"), ("flags", "<u4"), ("volume_real", "<f8")]
)

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")

API_FUNCTIONS = (
    "initialize", "login", "shutdown", "last_error", "version", "symbol_select",
    "symbol_info_tick", "copy_ticks_from", "copy_ticks_range",
)

TickArray = npt.NDArray[Any]
_V = TypeVar("_V")


class _Failure(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "Unknown error")


class Terminal:
    """One MetaTrader 5 terminal: its tick history, login state and scripted faults.

    ``accounts`` maps login → (password, server); ``initialize``/``login`` with a login
    not in it, or with the wrong password or server, fail with ``RES_E_AUTH_FAILED``.
    """

    def __init__(
        self, symbols: Iterable[str] = ("EURUSD",),
        accounts: Mapping[int, tuple[str, str]] | None = None,
    ) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._arrays: dict[str, TickArray] = {}
        self._sizes: dict[str, int] = {}
        for s in symbols:
            self._ensure_symbol(s)
        self._selected: set[str] = set()
        self.accounts = dict(accounts or {})
        self.connected = False
        self.login_id: int | None = None
        self._error: tuple[int, str] = (RES_S_OK, MESSAGES[RES_S_OK])
        self._refuse_init: list[_Failure] = []
        self._faults: dict[str, list[_Failure]] = {}
        self.calls: Counter[str] = Counter()
        self.first_call: dict[str, float] = {}  # function -> time.perf_counter() of 1st call
        self.initialize_calls = 0

    # ---- scripting ----------------------------------------------------------------------
    def add_tick(
        self, symbol: str, time_msc: int, bid: float = 0.0, ask: float = 0.0, *,
        flags: int = TICK_FLAG_BID | TICK_FLAG_ASK, last: float = 0.0, volume: int = 0,
        volume_real: float = 0.0, time_s: int | None = None,
    ) -> None:
        """Append one tick (the terminal received it); ``time_s`` defaults to time_msc // 1000."""
        row = (time_msc // 1000 if time_s is None else time_s, bid, ask, last, volume,
               time_msc, flags, volume_real)
        self.add_ticks(symbol, np.array([row], dtype=TICK_DTYPE))

    def add_ticks(self, symbol: str, rows: TickArray | Sequence[tuple[Any, ...]]) -> None:
        """Append rows (tuples in dtype field order, or an array of :data:`TICK_DTYPE`)."""
        new = rows if isinstance(rows, np.ndarray) else np.array(list(rows), dtype=TICK_DTYPE)
        if new.dtype != TICK_DTYPE:
            new = new.astype(TICK_DTYPE)
        if len(new) == 0:
            return
        with self._lock:
            self._ensure_symbol(symbol)
            n = self._sizes[symbol]
            arr = self._arrays[symbol]
            tm = new["time_msc"]
            if np.any(tm[1:] < tm[:-1]) or (n and tm[0] < arr["time_msc"][n - 1]):
                raise ValueError("a terminal's tick history is in time order")
            if n + len(new) > len(arr):
                grown = np.zeros(max(2 * len(arr), n + len(new), 1024), dtype=TICK_DTYPE)
                grown[:n] = arr[:n]
                self._arrays[symbol] = arr = grown
            arr[n:n + len(new)] = new
            self._sizes[symbol] = n + len(new)
            self._lock.notify_all()

    def tick_count(self, symbol: str) -> int:
        with self._lock:
            return self._sizes.get(symbol, 0)

    def history(self, symbol: str) -> TickArray:
        with self._lock:
            return self._arrays[symbol][: self._sizes[symbol]].copy()

    def disconnect(
        self, *, refuse_initialize: int = 0, init_code: int = RES_E_INTERNAL_FAIL_INIT
    ) -> None:
        """The link to the terminal drops: calls fail with ``No IPC connection`` until
        ``initialize`` succeeds again; the next ``refuse_initialize`` attempts fail."""
        with self._lock:
            self.connected = False
            self._refuse_init = [_Failure(init_code) for _ in range(refuse_initialize)]

    def fail_next(
        self, function: str, code: int, message: str | None = None, times: int = 1
    ) -> None:
        """The next ``times`` calls of ``function`` fail with ``(code, message)``."""
        if function not in API_FUNCTIONS:
            raise ValueError(f"unknown function {function}")
        with self._lock:
            self._faults.setdefault(function, []).extend(
                _Failure(code, message) for _ in range(times)
            )

    def wait_calls(self, function: str, n: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``function`` has been called ``n`` times in total."""
        with self._lock:
            return self._lock.wait_for(lambda: self.calls[function] >= n, timeout=timeout_s)

    # ---- the module API -----------------------------------------------------------------
    def initialize(
        self, path: str | None = None, *, login: int | None = None,
        password: str | None = None, server: str | None = None, timeout: int | None = None,
        portable: bool = False,
    ) -> bool:
        with self._lock:
            self.initialize_calls += 1
            try:
                self._enter("initialize", need_connection=False)
                if self._refuse_init:
                    raise self._refuse_init.pop(0)
                if path is not None and not isinstance(path, str):
                    raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "path" argument')
                if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
                    raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "timeout" argument')
                if login is not None:
                    self._authorize(login, password, server)
                self.connected = True
                return self._ok(True)
            except _Failure as f:
                return self._fail(f, False)

    def login(
        self, login: int, *, password: str | None = None, server: str | None = None,
        timeout: int | None = None,
    ) -> bool:
        with self._lock:
            try:
                self._enter("login")
                self._authorize(login, password, server)
                return self._ok(True)
            except _Failure as f:
                return self._fail(f, False)

    def shutdown(self) -> None:
        with self._lock:
            self.calls["shutdown"] += 1
            self.connected = False
            self._selected.clear()
            self._ok(None)

    def last_error(self) -> tuple[int, str]:
        with self._lock:
            return self._error

    def version(self) -> tuple[int, int, str] | None:
        with self._lock:
            try:
                self._enter("version")
                return self._ok((500, 4803, "21 Feb 2025"))
            except _Failure as f:
                return self._fail(f, None)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        with self._lock:
            try:
                self._enter("symbol_select")
                if not isinstance(symbol, str):
                    raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "symbol" argument')
                if symbol not in self._arrays:
                    raise _Failure(RES_E_FAIL)
                (self._selected.add if enable else self._selected.discard)(symbol)
                return self._ok(True)
            except _Failure as f:
                return self._fail(f, False)

    def symbol_info_tick(self, symbol: str) -> Any:
        with self._lock:
            try:
                self._enter("symbol_info_tick")
                if symbol not in self._selected:
                    raise _Failure(RES_E_NOT_FOUND)
                n = self._sizes[symbol]
                if n == 0:
                    return self._ok(Tick(0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0))
                arr = self._arrays[symbol][:n]
                r = arr[n - 1]
                # The current quote: each side as last changed, whatever the last row's flags.
                bid = _current(arr, "bid", TICK_FLAG_BID)
                ask = _current(arr, "ask", TICK_FLAG_ASK)
                return self._ok(Tick(int(r["time"]), bid, ask, float(r["last"]),
                                     int(r["volume"]), int(r["time_msc"]), int(r["flags"]),
                                     float(r["volume_real"])))
            except _Failure as f:
                return self._fail(f, None)

    def copy_ticks_from(
        self, symbol: str, date_from: datetime | int, count: int, flags: int
    ) -> TickArray | None:
        with self._lock:
            try:
                self._enter("copy_ticks_from")
                arr = self._history(symbol)
                start = _seconds(date_from, "date_from") * 1000
                if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
                    raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "count" argument')
                i = int(np.searchsorted(arr["time_msc"], start, side="left"))
                if flags == COPY_TICKS_ALL:
                    out = arr[i:i + count]
                else:
                    tail = arr[i:]
                    out = tail[_mask(tail, flags)][:count]
                return self._ok(out.copy())
            except _Failure as f:
                return self._fail(f, None)

    def copy_ticks_range(
        self, symbol: str, date_from: datetime | int, date_to: datetime | int, flags: int
    ) -> TickArray | None:
        with self._lock:
            try:
                self._enter("copy_ticks_range")
                arr = self._history(symbol)
                lo = _seconds(date_from, "date_from") * 1000
                hi = _seconds(date_to, "date_to") * 1000
                tm = arr["time_msc"]
                out = arr[int(np.searchsorted(tm, lo, "left")):int(np.searchsorted(tm, hi,
                                                                                    "right"))]
                if flags != COPY_TICKS_ALL:
                    out = out[_mask(out, flags)]
                return self._ok(out.copy())
            except _Failure as f:
                return self._fail(f, None)

    def as_module(self, name: str = "MetaTrader5") -> ModuleType:
        """A module object with the real module's names, bound to this terminal."""
        mod = ModuleType(name, "MetaTrader5 stand-in bound to one Terminal")
        for key, value in globals().items():
            constant = key.isupper() and isinstance(value, int) and not isinstance(value, bool)
            if constant or key in ("Tick", "__version__", "__author__"):
                setattr(mod, key, value)
        for fn in API_FUNCTIONS:
            setattr(mod, fn, getattr(self, fn))
        mod.terminal = self  # type: ignore[attr-defined]
        return mod

    # ---- internals ----------------------------------------------------------------------
    def _ensure_symbol(self, symbol: str) -> None:
        if symbol not in self._arrays:
            self._arrays[symbol] = np.zeros(1024, dtype=TICK_DTYPE)
            self._sizes[symbol] = 0

    def _history(self, symbol: str) -> TickArray:
        if not isinstance(symbol, str):
            raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "symbol" argument')
        if symbol not in self._arrays:
            raise _Failure(RES_E_INVALID_PARAMS, f'Invalid "symbol" argument: {symbol}')
        return self._arrays[symbol][: self._sizes[symbol]]

    def _enter(self, function: str, need_connection: bool = True) -> None:
        self.calls[function] += 1
        self.first_call.setdefault(function, time.perf_counter())
        self._lock.notify_all()
        faults = self._faults.get(function)
        if faults:
            raise faults.pop(0)
        if need_connection and not self.connected:
            raise _Failure(RES_E_INTERNAL_FAIL_CONNECT)

    def _authorize(self, login: int, password: str | None, server: str | None) -> None:
        account = self.accounts.get(login)
        if account is None or (password is not None and password != account[0]) or (
            server is not None and server != account[1]
        ):
            raise _Failure(RES_E_AUTH_FAILED)
        self.login_id = login

    def _ok(self, value: _V) -> _V:
        self._error = (RES_S_OK, MESSAGES[RES_S_OK])
        return value

    def _fail(self, failure: _Failure, value: _V) -> _V:
        self._error = (failure.code, failure.message)
        return value


def _seconds(value: Any, name: str) -> int:
    if isinstance(value, datetime):
        return math.floor(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return math.floor(value)
    raise _Failure(RES_E_INVALID_PARAMS, f'Invalid "{name}" argument')


def _current(arr: TickArray, side: str, flag: int) -> float:
    ok = np.nonzero(((arr["flags"] & flag) != 0) & (arr[side] > 0))[0]
    return float(arr[side][ok[-1]]) if len(ok) else 0.0


def _mask(rows: TickArray, flags: int) -> npt.NDArray[np.bool_]:
    if flags == COPY_TICKS_INFO:
        return (rows["flags"] & (TICK_FLAG_BID | TICK_FLAG_ASK)) != 0  # type: ignore[no-any-return]
    if flags == COPY_TICKS_TRADE:
        return (rows["flags"] & (TICK_FLAG_LAST | TICK_FLAG_VOLUME)) != 0  # type: ignore[no-any-return]
    raise _Failure(RES_E_INVALID_PARAMS, 'Invalid "flags" argument')


#: The terminal behind this module's own functions (``import standins.mt5 as mt5``).
DEFAULT = Terminal()


def reset(symbols: Iterable[str] = ("EURUSD",),
          accounts: Mapping[int, tuple[str, str]] | None = None) -> Terminal:
    """Replace :data:`DEFAULT` with a fresh terminal and rebind the module functions."""
    global DEFAULT
    DEFAULT = Terminal(symbols, accounts)
    return DEFAULT


def initialize(path: str | None = None, **kwargs: Any) -> bool:
    return DEFAULT.initialize(path, **kwargs)


def login(login: int, **kwargs: Any) -> bool:
    return DEFAULT.login(login, **kwargs)


def shutdown() -> None:
    return DEFAULT.shutdown()


def last_error() -> tuple[int, str]:
    return DEFAULT.last_error()


def version() -> tuple[int, int, str] | None:
    return DEFAULT.version()


def symbol_select(symbol: str, enable: bool = True) -> bool:
    return DEFAULT.symbol_select(symbol, enable)


def symbol_info_tick(symbol: str) -> Any:
    return DEFAULT.symbol_info_tick(symbol)


def copy_ticks_from(symbol: str, date_from: datetime | int, count: int,
                    flags: int) -> TickArray | None:
    return DEFAULT.copy_ticks_from(symbol, date_from, count, flags)


def copy_ticks_range(symbol: str, date_from: datetime | int, date_to: datetime | int,
                     flags: int) -> TickArray | None:
    return DEFAULT.copy_ticks_range(symbol, date_from, date_to, flags)


# ---- the Wine-side bridge ---------------------------------------------------------------
def _classic_service(module: ModuleType) -> type:
    """rpyc's classic SlaveService whose ``import MetaTrader5`` yields ``module``."""
    from rpyc.core.service import SlaveService

    real_import = builtins.__import__

    def _import(name: str, globals: Any = None, locals: Any = None,
                fromlist: Any = (), level: int = 0) -> Any:
        if name == "MetaTrader5" and level == 0:
            return module
        return real_import(name, globals, locals, fromlist, level)

    class StandinSlaveService(SlaveService):  # type: ignore[misc]
        def on_connect(self, conn: Any) -> None:
            super().on_connect(conn)
            scope = dict(vars(builtins))
            scope["__import__"] = _import
            self.namespace["__builtins__"] = scope

    return StandinSlaveService


class BridgeServer:
    """An rpyc classic server on ``host:port`` (port 0: a free one) in a background thread.

    What ``python -m mt5linux`` runs under Wine, with the stand-in in place of the native
    module. :meth:`drop_connections` cuts every client link (the Wine-side Python died);
    :meth:`close` stops the server and its threads.
    """

    def __init__(self, module: ModuleType | Terminal, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        from rpyc.utils.server import ThreadedServer

        mod = module.as_module() if isinstance(module, Terminal) else module
        quiet = logging.getLogger("standins.mt5.bridge")
        quiet.setLevel(logging.CRITICAL)
        self._server = ThreadedServer(
            _classic_service(mod), hostname=host, port=port, reuse_addr=True,
            logger=quiet, listener_timeout=0.1,
            protocol_config={"sync_request_timeout": 30},
        )
        self.host: str = host
        self.port: int = int(self._server.port)
        self._thread = threading.Thread(target=self._server.start, name="mt5-bridge-server",
                                        daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> BridgeServer:
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.active and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def connections(self) -> int:
        return len(self._server.clients)

    def drop_connections(self) -> int:
        """Cut every client link; returns how many were cut."""
        clients = list(self._server.clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(clients)

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BridgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(module: ModuleType | Terminal, host: str = "127.0.0.1", port: int = 0) -> BridgeServer:
    """Start a :class:`BridgeServer` (use as a context manager or call ``close()``)."""
    return BridgeServer(module, host, port).start()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0,
             interval_s: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True
