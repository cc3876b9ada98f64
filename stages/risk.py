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
* Exits on a tick (:meth:`RiskManager.on_tick`, called for every clean tick of a symbol with
  an open position): a long is closed when the consolidated best **bid** reaches its stop
  (``bid <= stop_loss``) or target (``bid >= take_profit``), a short when the best **ask**
  does (``ask >= stop_loss``, ``ask <= take_profit``) -- the side a close would trade at, as
  ``tickstream backtest`` checks a venue's own quotes -- and either when the tick's time
  reaches the entry's bar close plus ``max_hold_s``. Checked in that order (stop and target
  on one tick: the stop). The entry's levels are the nearer of the ATR level and the pip cap
  of :class:`~stages.config.ExitLimits` (per symbol); they are the levels the entry command
  carries, so the executor's broker-side orders and this backstop agree. The CLOSE's
  ``reason`` starts with its code (``stop_loss: bid=...<=...``, ``take_profit: ...``,
  ``max_hold: ...``; :func:`exit_code`), its ``bar_time`` is the tick's time (the instant it
  was decided, not a bar), its ``price`` the bid or ask that triggered it, and its id
  ``command_id_for(symbol, tick_time, "CLOSE", model_id, code)`` with the entry's model.
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

``command_id`` is ``sha256("symbol|bar_time|action|model_id")[:32]`` (a tick exit appends
``|code``, so it never collides with a bar's CLOSE at the same millisecond), where
``model_id`` is the model's ``version@digest`` (the digest of the model file,
:attr:`stages.score.Model.model_id`; the version name alone when no id is given): a bar
replayed after a restart from an older snapshot produces the same id, so the executor
de-duplicates, while two different models that were both published as "v1" never give
colliding ids.

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
from stages.types import MINUTE_MS

__all__ = ["BLOCK_REASONS", "TICK_EXITS", "RiskManager", "command_id_for", "exit_code"]

#: Reason codes of the CLOSE commands made on a tick rather than at a bar close.
TICK_EXITS: tuple[str, ...] = ("stop_loss", "take_profit", "max_hold")

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


def command_id_for(symbol: str, bar_time: int, action: str, model_version: str,
                   tag: str = "") -> str:
    """Deterministic command id: the same decision always gets the same id."""
    key = f"{symbol}|{bar_time}|{action}|{model_version}" + (f"|{tag}" if tag else "")
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def exit_code(cmd: TradingCommand) -> str | None:
    """The tick-exit code of a CLOSE made on a tick (one of :data:`TICK_EXITS`), else None."""
    if cmd.action != "CLOSE":
        return None
    code = cmd.reason.split(":", 1)[0]
    return code if code in TICK_EXITS else None


