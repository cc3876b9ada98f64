"""The stages' own configuration types: what a symbol is and how much risk may be taken.

They live with the stages (the lowest layer that uses them); ``topology.settings`` builds
them from ``TICKSTREAM_*`` variables and re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A tradable symbol: its pip size and per-symbol validation limits."""

    name: str
    pip_size: float
    max_spread_pips: float

    @property
    def base(self) -> str:
        return self.name[:3]

    @property
    def quote(self) -> str:
        return self.name[3:6]


@dataclass(frozen=True, slots=True)
class ExitLimits:
    """When an open position is closed whatever the model says (checked on every tick).

    ``stop_loss_pips``/``take_profit_pips``: the furthest the stop/target may be from the
    entry price; the level used is the nearer of this and the ATR level (``atr_stop_mult``,
    ``atr_take_mult``), or this alone when there is no ATR. 0: no cap (the ATR level only).
    ``max_hold_s``: a position open this long (event time, from its bar's close) is closed;
    0: no limit.
    """

    stop_loss_pips: float = 30.0
    take_profit_pips: float = 0.0
    max_hold_s: int = 3600


@dataclass(frozen=True, slots=True)
class RiskLimits:
    lot_size: float = 0.1
    max_position_per_symbol: int = 1
    max_total_positions: int = 5
    cooldown_s: int = 300
    entry_threshold: float = 0.6
    exit_threshold: float = 0.5
    max_spread_pips: float = 3.0
    event_blackout_min: int = 15
    atr_stop_mult: float = 2.0
    atr_take_mult: float = 3.0
    #: Exit limits of every symbol without its own entry in :attr:`exits_by_symbol`.
    exits: ExitLimits = field(default_factory=ExitLimits)
    exits_by_symbol: Mapping[str, ExitLimits] = field(default_factory=dict)

    def exits_for(self, symbol: str) -> ExitLimits:
        """The exit limits of ``symbol`` (its override, else the default)."""
        return self.exits_by_symbol.get(symbol, self.exits)
