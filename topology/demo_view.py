"""What ``tickstream demo`` shows while it runs, on stderr: step lines, progress counters
for the long steps and a live ``rich`` view (ticks/s per broker, rejects by reason, bars,
the latest commands, p50/p99 latency). On a terminal the live view redraws in place; when
stderr is not one (a pipe, a CI log) it prints one status line every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from topology.demo import Stats

STATUS_EVERY_S = 5.0


class RichView:
    """The demo's :class:`~topology.demo.View` on a rich console (stderr by default)."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._last_status = 0.0
        self._t0 = time.monotonic()

    def step(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]demo[/] [{time.monotonic() - self._t0:5.1f}s] {text}",
                               highlight=False)

    def lines(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def progress(self, what: str) -> Callable[[int], None]:
        if self.quiet or not self.console.is_terminal:
            return lambda n: None
        self._progress = Progress(SpinnerColumn(), TextColumn(f"{what}"),
                                  TextColumn("{task.completed:,.0f} ticks"), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.start()
        task = self._progress.add_task(what, total=None)
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def done_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def live(self, stats: Stats, remaining_s: float) -> None:
        if self.quiet:
            return
        if not self.console.is_terminal:
            now = time.monotonic()
            if now - self._last_status >= STATUS_EVERY_S:
                self._last_status = now
                self.console.print(status_line(stats, remaining_s), highlight=False,
                                   markup=False)
            return
        if self._live is None:
            self._live = Live(render(stats, remaining_s), console=self.console,
                              refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(render(stats, remaining_s))

    def end_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.done_progress()


def status_line(stats: Stats, remaining_s: float) -> str:
    rates = stats.ticks_per_s(time.time_ns() // 1000)
    lat = stats.latency()
    return (f"live {remaining_s:5.1f}s left | ticks/s " + " ".join(
        f"{b} {r:g}" for b, r in rates.items())
        + f" | clean {stats.clean:,} dup {stats.duplicates:,} rejects "
        + " ".join(f"{r} {n}" for r, n in sorted(stats.rejects.items()))
        + f" | bars {stats.bars:,} commands {sum(stats.commands.values())}"
        + f" | tick->clean p50/p99 {lat['tick_to_clean_p50_ms']}/{lat['tick_to_clean_p99_ms']}"
          " ms")


def render(stats: Stats, remaining_s: float) -> Any:
    rates = stats.ticks_per_s(time.time_ns() // 1000)
    lat = stats.latency()
    brokers = Table(title="ticks/s per broker (live, 5 s)", expand=False)
    brokers.add_column("broker")
    brokers.add_column("ticks/s", justify="right")
    brokers.add_column("ticks in", justify="right")
    for b in sorted(set(rates) | set(stats.raw_by_broker)):
        brokers.add_row(b, f"{rates.get(b, 0.0):g}", f"{stats.raw_by_broker.get(b, 0):,}")
    rejects = Table(title="rejects by reason")
    rejects.add_column("reason")
    rejects.add_column("count", justify="right")
    for reason, n in sorted(stats.rejects.items()):
        rejects.add_row(reason, f"{n:,}")
    rejects.add_row("duplicates (dropped)", f"{stats.duplicates:,}")
    flow = Table(title="flow")
    flow.add_column("what")
    flow.add_column("count", justify="right")
    flow.add_row("ticks in", f"{stats.raw:,}")
    flow.add_row("clean ticks", f"{stats.clean:,}")
    flow.add_row("bars (live)", f"{stats.bars:,} ({stats.bars_live:,})")
    flow.add_row("commands (live)", f"{sum(stats.commands.values()):,} ({stats.commands_live:,})")
    flow.add_row("tick->clean p50/p99 ms",
                 f"{lat['tick_to_clean_p50_ms']} / {lat['tick_to_clean_p99_ms']}")
    flow.add_row("tick->command p50/p99 ms",
                 f"{lat['tick_to_command_p50_ms']} / {lat['tick_to_command_p99_ms']}")
    cmds = Table(title="latest commands")
    for col in ("action", "symbol", "price", "confidence", "reason"):
        cmds.add_column(col)
    for c in reversed(stats.latest_commands):
        cmds.add_row(c["action"], c["symbol"], f"{c['price']:.5f}", f"{c['confidence']:.3f}",
                     c["reason"])
    top = Table.grid(padding=(0, 2))
    top.add_row(brokers, rejects, flow)
    return Group(f"[bold]tickstream demo[/] live, {remaining_s:.0f} s left (Ctrl-C stops)",
                 top, cmds)
