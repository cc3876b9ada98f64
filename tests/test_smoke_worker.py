"""The thin path on the real broker: a worker process decodes, passes on and dead-letters."""

from __future__ import annotations

from pathlib import Path

import pytest

from topology.smoke import run_smoke

pytestmark = pytest.mark.integration


def test_worker_end_to_end(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in settings_env.items():
        monkeypatch.setenv(k, v)
    result = run_smoke(ticks=60, embedded=False, timeout_s=60)
    log = Path(result["worker_log"]).read_text()[-3000:]
    assert result["clean_received"] == 60, log
    assert result["rejected_received"] == 1
    assert result["ok"]
