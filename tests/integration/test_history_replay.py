"""``tickstream replay --topic``: what ``load`` put in a topic replays like the same ticks
from a file, and gives the same bytes twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectors.files import write_canonical
from connectors.history.parse import read_history
from offline.load import load_paths
from offline.replay import replay
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.data]


def test_replay_from_the_topic_equals_replay_from_the_file(
        settings_env: dict[str, str], kafka_settings: Settings, shared_data: Path,
        tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    lean = shared_data / "lean"
    paths = [lean / "oanda/tick/nzdusd/20140513_quote.zip",
             lean / "fxcm/tick/nzdusd/20140513_quote.zip"]
    for p in paths:
        assert load_paths(kafka_settings, "lean", [p])["loaded"] == 1
    # the same ticks as a file, with the receive time the loader gives history
    ticks = [t for p in paths for t in read_history("lean", p) if isinstance(t, Tick)]
    src = tmp_path / "nzdusd.csv"
    with src.open("w", newline="") as fh:
        write_canonical([Tick(t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.time_msc * 1000)
                         for t in ticks], fh)
    from_ms, to_ms = 1_399_939_200_000, 1_399_939_200_000 + 12 * 3_600_000  # 13 May 00-12 UTC

    env = {**os.environ, **settings_env}
    outs = []
    for i in range(2):
        out = tmp_path / f"topic{i}.parquet"
        proc = subprocess.run(
            [sys.executable, "-m", "topology.cli", "replay", "--topic", "ticks.history",
             "--from", "2014-05-13", "--to", "2014-05-13T12:00Z", "--symbols", "NZDUSD",
             "--out", str(out), "--json"], env=env, capture_output=True, text=True,
            timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append((out, json.loads(proc.stdout)))
    (a, summary), (b, _) = outs
    assert a.read_bytes() == b.read_bytes()
    assert summary["malformed"] == 0 and summary["rows"] > 200
    from_file = tmp_path / "file.parquet"
    replay(None, kafka_settings, out=from_file, files=[src], from_ms=from_ms, to_ms=to_ms)
    topic_rows = pq.read_table(a).to_pylist()
    assert topic_rows == pq.read_table(from_file).to_pylist()
    assert summary["ticks"] == sum(1 for t in ticks if from_ms <= t.time_msc < to_ms)
