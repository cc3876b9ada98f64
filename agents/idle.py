"""Which symbols' open bars the idle timer may close now.

The timer closes a minute bar once the event-time estimate is ``bar_idle_flush_ms`` past the
minute's end, so that a quiet market does not hold the last bar back until the next tick.
It must not close one while that minute's ticks are still on their way: a bar closed early
has fewer ticks than the bar ``tickstream process`` builds from the same input, and the
features and command built from it differ too (the reliability suite counted such
conflicting keys after a restart with a backlog and during a broker stall). A symbol's
partition counts as *quiet* only when both hold:

* nothing is waiting: its high watermark is not beyond what this worker has processed;
* the broker answered a Fetch for it within :data:`FRESH_FETCH_S` (a stopped broker
  answers nothing, and its high watermark from before is stale).

Anything unknown (no Fetch response yet, nothing processed yet) is not quiet.
"""

from __future__ import annotations

from collections.abc import Mapping

#: How recent the last Fetch response of a partition must be for it to count as quiet.
FRESH_FETCH_S = 2.0

SourceKey = tuple[str, int]


def waiting_symbols(
    source_of: Mapping[str, SourceKey],
    processed_to: Mapping[SourceKey, int],
    fetched: Mapping[SourceKey, tuple[int | None, float | None]],
    now_s: float,
    fresh_s: float = FRESH_FETCH_S,
) -> set[str]:
    """Symbols whose bars must stay open: their partition is not known to be quiet.

    ``source_of``: symbol → the (topic, partition) its last tick came from;
    ``processed_to``: partition → next offset after the last one processed;
    ``fetched``: partition → (high watermark, wall time of its last Fetch response).
    """
    waiting: set[str] = set()
    for symbol, key in source_of.items():
        highwater, answered_s = fetched.get(key, (None, None))
        done = processed_to.get(key)
        if (highwater is None or answered_s is None or done is None
                or highwater > done or now_s - answered_s > fresh_s):
            waiting.add(symbol)
    return waiting
