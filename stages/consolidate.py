"""Multi-broker consolidation for one symbol: best bid/offer, dispersion and broker quality.

Several brokers quote the same symbol; the strategy wants one view of the market. The
:class:`Consolidator` keeps each broker's latest *accepted* quote and, on every accepted tick,
returns the consolidated view (:class:`Consolidated`): the highest bid and the lowest ask
among the brokers whose quote is still fresh, their mid and spread, how many brokers are
fresh, and how much the brokers disagree (dispersion of their mids).

Promises:

* Freshness is judged in **event time**: the incoming tick's ``time_msc`` is "now" and a broker
  is fresh when ``now - its_quote.time_msc <= staleness_ms``. A broker whose feed stops drops
  out of the view and comes back with its next quote (fail-over), without any wall clock.
  A broker whose latest quote is *newer* than the incoming tick (brokers lag each other) is
  fresh.
* The consolidated ``spread`` is ``best_ask - best_bid`` and may be **negative**: two brokers'
  quotes can cross each other (one's bid above the other's ask) although each broker's own
  quote is valid. The value is kept as is, because it is real information (an arbitrage-looking
  cross is usually one broker lagging); downstream code must not assume ``spread >= 0``.
* Ties in the best price are broken by broker quality :meth:`score` (higher wins), then by the
  configured priority (lower number wins), then by broker name (lexicographically smaller
  wins), so the result never depends on dict or arrival order.
* Deterministic and restartable: :meth:`Consolidator.snapshot` is JSON-serialisable and
  :meth:`Consolidator.restore` gives an object that behaves identically from then on.

Per-broker quality (:meth:`Consolidator.quality`) is kept in the same object because the same
per-tick pass already touches the broker's state; the pipeline reports duplicates and
rejects (which never reach :meth:`Consolidator.update`) via :meth:`Consolidator.note_duplicate`
and :meth:`Consolidator.note_reject`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from stages.types import Tick

__all__ = ["DEFAULT_PRIORITY", "Consolidated", "Consolidator"]

#: Priority of a broker that is not in the configured ``priorities`` (after all configured ones).
DEFAULT_PRIORITY = 1_000_000
#: Latency at and above which the score's latency penalty is maximal (ms).
_LATENCY_CAP_MS = 1_000.0
_LATENCY_WEIGHT = 0.5


class Consolidated:
    """The consolidated view after one accepted tick.

    A plain class rather than a ``NamedTuple``: compiled (``make native``) it is built and
    read natively, where a NamedTuple is built through its Python-level ``__new__`` on
    every tick (about 7% of a shard's time in ``tickstream process`` on the real Lean
    ticks). Compared by value.
    """

    __slots__ = ("best_ask", "best_ask_broker", "best_bid", "best_bid_broker", "dispersion",
                 "fresh_brokers", "mid", "spread")

    best_bid: float
    best_bid_broker: str
    best_ask: float
    best_ask_broker: str
    fresh_brokers: int
    #: Population standard deviation of the fresh brokers' mids; 0.0 with one broker.
    dispersion: float
    #: ``(best_bid + best_ask) / 2``.
    mid: float
    #: ``best_ask - best_bid``; negative when brokers' quotes cross each other.
    spread: float

    def __init__(self, best_bid: float, best_bid_broker: str, best_ask: float,
                 best_ask_broker: str, fresh_brokers: int, dispersion: float, mid: float,
                 spread: float) -> None:
        self.best_bid = best_bid
        self.best_bid_broker = best_bid_broker
        self.best_ask = best_ask
        self.best_ask_broker = best_ask_broker
        self.fresh_brokers = fresh_brokers
        self.dispersion = dispersion
        self.mid = mid
        self.spread = spread

    def _values(self) -> tuple[float, str, float, str, int, float, float, float]:
        return (self.best_bid, self.best_bid_broker, self.best_ask, self.best_ask_broker,
                self.fresh_brokers, self.dispersion, self.mid, self.spread)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Consolidated):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return ("Consolidated(best_bid={!r}, best_bid_broker={!r}, best_ask={!r}, "
                "best_ask_broker={!r}, fresh_brokers={!r}, dispersion={!r}, mid={!r}, "
                "spread={!r})".format(*self._values()))


class _Broker:
    """Mutable per-broker state: latest quote plus running quality counters."""

    __slots__ = (
        "ask",
        "bid",
        "duplicates",
        "first_msc",
        "fresh_ms",
        "gaps",
        "latency_n",
        "latency_sum",
        "name",
        "priority",
        "recv_time_us",
        "rejects",
        "spread_sum",
        "ticks",
        "time_msc",
    )

    def __init__(self, name: str, priority: int) -> None:
        self.name = name
        self.priority = priority
        self.bid = 0.0
        self.ask = 0.0
        self.time_msc = 0
        self.recv_time_us = 0
        self.ticks = 0  # accepted ticks; 0 means "no quote yet"
        self.first_msc = 0  # event time of the first accepted tick
        self.fresh_ms = 0  # fresh time accumulated up to time_msc
        self.spread_sum = 0.0
        self.latency_sum = 0.0
        self.latency_n = 0
        self.gaps = 0
        self.duplicates = 0
        self.rejects = 0

    _STATE: ClassVar[tuple[str, ...]] = (
        "bid",
        "ask",
        "time_msc",
        "recv_time_us",
        "ticks",
        "first_msc",
        "fresh_ms",
        "spread_sum",
        "latency_sum",
        "latency_n",
        "gaps",
        "duplicates",
        "rejects",
    )


class Consolidator:
    """Best bid/offer across brokers for one symbol, with per-broker quality metrics.

    ``staleness_ms``: how old (in event time) a broker's latest quote may be and still count.
    ``priorities``: broker name -> priority (lower number = preferred) for tie-breaking;
    unlisted brokers get :data:`DEFAULT_PRIORITY`.
    """

    __slots__ = ("_live", "_now", "_states", "priorities", "staleness_ms", "symbol")

    def __init__(
        self,
        symbol: str,
        staleness_ms: int = 5_000,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        if staleness_ms < 0:
            raise ValueError(f"staleness_ms must be >= 0, got {staleness_ms}")
        self.symbol = symbol
        self.staleness_ms = int(staleness_ms)
        self.priorities: dict[str, int] = dict(priorities or {})
        #: Every broker seen (including ones that only had rejects/duplicates so far).
        self._states: dict[str, _Broker] = {}
        #: Brokers with at least one accepted quote (the same objects as in ``_states``).
        self._live: dict[str, _Broker] = {}
        #: Latest event time seen (max over ticks); used for uptime and the score.
        self._now: int | None = None

    # ------------------------------------------------------------------ hot path

    def update(self, tick: Tick) -> Consolidated:
        """Record an accepted tick and return the consolidated view at its event time."""
        name = tick.broker
        t = tick.time_msc
        stale = self.staleness_ms
        st = self._live.get(name)
        if st is None:
            st = self._join(name, t)
        else:
            dt = t - st.time_msc
            if dt > stale:
                st.gaps += 1
                st.fresh_ms += stale
            elif dt > 0:
                st.fresh_ms += dt
        bid = tick.bid
        ask = tick.ask
        recv = tick.recv_time_us
        st.bid = bid
        st.ask = ask
        st.time_msc = t
        st.recv_time_us = recv
        st.ticks += 1
        st.spread_sum += ask - bid
        if recv > 0:
            st.latency_sum += recv / 1000.0 - t
            st.latency_n += 1
        now = self._now
        if now is None or t > now:
            self._now = t

        live = self._live
        if len(live) == 1:
            return Consolidated(bid, name, ask, name, 1, 0.0, (bid + ask) * 0.5, ask - bid)

        best_bid = -math.inf
        best_ask = math.inf
        bb: _Broker | None = None
        ba: _Broker | None = None
        n = 0
        shift = (bid + ask) * 0.5  # shifted sums keep the variance of ~1e-5 moves accurate
        s1 = 0.0
        s2 = 0.0
        for s in live.values():
            if t - s.time_msc > stale:
                continue
            n += 1
            b = s.bid
            a = s.ask
            d = (b + a) * 0.5 - shift
            s1 += d
            s2 += d * d
            if b > best_bid or (b == best_bid and self._prefer(s, bb)):
                best_bid = b
                bb = s
            if a < best_ask or (a == best_ask and self._prefer(s, ba)):
                best_ask = a
                ba = s
        # The incoming broker is always fresh (dt == 0), so bb and ba are set and n >= 1.
        assert bb is not None and ba is not None
        if n > 1:
            m = s1 / n
            var = s2 / n - m * m
            disp = math.sqrt(var) if var > 0.0 else 0.0
        else:
            disp = 0.0
        return Consolidated(
            best_bid,
            bb.name,
            best_ask,
            ba.name,
            n,
            disp,
            (best_bid + best_ask) * 0.5,
            best_ask - best_bid,
        )

    def _join(self, name: str, t: int) -> _Broker:
        """First accepted quote of a broker: make it live (its quality history starts now)."""
        st = self._states.get(name)
        if st is None:
            st = _Broker(name, self.priorities.get(name, DEFAULT_PRIORITY))
            self._states[name] = st
        st.first_msc = t
        st.time_msc = t
        self._live[name] = st
        return st

    def _prefer(self, s: _Broker, other: _Broker | None) -> bool:
        """Does ``s`` win a price tie against ``other``? (score, then priority, then name)."""
        if other is None:
            return True
        now = self._now if self._now is not None else s.time_msc
        ss = self._score(s, now)
        so = self._score(other, now)
        if ss != so:
            return ss > so
        if s.priority != other.priority:
            return s.priority < other.priority
        return s.name < other.name

    # ------------------------------------------------------------------ quality

    def note_duplicate(self, broker: str) -> None:
        """Count a duplicate tick the pipeline dropped for ``broker`` (lowers its score)."""
        self._state(broker).duplicates += 1

    def note_reject(self, broker: str) -> None:
        """Count a tick the validator rejected for ``broker`` (lowers its score)."""
        self._state(broker).rejects += 1

    def _state(self, broker: str) -> _Broker:
        st = self._states.get(broker)
        if st is None:
            st = _Broker(broker, self.priorities.get(broker, DEFAULT_PRIORITY))
            self._states[broker] = st
        return st

    def _uptime(self, st: _Broker, now: int) -> float:
        """Fraction of the event time since the broker's first quote during which it was fresh.

        Between two of its ticks a broker counts as fresh for at most ``staleness_ms``; after
        its latest tick it counts as fresh for ``min(now - last, staleness_ms)``.
        """
        if st.ticks == 0:
            return 0.0
        observed = now - st.first_msc
        if observed <= 0:
            return 1.0
        tail = now - st.time_msc
        if tail > self.staleness_ms:
            tail = self.staleness_ms
        elif tail < 0:
            tail = 0
        up = (st.fresh_ms + tail) / observed
        return 1.0 if up > 1.0 else up

    def _score(self, st: _Broker, now: int) -> float:
        """Broker quality in [-1.5, 1]: higher is better.

        ``uptime - (rejects + duplicates) / (ticks + rejects + duplicates)
        - 0.5 * min(|mean latency ms|, 1000) / 1000``. The absolute latency is used because a
        negative latency is a clock offset, which is as untrustworthy as a slow feed.
        """
        bad = st.rejects + st.duplicates
        total = st.ticks + bad
        bad_rate = bad / total if total else 0.0
        lat = abs(st.latency_sum / st.latency_n) if st.latency_n else 0.0
        if lat > _LATENCY_CAP_MS:
            lat = _LATENCY_CAP_MS
        return self._uptime(st, now) - bad_rate - _LATENCY_WEIGHT * lat / _LATENCY_CAP_MS

    def score(self, broker: str) -> float:
        """The tie-breaking quality score of ``broker`` now (see :meth:`_score`)."""
        st = self._states.get(broker)
        if st is None:
            raise KeyError(broker)
        now = self._now if self._now is not None else st.time_msc
        return self._score(st, now)

    def quality(self) -> dict[str, dict[str, float]]:
        """Per-broker quality metrics (not on the hot path: builds fresh dicts).

        Keys: ``ticks`` (accepted), ``ticks_per_s`` (accepted ticks per second of event time
        from the broker's first quote to the latest event time seen), ``mean_spread``,
        ``mean_latency_ms`` (``recv_time_us / 1000 - time_msc`` over ticks with a receive
        time; 0.0 without any), ``gaps`` (inter-tick gaps longer than ``staleness_ms``),
        ``duplicates``, ``rejects``, ``uptime`` (see :meth:`_uptime`), ``fresh`` (1.0 when the
        broker's quote is fresh at the latest event time) and ``score``.
        """
        out: dict[str, dict[str, float]] = {}
        for name, st in self._states.items():
            now = self._now if self._now is not None else st.time_msc
            observed_s = (now - st.first_msc) / 1000.0 if st.ticks else 0.0
            out[name] = {
                "ticks": float(st.ticks),
                "ticks_per_s": st.ticks / observed_s if observed_s > 0 else 0.0,
                "mean_spread": st.spread_sum / st.ticks if st.ticks else 0.0,
                "mean_latency_ms": st.latency_sum / st.latency_n if st.latency_n else 0.0,
                "gaps": float(st.gaps),
                "duplicates": float(st.duplicates),
                "rejects": float(st.rejects),
                "uptime": self._uptime(st, now),
                "fresh": 1.0 if st.ticks and now - st.time_msc <= self.staleness_ms else 0.0,
                "score": self._score(st, now),
            }
        return out

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state: configuration, latest event time and every broker."""
        brokers: dict[str, Any] = {}
        for name, st in self._states.items():
            brokers[name] = {key: getattr(st, key) for key in _Broker._STATE}
        return {
            "symbol": self.symbol,
            "staleness_ms": self.staleness_ms,
            "priorities": dict(self.priorities),
            "now": self._now,
            "brokers": brokers,
        }

    @classmethod
    def restore(
        cls,
        data: Mapping[str, Any],
        *,
        staleness_ms: int | None = None,
        priorities: Mapping[str, int] | None = None,
    ) -> Self:
        """Rebuild from :meth:`snapshot` output.

        ``staleness_ms``/``priorities`` override the stored configuration (e.g. after the
        operator changed it); by default the stored one is used.
        """
        obj = cls(
            str(data["symbol"]),
            int(data["staleness_ms"]) if staleness_ms is None else staleness_ms,
            dict(data.get("priorities", {})) if priorities is None else priorities,
        )
        now = data.get("now")
        obj._now = None if now is None else int(now)
        for name, fields in data.get("brokers", {}).items():
            st = _Broker(name, obj.priorities.get(name, DEFAULT_PRIORITY))
            for key in _Broker._STATE:
                value = fields[key]
                setattr(st, key, float(value) if isinstance(getattr(st, key), float) else value)
            obj._states[name] = st
            if st.ticks:
                obj._live[name] = st
        return obj