class _SymbolState:
    """Position and decision memory of one symbol."""

    __slots__ = (
        "entry_command_id",
        "entry_model_id",
        "entry_model_version",
        "entry_price",
        "entry_time",
        "exit_deadline",
        "last_bar_time",
        "last_command_time",
        "position",
        "stop_loss",
        "take_profit",
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
        # Checked on every tick while open (see the module docstring):
        self.stop_loss: float | None = None
        self.take_profit: float | None = None
        self.exit_deadline: int | None = None  # epoch ms (max_hold_s), None: no limit
        self.entry_model_version: str | None = None  # a tick exit is made in its name
        self.entry_model_id: str | None = None

    @property
    def watched(self) -> bool:
        """Open with a level or a deadline to check on each tick."""
        return self.position != 0 and (
            self.stop_loss is not None or self.take_profit is not None
            or self.exit_deadline is not None)

    def flatten(self, at: int) -> None:
        """Closed by a command whose decision counts as ``at`` for the cooldown."""
        self.position = 0
        self.volume = 0.0
        self.entry_price = None
        self.entry_time = None
        self.entry_command_id = None
        self.stop_loss = None
        self.take_profit = None
        self.exit_deadline = None
        self.entry_model_version = None
        self.entry_model_id = None
        self.last_command_time = at

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "volume": self.volume,
            "entry_price": self.entry_price,
            "entry_time": self.entry_time,
            "entry_command_id": self.entry_command_id,
            "last_command_time": self.last_command_time,
            "last_bar_time": self.last_bar_time,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "exit_deadline": self.exit_deadline,
            "entry_model_version": self.entry_model_version,
            "entry_model_id": self.entry_model_id,
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
        # absent from snapshots written before tick exits existed: nothing to check
        st.stop_loss = _opt_float(d.get("stop_loss"))
        st.take_profit = _opt_float(d.get("take_profit"))
        st.exit_deadline = _opt_int(d.get("exit_deadline"))
        st.entry_model_version = _opt_str(d.get("entry_model_version"))
        st.entry_model_id = _opt_str(d.get("entry_model_id"))
        return st


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


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
        self._pip: dict[str, float] = {s: float(pip) for s, pip in pip_sizes.items()}
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

    def watching(self, symbol: str) -> bool:
        """True when ``symbol`` is open with a stop, target or deadline to check per tick."""
        st = self._states.get(symbol)
        return st is not None and st.watched

    def exit_levels(self, symbol: str) -> tuple[int, float | None, float | None, int | None]:
        """(position, stop_loss, take_profit, exit_deadline) of ``symbol``, for a caller that
        scans many ticks at once (``tickstream process``) with :meth:`on_tick`'s rule."""
        st = self._states.get(symbol)
        if st is None:
            return 0, None, None, None
        return st.position, st.stop_loss, st.take_profit, st.exit_deadline

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
            st.flatten(bar_time)
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

        # Distances from the entry: the ATR's, capped by the symbol's pips (module doc).
        stop_dist: float | None = None
        take_dist: float | None = None
        if atr is not None and atr > 0.0 and math.isfinite(atr):
            if limits.atr_stop_mult > 0.0:
                stop_dist = limits.atr_stop_mult * atr
            if limits.atr_take_mult > 0.0:
                take_dist = limits.atr_take_mult * atr
        exits = limits.exits_for(symbol)
        pip = self._pip[symbol]  # known: an unknown symbol was blocked above
        if exits.stop_loss_pips > 0.0:
            cap = exits.stop_loss_pips * pip
            stop_dist = cap if stop_dist is None else min(stop_dist, cap)
        if exits.take_profit_pips > 0.0:
            cap = exits.take_profit_pips * pip
            take_dist = cap if take_dist is None else min(take_dist, cap)
        sign = 1.0 if action == "BUY" else -1.0
        stop_loss = None if stop_dist is None else price - sign * stop_dist
        take_profit = None if take_dist is None else price + sign * take_dist
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
        st.stop_loss = stop_loss
        st.take_profit = take_profit
        # held from the bar's close, the instant the entry was decided
        st.exit_deadline = (bar_time + MINUTE_MS + exits.max_hold_s * 1000
                            if exits.max_hold_s > 0 else None)
        st.entry_model_version = model_version
        st.entry_model_id = model_id or model_version
        self._open += 1
        return cmd

    def on_tick(
        self, symbol: str, time_msc: int, bid: float, ask: float, *,
        trigger_recv_time_us: int, now_us: int, kill_switch: bool = False,
    ) -> TradingCommand | None:
        """The CLOSE a clean tick of ``symbol`` triggers (stop, target, holding time; see the
        module docstring), or None; ``bid``/``ask`` are the consolidated best quotes.

        Call it only for a symbol :meth:`watching` says is open (the caller keeps that as a
        flag so a flat symbol costs one attribute check per tick). Under the kill switch
        nothing is sent and the position stays; the check applies again on the next tick.
        """
        st = self._states.get(symbol)
        if st is None or st.position == 0:
            return None
        sl, tp, deadline = st.stop_loss, st.take_profit, st.exit_deadline
        if st.position > 0:
            px = bid
            if sl is not None and px <= sl:
                reason = f"stop_loss: bid={px!r}<={sl!r}"
            elif tp is not None and px >= tp:
                reason = f"take_profit: bid={px!r}>={tp!r}"
            elif deadline is not None and time_msc >= deadline:
                reason = f"max_hold: {time_msc}>={deadline}"
            else:
                return None
        else:
            px = ask
            if sl is not None and px >= sl:
                reason = f"stop_loss: ask={px!r}>={sl!r}"
            elif tp is not None and px <= tp:
                reason = f"take_profit: ask={px!r}<={tp!r}"
            elif deadline is not None and time_msc >= deadline:
                reason = f"max_hold: {time_msc}>={deadline}"
            else:
                return None
        if kill_switch:
            return None
        code = reason.split(":", 1)[0]
        version = st.entry_model_version or ""
        cmd = TradingCommand(
            command_id=command_id_for(
                symbol, time_msc, "CLOSE", st.entry_model_id or version, code),
            action="CLOSE",
            symbol=symbol,
            volume=st.volume,
            price=px,
            stop_loss=None,
            take_profit=None,
            confidence=1.0,
            model_version=version,
            reason=reason,
            bar_time=time_msc,
            trigger_recv_time_us=trigger_recv_time_us,
            created_time_us=now_us,
        )
        # For the cooldown a bar decision counts at its bar_time (its close minus a minute):
        # a tick exit counts the same way, from the instant it was decided.
        st.flatten(time_msc - MINUTE_MS)
        self._open -= 1
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
