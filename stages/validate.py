"""Decide, per tick, whether a broker quote is usable: accept it or reject it with a reason.

One :class:`Validator` serves one symbol and keeps state for every broker quoting it, so a
quote from one broker can confirm a large move seen at another.

Checks, in order (the first failing one names the rejection; see ``stages.types``):

``unknown_symbol``
    the validator has no :class:`SymbolSpec`, or the tick's symbol is not the validator's.
``malformed``
    bid or ask is NaN or infinite, or so large that their mid would overflow to infinity.
``non_positive_price``
    bid <= 0 or ask <= 0.
``crossed_quote``
    ask < bid (a locked quote, ask == bid, is valid).
``spread_too_wide``
    (ask - bid) / pip_size > max_spread_pips.
``future_timestamp`` / ``stale_timestamp``
    time_msc > now_ms + max_future_skew_ms, or time_msc < now_ms - max_staleness_ms.
    ``now_ms`` is the caller's reference clock, normally the collector receive time
    (``recv_time_us // 1000``), so replaying recorded ticks stays deterministic. A tick
    without a receive time is checked against the record's broker timestamp or, failing
    that, the worker's clock (``Pipeline.on_tick``); only when no clock at all is known
    (``now_ms <= 0``: offline input without receive times) are both checks skipped.
``out_of_order``
    time_msc is earlier than the broker's last accepted tick (equal is fine: several ticks
    share a millisecond). While a tick of the broker is held (see below), the reference is
    the latest held tick instead: a tick older than one that may yet be accepted would
    break the broker's time order if it were.
``price_jump``
    the mid moved more than ``limit = max(jump_min_pips * pip_size,
    jump_sigma_mult * ewma_abs_change)`` from the broker's last accepted mid, and the move
    was not confirmed. ``ewma_abs_change`` is an exponentially weighted mean of absolute mid
    changes between the broker's accepted ticks, so the limit widens in busy markets.

Jump confirmation: a real news move is large too, so a jumping tick is not rejected at once
but *held* (``process`` returns nothing for it). It is released as accepted when

* ``confirm_ticks`` further ticks of the same broker each stay within the limit of the
  previously held tick (the new level holds), or
* any quote from another broker, passing its own static checks, lies within the limit of
  the latest held mid (the market really moved), or
* when the jump is found, another broker's last accepted quote (at most
  ``cross_confirm_ms`` apart in event time) already lies within the limit (this broker was
  lagging and is catching up).

It is rejected as ``price_jump`` when the broker's next valid tick does not confirm it (the
spike reverted); the ticks held behind it and that next tick are then decided afresh against
the old level. Ticks rejected by the static checks are not evidence and leave held ticks
alone. :meth:`Validator.flush` releases whatever is still held as *accepted*: at the end of
the input there is no evidence of a spike, and dropping a genuine move would corrupt bars,
whereas one unconfirmed outlier is bounded by the limit's own scale. A held tick waits for
its broker's next tick (or another broker's confirmation), which costs latency on slow
feeds, never correctness.

Guarantees: every input tick is emitted exactly once over the life of a validator (by
``process`` or ``flush``), with ``None`` (accepted) or a :class:`Reject`; a broker's
accepted ticks come out in input order; rejected ticks never change state; only accepted
ticks update the volatility estimate. Everything is deterministic: time enters only as
``time_msc`` and ``now_ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stages.config import SymbolSpec
from stages.types import (
    CROSSED_QUOTE,
    FUTURE_TIMESTAMP,
    MALFORMED,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    PRICE_JUMP,
    SPREAD_TOO_WIDE,
    STALE_TIMESTAMP,
    UNKNOWN_SYMBOL,
    Reject,
    Tick,
)

Decision = tuple[Tick, Reject | None]

_SNAPSHOT_VERSION = 1
_DEFAULT_PIP = 0.0001
_DEFAULT_SPREAD_PIPS = 5.0
# Tolerance for "exactly at the spread limit": (1.10050 - 1.10000) / 0.0001 is not 5.0 in
# binary floating point, and a quote exactly at the limit is allowed.
_SPREAD_EPS_PIPS = 1e-6


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Limits and switches of one validation level for one symbol.

    Build with :meth:`for_level`; override single fields with ``dataclasses.replace``.
    """

    level: str
    pip_size: float
    max_spread_pips: float
    max_future_skew_ms: int = 2_000
    max_staleness_ms: int = 60_000
    jump_min_pips: float = 10.0
    jump_sigma_mult: float = 15.0
    vol_halflife_ticks: float = 100.0
    confirm_ticks: int = 1
    cross_confirm_ms: int = 5_000
    check_spread: bool = True
    check_future: bool = True
    check_stale: bool = True
    check_order: bool = True
    check_jump: bool = True

    def __post_init__(self) -> None:
        if not self.pip_size > 0:
            raise ValueError(f"pip_size must be > 0, got {self.pip_size}")
        if self.confirm_ticks < 1:
            raise ValueError(f"confirm_ticks must be >= 1, got {self.confirm_ticks}")
        if not self.vol_halflife_ticks > 0:
            raise ValueError(f"vol_halflife_ticks must be > 0, got {self.vol_halflife_ticks}")

    @classmethod
    def for_level(cls, level: str, spec: SymbolSpec | None) -> ValidationRules:
        """The defaults of ``level`` (basic, advanced, enterprise) for ``spec``.

        * basic: structure only (unknown symbol, malformed, non-positive, crossed,
          out_of_order).
        * advanced: adds spread_too_wide, future/stale timestamps (2 s skew, 60 s staleness)
          and price_jump (floor 10 pips, 15x volatility, confirmed by 1 tick).
        * enterprise: tighter (0.5 s skew, 30 s staleness, floor 8 pips, 10x volatility,
          2 confirming ticks, cross-broker evidence at most 2 s apart).

        ``spec`` None (a symbol nobody configured) yields rules with a default pip size;
        a validator without a spec rejects everything as ``unknown_symbol`` anyway.
        """
        pip = spec.pip_size if spec is not None else _DEFAULT_PIP
        spread = spec.max_spread_pips if spec is not None else _DEFAULT_SPREAD_PIPS
        if level == "basic":
            return cls(
                level=level, pip_size=pip, max_spread_pips=spread, check_spread=False,
                check_future=False, check_stale=False, check_jump=False,
            )
        if level == "advanced":
            return cls(level=level, pip_size=pip, max_spread_pips=spread)
        if level == "enterprise":
            return cls(
                level=level, pip_size=pip, max_spread_pips=spread, max_future_skew_ms=500,
                max_staleness_ms=30_000, jump_min_pips=8.0, jump_sigma_mult=10.0,
                vol_halflife_ticks=100.0, confirm_ticks=2, cross_confirm_ms=2_000,
            )
        raise ValueError(f"unknown validation level {level!r} (basic, advanced, enterprise)")


