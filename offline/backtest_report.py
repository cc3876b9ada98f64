"""What ``tickstream backtest --out DIR`` writes: ``summary.json``, ``trades.csv`` and
``equity.png``.

Deterministic: the summary is written with sorted keys and no wall-clock value, the trades
in entry order with floats in their shortest round-trip form, and the PNG without the
software/date metadata matplotlib would stamp on it, so the same backtest gives the same
bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from offline.backtest import ACCOUNT_CURRENCY, Trade

SUMMARY = "summary.json"
TRADES = "trades.csv"
EQUITY = "equity.png"


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trades_csv(trades: Sequence[Trade]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(Trade.FIELDS)
    w.writerows(t.row() for t in trades)
    return buf.getvalue().encode()


def equity_png(trades: Sequence[Trade], path: Path, title: str) -> None:
    """Closed-trade equity (account currency) and its drawdown against exit time (UTC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    acct = sorted((t for t in trades if t.currency == ACCOUNT_CURRENCY),
                  key=attrgetter("exit_time_ms", "entry_time_ms", "symbol"))
    fig, (ax, dd_ax) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    try:
        if acct:
            times = [datetime.fromtimestamp(acct[0].entry_time_ms / 1000, UTC)] + [
                datetime.fromtimestamp(t.exit_time_ms / 1000, UTC) for t in acct]
            equity = np.concatenate(([0.0], np.cumsum([t.pnl for t in acct])))
            drawdown = equity - np.maximum.accumulate(equity)
            ax.step(times, equity, where="post", color="tab:blue", linewidth=1.2)
            dd_ax.fill_between(times, drawdown, 0.0, step="post", color="tab:red", alpha=0.4)
            dd_ax.xaxis.set_major_formatter(
                mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
        else:
            ax.text(0.5, 0.5, "no trades", ha="center", va="center", transform=ax.transAxes)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_title(title)
        ax.set_ylabel(f"equity ({ACCOUNT_CURRENCY})")
        dd_ax.set_ylabel("drawdown")
        dd_ax.set_xlabel("exit time (UTC)")
        ax.grid(alpha=0.3)
        dd_ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def write_outputs(summary: dict[str, Any], trades: Sequence[Trade], out_dir: Path) -> dict[
        str, str]:
    """Write the three files into ``out_dir`` (created); their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / SUMMARY, "trades": out_dir / TRADES, "equity": out_dir / EQUITY}
    _atomic(paths["summary"], (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    _atomic(paths["trades"], trades_csv(trades))
    stats = summary.get("stats", {})
    title = (f"backtest {summary.get('model_version')} at {summary.get('venue')}: "
             f"{stats.get('trades', 0)} trades, {stats.get('total_pips') or 0:.1f} pips")
    tmp = out_dir / f".{EQUITY}.tmp.png"
    try:
        equity_png(trades, tmp, title)
        os.replace(tmp, paths["equity"])
    finally:
        tmp.unlink(missing_ok=True)
    return {k: str(v) for k, v in paths.items()}
