"""Technical indicators per symbol on closed one-minute bars: one live path, one batch path.

Why two paths: the live worker must add one bar in O(1) (TA-Lib 0.8 streaming handles),
while training needs the same features for a whole history at once (TA-Lib batch functions).
A model is only as good as the agreement between the two, so this module promises that they
are **bit-identical** (``==``, NaN <-> None), also after a worker restart.

The exactness contract (measured, not assumed)
----------------------------------------------
A TA-Lib stream handle reproduces the batch function over *the bars it was opened on plus
the bars it was updated with*, bit for bit. But a handle cannot be serialised, so a restart
must rebuild it from bars kept in the snapshot, and a bounded number of bars cannot rebuild
the state of a handle that has seen an unbounded history:

* EMA-type recursions (EMA, RSI, MACD, ATR: TA-Lib's "unstable period" functions) forget
  their seed geometrically. TA-Lib's unstable period only hides the first outputs; it does
  not make a short history exact. Measured on random-walk prices: a rebuild from 512 bars
  usually coalesces to the very same double as the full history, but nothing guarantees it
  (it is a property of the rounding, and 100-300 bars still differ by up to 1e-9 .. 1e-2).
* SMA and BBANDS keep a *running sum* in the C code, whose rounding error is a random walk
  that never decays: a rebuild from any window differs from the full-history value by a few
  ulps for ever (measured: 4e-16 .. 2e-15 at every window length tried).

So "equal to the batch over the full history" is impossible with bounded memory. The
contract is instead defined by **epochs** of the bar index ``i`` (0-based, counting every
bar this state accepted since it was created, kept across restarts):

    R = max_history - max_history // 2        (epoch length)
    W = max_history // 2                      (warm-up window of a rebuilt handle)
    start(i) = max(0, (i // R) * R - W)
    feature(i) = TA-Lib batch function over bars[start(i) : i + 1], last value

Live, handles are opened once (lazily, at the first bar with enough history) and updated bar
by bar; at each epoch boundary with ``start > 0`` they are rebuilt from the last ``W + 1``
bars, O(W) once per R bars, so O(1) amortised. A snapshot keeps ``bars[start(i) : i + 1]``
(at most ``max_history`` bars) and :meth:`IndicatorState.restore` reopens every handle on
exactly those bars, which by TA-Lib's guarantee is the state of the uninterrupted handles.
:func:`batch_features` evaluates the same definition with the batch functions, one window
per epoch. For the first ``W + R`` bars ``start(i) == 0`` and the features are plainly the
batch over the full history; after that they differ from the full-history values only in
the last bits (the test measures this), which no model can notice, and training (batch) and
serving (live, restarted or not) see the same numbers.

Other definitions
-----------------
* All indicators run on the bar's consolidated mid close (``Bar.close``); ATR also on
  ``Bar.high``/``Bar.low``. A value is None until its lookback is filled: SMA/BBANDS 20 bars,
  EMA12 12, EMA26 26, RSI 15, ATR 15, MACD 34, MOM 11, volatility 21 bars.
* ``volatility_20`` is the *population* standard deviation (ddof 0, like ``numpy.std`` and
  TA-Lib ``STDDEV``) of the last 20 log returns ``log(close_t / close_{t-1})``. Both paths call
  one scalar kernel (``math.log``, ``math.fsum``): numpy's vectorised ``log`` and its pairwise
  reductions may round differently from scalar code in the last bit, which would break ``==``.
  ``fsum`` is correctly rounded, so the result does not depend on summation order.
* TA-Lib globals (unstable periods, compatibility mode) must stay at their defaults; both
  paths would follow a change consistently, but the None warm-up counts above would move.

Bars must arrive in strictly increasing ``bar_time``: :meth:`IndicatorState.on_bar` ignores
(returns None for) a bar at or before the last accepted one, which makes a replay after a
restart (Kafka delivers at least once) idempotent; :func:`batch_features` rejects such input.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import talib
from numpy.typing import NDArray
from talib import stream

from schemas.records import Bar

__all__ = [
    "BAR_FEATURE_NAMES",
    "CONTEXT_FEATURE_NAMES",
    "DEFAULT_MAX_HISTORY",
    "FEATURE_NAMES",
    "INDICATOR_NAMES",
    "MIN_MAX_HISTORY",
    "IndicatorState",
    "batch_features",
]

#: Model input columns, in the order every consumer (training, serving) must use.
FEATURE_NAMES: tuple[str, ...] = (
    "close", "sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "atr_14", "volatility_20", "momentum_10", "spread",
    "tick_count", "dispersion", "fresh_brokers", "minutes_to_next_event",
    "minutes_since_last_event", "news_count_1h", "news_sentiment_1h",
)
#: The technical indicators computed here (None during warm-up).
INDICATOR_NAMES: tuple[str, ...] = (
    "sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "atr_14", "volatility_20", "momentum_10",
)
#: Copied from the bar itself (``spread`` is ``Bar.mean_spread``).
BAR_FEATURE_NAMES: tuple[str, ...] = ("spread", "tick_count", "dispersion", "fresh_brokers")
#: Supplied by :class:`stages.context.ContextBook`, not by this module.
CONTEXT_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[18:]

#: Bars kept per symbol (W = 512 warm-up + R = 512 epoch); see the module docstring.
#: W = 512 lets the slowest seed (Wilder's 1/14 in RSI and ATR) decay to (13/14)**512, about
#: 3e-17 of its initial error, so rebuilt handles agree with the full history to rounding.
DEFAULT_MAX_HISTORY = 1024
#: Smallest allowed ``max_history``: W must cover the longest lookback (MACD, 34 bars). Note
#: that a small W is exact between the paths but further from the infinite-history values
#: (at 128, RSI can differ from it by ~1e-2): use it for tests, not production.
MIN_MAX_HISTORY = 128

_VOL_PERIOD = 20
# TA_MAType_SMA; at run time talib passes a plain int (its stub calls it an enum).
_MA_SMA: Any = 0
# Raised by a stream constructor on too short a history (the stubs do not declare it).
_InsufficientHistory: type[Exception] = talib.InsufficientHistory  # type: ignore[attr-defined]
_SNAPSHOT_VERSION = 1


def _split(max_history: int) -> tuple[int, int]:
    """(W, R): warm-up window of a rebuilt handle and epoch length."""
    if isinstance(max_history, bool) or not isinstance(max_history, int):
        raise TypeError(f"max_history must be an int, got {max_history!r}")
    if max_history < MIN_MAX_HISTORY:
        raise ValueError(f"max_history must be >= {MIN_MAX_HISTORY}, got {max_history}")
    warm = max_history // 2
    return warm, max_history - warm


def _epoch_start(i: int, warm: int, epoch: int) -> int:
    """First bar index of the history that bar ``i``'s features are computed over."""
    return max(0, (i // epoch) * epoch - warm)


def _volatility(closes: Sequence[float]) -> float:
    """Population std of the log returns of ``closes`` (21 closes -> 20 returns).

    The one kernel both paths call, so that they agree bit for bit.
    """
    n = len(closes) - 1
    rets = [math.log(closes[j + 1] / closes[j]) for j in range(n)]
    mean = math.fsum(rets) / n
    return math.sqrt(math.fsum([(r - mean) * (r - mean) for r in rets]) / n)


def _opt(x: float) -> float | None:
    """NaN (TA-Lib's "no value yet") -> None; plain Python float otherwise."""
    return None if x != x else float(x)


def _check_bar(bar: Bar) -> None:
    c, h, lo = bar.close, bar.high, bar.low
    if not (math.isfinite(c) and math.isfinite(h) and math.isfinite(lo)):
        raise ValueError(f"{bar.symbol} bar {bar.bar_time}: non-finite price")
    if c <= 0.0:
        raise ValueError(f"{bar.symbol} bar {bar.bar_time}: close must be > 0 (log returns)")


def _features(
    bar: Bar, ta: Sequence[float | None],
) -> dict[str, float | None]:
    """Assemble one feature dict in :data:`FEATURE_NAMES` order (context columns excluded)."""
    return {
        "close": bar.close,
        "sma_20": ta[0],
        "ema_12": ta[1],
        "ema_26": ta[2],
        "rsi_14": ta[3],
        "macd": ta[4],
        "macd_signal": ta[5],
        "macd_hist": ta[6],
        "bb_upper": ta[7],
        "bb_middle": ta[8],
        "bb_lower": ta[9],
        "atr_14": ta[10],
        "volatility_20": ta[11],
        "momentum_10": ta[12],
        "spread": bar.mean_spread,
        "tick_count": bar.tick_count,
        "dispersion": bar.dispersion,
        "fresh_brokers": bar.fresh_brokers,
    }


class IndicatorState:
    """Live indicators for one symbol: O(1) amortised per closed bar, restartable exactly.

    Promise: the dicts returned by :meth:`on_bar` equal, bit for bit, what
    :func:`batch_features` returns for the same bar sequence (from this state's first bar),
    and a state rebuilt with :meth:`restore` from a :meth:`snapshot` (also through JSON)
    continues exactly as the uninterrupted one would. Memory: ``max_history`` bars.
    """

    __slots__ = (
        "_atr", "_bb", "_closes", "_count", "_ema12", "_ema26", "_epoch", "_highs",
        "_last_bar_time", "_lows", "_macd", "_mom", "_ready", "_rsi", "_sma", "_warm",
        "max_history", "symbol",
    )

    def __init__(self, symbol: str, max_history: int = DEFAULT_MAX_HISTORY) -> None:
        self._warm, self._epoch = _split(max_history)
        self.symbol = symbol
        self.max_history = max_history
        self._count = 0  # bars accepted since creation (the index of the next bar)
        self._last_bar_time: int | None = None
        self._closes: deque[float] = deque(maxlen=max_history)
        self._highs: deque[float] = deque(maxlen=max_history)
        self._lows: deque[float] = deque(maxlen=max_history)
        self._close_handles()

    def _close_handles(self) -> None:
        self._ready = False  # True once every handle is open (then only the hot path runs)
        self._sma: stream.SMA | None = None
        self._ema12: stream.EMA | None = None
        self._ema26: stream.EMA | None = None
        self._rsi: stream.RSI | None = None
        self._macd: stream.MACD | None = None
        self._bb: stream.BBANDS | None = None
        self._atr: stream.ATR | None = None
        self._mom: stream.MOM | None = None

    @property
    def bars_seen(self) -> int:
        """How many bars this state has accepted (survives snapshot/restore)."""
        return self._count

    @property
    def last_bar_time(self) -> int | None:
        """``bar_time`` of the last accepted bar, None before the first."""
        return self._last_bar_time

    def on_bar(self, bar: Bar) -> dict[str, float | None] | None:
        """Add one closed bar; return its features (indicators None during warm-up).

        Returns None, changing nothing, for a bar at or before the last accepted
        ``bar_time`` (a replayed or out-of-order bar). Raises ValueError for a bar of another
        symbol or with a non-finite or non-positive price, also changing nothing.
        """
        if bar.symbol != self.symbol:
            raise ValueError(f"IndicatorState({self.symbol}) got a {bar.symbol} bar")
        last = self._last_bar_time
        if last is not None and bar.bar_time <= last:
            return None
        _check_bar(bar)
        c, h, lo = bar.close, bar.high, bar.low
        i = self._count
        closes = self._closes
        closes.append(c)
        self._highs.append(h)
        self._lows.append(lo)
        self._count = i + 1
        self._last_bar_time = bar.bar_time

        warm = self._warm
        if i % self._epoch == 0 and i > warm:
            # Epoch boundary with start(i) > 0: rebuild every handle from bars[i-W : i+1].
            self._open_handles(warm + 1)
            ta = self._values()
        elif not self._ready:
            # Warm-up (start == 0): update what is open, open what now has enough history.
            ta = self._warmup_step(c, h, lo)
        else:
            ta = self._update(c, h, lo)
        vol = None
        if i >= _VOL_PERIOD:
            n = len(closes)
            vol = _volatility([closes[j] for j in range(n - _VOL_PERIOD - 1, n)])
        ta[11] = vol
        return _features(bar, ta)

    # -- handle plumbing -------------------------------------------------------------------

    def _arrays(self, n: int) -> tuple[NDArray[np.float64], ...]:
        """The last ``n`` kept bars as float64 arrays (close, high, low)."""
        out = []
        for dq in (self._closes, self._highs, self._lows):
            a = np.fromiter(dq, dtype=np.float64, count=len(dq))
            out.append(np.ascontiguousarray(a[len(a) - n:]))
        return tuple(out)

    def _open_handles(self, n: int) -> None:
        """(Re)open every handle on the last ``n`` bars; too short a history leaves None."""
        c, h, lo = self._arrays(n)
        self._close_handles()
        for name in ("_sma", "_ema12", "_ema26", "_rsi", "_macd", "_bb", "_atr", "_mom"):
            with contextlib.suppress(_InsufficientHistory):
                setattr(self, name, _OPENERS[name](c, h, lo))
        self._ready = self._all_open()

    def _all_open(self) -> bool:
        return None not in (
            self._sma, self._ema12, self._ema26, self._rsi, self._macd, self._bb, self._atr,
            self._mom,
        )

    def _values(self) -> list[float | None]:
        """Current handle values as the 13 indicator slots (volatility filled by caller)."""
        out: list[float | None] = [None] * 13
        if self._sma is not None:
            out[0] = self._sma.value
        if self._ema12 is not None:
            out[1] = self._ema12.value
        if self._ema26 is not None:
            out[2] = self._ema26.value
        if self._rsi is not None:
            out[3] = self._rsi.value
        if self._macd is not None:
            out[4], out[5], out[6] = self._macd.value
        if self._bb is not None:
            out[7], out[8], out[9] = self._bb.value
        if self._atr is not None:
            out[10] = self._atr.value
        if self._mom is not None:
            out[12] = self._mom.value
        return [None if v is None else _opt(v) for v in out]

    def _update(self, c: float, h: float, lo: float) -> list[float | None]:
        """Hot path: every handle is open; one update each."""
        assert self._sma is not None and self._ema12 is not None and self._ema26 is not None
        assert self._rsi is not None and self._macd is not None and self._bb is not None
        assert self._atr is not None and self._mom is not None
        m, s, hist = self._macd.update(c)
        up, mid, dn = self._bb.update(c)
        return [
            _opt(self._sma.update(c)), _opt(self._ema12.update(c)), _opt(self._ema26.update(c)),
            _opt(self._rsi.update(c)), _opt(m), _opt(s), _opt(hist), _opt(up), _opt(mid),
            _opt(dn), _opt(self._atr.update(h, lo, c)), None, _opt(self._mom.update(c)),
        ]

    def _warmup_step(self, c: float, h: float, lo: float) -> list[float | None]:
        """Update the open handles; try to open the others on all bars so far (start == 0)."""
        missing = False
        for name in ("_sma", "_ema12", "_ema26", "_rsi", "_macd", "_bb", "_atr", "_mom"):
            handle = getattr(self, name)
            if handle is None:
                missing = True
            elif name == "_atr":
                handle.update(h, lo, c)
            else:
                handle.update(c)
        if missing:
            n = len(self._closes)
            ca, ha, la = self._arrays(n)
            for name in ("_sma", "_ema12", "_ema26", "_rsi", "_macd", "_bb", "_atr", "_mom"):
                if getattr(self, name) is None:
                    with contextlib.suppress(_InsufficientHistory):
                        setattr(self, name, _OPENERS[name](ca, ha, la))
            self._ready = self._all_open()
        return self._values()

    # -- persistence -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: the bars the current handles are built on, and the bar count.

        At most ``max_history`` bars per price series (about 60 KB of JSON at the default).
        """
        count = self._count
        keep = 0 if count == 0 else count - _epoch_start(count - 1, self._warm, self._epoch)
        n = len(self._closes)
        return {
            "version": _SNAPSHOT_VERSION,
            "symbol": self.symbol,
            "max_history": self.max_history,
            "count": count,
            "last_bar_time": self._last_bar_time,
            "close": [self._closes[j] for j in range(n - keep, n)],
            "high": [self._highs[j] for j in range(n - keep, n)],
            "low": [self._lows[j] for j in range(n - keep, n)],
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> IndicatorState:
        """Rebuild a state from :meth:`snapshot` output (handles reopened on the kept bars)."""
        if data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported IndicatorState snapshot version {data.get('version')}")
        self = cls(str(data["symbol"]), int(data["max_history"]))
        count = int(data["count"])
        closes = [float(x) for x in data["close"]]
        highs = [float(x) for x in data["high"]]
        lows = [float(x) for x in data["low"]]
        keep = 0 if count == 0 else count - _epoch_start(count - 1, self._warm, self._epoch)
        if not len(closes) == len(highs) == len(lows) == keep:
            raise ValueError(
                f"snapshot of {self.symbol} holds {len(closes)} bars, its count needs {keep}"
            )
        self._closes.extend(closes)
        self._highs.extend(highs)
        self._lows.extend(lows)
        self._count = count
        last = data["last_bar_time"]
        self._last_bar_time = None if last is None else int(last)
        if keep:
            self._open_handles(keep)
        return self


def _open_sma(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.SMA(c, timeperiod=20)


def _open_ema12(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.EMA(c, timeperiod=12)


def _open_ema26(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.EMA(c, timeperiod=26)


def _open_rsi(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.RSI(c, timeperiod=14)


def _open_macd(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)


def _open_bb(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=_MA_SMA)


def _open_atr(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.ATR(h, lo, c, timeperiod=14)


def _open_mom(c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64]) -> Any:
    return stream.MOM(c, timeperiod=10)


_OPENERS = {
    "_sma": _open_sma, "_ema12": _open_ema12, "_ema26": _open_ema26, "_rsi": _open_rsi,
    "_macd": _open_macd, "_bb": _open_bb, "_atr": _open_atr, "_mom": _open_mom,
}


def _batch_window(
    c: NDArray[np.float64], h: NDArray[np.float64], lo: NDArray[np.float64],
) -> list[NDArray[np.float64]]:
    """The 13 indicator series over one window (volatility slot left NaN)."""
    macd, sig, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    up, mid, dn = talib.BBANDS(
        c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=_MA_SMA
    )
    return [
        talib.SMA(c, timeperiod=20), talib.EMA(c, timeperiod=12), talib.EMA(c, timeperiod=26),
        talib.RSI(c, timeperiod=14), macd, sig, hist, up, mid, dn,
        talib.ATR(h, lo, c, timeperiod=14), np.full(len(c), np.nan),
        talib.MOM(c, timeperiod=10),
    ]


def batch_features(
    bars: Sequence[Bar], *, max_history: int = DEFAULT_MAX_HISTORY,
) -> list[dict[str, float | None]]:
    """Features for every bar of one symbol's history, equal (``==``) to the live path.

    ``bars`` is the whole sequence an :class:`IndicatorState` with the same ``max_history``
    would accept from its creation, in strictly increasing ``bar_time`` (ValueError
    otherwise, as for non-finite or non-positive prices or mixed symbols). Uses the TA-Lib
    batch functions over one window per epoch (see the module docstring).
    """
    warm, epoch = _split(max_history)
    n = len(bars)
    if n == 0:
        return []
    symbol = bars[0].symbol
    prev: int | None = None
    for b in bars:
        if b.symbol != symbol:
            raise ValueError(f"batch_features got {symbol} and {b.symbol} bars")
        if prev is not None and b.bar_time <= prev:
            raise ValueError(f"{symbol}: bar_time {b.bar_time} does not increase after {prev}")
        _check_bar(b)
        prev = b.bar_time
    closes = [b.close for b in bars]
    c = np.array(closes, dtype=np.float64)
    h = np.array([b.high for b in bars], dtype=np.float64)
    lo = np.array([b.low for b in bars], dtype=np.float64)

    cols = [np.full(n, np.nan) for _ in range(13)]
    first = 0
    while first < n:
        start = _epoch_start(first, warm, epoch)
        end = min(n, first + epoch)
        if start == 0:  # every epoch with start 0 shares one window: run them at once
            while end < n and _epoch_start(end, warm, epoch) == 0:
                end = min(n, end + epoch)
        window = _batch_window(c[start:end], h[start:end], lo[start:end])
        for col, series in zip(cols, window, strict=True):
            col[first:end] = series[first - start:]
        first = end

    out: list[dict[str, float | None]] = []
    lists = [col.tolist() for col in cols]
    for i, bar in enumerate(bars):
        ta: list[float | None] = [_opt(col[i]) for col in lists]
        ta[11] = _volatility(closes[i - _VOL_PERIOD: i + 1]) if i >= _VOL_PERIOD else None
        out.append(_features(bar, ta))
    return out
