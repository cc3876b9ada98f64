"""offline/forking.py: tasks in forked children, results in order, failures reported, no
child left behind."""

from __future__ import annotations

import multiprocessing
import os
from functools import partial

import pytest

from offline.forking import run_forked

BIG = list(range(200_000))  # shared by forking, not pickled on the way in


def _share(k: int) -> tuple[int, int, int]:
    return k, os.getpid(), sum(BIG[k::3])


def _fails() -> None:
    raise ValueError("bad input in the child")


def _dies() -> None:
    os._exit(7)


def test_each_task_runs_in_its_own_child_and_results_come_back_in_order() -> None:
    got = run_forked([partial(_share, k) for k in range(3)], "test-shard")
    assert [g[0] for g in got] == [0, 1, 2]
    assert [g[2] for g in got] == [sum(BIG[k::3]) for k in range(3)]
    pids = {g[1] for g in got}
    assert len(pids) == 3 and os.getpid() not in pids
    assert not multiprocessing.active_children()


def test_a_failing_child_raises_here_with_its_traceback() -> None:
    with pytest.raises(RuntimeError, match="test-shard 1 failed") as info:
        run_forked([partial(_share, 0), _fails], "test-shard")
    assert "ValueError: bad input in the child" in str(info.value)
    assert not multiprocessing.active_children()


def test_a_child_that_dies_is_reported_with_its_exit_code() -> None:
    with pytest.raises(RuntimeError, match=r"test-shard 0 died \(exit code 7\)"):
        run_forked([_dies, partial(_share, 1)], "test-shard")
    assert not multiprocessing.active_children()
