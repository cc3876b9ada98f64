"""The thin path on the real broker: a worker process decodes, passes on and dead-letters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from topology.smoke import run_smoke

pytestmark = pytest.mark.integration


def test_worker_end_to_end(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in settings_env.items():
        monkeypatch.setenv(k, v)
    result = run_smoke(ticks=60, embedded=False, timeout_s=60)
    full_log = Path(result["worker_log"]).read_text()
    log = full_log[-3000:]
    assert result["clean_received"] == 60, log
    # The long-lived start-up heap is kept out of garbage collection (latency tail).
    frozen = re.search(r"start-up heap frozen: (\d+) objects", full_log)
    assert frozen is not None and int(frozen.group(1)) > 100_000, log
    # ...and the young generation is collected every TICKSTREAM_GC_GEN0_THRESHOLD allocations.
    assert "gc thresholds (5000, " in full_log, log
    assert result["rejected_received"] == 1
    assert result["ok"]
