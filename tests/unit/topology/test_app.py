from __future__ import annotations

import gc
import importlib
import subprocess
import sys

import pytest

from engine.gc import freeze_startup_heap
from topology.app import TickstreamApp, create_app
from topology.settings import Settings


def test_import_reads_no_environment_and_builds_nothing() -> None:
    # A bad variable would stop a build; a plain import must not notice it.
    code = (
        "import os; os.environ['TICKSTREAM_PARTITIONS'] = 'bogus';"
        "import topology.app, agents, schemas, connectors, topology.cli;"
        "assert 'app' not in vars(topology.app), 'app built at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_app_attribute_reads_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKSTREAM_APP_ID", "lazyapp")
    monkeypatch.setenv("TICKSTREAM_TABLE_STORE", "memory://")
    mod = importlib.import_module("topology.app")
    monkeypatch.delitem(vars(mod), "app", raising=False)
    app = mod.app
    assert isinstance(app, TickstreamApp)
    assert app.conf.id == "lazyapp"
    monkeypatch.delitem(vars(mod), "app", raising=False)


def test_bad_setting_stops_the_faust_entry_point(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TICKSTREAM_PARTITIONS", "many")
    mod = importlib.import_module("topology.app")
    monkeypatch.delitem(vars(mod), "app", raising=False)
    with pytest.raises(SystemExit) as stopped:
        _ = mod.app
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("tickstream worker: configuration error: "
                                       "TICKSTREAM_PARTITIONS: expected an integer 1..10000 "
                                       "(got 'many')\n")


def test_app_declares_every_topic_with_prefix() -> None:
    s = Settings.from_env({"TICKSTREAM_TOPIC_PREFIX": "x.", "TICKSTREAM_PARTITIONS": "3"},
                          env_file=None)
    app = create_app(s, web_enabled=False)
    assert app.conf.topic_partitions == 3
    agents = {a.name: a for a in app.agents.values()}
    assert set(agents) == {"pipeline", "control", "context", "health"}
    assert agents["pipeline"].channel.get_topic_name() == "x.ticks.raw"
    assert agents["control"].channel.get_topic_name() == "x.control"
    assert set(agents["context"].channel.topics) == {"x.events.calendar", "x.events.news"}
    assert agents["health"].channel.get_topic_name() == "x.collectors.health"
    tables = {t.name: t for t in app.tables.values()}
    assert set(tables) == {
        "pipeline_state", "dedupe_segments", "broker_quality", "context", "control_state",
        "collector_health",
    }
    for name in ("context", "control_state", "collector_health"):  # every worker, one partition
        assert type(tables[name]).__name__ == "GlobalTable"
        assert tables[name].partitions == 1 and tables[name].use_partitioner
    assert type(tables["pipeline_state"]).__name__ == "Table"
    assert tables["pipeline_state"].partitions == 3


def test_gc_gen0_threshold_is_applied_after_the_freeze() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_worker_tuning_settings_reach_faust() -> None:
    s = Settings.from_env({"TICKSTREAM_STREAM_BUFFER_MAXSIZE": "8192",
                           "TICKSTREAM_PRODUCER_LINGER_MS": "7"}, env_file=None)
    app = create_app(s, web_enabled=False)
    assert app.conf.stream_buffer_maxsize == 8192
    assert app.conf.producer_linger == pytest.approx(0.007)
    assert create_app(Settings.from_env({}, env_file=None), web_enabled=False) \
        .conf.stream_buffer_maxsize == 65_536


@pytest.mark.parametrize("command", ["convert", "replay"])
def test_batch_commands_apply_the_gc_tuning(command: str, tmp_path, monkeypatch) -> None:
    """replay/convert (like process, load and backtest) build lists of many ticks: they run
    with the worker's frozen heap and young-collection threshold, not CPython's 700."""
    from topology import cli

    src = tmp_path / "ticks.csv"
    rows = [f"OANDA,EURUSD,{1_399_852_800_000 + 1_000 * i},1.3759{i % 10},1.3761{i % 10}"
            for i in range(400)]
    src.write_text("broker,symbol,time_msc,bid,ask\n" + "\n".join(rows) + "\n")
    argv = (["convert", "csv", str(src), "--out", str(tmp_path / "out.csv"), "--json"]
            if command == "convert" else
            ["replay", "--file", str(src), "--out", str(tmp_path / "f.parquet"), "--json"])
    monkeypatch.setenv("TICKSTREAM_GC_GEN0_THRESHOLD", "12345")
    monkeypatch.setattr("tqdm.tqdm.monitor_interval", 0)  # no monitor thread left behind
    before = gc.get_threshold()
    try:
        assert gc.get_threshold()[0] != 12_345
        cli.main(argv)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_faust_command_line_skips_the_preflight_tickstream_worker_ran(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``faust -A topology.app worker`` (the Procfile line) checks before starting;
    ``tickstream worker`` checks first itself and then runs Faust's command line in the
    same process, which must not check a second time (a second broker round trip)."""
    import topology.app as app_module
    from topology import preflight

    calls: list[list[str]] = []
    monkeypatch.setattr(preflight, "require_worker_can_start",
                        lambda _settings, args: calls.append(list(args)))
    argv = ["faust", "-A", "topology.app", "worker", "-l", "info"]
    monkeypatch.setattr(app_module, "preflight_done", False)
    app_module._settings_for_faust_cli(argv)
    assert calls == [["-l", "info"]]
    monkeypatch.setattr(app_module, "preflight_done", True)
    app_module._settings_for_faust_cli(argv)
    assert calls == [["-l", "info"]]
