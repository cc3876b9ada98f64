"""Internal value types shared by the stages (the wire records live in ``schemas/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MINUTE_MS = 60_000


@dataclass(slots=True)
class Tick:
    """A decoded raw tick as the stages see it."""

    broker: str
    symbol: str
    time_msc: int  # broker time, epoch ms UTC (event time)
    bid: float
    ask: float
    recv_time_us: int = 0  # collector receive time, epoch µs UTC
    seq: int | None = None
    last: float | None = None
    volume: float | None = None
    #: Where the tick came from, opaque to the stages (the live agent keeps the record's
    #: bytes, key, topic, partition and offset here, so a tick the validator held and
    #: later rejects is dead-lettered with its original bytes). Never compared or stored.
    origin: Any = field(default=None, compare=False, repr=False)

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) * 0.5


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a tick was not accepted: a stable reason code and a human-readable detail."""

    reason: str
    detail: str


# Reason codes (stable: downstream dashboards and the dead-letter consumers key on them).
CROSSED_QUOTE = "crossed_quote"
NON_POSITIVE_PRICE = "non_positive_price"
SPREAD_TOO_WIDE = "spread_too_wide"
PRICE_JUMP = "price_jump"
FUTURE_TIMESTAMP = "future_timestamp"
STALE_TIMESTAMP = "stale_timestamp"
OUT_OF_ORDER = "out_of_order"
UNKNOWN_SYMBOL = "unknown_symbol"
MALFORMED = "malformed"
BAD_KEY = "bad_key"  # the record's key is not its symbol (or absent): see agents/pipeline
