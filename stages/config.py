"""The stages' own configuration types: what a symbol is and how much risk may be taken.

They live with the stages (the lowest layer that uses them); ``topology.settings`` builds
them from ``TICKSTREAM_*`` variables and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
