"""The pipes that carry rows to ``tickstream process``'s shards."""

from __future__ import annotations

import fcntl
import multiprocessing
from pathlib import Path

import pytest

from offline.process import CHUNK, PIPE_BYTES, widen_pipe


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_a_shards_input_pipe_holds_many_chunks() -> None:
    # With the default 64 KiB the parent blocked on every chunk it sent (a chunk of 2,048
    # ticks is larger), so a shard starved whenever the parent was parsing the next block.
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        before = fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ)
        widen_pipe(writer)
        after = fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ)
    finally:
        reader.close()
        writer.close()
    cap = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert after >= min(PIPE_BYTES, cap) > before
    assert after >= 8 * CHUNK * 5 * 8  # several chunks of five 8-byte columns
