"""Deciding the bars of ``tickstream process`` in one place, tick exits included.

``process`` runs the per-symbol stages in shards (:mod:`offline.process_shard`) and leaves
every scored bar to one decider, in the order of the input rows that produced them, because
the risk limits span symbols. An open position is also checked on every accepted tick of
its symbol (stop-loss, take-profit, maximum holding time: :meth:`RiskManager.on_tick`),
which the live pipeline does inline. Here each shard records its symbols' accepted ticks on
a :class:`Tape` (the row key, time, receive time and the consolidated best bid and ask of
each), and :func:`decide_in_order` replays them between the decisions:

* the order is (row key, index of the tick on its symbol's tape), a decision standing just
  before the tick that closed its bar (:attr:`PendingDecision.tick_pos`), as in the live
  path, where a tick closes a bar, the bar is decided, then the tick is checked;
* after each decision of a symbol that leaves it open, its tape is scanned (vectorised)
  from that decision to the symbol's next one for the first tick that triggers an exit;
  that exit is then made at its place in the order, so a position a stop closes frees its
  slot for another symbol's entry exactly when it does online. Only the symbol's own
  decisions change its position, so the exit found stays valid until it is made.

The scan uses :meth:`RiskManager.exit_levels` with the comparisons of ``on_tick``, and the
exit itself is made by ``on_tick`` (which must agree; it is asserted): ``--jobs 1`` and
``--jobs N`` and the worker give the same commands.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stages.pipeline import Outputs, PendingDecision, Pipeline

__all__ = ["Tape", "decide_in_order", "first_exit"]


@dataclass(slots=True)
class Tape:
    """One symbol's accepted ticks in order: what an exit check reads of each."""

    keys: array[int] = field(default_factory=lambda: array("q"))
    times: array[int] = field(default_factory=lambda: array("q"))
    recvs: array[int] = field(default_factory=lambda: array("q"))
    bids: array[float] = field(default_factory=lambda: array("d"))
    asks: array[float] = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.times)


def first_exit(tape: Tape, lo: int, hi: int, position: int, stop_loss: float | None,
               take_profit: float | None, deadline: int | None) -> int | None:
    """Index of the first tick in ``[lo, hi)`` that closes the position, or None."""
    if hi <= lo or position == 0:
        return None
    px = np.frombuffer(tape.bids if position > 0 else tape.asks, dtype=np.float64)[lo:hi]
    hit = np.zeros(hi - lo, dtype=bool)
    if stop_loss is not None:
        hit |= (px <= stop_loss) if position > 0 else (px >= stop_loss)
    if take_profit is not None:
        hit |= (px >= take_profit) if position > 0 else (px <= take_profit)
    if deadline is not None:
        hit |= np.frombuffer(tape.times, dtype=np.int64)[lo:hi] >= deadline
    found = np.flatnonzero(hit)
    return lo + int(found[0]) if len(found) else None


def decide_in_order(decider: Pipeline, decisions: Iterable[tuple[int, PendingDecision]],
                    tapes: Mapping[str, Tape], out: Outputs) -> None:
    """Decide ``decisions`` (in row-key order) and make the tick exits between them."""
    ordered = list(decisions)
    # Per decision: where the scan for an exit stops (its symbol's next decision).
    until = [0] * len(ordered)
    following: dict[str, int] = {}
    for i in range(len(ordered) - 1, -1, -1):
        d = ordered[i][1]
        tape = tapes.get(d.symbol)
        until[i] = following.get(d.symbol, len(tape) if tape is not None else 0)
        following[d.symbol] = d.tick_pos
    risk = decider.risk
    # Every bar scored in one booster call: the scores do not depend on the risk state.
    scores = decider.prescore([(d.symbol, d.features) for _key, d in ordered])
    pending: list[tuple[int, int, str]] = []  # (row key, tape index, symbol)

    def make_exit() -> None:
        _key, j, symbol = heapq.heappop(pending)
        tape = tapes[symbol]
        before = len(out.commands)
        decider.exit_on_tick(symbol, tape.times[j], tape.bids[j], tape.asks[j],
                             tape.recvs[j], out)
        assert len(out.commands) == before + 1, f"{symbol}: the exit scan and on_tick disagree"

    for i, (key, d) in enumerate(ordered):
        while pending and (pending[0][0], pending[0][1]) < (key, d.tick_pos):
            make_exit()
        decider.decide(d.symbol, d.bar, d.features, out, scores[i])
        tape = tapes.get(d.symbol)
        if tape is not None and risk.watching(d.symbol):
            j = first_exit(tape, d.tick_pos, until[i], *risk.exit_levels(d.symbol))
            if j is not None:
                heapq.heappush(pending, (tape.keys[j], j, d.symbol))
    while pending:
        make_exit()
