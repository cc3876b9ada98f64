"""Access to a MetaTrader 5 terminal: the native ``MetaTrader5`` module or an rpyc bridge.

The native module exists only for Windows, so it is imported lazily, when a collector
connects, never at import time. On Linux the terminal runs under Wine with a Windows Python
serving rpyc's classic ``SlaveService`` (what ``python -m mt5linux`` starts, port 18812);
:class:`BridgeApi` connects to it, imports ``MetaTrader5`` on the far side and installs a
few helper functions there, so that each call is one round trip:

* time arguments are built as timezone-aware UTC ``datetime`` objects on the Windows side
  (a local ``datetime`` would arrive as a proxy the C extension rejects);
* tick arrays come back by value as raw bytes plus their dtype description and are rebuilt
  with :func:`numpy.frombuffer` — no pickle, so the far side cannot run code here;
* named tuples (``symbol_info_tick``) come back as field names plus values.

Both implementations follow :class:`Mt5Api`: the functions of the real module that the
collector uses, with the real module's return conventions (``None``/``False`` on failure,
details from :meth:`Mt5Api.last_error`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections import namedtuple
from collections.abc import Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from connectors.base.resilience import FatalCollectorError

# Return codes of ``last_error()``, as in the MetaTrader5 module.
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

#: Codes that mean "the link to the terminal failed": re-initialize and retry.
IPC_ERRORS = frozenset(range(RES_E_INTERNAL_FAIL_TIMEOUT, RES_E_INTERNAL_FAIL + 1))

COPY_TICKS_ALL = -1
COPY_TICKS_INFO = 1
COPY_TICKS_TRADE = 2

TICK_FLAG_BID = 0x02
TICK_FLAG_ASK = 0x04
TICK_FLAG_LAST = 0x08
TICK_FLAG_VOLUME = 0x10
TICK_FLAG_BUY = 0x20
TICK_FLAG_SELL = 0x40

#: The dtype of the arrays ``copy_ticks_from``/``copy_ticks_range`` return.
TICK_DTYPE = np.dtype(
    [("time", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("last", "<f8"), ("volume", "<u8"),
     ("time_msc", "<i8"), ("flags", "<u4"), ("volume_real", "<f8")]
)

TickArray = npt.NDArray[Any]


class Mt5Api(Protocol):
    """The part of the ``MetaTrader5`` module the collector uses (same signatures)."""

    def initialize(self, *args: Any, **kwargs: Any) -> bool: ...

    def shutdown(self) -> Any: ...

    def last_error(self) -> tuple[int, str]: ...

    def symbol_select(self, symbol: str, enable: bool = True) -> bool: ...

    def symbol_info_tick(self, symbol: str) -> Any: ...

    def copy_ticks_from(
        self, symbol: str, date_from: datetime | int, count: int, flags: int
    ) -> TickArray | None: ...

    def copy_ticks_range(
        self, symbol: str, date_from: datetime | int, date_to: datetime | int, flags: int
    ) -> TickArray | None: ...


class Mt5Error(ConnectionError):
    """A terminal call failed; ``code``/``message`` are what ``last_error()`` said."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call} failed: last_error()=({code}, {message!r})")
        self.call = call
        self.code = code
        self.message = message


def utc(seconds: int) -> datetime:
    """The aware UTC ``datetime`` the API wants for a time in epoch seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def load_native(module_name: str = "MetaTrader5") -> Mt5Api:
    """Import the native module (Windows only); fatal with a hint when it is absent."""
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as exc:
        raise FatalCollectorError(
            f"the {module_name} package cannot be imported ({exc}); it exists only for "
            "Windows: on Linux run the terminal under Wine and connect with --bridge host:port"
        ) from None
    return cast(Mt5Api, module)


# Runs on the Windows side, inside the connection's own namespace. Kept to syntax every
# Python 3 the terminal's interpreter may be (3.6+) understands.
_REMOTE_HELPERS = '''
import datetime as _ts_datetime
import MetaTrader5 as _ts_mt5

def _ts_when(seconds):
    return _ts_datetime.datetime.fromtimestamp(seconds, _ts_datetime.timezone.utc)

def _ts_pack(array):
    if array is None:
        return None
    descr = tuple((str(d[0]), str(d[1])) for d in array.dtype.descr)
    return (bytes(array.tobytes()), descr)

def _ts_copy_ticks_from(symbol, seconds, count, flags):
    return _ts_pack(_ts_mt5.copy_ticks_from(symbol, _ts_when(seconds), count, flags))

def _ts_copy_ticks_range(symbol, from_seconds, to_seconds, flags):
    return _ts_pack(_ts_mt5.copy_ticks_range(
        symbol, _ts_when(from_seconds), _ts_when(to_seconds), flags))

def _ts_named(value):
    if value is None:
        return None
    return (tuple(value._fields), tuple(value))

def _ts_symbol_info_tick(symbol):
    return _ts_named(_ts_mt5.symbol_info_tick(symbol))

def _ts_last_error():
    code, message = _ts_mt5.last_error()
    return (int(code), str(message))
'''


def unpack_array(packed: Any) -> TickArray | None:
    """Rebuild a tick array sent as ``(raw bytes, dtype description)``."""
    if packed is None:
        return None
    raw, descr = packed
    dtype = np.dtype([(str(name), str(fmt)) for name, fmt in descr])
    return np.frombuffer(bytes(raw), dtype=dtype)


def _seconds(value: datetime | int) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


class BridgeApi:
    """:class:`Mt5Api` over an rpyc classic connection to the Wine-side Python."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        import rpyc

        self.host = host
        self.port = port
        self._conn: Any = rpyc.classic.connect(host, port)
        try:
            self._conn._config["sync_request_timeout"] = timeout_s
            self._conn.execute(_REMOTE_HELPERS)
            ev: Callable[[str], Any] = self._conn.eval
            self._initialize = ev("_ts_mt5.initialize")
            self._shutdown = ev("_ts_mt5.shutdown")
            self._symbol_select = ev("_ts_mt5.symbol_select")
            self._last_error = ev("_ts_last_error")
            self._symbol_info_tick = ev("_ts_symbol_info_tick")
            self._copy_from = ev("_ts_copy_ticks_from")
            self._copy_range = ev("_ts_copy_ticks_range")
        except BaseException:
            self.close()
            raise
        self._tick_types: dict[tuple[str, ...], Any] = {}

    def initialize(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._initialize(*args, **kwargs))

    def shutdown(self) -> Any:
        return self._shutdown()

    def last_error(self) -> tuple[int, str]:
        code, message = self._last_error()
        return int(code), str(message)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        return bool(self._symbol_select(str(symbol), bool(enable)))

    def symbol_info_tick(self, symbol: str) -> Any:
        packed = self._symbol_info_tick(str(symbol))
        if packed is None:
            return None
        names, values = packed
        names = tuple(str(n) for n in names)
        cls = self._tick_types.get(names)
        if cls is None:
            cls = self._tick_types[names] = namedtuple("Tick", names)  # type: ignore[misc]
        return cls(*values)

    def copy_ticks_from(
        self, symbol: str, date_from: datetime | int, count: int, flags: int
    ) -> TickArray | None:
        return unpack_array(self._copy_from(str(symbol), _seconds(date_from), int(count),
                                            int(flags)))

    def copy_ticks_range(
        self, symbol: str, date_from: datetime | int, date_to: datetime | int, flags: int
    ) -> TickArray | None:
        return unpack_array(self._copy_range(str(symbol), _seconds(date_from),
                                             _seconds(date_to), int(flags)))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # the link may already be gone
                conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None or bool(self._conn.closed)
