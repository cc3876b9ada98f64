"""Ctrl-C around forking the batch commands' shard processes (``process``, ``replay``).

A Ctrl-C while ``fork`` runs would be swallowed by the fork hooks (an "Exception ignored"
KeyboardInterrupt in the parent or a child), and the run went on to exit 0. So while the
children are being forked, SIGINT is blocked for this thread and its handler only notes it;
once every child runs (each ignores SIGINT: the parent alone stops the run), a noted Ctrl-C
interrupts the parent. The mask holds for the calling thread only: a Ctrl-C the kernel hands
to another thread (numpy's BLAS pool, say) still runs the Python handler in the main thread,
inside a fork hook, which is why the handler notes instead of raising.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), the default number of jobs."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Fork inside this block; a Ctrl-C meanwhile raises KeyboardInterrupt at its end."""
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: interrupted.append(signum))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a pending one: noted
        signal.signal(signal.SIGINT, previous if previous is not None
                      else signal.default_int_handler)
    if interrupted:
        raise KeyboardInterrupt


def child_ignores_interrupts() -> None:
    """First thing in a forked child: Ctrl-C reaches the whole process group, and the parent
    alone handles it (it closes the pipes and reaps the children), so a child neither dies
    mid-work nor prints a traceback. SIGINT was blocked while forking: unblocked here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_forked(tasks: Sequence[Callable[[], T]], name: str) -> list[T]:
    """Each task in a forked child of its own, all at once; their results, in task order.

    The children share what the parent holds by forking (nothing is pickled on the way in);
    each result comes back pickled through a pipe. A child that fails raises RuntimeError
    here with its traceback; one that dies, with its exit code. No child outlives the call.
    """
    ctx = multiprocessing.get_context("fork")
    conns: list[Connection] = []
    procs: list[Any] = []
    try:
        with interrupts_deferred():
            for k, task in enumerate(tasks):
                r, w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child, args=(task, w, conns), name=f"{name}-{k}",
                                daemon=True)
                p.start()
                procs.append(p)
                conns.append(r)
                w.close()  # the child's end: EOF here when it dies
        return [receive(r, procs[k], f"{name} {k}") for k, r in enumerate(conns)]
    finally:
        for r in conns:
            r.close()
        reap(procs)


def receive(conn: Connection, proc: Any, label: str) -> Any:
    """A child's ``("ok", result)`` from ``conn``: its result. RuntimeError when it sent
    ``("error", traceback)`` or died before sending (with its exit code)."""
    try:
        status, payload = conn.recv()
    except EOFError:
        proc.join(timeout=5)  # reaped, so its exit code is known
        raise RuntimeError(f"{label} died (exit code {proc.exitcode})") from None
    if status != "ok":
        raise RuntimeError(f"{label} failed:\n{payload}")
    return payload


def reap(procs: Sequence[Any], timeout_s: float = 5.0) -> None:
    """Wait for each child (its pipes closed first, so it is not blocked on one); kill one
    that is still alive after ``timeout_s``."""
    for p in procs:
        p.join(timeout=timeout_s)
        if p.is_alive():
            p.kill()
            p.join()


def _child(task: Callable[[], Any], conn: Connection, foreign: Sequence[Connection]) -> None:
    child_ignores_interrupts()
    for c in foreign:  # the earlier children's pipes, inherited by the fork
        c.close()
    try:
        result: tuple[str, Any] = ("ok", task())
    except BaseException:
        result = ("error", traceback.format_exc())
    try:
        conn.send(result)
    except OSError:  # the parent stopped (interrupted or failed) and closed its end
        pass
    finally:
        conn.close()
