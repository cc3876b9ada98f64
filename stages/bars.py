"""One-minute bars of the consolidated mid, per symbol, in event time.

The :class:`BarBuilder` is fed the *consolidated* values of every accepted tick (mid of the
best bid/offer, best bid, best ask, consolidated spread, fresh broker count, dispersion) and
emits a :class:`schemas.records.Bar` when the minute is over.

Promises:

* ``bar_time`` is the start of the minute of ``time_msc`` (floored to 60 000 ms, UTC epoch).
* A bar is closed only by a tick of a **later** minute (which then opens the next bar and whose
  ``recv_time_us`` becomes the bar's ``trigger_recv_time_us``, so end-to-end latency can be
  measured from the tick that made the bar available), by :meth:`BarBuilder.flush` (end of
  input) or by :meth:`BarBuilder.idle_flush` (the market went quiet; event-time estimate
  supplied by the caller, never a wall clock here).
* Minutes without ticks produce no bar (no gap filling: a flat synthetic bar would be invented
  data and would distort volatility indicators).
* A bar is never reopened. A tick of an *earlier* minute than the open bar (brokers lag each
  other; the validator orders ticks per broker only) is **folded into the open bar**: it counts
  in ``tick_count`` and its consolidated values update high/low/close like any other tick.
  This is correct for the consolidated stream, which is produced in arrival order: the
  consolidated quote after a lagging broker's tick is still the current market view. Such ticks
  are counted in :attr:`BarBuilder.late_ticks`. If no bar is open (after a flush) a tick of a
  minute at or before the last closed bar cannot be folded anywhere and is dropped, counted in
  :attr:`BarBuilder.late_dropped`, so no minute is ever emitted twice.
* ``fresh_brokers`` and ``bid_close``/``ask_close`` are the values at the bar's last tick;
  ``mean_spread`` and ``dispersion`` are the means over the bar's ticks.
* :meth:`BarBuilder.snapshot`/:meth:`BarBuilder.restore` carry the open bar across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from schemas.records import Bar
from stages.types import MINUTE_MS

__all__ = ["BarBuilder"]

_OPEN_FIELDS = (
    "bar_time",
    "open",
    "high",
    "low",
    "close",
    "bid_close",
    "ask_close",
    "tick_count",
    "spread_sum",
    "fresh_brokers",
    "dispersion_sum",
)


class BarBuilder:
    """Builds 1-minute OHLC bars of the consolidated mid for one symbol."""

    __slots__ = (
        "_ask",
        "_bar_time",
        "_bid",
        "_close",
        "_count",
        "_disp_sum",
        "_fresh",
        "_high",
        "_last_closed",
        "_low",
        "_open",
        "_spread_sum",
        "late_dropped",
        "late_ticks",
        "symbol",
    )

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._bar_time = 0
        self._open = 0.0
        self._high = 0.0
        self._low = 0.0
        self._close = 0.0
        self._bid = 0.0
        self._ask = 0.0
        self._count = 0  # 0 means "no open bar"
        self._spread_sum = 0.0
        self._fresh = 0
        self._disp_sum = 0.0
        #: bar_time of the latest closed bar; ticks at or before it never open a new bar.
        self._last_closed: int | None = None
        #: Ticks of an earlier minute folded into the open bar.
        self.late_ticks = 0
        #: Ticks of an already closed minute that arrived while no bar was open (dropped).
        self.late_dropped = 0

    # ------------------------------------------------------------------ hot path

    def add(
        self,
        time_msc: int,
        mid: float,
        bid: float,
        ask: float,
        spread: float,
        fresh_brokers: int,
        dispersion: float,
        recv_time_us: int,
    ) -> Bar | None:
        """Add one consolidated tick; returns the bar it closed, if any."""
        bt = time_msc - time_msc % MINUTE_MS
        if self._count:
            if bt > self._bar_time:
                bar = self._emit(recv_time_us)
                self._start(bt, mid, bid, ask, spread, fresh_brokers, dispersion)
                return bar
            if bt < self._bar_time:
                self.late_ticks += 1
            if mid > self._high:
                self._high = mid
            elif mid < self._low:
                self._low = mid
            self._close = mid
            self._bid = bid
            self._ask = ask
            self._count += 1
            self._spread_sum += spread
            self._fresh = fresh_brokers
            self._disp_sum += dispersion
            return None
        last = self._last_closed
        if last is not None and bt <= last:
            self.late_dropped += 1
            return None
        self._start(bt, mid, bid, ask, spread, fresh_brokers, dispersion)
        return None

    def _start(
        self,
        bt: int,
        mid: float,
        bid: float,
        ask: float,
        spread: float,
        fresh_brokers: int,
        dispersion: float,
    ) -> None:
        self._bar_time = bt
        self._open = self._high = self._low = self._close = mid
        self._bid = bid
        self._ask = ask
        self._count = 1
        self._spread_sum = spread
        self._fresh = fresh_brokers
        self._disp_sum = dispersion

    def _emit(self, trigger_recv_time_us: int) -> Bar:
        n = self._count
        bar = Bar(
            symbol=self.symbol,
            bar_time=self._bar_time,
            open=self._open,
            high=self._high,
            low=self._low,
            close=self._close,
            bid_close=self._bid,
            ask_close=self._ask,
            tick_count=n,
            mean_spread=self._spread_sum / n,
            fresh_brokers=self._fresh,
            dispersion=self._disp_sum / n,
            trigger_recv_time_us=trigger_recv_time_us,
        )
        self._last_closed = self._bar_time
        self._count = 0
        return bar

    # ------------------------------------------------------------------ closing

    @property
    def open_bar_time(self) -> int | None:
        """Minute start of the open bar, or None when no bar is open."""
        return self._bar_time if self._count else None

    def flush(self, trigger_recv_time_us: int = 0) -> Bar | None:
        """Close and return the open bar (end of input or idle timeout); None if none is open."""
        if not self._count:
            return None
        return self._emit(trigger_recv_time_us)

    def idle_flush(
        self, now_event_ms: int, idle_ms: int, trigger_recv_time_us: int = 0
    ) -> Bar | None:
        """Close the open bar once ``now_event_ms >= bar_time + 60 000 + idle_ms``.

        The caller (a timer) supplies an event-time estimate; without it a quiet market would
        hold the last bar of a burst back until the next tick, possibly hours later.
        """
        if self._count and now_event_ms >= self._bar_time + MINUTE_MS + idle_ms:
            return self._emit(trigger_recv_time_us)
        return None

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state, including the open bar (``None`` when none is open)."""
        open_bar: dict[str, Any] | None = None
        if self._count:
            open_bar = {
                "bar_time": self._bar_time,
                "open": self._open,
                "high": self._high,
                "low": self._low,
                "close": self._close,
                "bid_close": self._bid,
                "ask_close": self._ask,
                "tick_count": self._count,
                "spread_sum": self._spread_sum,
                "fresh_brokers": self._fresh,
                "dispersion_sum": self._disp_sum,
            }
        return {
            "symbol": self.symbol,
            "open_bar": open_bar,
            "last_closed": self._last_closed,
            "late_ticks": self.late_ticks,
            "late_dropped": self.late_dropped,
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(str(data["symbol"]))
        last = data.get("last_closed")
        obj._last_closed = None if last is None else int(last)
        obj.late_ticks = int(data.get("late_ticks", 0))
        obj.late_dropped = int(data.get("late_dropped", 0))
        ob = data.get("open_bar")
        if ob is not None:
            missing = [k for k in _OPEN_FIELDS if k not in ob]
            if missing:
                raise ValueError(f"open_bar snapshot lacks {missing}")
            obj._bar_time = int(ob["bar_time"])
            obj._open = float(ob["open"])
            obj._high = float(ob["high"])
            obj._low = float(ob["low"])
            obj._close = float(ob["close"])
            obj._bid = float(ob["bid_close"])
            obj._ask = float(ob["ask_close"])
            obj._count = int(ob["tick_count"])
            obj._spread_sum = float(ob["spread_sum"])
            obj._fresh = int(ob["fresh_brokers"])
            obj._disp_sum = float(ob["dispersion_sum"])
        return obj
