"""Risk management: turn a model score into at most one trading command per symbol and bar.

Rules (``RiskLimits`` from :mod:`topology.settings`):

* ``p_up`` is None (no model) or NaN: nothing, not even an exit; state untouched.
* Flat in the symbol -> entry: ``p_up >= entry_threshold`` BUY, ``p_up <= 1 - entry_threshold``
  SELL, if every gate passes, checked in this order (the first that fails is counted in
  :attr:`RiskManager.blocked_by_reason`): ``kill_switch``, ``max_position`` (per-symbol limit),
  ``max_total`` (open positions here + ``open_elsewhere``), ``cooldown``, ``unknown_symbol``
  (no pip size: the spread cannot be checked, so no entry), ``spread``
  (``spread > max_spread_pips * pip_size``), ``blackout``, ``bad_price``.
* Holding -> exit: long and ``p_up < exit_threshold``, or short and
  ``p_up > 1 - exit_threshold``: CLOSE. Exits ignore cooldown, spread and event blackout:
  reducing risk must never wait for good conditions.
* Kill switch: **no new commands of any kind**, CLOSE included. The issue says the switch
  "stops new commands at once", and the one thing an operator must be able to trust during an
  incident (bad model, bad feed, runaway executor) is that ``trading.commands`` goes silent;
  model-driven closes come from the same possibly broken model and data. Open positions stay
  protected by the broker-side stop-loss/take-profit sent with their entry, and flattening
  under a kill switch is an explicit operator action at the executor. When the switch is
  lifted, the exit rule applies again from the next bar.

Positions are *intended* positions: the manager assumes each command it emits is executed (the
design has no fill feedback). A position is one unit (+1 long, -1 short, 0 flat) of
``lot_size`` lots; entries are only taken from flat, so there is no pyramiding and
``max_position_per_symbol`` acts as "0 disables entries in the symbol, >= 1 allows one".

Time: cooldown is measured in event time (``bar_time``, epoch ms), never the wall clock, so a
replay decides exactly as live did. ``now_us`` is only copied into ``created_time_us``. A bar
at or before the last bar decided for the symbol is ignored (counted as ``stale_bar``): a
re-delivered bar after its decision was stored cannot issue a second command.

``command_id`` is ``sha256("symbol|bar_time|action|model_id")[:32]``, where ``model_id`` is the
model's ``version@digest`` (the digest of the model file, :attr:`stages.score.Model.model_id`;
the version name alone when no id is given): a bar replayed after a restart from an older
snapshot produces the same id, so the executor de-duplicates, while two different models
that were both published as "v1" never give colliding ids.

Total positions: each worker owns a set of symbol partitions, so this manager only counts the
symbols it holds; the caller passes ``open_elsewhere`` (positions held by other workers, e.g.
from a global table) to make ``max_total_positions`` global. Without it the limit is per
worker. Call :meth:`RiskManager.drop_symbol` when a partition is revoked so a symbol's position
is never counted by two workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from schemas.records import TradingCommand
from stages.config import RiskLimits

__all__ = ["BLOCK_REASONS", "RiskManager", "command_id_for"]

#: Keys of :attr:`RiskManager.blocked_by_reason` (all present, starting at 0).
BLOCK_REASONS: tuple[str, ...] = (
    "kill_switch",
    "max_position",
    "max_total",
    "cooldown",
    "unknown_symbol",
    "spread",
    "blackout",
    "bad_price",
    "stale_bar",
)


def command_id_for(symbol: str, bar_time: int, action: str, model_version: str) -> str:
    """Deterministic command id: the same decision always gets the same id."""
    key = f"{symbol}|{bar_time}|{action}|{model_version}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


class _SymbolState:
    """Position and decision memory of one symbol."""

    __slots__ = (
        "entry_command_id",
        "entry_price",
        "entry_time",
        "last_bar_time",
        "last_command_time",
        "position",
        "volume",
    )

    def __init__(self) -> None:
        self.position = 0  # +1 long, -1 short, 0 flat
        self.volume = 0.0  # lots held (what a CLOSE must close)
        self.entry_price: float | None = None
        self.entry_time: int | None = None  # bar_time of the entry, epoch ms
        self.entry_command_id: str | None = None
        self.last_command_time: int | None = None  # bar_time of the last command, epoch ms
        self.last_bar_time: int | None = None  # last bar decided, epoch ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "volume": self.volume,
            "entry_price": self.entry_price,
            "entry_time": self.entry_time,
            "entry_command_id": self.entry_command_id,
            "last_command_time": self.last_command_time,
            "last_bar_time": self.last_bar_time,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _SymbolState:
        st = cls()
        pos = int(d.get("position", 0))
        if pos not in (-1, 0, 1):
            raise ValueError(f"position must be -1, 0 or 1, got {pos}")
        st.position = pos
        st.volume = float(d.get("volume", 0.0))
        st.entry_price = _opt_float(d.get("entry_price"))
        st.entry_time = _opt_int(d.get("entry_time"))
        cid = d.get("entry_command_id")
        st.entry_command_id = None if cid is None else str(cid)
        st.last_command_time = _opt_int(d.get("last_command_time"))
        st.last_bar_time = _opt_int(d.get("last_bar_time"))
        return st


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


class RiskManager:
    """Applies :class:`RiskLimits` to model scores; keeps per-symbol positions (see module doc).

    ``pip_sizes`` maps symbol -> pip size in price units (``SymbolSpec.pip_size``); ``spread``
    given to :meth:`decide` is in price units (ask - bid).
    """

    def __init__(self, limits: RiskLimits, pip_sizes: Mapping[str, float]) -> None:
        if not 0.5 < limits.entry_threshold <= 1.0:
            raise ValueError(
                f"entry_threshold must be in (0.5, 1], got {limits.entry_threshold}: at or below "
                "0.5 the BUY and SELL regions overlap"
            )
        if not 0.0 <= limits.exit_threshold <= limits.entry_threshold:
            raise ValueError(
                f"exit_threshold must be in [0, entry_threshold={limits.entry_threshold}], got "
                f"{limits.exit_threshold}: above it a new position would be closed at once"
            )
        if limits.lot_size <= 0:
            raise ValueError(f"lot_size must be > 0, got {limits.lot_size}")
        self.limits = limits
        self._buy_at = float(limits.entry_threshold)
        self._sell_at = 1.0 - self._buy_at
        self._exit_long_below = float(limits.exit_threshold)
        self._exit_short_above = 1.0 - self._exit_long_below
        self._cooldown_ms = int(limits.cooldown_s) * 1000
        self._max_spread: dict[str, float] = {
            s: float(limits.max_spread_pips) * float(pip) for s, pip in pip_sizes.items()
        }
        self._states: dict[str, _SymbolState] = {}
        self._open = 0  # symbols with a non-zero position in this manager
        self.blocked_by_reason: dict[str, int] = dict.fromkeys(BLOCK_REASONS, 0)

    # -- queries ----------------------------------------------------------------------------

    @property
    def open_positions(self) -> int:
        """Open positions held by this manager (not counting ``open_elsewhere``)."""
        return self._open

    def symbols(self) -> list[str]:
        """The symbols this manager holds state for."""
        return list(self._states)

    def position(self, symbol: str) -> int:
        """+1 long, -1 short, 0 flat."""
        st = self._states.get(symbol)
        return 0 if st is None else st.position

    # -- decision ---------------------------------------------------------------------------

    def decide(
        self,
        *,
        symbol: str,
        bar_time: int,
        p_up: float | None,
        price: float,
        atr: float | None,
        spread: float,
        event_blackout: bool,
        kill_switch: bool,
        model_version: str,
        trigger_recv_time_us: int,
        now_us: int,
        open_elsewhere: int = 0,
        model_id: str | None = None,
    ) -> TradingCommand | None:
        """The command for this symbol's closed bar, or None; updates the position on a command.

        ``p_up`` is P(up) from the model (None: no model), ``price`` the bar close the decision
        is taken at, ``atr`` the ATR in price units for stops (None: no stops), ``spread`` in
        price units, ``now_us`` the wall clock supplied by the caller (copied into
        ``created_time_us`` only).
        """
        if p_up is None or p_up != p_up:  # None or NaN: no model, no decision
            return None
        blocked = self.blocked_by_reason
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _SymbolState()
        last_bar = st.last_bar_time
        if last_bar is not None and bar_time <= last_bar:
            blocked["stale_bar"] += 1
            return None
        st.last_bar_time = bar_time

        pos = st.position
        if pos != 0:
            if pos > 0 and p_up < self._exit_long_below:
                confidence = 1.0 - p_up
                reason = f"exit long: p_up={p_up:.3f}<{self._exit_long_below:.3f}"
            elif pos < 0 and p_up > self._exit_short_above:
                confidence = p_up
                reason = f"exit short: p_up={p_up:.3f}>{self._exit_short_above:.3f}"
            else:
                return None
            if kill_switch:
                blocked["kill_switch"] += 1
                return None
            cmd = TradingCommand(
                command_id=command_id_for(
                    symbol, bar_time, "CLOSE", model_id or model_version),
                action="CLOSE",
                symbol=symbol,
                volume=st.volume,
                price=price,
                stop_loss=None,
                take_profit=None,
                confidence=confidence,
                model_version=model_version,
                reason=reason,
                bar_time=bar_time,
                trigger_recv_time_us=trigger_recv_time_us,
                created_time_us=now_us,
            )
            st.position = 0
            st.volume = 0.0
            st.entry_price = None
            st.entry_time = None
            st.entry_command_id = None
            st.last_command_time = bar_time
            self._open -= 1
            return cmd

        if p_up >= self._buy_at:
            action = "BUY"
            confidence = p_up
            reason = f"entry long: p_up={p_up:.3f}>={self._buy_at:.3f}"
        elif p_up <= self._sell_at:
            action = "SELL"
            confidence = 1.0 - p_up
            reason = f"entry short: p_up={p_up:.3f}<={self._sell_at:.3f}"
        else:
            return None

        limits = self.limits
        if kill_switch:
            blocked["kill_switch"] += 1
            return None
        if limits.max_position_per_symbol < 1:
            blocked["max_position"] += 1
            return None
        if self._open + open_elsewhere >= limits.max_total_positions:
            blocked["max_total"] += 1
            return None
        last_cmd = st.last_command_time
        if last_cmd is not None and bar_time - last_cmd < self._cooldown_ms:
            blocked["cooldown"] += 1
            return None
        max_spread = self._max_spread.get(symbol)
        if max_spread is None:
            blocked["unknown_symbol"] += 1
            return None
        if not spread <= max_spread:  # NaN spread blocks too
            blocked["spread"] += 1
            return None
        if event_blackout:
            blocked["blackout"] += 1
            return None
        if not (price > 0.0 and math.isfinite(price)):
            blocked["bad_price"] += 1
            return None

        stop_loss: float | None = None
        take_profit: float | None = None
        if atr is not None and atr > 0.0 and math.isfinite(atr):
            sign = 1.0 if action == "BUY" else -1.0
            if limits.atr_stop_mult > 0.0:
                stop_loss = price - sign * limits.atr_stop_mult * atr
            if limits.atr_take_mult > 0.0:
                take_profit = price + sign * limits.atr_take_mult * atr
        cid = command_id_for(symbol, bar_time, action, model_id or model_version)
        volume = float(limits.lot_size)
        cmd = TradingCommand(
            command_id=cid,
            action=action,
            symbol=symbol,
            volume=volume,
            price=price,
            stop_loss=stop_loss,
            take_profit=take_profit,
            confidence=confidence,
            model_version=model_version,
            reason=reason,
            bar_time=bar_time,
            trigger_recv_time_us=trigger_recv_time_us,
            created_time_us=now_us,
        )
        st.position = 1 if action == "BUY" else -1
        st.volume = volume
        st.entry_price = price
        st.entry_time = bar_time
        st.entry_command_id = cid
        st.last_command_time = bar_time
        self._open += 1
        return cmd

    # -- state ------------------------------------------------------------------------------

    def snapshot_symbol(self, symbol: str) -> dict[str, Any]:
        """JSON-ready state of one symbol (flat defaults for a symbol never seen)."""
        st = self._states.get(symbol)
        return (st if st is not None else _SymbolState()).to_dict()

    def restore_symbol(self, symbol: str, d: Mapping[str, Any] | None) -> None:
        """Replace one symbol's state from :meth:`snapshot_symbol` output (None: flat, fresh)."""
        st = None if d is None else _SymbolState.from_dict(d)  # parse before changing anything
        old = self._states.pop(symbol, None)
        if old is not None and old.position != 0:
            self._open -= 1
        if st is not None:
            self._states[symbol] = st
            if st.position != 0:
                self._open += 1

    def drop_symbol(self, symbol: str) -> None:
        """Forget a symbol (its partition moved to another worker); same as restoring None."""
        self.restore_symbol(symbol, None)
