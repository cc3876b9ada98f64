"""The backtest's defaults, apart from :mod:`offline.backtest` so that a command line can show
them without importing the stage chain (TA-Lib, numpy) it runs."""

from __future__ import annotations

#: Milliseconds from a command to its fill (the quote the order is filled at).
DEFAULT_LATENCY_MS = 250
#: Runs of the random-side baseline.
DEFAULT_RANDOM_RUNS = 200
#: Seed of the bootstrap and the random baseline.
DEFAULT_SEED = 0