class _BrokerState:
    """What the validator remembers of one broker: its accepted level and held ticks."""

    __slots__ = ("ewma", "last_mid", "last_time", "pending")

    def __init__(self) -> None:
        self.last_time: int | None = None  # time_msc of the last accepted tick
        self.last_mid: float | None = None  # mid of the last accepted tick
        self.ewma = 0.0  # EWMA of |mid change| between accepted ticks, in price units
        self.pending: list[Tick] = []  # held: a jumping tick, then its confirmations so far


class Validator:
    """Validation and spike filtering of one symbol's ticks, all brokers together.

    See the module docstring for the rules. ``rejected_by_reason`` and ``accepted`` count
    final decisions; ``pending_count`` is the number of ticks currently held.
    """

    __slots__ = (
        "_alpha",
        "_brokers",
        "_jump_floor",
        "_max_spread",
        "_pending_brokers",
        "accepted",
        "rejected_by_reason",
        "rules",
        "symbol_spec",
    )

    def __init__(self, symbol_spec: SymbolSpec | None, rules: ValidationRules) -> None:
        self.symbol_spec = symbol_spec
        self.rules = rules
        self._alpha = 1.0 - 0.5 ** (1.0 / rules.vol_halflife_ticks)
        self._jump_floor = rules.jump_min_pips * rules.pip_size
        self._max_spread = rules.max_spread_pips + _SPREAD_EPS_PIPS
        self._brokers: dict[str, _BrokerState] = {}
        self._pending_brokers: dict[str, _BrokerState] = {}  # insertion-ordered subset
        self.rejected_by_reason: dict[str, int] = {}
        self.accepted = 0

    # ------------------------------------------------------------------ public API

    @property
    def holding(self) -> bool:
        """Whether any tick is held (O(1); brokers are in the pending map only while they
        hold ticks)."""
        return bool(self._pending_brokers)

    @property
    def pending_count(self) -> int:
        """Ticks held awaiting confirmation (emitted later by ``process`` or ``flush``)."""
        return sum(len(st.pending) for st in self._pending_brokers.values())

    def check(self, tick: Tick, now_ms: int) -> Reject | None:
        """The checks that need no broker state (symbol, malformed, non-positive, crossed,
        spread, future/stale), counted when they reject.

        The pipeline runs these *before* dedupe, so a bad tick never enters any stage's
        state (a NaN in the dedupe window, a far-future time advancing a clock), and then
        feeds the tick to :meth:`process` with ``checked=True``.
        """
        reject = self._static_check(tick, now_ms)
        return None if reject is None else self._reject(reject)

    def process(self, tick: Tick, now_ms: int, checked: bool = False) -> list[Decision]:
        """Feed one tick; return the decisions that became final, in input order.

        Usually exactly one: ``(tick, None)`` or ``(tick, Reject)``. Empty when the tick is
        held as a possible spike; longer when it resolves held ticks (they come first).
        ``now_ms`` is the reference clock for the future/stale checks (skipped when <= 0).
        ``checked``: :meth:`check` already passed this tick (its checks are not repeated).
        """
        if not checked:
            reject = self._static_check(tick, now_ms)
            if reject is not None:
                return [(tick, self._reject(reject))]
        st = self._brokers.get(tick.broker)
        if st is None:
            st = self._brokers[tick.broker] = _BrokerState()
        rules = self.rules
        if rules.check_order:
            pending = st.pending
            ref = pending[-1].time_msc if pending else st.last_time
            if ref is not None and tick.time_msc < ref:
                return [(tick, self._reject(Reject(
                    OUT_OF_ORDER,
                    f"time_msc {tick.time_msc} < {ref} of broker {tick.broker!r}",
                )))]
        out: list[Decision] = []
        if not rules.check_jump:
            self._accept(st, tick, out)
            return out
        if self._pending_brokers:
            self._confirm_others(tick, out)
        self._feed(st, tick, out)
        return out

    def flush(self) -> list[Decision]:
        """Release every held tick as accepted (end of input: no evidence of a spike).

        Held ticks come out broker by broker, brokers in the order of their first held
        tick's ``time_msc`` (then broker name), so the result is deterministic.
        """
        out: list[Decision] = []
        while self._pending_brokers:
            order = sorted(
                self._pending_brokers.items(), key=lambda kv: (kv[1].pending[0].time_msc, kv[0])
            )
            for _, st in order:
                while st.pending:
                    self._release(st, out)
        return out

    # ------------------------------------------------------------------ checks

    def _static_check(self, tick: Tick, now_ms: int) -> Reject | None:
        """Checks that need no broker state (a rejection here is no evidence of anything)."""
        spec = self.symbol_spec
        if spec is None:
            return Reject(UNKNOWN_SYMBOL, f"no symbol spec for {tick.symbol!r}")
        if tick.symbol != spec.name:
            return Reject(UNKNOWN_SYMBOL, f"{tick.symbol!r} routed to validator of {spec.name}")
        bid = tick.bid
        ask = tick.ask
        if not math.isfinite(bid + ask):  # NaN, an infinity, or a mid that would overflow
            if math.isfinite(bid) and math.isfinite(ask):
                return Reject(MALFORMED, f"price out of range bid={bid!r} ask={ask!r}")
            return Reject(MALFORMED, f"non-finite price bid={bid!r} ask={ask!r}")
        if bid <= 0.0 or ask <= 0.0:
            return Reject(NON_POSITIVE_PRICE, f"bid={bid!r} ask={ask!r}")
        if ask < bid:
            return Reject(CROSSED_QUOTE, f"ask {ask!r} < bid {bid!r}")
        rules = self.rules
        if rules.check_spread:
            spread_pips = (ask - bid) / rules.pip_size
            if spread_pips > self._max_spread:
                return Reject(
                    SPREAD_TOO_WIDE,
                    f"spread {spread_pips:.1f} pips > {rules.max_spread_pips:g} pips",
                )
        if now_ms > 0:
            t = tick.time_msc
            if rules.check_future and t > now_ms + rules.max_future_skew_ms:
                return Reject(
                    FUTURE_TIMESTAMP,
                    f"time_msc {t} is {t - now_ms} ms ahead of {now_ms} "
                    f"(skew limit {rules.max_future_skew_ms} ms)",
                )
            if rules.check_stale and t < now_ms - rules.max_staleness_ms:
                return Reject(
                    STALE_TIMESTAMP,
                    f"time_msc {t} is {now_ms - t} ms behind {now_ms} "
                    f"(staleness limit {rules.max_staleness_ms} ms)",
                )
        return None

    def _limit(self, st: _BrokerState) -> float:
        """The largest mid move (price units) from ``st``'s level accepted without proof."""
        vol_limit = self.rules.jump_sigma_mult * st.ewma
        floor = self._jump_floor
        return vol_limit if vol_limit > floor else floor

    # ------------------------------------------------------------------ jump logic

    def _feed(self, st: _BrokerState, tick: Tick, out: list[Decision]) -> None:
        """Decide a statically valid, in-order tick of ``st``'s broker against its level."""
        pending = st.pending
        if pending:
            limit = self._limit(st)  # state is frozen while ticks are held
            if abs(tick.mid - pending[-1].mid) <= limit:
                pending.append(tick)
                if len(pending) > self.rules.confirm_ticks:
                    self._release(st, out)
                return
            # The level did not hold: the first held tick was a spike. The rest were
            # judged only against the spike, so they are decided afresh, then this tick.
            held = pending[:]
            pending.clear()
            del self._pending_brokers[tick.broker]
            spike = held[0]
            assert st.last_mid is not None  # a tick is only held against an accepted level
            move = abs(spike.mid - st.last_mid)
            out.append((spike, self._reject(Reject(
                PRICE_JUMP,
                f"mid moved {move / self.rules.pip_size:.1f} pips > limit "
                f"{limit / self.rules.pip_size:.1f} pips and was not confirmed",
            ))))
            for t in held[1:]:
                self._feed(st, t, out)
            self._feed(st, tick, out)
            return
        last_mid = st.last_mid
        if last_mid is None:
            self._accept(st, tick, out)  # first tick of a broker: nothing to compare with
            return
        limit = self._limit(st)
        mid = tick.mid
        if abs(mid - last_mid) <= limit or self._other_broker_agrees(tick, mid, limit):
            self._accept(st, tick, out)
            return
        pending.append(tick)
        self._pending_brokers[tick.broker] = st

    def _release(self, st: _BrokerState, out: list[Decision]) -> None:
        """Accept the first held tick of ``st``; decide the ones held behind it afresh."""
        held = st.pending[:]
        st.pending.clear()
        del self._pending_brokers[held[0].broker]
        self._accept(st, held[0], out)
        for t in held[1:]:
            self._feed(st, t, out)

    def _confirm_others(self, tick: Tick, out: list[Decision]) -> None:
        """Release other brokers' held ticks that ``tick`` (a valid quote) agrees with."""
        mid = tick.mid
        broker = tick.broker
        for other, st in list(self._pending_brokers.items()):
            if other == broker or not st.pending:
                continue
            if abs(mid - st.pending[-1].mid) <= self._limit(st):
                self._release(st, out)

    def _other_broker_agrees(self, tick: Tick, mid: float, limit: float) -> bool:
        """Whether another broker's recent accepted quote already stands near ``mid``."""
        window = self.rules.cross_confirm_ms
        t = tick.time_msc
        for other, st in self._brokers.items():
            if other == tick.broker or st.last_mid is None or st.last_time is None:
                continue
            if abs(st.last_time - t) <= window and abs(mid - st.last_mid) <= limit:
                return True
        return False

    def _accept(self, st: _BrokerState, tick: Tick, out: list[Decision]) -> None:
        mid = tick.mid
        last_mid = st.last_mid
        if last_mid is not None:
            st.ewma += self._alpha * (abs(mid - last_mid) - st.ewma)
        st.last_mid = mid
        st.last_time = tick.time_msc
        self.accepted += 1
        out.append((tick, None))

    def _reject(self, reject: Reject) -> Reject:
        counts = self.rejected_by_reason
        counts[reject.reason] = counts.get(reject.reason, 0) + 1
        return reject

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: per-broker level, volatility and held ticks, plus counters."""
        return {
            "version": _SNAPSHOT_VERSION,
            "brokers": {
                broker: {
                    "last_time": st.last_time,
                    "last_mid": st.last_mid,
                    "ewma": st.ewma,
                    "pending": [_tick_to_list(t) for t in st.pending],
                }
                for broker, st in self._brokers.items()
            },
            "pending_order": list(self._pending_brokers),
            "rejected_by_reason": dict(self.rejected_by_reason),
            "accepted": self.accepted,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace this instance's state with ``state`` from :meth:`snapshot`.

        Spec and rules stay the constructor's (configuration, not state).
        """
        if state.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported Validator snapshot version {state.get('version')}")
        brokers: dict[str, _BrokerState] = {}
        for broker, raw in state["brokers"].items():
            st = _BrokerState()
            st.last_time = None if raw["last_time"] is None else int(raw["last_time"])
            st.last_mid = None if raw["last_mid"] is None else float(raw["last_mid"])
            st.ewma = float(raw["ewma"])
            st.pending = [_tick_from_list(t) for t in raw["pending"]]
            brokers[str(broker)] = st
        self._brokers = brokers
        self._pending_brokers = {
            str(b): brokers[str(b)] for b in state["pending_order"] if brokers[str(b)].pending
        }
        self.rejected_by_reason = {str(k): int(v) for k, v in state["rejected_by_reason"].items()}
        self.accepted = int(state["accepted"])


def _tick_to_list(t: Tick) -> list[Any]:
    return [t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.recv_time_us, t.seq, t.last, t.volume]


def _tick_from_list(raw: list[Any]) -> Tick:
    broker, symbol, time_msc, bid, ask, recv, seq, last, volume = raw
    return Tick(
        broker=str(broker),
        symbol=str(symbol),
        time_msc=int(time_msc),
        bid=float(bid),
        ask=float(ask),
        recv_time_us=int(recv),
        seq=None if seq is None else int(seq),
        last=None if last is None else float(last),
        volume=None if volume is None else float(volume),
    )
