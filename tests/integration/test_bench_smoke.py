"""``make bench`` keeps working: a quick run prints the JSON object the README documents.

No figure is compared with a threshold (timings belong to the benchmark, not to tests);
this checks that every documented key is there, that each measurement measured something,
and that the ratios are the ratios of the figures printed next to them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devstack.broker import LocalBroker

pytestmark = pytest.mark.integration


def test_quick_bench_prints_every_documented_figure(broker: LocalBroker) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--skip-collectors", "--skip-peer",
         "--bootstrap", broker.bootstrap],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("topology_ticks_per_s", "faust_passthrough_msgs_per_s",
                "aiokafka_passthrough_msgs_per_s", "offline_process_ticks_per_s",
                "offline_process_one_job_ticks_per_s", "topology_worker_cpu_us_per_tick"):
        assert result[key] > 0, key
    # Real two-broker data by default, from the moment both brokers quote both pairs.
    assert result["input"] == "lean" and result["input_ticks"] == 12_000
    assert result["input_brokers"] == ["FXCM", "OANDA"]
    assert result["input_symbols"] == ["EURUSD", "NZDUSD"]
    assert sum(result["ticks_raw_partition_records"].values()) == 12_000
    for key in ("topology_ticks_per_s", "topology_worker_cpu_us_per_tick"):
        spread = result[f"{key}_spread"]
        assert spread["min"] <= spread["median"] <= spread["max"], key
        assert len(spread["runs"]) == 1 and result[key] == spread["median"], key
    # Scale-out: the symbols on different workers, the same bars and features from both.
    scale = result["scale_out"]
    assert len(scale["ticks_raw_partition_records"]) == 2
    assert len({p % 2 for p in map(int, scale["ticks_raw_partition_records"])}) == 2
    assert scale["workers_1_ticks_per_s"] > 0 and scale["workers_2_ticks_per_s"] > 0
    assert scale["ratio_2_vs_1"] == pytest.approx(
        scale["workers_2_ticks_per_s"] / scale["workers_1_ticks_per_s"], abs=0.01)
    assert scale["outputs_identical"] is True
    assert "peer_quix_ticks_per_s" not in result  # --skip-peer
    assert result["offline_process_jobs"] >= 1
    assert isinstance(result["stages_compiled"], bool)
    assert result["ratio_vs_faust_passthrough"] == pytest.approx(
        result["topology_ticks_per_s"] / result["faust_passthrough_msgs_per_s"], abs=0.01)
    assert result["ratio_vs_aiokafka_passthrough"] == pytest.approx(
        result["topology_ticks_per_s"] / result["aiokafka_passthrough_msgs_per_s"], abs=0.001)
    latency = result["latency_ms"]
    for path in ("tick_to_clean", "broker_floor", "tick_to_command"):
        assert set(latency[path]) >= {"p50", "p99", "max"}, path
    assert latency["tick_to_clean"]["n"] > 0 and latency["broker_floor"]["n"] > 0
    # The floor counts only its own run's records: exactly what was offered.
    offered = latency["runs"]["broker_floor"][0]["n"]
    assert offered == int(latency["offered_ticks_per_s"] * 3)
    # Paired: each run's worker minus the same run's floor, median over the runs.
    runs = latency["runs"]
    for q in ("p50", "p99"):
        diffs = sorted(c[q] - f[q] for c, f in zip(runs["tick_to_clean"], runs["broker_floor"],
                                                   strict=True))
        assert latency["added_over_floor"][q] == pytest.approx(diffs[len(diffs) // 2], abs=0.01)
    assert result["history_replay_ticks_per_s"] > 0
    # Storage: rows/s per backend and through the sink process; the sink beside the topology.
    for key in ("store_server_rows_per_s", "store_chdb_rows_per_s", "store_sink_rows_per_s",
                "store_server_insert_only_rows_per_s", "topology_ticks_per_s_with_sink"):
        assert result[key] > 0, key
    assert result["ratio_with_sink_vs_without"] == pytest.approx(
        result["topology_ticks_per_s_with_sink"] / result["topology_ticks_per_s"], abs=0.01)
    beside = result["sink_beside_topology"]
    assert beside["sink_rows"] > 0 and beside["sink_rows_per_s"] > 0
    assert 0 <= beside["sink_lag_records_at_end"] <= beside["sink_rows"]
    # History loader: every format measured, the ratios are those of the figures shown.
    for fmt in ("csv", "dukascopy", "lean"):
        assert result["history_ticks"][fmt] > 0, fmt
        assert result["history_parse_ticks_per_s"][fmt] > 0, fmt
        assert result["history_load_ticks_per_s"][fmt] > 0, fmt
        assert result["history_load_vs_floor"][fmt] == pytest.approx(
            result["history_load_ticks_per_s"][fmt]
            / result["history_producer_floor_msgs_per_s"], abs=0.001)
