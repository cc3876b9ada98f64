"""MetaTrader 5 collector: parser on recorded payloads, the stand-in's fidelity, the
collector against the stand-in (in process and over a real rpyc socket) and end to end
into the local broker, with exact counts across forced reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiokafka.partitioner import murmur2
from conftest import REPO_ROOT
from sinks import ListSink
from standins import mt5 as standin
from standins.mt5 import (
    COPY_TICKS_ALL,
    COPY_TICKS_INFO,
    RES_E_AUTH_FAILED,
    RES_E_INTERNAL_FAIL_CONNECT,
    RES_E_INTERNAL_FAIL_RECEIVE,
    RES_E_INVALID_PARAMS,
    TICK_FLAG_ASK,
    TICK_FLAG_BID,
    Terminal,
    serve,
    wait_for,
)
from waiting import until

from connectors.base.collector import CollectorConfigError
from connectors.base.resilience import FatalCollectorError
from connectors.mt5 import Mt5Collector, build, load_config, parse_config
from connectors.mt5.api import TICK_DTYPE, BridgeApi, Mt5Error, load_native, utc
from connectors.mt5.parse import RejectedRow, SymbolCursor, convert, detect_offset_ms
from connectors.producer import RecordProducer
from devstack.kafka_io import TopicReader
from schemas.codec import make_codec
from schemas.records import RawTick, RejectedRecord
from topology.admin import ensure_topics
from topology.settings import Settings

REPO = REPO_ROOT
BOTH = TICK_FLAG_BID | TICK_FLAG_ASK

# Recorded payloads: copy_ticks_from("EURUSD", 2020-01-10 UTC, ...) and
# copy_ticks_range("AUDUSD", ...) as printed by the MetaQuotes documentation of the
# MetaTrader5 package 5.0.29 (time, bid, ask, last, volume, time_msc, flags, volume_real).
# Flags 134 = 0x80|ASK|BID, 130 = 0x80|BID (bid only), 4 = ASK only; two AUDUSD ticks share
# the millisecond 1578614401128.
EURUSD_RECORDED = [
    (1578614400, 1.11051, 1.11069, 0., 0, 1578614400987, 134, 0.),
    (1578614402, 1.11049, 1.11067, 0., 0, 1578614402025, 134, 0.),
    (1578614404, 1.1105, 1.11066, 0., 0, 1578614404057, 134, 0.),
    (1578614404, 1.11049, 1.11067, 0., 0, 1578614404344, 134, 0.),
    (1578614412, 1.11052, 1.11064, 0., 0, 1578614412106, 134, 0.),
    (1578614418, 1.11039, 1.11051, 0., 0, 1578614418265, 134, 0.),
    (1578614418, 1.1104, 1.1105, 0., 0, 1578614418905, 134, 0.),
    (1578614419, 1.11039, 1.11051, 0., 0, 1578614419519, 134, 0.),
    (1578614456, 1.11037, 1.11065, 0., 0, 1578614456011, 134, 0.),
    (1578614456, 1.11039, 1.11051, 0., 0, 1578614456015, 134, 0.),
]
AUDUSD_RECORDED = [
    (1578614400, 0.68577, 0.68594, 0., 0, 1578614400820, 134, 0.),
    (1578614401, 0.68578, 0.68594, 0., 0, 1578614401128, 130, 0.),
    (1578614401, 0.68575, 0.68594, 0., 0, 1578614401128, 130, 0.),
    (1578614411, 0.68576, 0.68594, 0., 0, 1578614411388, 130, 0.),
    (1578614411, 0.68575, 0.68594, 0., 0, 1578614411560, 130, 0.),
    (1578614414, 0.68576, 0.68595, 0., 0, 1578614414973, 134, 0.),
    (1578614430, 0.68576, 0.68594, 0., 0, 1578614430188, 4, 0.),
    (1578614450, 0.68576, 0.68595, 0., 0, 1578614450408, 4, 0.),
    (1578614450, 0.68576, 0.68594, 0., 0, 1578614450519, 4, 0.),
    (1578614456, 0.68575, 0.68594, 0., 0, 1578614456363, 130, 0.),
]

PASSWORD = "Zq9-s3cr3t-Pa55"
LOGIN = 51234567
SERVER = "ICMarketsSC-Demo"


def arr(rows: list[tuple[Any, ...]]) -> np.ndarray:
    return np.array(rows, dtype=TICK_DTYPE)


def quotes(ticks: list[RawTick]) -> list[tuple[int, float, float]]:
    return [(t.time_msc, t.bid, t.ask) for t in ticks]


def run_convert(rows: np.ndarray, cursor: SymbolCursor, offset_ms: int = 0,
                symbol: str = "EURUSD") -> list[RawTick | RejectedRow]:
    return convert(rows, cursor, broker="ICM", symbol=symbol, terminal_symbol=symbol,
                   offset_ms=offset_ms, recv_time_us=1).items


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert wait_for(lambda: not (set(threading.enumerate()) - before), timeout_s=5), (
        f"threads left behind: {set(threading.enumerate()) - before}"
    )


def collector_config(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "mt5-icmarkets", "broker": "ICM", "server": SERVER, "login": LOGIN,
        "password_env": "ICM_MT5_PASSWORD", "symbols": ["EURUSD", "USDJPY", "GBPUSD"],
        "poll_interval_s": 0.005, "backoff": {"base_s": 0.01, "cap_s": 0.05},
    }
    base.update(over)
    return base


def terminal(symbols: tuple[str, ...] = ("EURUSD", "USDJPY", "GBPUSD")) -> Terminal:
    return Terminal(symbols, accounts={LOGIN: (PASSWORD, SERVER)})


def make_collector(term: Terminal, sink: Any, bridge: str | None = None,
                   **over: Any) -> Mt5Collector:
    cfg = collector_config(**over)
    if bridge:
        return build(cfg, sink, bridge=bridge, env={"ICM_MT5_PASSWORD": PASSWORD})
    return build(cfg, sink, env={"ICM_MT5_PASSWORD": PASSWORD}, api=term.as_module)



async def stop(collector: Mt5Collector, task: asyncio.Task[None]) -> None:
    await collector.stop()
    await asyncio.wait_for(task, 10)


# ---- parser on recorded payloads ----------------------------------------------------------
def test_recorded_eurusd_batch_parses_to_raw_ticks() -> None:
    out = run_convert(arr(EURUSD_RECORDED), SymbolCursor(time_msc=1578614400000))
    assert all(isinstance(t, RawTick) for t in out)
    ticks = [t for t in out if isinstance(t, RawTick)]
    assert quotes(ticks) == [(r[5], r[1], r[2]) for r in EURUSD_RECORDED]
    assert {(t.broker, t.symbol, t.source, t.last, t.volume, t.seq) for t in ticks} == {
        ("ICM", "EURUSD", "MT5", None, None, None)
    }


def test_recorded_bid_only_and_ask_only_ticks_carry_the_other_side() -> None:
    recorded = run_convert(arr(AUDUSD_RECORDED), SymbolCursor(time_msc=1578614400000),
                           symbol="AUDUSD")
    # The same ticks from a feed that leaves the unchanged side at 0.
    zeroed = [
        (r[0], r[1] if r[6] & TICK_FLAG_BID else 0.0, r[2] if r[6] & TICK_FLAG_ASK else 0.0,
         *r[3:])
        for r in AUDUSD_RECORDED
    ]
    carried = run_convert(arr(zeroed), SymbolCursor(time_msc=1578614400000), symbol="AUDUSD")
    assert [type(t) for t in carried] == [RawTick] * 10
    assert quotes(carried) == quotes(recorded) == [  # type: ignore[arg-type]
        (r[5], r[1], r[2]) for r in AUDUSD_RECORDED
    ]


def test_every_split_of_the_recorded_ticks_into_polls_gives_each_tick_once() -> None:
    """Poll as the collector does (from the cursor's second) after each arrival, including
    between the two ticks that share a millisecond: nothing lost, nothing repeated."""
    whole = quotes(run_convert(arr(AUDUSD_RECORDED), SymbolCursor(time_msc=1578614400000),
                               symbol="AUDUSD"))  # type: ignore[arg-type]
    for split in range(1, len(AUDUSD_RECORDED)):
        term = Terminal(["AUDUSD"])
        assert term.initialize()
        cursor = SymbolCursor(time_msc=1578614400000)
        got: list[Any] = []
        for part in (AUDUSD_RECORDED[:split], AUDUSD_RECORDED[split:]):
            term.add_ticks("AUDUSD", part)
            for _ in range(2):  # a second poll with nothing new must emit nothing
                rows = term.copy_ticks_from("AUDUSD", utc(cursor.request_from_s), 1000,
                                            COPY_TICKS_INFO)
                assert rows is not None
                got += run_convert(rows, cursor, symbol="AUDUSD")
        assert quotes(got) == whole, split


def test_identical_ticks_in_one_millisecond_are_counted_by_position() -> None:
    t = 1_700_000_000_500
    same = (t // 1000, 1.1, 1.2, 0.0, 0, t, BOTH, 0.0)
    cursor = SymbolCursor(time_msc=t)
    first = run_convert(arr([same, same]), cursor)
    again = run_convert(arr([same, same]), cursor)  # re-read: nothing new
    later = run_convert(arr([same, same, same]), cursor)  # a third arrived in the same ms
    assert (len(first), len(again), len(later)) == (2, 0, 1)


def test_malformed_rows_are_rejected_once_with_a_reason_and_the_rest_flows() -> None:
    t = 1_700_000_000_000
    rows = arr([
        (t // 1000, 1.1, 1.2, 0.0, 0, t, BOTH, 0.0),
        (t // 1000, math.nan, 1.2, 0.0, 0, t + 1, BOTH, 0.0),        # NaN bid flagged
        (t // 1000, 1.1, -1.0, 0.0, 0, t + 2, TICK_FLAG_ASK, 0.0),   # negative ask
        (t // 1000 + 7, 1.1, 1.2, 0.0, 0, t + 3, BOTH, 0.0),         # time disagrees
        (t // 1000, 1.1, math.inf, 0.0, 0, t + 4, BOTH, 0.0),        # infinite ask
        (t // 1000, 1.3, 0.0, 0.0, 0, t + 5, TICK_FLAG_BID, 0.0),    # ask carried: fine
    ])
    cursor = SymbolCursor(time_msc=t)
    out = run_convert(rows, cursor)
    assert [getattr(i, "reason", "tick") for i in out] == [
        "tick", "invalid_price", "invalid_price", "time_mismatch", "invalid_price", "tick"
    ]
    assert quotes([i for i in out if isinstance(i, RawTick)]) == [(t, 1.1, 1.2),
                                                                  (t + 5, 1.3, 1.2)]
    bad = out[1]
    assert isinstance(bad, RejectedRow) and '"bid":NaN' in bad.payload
    assert run_convert(rows, cursor) == []  # re-read: no second reject, no duplicate


def test_one_sided_first_tick_without_anything_to_carry_is_rejected() -> None:
    t = 1_700_000_000_000
    out = run_convert(arr([(t // 1000, 1.1, 0.0, 0.0, 0, t, TICK_FLAG_BID, 0.0)]),
                      SymbolCursor(time_msc=t))
    assert isinstance(out[0], RejectedRow) and out[0].reason == "missing_side"


def test_server_time_is_mapped_to_utc_with_the_offset() -> None:
    out = run_convert(arr(EURUSD_RECORDED[:1]), SymbolCursor(time_msc=0), offset_ms=7_200_000)
    assert isinstance(out[0], RawTick) and out[0].time_msc == 1578614400987 - 7_200_000


def test_offset_detection_rounds_fresh_ticks_and_refuses_stale_ones() -> None:
    utc_now = 1_700_000_000_000
    assert detect_offset_ms(utc_now + 3 * 3_600_000 - 800, utc_now) == 3 * 3_600_000
    assert detect_offset_ms(utc_now - 5 * 3_600_000 + 30_000, utc_now) == -5 * 3_600_000
    assert detect_offset_ms(utc_now + 19_800_000, utc_now) == 19_800_000  # UTC+5:30
    assert detect_offset_ms(utc_now + 2 * 3_600_000 - 600_000, utc_now) is None  # stale
    assert detect_offset_ms(utc_now + 20 * 3_600_000, utc_now) is None


# ---- the stand-in behaves like the real module -------------------------------------------
def test_standin_copy_ticks_from_has_the_real_semantics() -> None:
    term = Terminal(["EURUSD"])
    mt5 = term.as_module()
    assert mt5.copy_ticks_from("EURUSD", 0, 10, COPY_TICKS_ALL) is None
    assert mt5.last_error() == (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
    assert mt5.initialize() and mt5.last_error() == (1, "Success")
    term.add_ticks("EURUSD", EURUSD_RECORDED)
    term.add_tick("EURUSD", 1578614456100, 1.2, 1.3, flags=0x08)  # a LAST-only tick
    got = mt5.copy_ticks_from("EURUSD", utc(1578614418), 3, COPY_TICKS_INFO)
    assert got.dtype == TICK_DTYPE
    assert got["time_msc"].tolist() == [1578614418265, 1578614418905, 1578614419519]
    # date_from has whole-second resolution: 418.999 s still includes 418.265
    assert mt5.copy_ticks_from("EURUSD", 1578614418.999, 1, COPY_TICKS_ALL)["time_msc"][0] \
        == 1578614418265
    assert len(mt5.copy_ticks_from("EURUSD", 0, 100, COPY_TICKS_INFO)) == 10
    assert len(mt5.copy_ticks_from("EURUSD", 0, 100, COPY_TICKS_ALL)) == 11
    assert mt5.copy_ticks_range("EURUSD", 1578614404, 1578614412, COPY_TICKS_ALL)[
        "time_msc"].tolist() == [1578614404057, 1578614404344]
    assert mt5.copy_ticks_from("EURUSD", 0, 0, COPY_TICKS_ALL) is None
    assert mt5.last_error()[0] == RES_E_INVALID_PARAMS
    assert mt5.copy_ticks_from("EURUSD", "yesterday", 5, COPY_TICKS_ALL) is None
    assert mt5.symbol_info_tick("EURUSD") is None  # not selected in Market Watch
    assert mt5.symbol_select("EURUSD", True)
    tick = mt5.symbol_info_tick("EURUSD")
    assert (tick.time_msc, tick.bid, tick.ask) == (1578614456100, 1.11039, 1.11051)
    assert not mt5.initialize(login=LOGIN, password="wrong", server=SERVER)
    assert mt5.last_error() == (RES_E_AUTH_FAILED, "Terminal: Authorization failed")
    mt5.shutdown()
    assert mt5.copy_ticks_from("EURUSD", 0, 1, COPY_TICKS_ALL) is None


def test_standin_module_functions_and_bridge_return_identical_arrays() -> None:
    term = standin.reset(["EURUSD"])
    term.add_ticks("EURUSD", EURUSD_RECORDED)
    assert standin.initialize() and standin.symbol_select("EURUSD")
    local = standin.copy_ticks_from("EURUSD", utc(1578614404), 5, COPY_TICKS_ALL)
    with serve(term) as server:
        api = BridgeApi(server.host, server.port)
        try:
            remote = api.copy_ticks_from("EURUSD", utc(1578614404), 5, COPY_TICKS_ALL)
            assert remote is not None and local is not None
            assert remote.dtype == TICK_DTYPE and remote.tobytes() == local.tobytes()
            tick = api.symbol_info_tick("EURUSD")
            assert tick.time_msc == 1578614456015 and tick._fields[0] == "time"
            assert api.copy_ticks_from("NOSUCH", 0, 5, COPY_TICKS_ALL) is None
            assert api.last_error()[0] == RES_E_INVALID_PARAMS
        finally:
            api.close()
    standin.shutdown()


# ---- configuration and credentials -------------------------------------------------------
@pytest.mark.parametrize("name", ["icmarkets", "pepperstone", "fxcm"])
def test_example_configs_load(name: str, tmp_path: Path) -> None:
    path = REPO / "config" / "collectors" / f"mt5-{name}.yaml"
    data = yaml.safe_load(path.read_text())
    if "password_file" in data:
        secret = tmp_path / "pw"
        secret.write_text(PASSWORD + "\n")
        data["password_file"] = str(secret)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
        path = tmp_path / "c.yaml"
    cfg = load_config(path, env={"ICM_MT5_PASSWORD": PASSWORD, "PEP_MT5_PASSWORD": PASSWORD})
    assert cfg.password is not None and cfg.password.get() == PASSWORD
    assert cfg.symbols["EURUSD"] == "EURUSD"
    assert cfg.broker == {"icmarkets": "ICM", "pepperstone": "PEP", "fxcm": "FXCM"}[name]
    assert PASSWORD not in repr(cfg)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"symbols": None}, "symbols"),
        ({"symbols": ["eur/usd"]}, "symbols"),
        ({"password": PASSWORD}, "password"),
        ({"password_env": "UNSET_VAR"}, "password_env"),
        ({"poll_interval_s": "fast"}, "poll_interval_s"),
        ({"bridge": "wine-host"}, "bridge"),
        ({"copy_flags": "BOTH"}, "copy_flags"),
        ({"backoff": {"cap_s": -1}}, "backoff.cap_s"),
        ({"backoff": {"factor": 3}}, "backoff.factor"),
        ({"password_file": "/run/secrets/pw"}, "password_env"),  # with password_env: not both
        ({"login": "51234567"}, "login"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_errors_name_the_field_and_the_file(change: dict[str, Any], field: str) -> None:
    data = {k: v for k, v in collector_config(**change).items() if v is not None}
    with pytest.raises(CollectorConfigError) as err:
        parse_config(data, source="config/collectors/x.yaml",
                     env={"ICM_MT5_PASSWORD": PASSWORD})
    assert str(err.value).startswith(f"config/collectors/x.yaml: {field}: ")
    assert PASSWORD not in str(err.value)


def test_native_module_absent_is_fatal_with_a_bridge_hint() -> None:
    with pytest.raises(FatalCollectorError, match="--bridge"):
        load_native()


def test_credentials_never_reach_logs_errors_or_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    term = terminal()
    term.add_tick("EURUSD", 1_700_000_000_000, 1.1, 1.2)
    sink = ListSink()

    async def scenario() -> None:
        c = make_collector(term, sink, symbols=["EURUSD"])
        task = asyncio.create_task(c.run())
        await until(lambda: len(sink.ticks()) == 1)
        # A terminal error that echoes the password (and a row that embeds it as text).
        term.fail_next("copy_ticks_from", RES_E_INTERNAL_FAIL_RECEIVE,
                       f"IPC recv failed while password={PASSWORD}")
        await until(lambda: c.health.reconnects >= 1)
        await until(lambda: term.calls["copy_ticks_from"] >= 4)
        await stop(c, task)
        assert PASSWORD not in str(c.health_dict()) and "***" in str(c.health.last_error)
        # Wrong password on the terminal side: fatal, and the error does not carry it.
        term.accounts[LOGIN] = ("rotated", SERVER)
        bad = make_collector(term, sink, symbols=["EURUSD"])
        with pytest.raises(FatalCollectorError) as err:
            await bad.run()
        assert "refused login" in str(err.value) and PASSWORD not in str(err.value)

    asyncio.run(scenario())
    assert "session lost" in caplog.text and "fatal" in caplog.text
    assert PASSWORD not in caplog.text
    assert all(PASSWORD.encode() not in repr(r).encode() for _, _, r in sink.sent)


# ---- the collector against the stand-in (no Kafka) ---------------------------------------
@pytest.mark.parametrize("transport", ["in-process", "bridge"])
def test_reconnect_at_a_millisecond_boundary_loses_and_repeats_nothing(transport: str) -> None:
    term = terminal()
    t0 = 1_700_000_000_000
    for sym, px in (("EURUSD", 1.1), ("USDJPY", 150.0), ("GBPUSD", 1.25)):
        term.add_tick(sym, t0, px, px + 0.0002)
    sink = ListSink()
    server = serve(term) if transport == "bridge" else None
    t1 = t0 + 1777  # the boundary millisecond

    async def scenario() -> None:
        c = make_collector(term, sink, bridge=server.address if server else None)
        task = asyncio.create_task(c.run())
        await until(lambda: len(sink.ticks()) == 3)  # the live-edge tick of each symbol
        term.add_tick("EURUSD", t1, 1.1001, 1.1003)
        term.add_tick("EURUSD", t1, 1.1002, 0.0, flags=TICK_FLAG_BID)
        term.add_tick("EURUSD", t1, 0.0, 1.1004, flags=TICK_FLAG_ASK)
        await until(lambda: len(sink.ticks()) == 6)
        polls = term.calls["copy_ticks_from"]
        if server is not None:
            assert server.drop_connections() == 1  # the Wine-side Python went away
        term.disconnect(refuse_initialize=2)
        await until(lambda: term.calls["initialize"] >= 3)  # failed re-initializations
        # More ticks in the very same millisecond while the collector is cut off.
        term.add_tick("EURUSD", t1, 1.1002, 1.1004)
        term.add_tick("EURUSD", t1, 1.1003, 0.0, flags=TICK_FLAG_BID)
        term.add_tick("USDJPY", t1, 150.01, 150.03)
        await until(lambda: len(sink.ticks()) == 9)
        assert term.calls["copy_ticks_from"] > polls
        term.add_tick("EURUSD", t1 + 1, 1.1004, 1.1005)
        await until(lambda: len(sink.ticks()) == 10)
        polls = term.calls["copy_ticks_from"]
        await until(lambda: term.calls["copy_ticks_from"] >= polls + 9)  # nothing new found
        await stop(c, task)
        assert c.health.reconnects >= 3 and c.health.rejected == 0

    try:
        asyncio.run(scenario())
    finally:
        if server is not None:
            server.close()
    eur = [(t.time_msc, t.bid, t.ask) for t in sink.ticks() if t.symbol == "EURUSD"]
    assert eur == [
        (t0, 1.1, 1.1002), (t1, 1.1001, 1.1003), (t1, 1.1002, 1.1003), (t1, 1.1002, 1.1004),
        (t1, 1.1002, 1.1004), (t1, 1.1003, 1.1004), (t1 + 1, 1.1004, 1.1005),
    ]
    assert [t.time_msc for t in sink.ticks() if t.symbol == "USDJPY"] == [t0, t1]
    assert len(sink.ticks()) == 10


def test_more_ticks_in_one_second_than_the_batch_size_still_progress() -> None:
    term = terminal(("EURUSD",))
    t0 = 1_700_000_000_000
    term.add_tick("EURUSD", t0, 1.0, 1.1)
    sink = ListSink()

    async def scenario() -> None:
        c = make_collector(term, sink, symbols=["EURUSD"], batch_size=2)
        task = asyncio.create_task(c.run())
        await until(lambda: len(sink.ticks()) == 1)
        term.add_ticks("EURUSD", [(t0 // 1000, 1.0 + i * 1e-5, 1.1, 0.0, 0, t0 + i // 3, BOTH,
                                   0.0) for i in range(1, 31)])
        await until(lambda: len(sink.ticks()) == 31)
        await stop(c, task)

    asyncio.run(scenario())
    assert [t.bid for t in sink.ticks()] == [1.0 + i * 1e-5 for i in range(31)]


def test_server_offset_is_detected_from_a_fresh_tick() -> None:
    term = terminal(("EURUSD",))
    utc_now_s = 1_700_000_000.0
    server_ms = int(utc_now_s * 1000) + 3 * 3_600_000 - 1_500  # UTC+3, 1.5 s old
    term.add_tick("EURUSD", server_ms, 1.1, 1.2)
    sink = ListSink()

    async def scenario() -> None:
        cfg = collector_config(symbols=["EURUSD"], detect_server_offset=True,
                               server_utc_offset_hours=2)
        c = Mt5Collector(parse_config(cfg, env={"ICM_MT5_PASSWORD": PASSWORD}), sink,
                         api=term.as_module, clock=lambda: utc_now_s)
        task = asyncio.create_task(c.run())
        await until(lambda: len(sink.ticks()) == 1)
        await stop(c, task)
        assert c.offset_ms == 3 * 3_600_000

    asyncio.run(scenario())
    assert sink.ticks()[0].time_msc == server_ms - 3 * 3_600_000


def test_unknown_symbol_stops_the_collector_naming_the_file() -> None:
    term = terminal(("EURUSD",))

    async def scenario() -> None:
        cfg = collector_config(symbols={"EURUSD": "EURUSD.x"})
        c = build(cfg, ListSink(), config_path="mt5-icm.yaml",
                  env={"ICM_MT5_PASSWORD": PASSWORD}, api=term.as_module)
        with pytest.raises(FatalCollectorError, match=r"EURUSD\.x.*mt5-icm\.yaml"):
            await c.run()

    asyncio.run(scenario())


def test_transient_errors_raise_mt5_error_with_last_error() -> None:
    err = Mt5Error("copy_ticks_from('EURUSD')", RES_E_INTERNAL_FAIL_RECEIVE, "IPC recv failed")
    assert isinstance(err, ConnectionError) and "-10002" in str(err)


# ---- end to end into the broker ----------------------------------------------------------
def _read_back(settings: Settings, expect_ticks: int, expect_rejects: int) -> tuple[list[Any],
                                                                                   list[Any]]:
    raw, rej = settings.topic("ticks.raw"), settings.topic("ticks.rejected")
    with TopicReader(settings, [raw, rej]) as reader:
        got = reader.read_until(
            lambda ms: sum(m.topic == raw for m in ms) >= expect_ticks
            and sum(m.topic == rej for m in ms) >= expect_rejects, timeout_s=20,
        )
        got += reader.poll(timeout_s=0.3)  # anything extra would be a duplicate
    return [m for m in got if m.topic == raw], [m for m in got if m.topic == rej]


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["in-process", "bridge"])
def test_end_to_end_into_kafka_exact_counts_partitions_and_dead_letters(
    kafka_settings: Settings, transport: str
) -> None:
    ensure_topics(kafka_settings)
    term = terminal()
    t0 = 1_700_000_000_000
    prices = {"EURUSD": 1.1, "USDJPY": 150.0, "GBPUSD": 1.25}
    for sym, px in prices.items():
        term.add_tick(sym, t0, px, px + 0.0002)
    producer = RecordProducer(kafka_settings)
    server = serve(term) if transport == "bridge" else None
    expected: list[tuple[str, int, float, float]] = [(s, t0, p, p + 0.0002)
                                                     for s, p in prices.items()]

    def add(sym: str, t: int, bid: float, ask: float, flags: int = BOTH) -> None:
        term.add_tick(sym, t, bid, ask, flags=flags)
        expected.append((sym, t, bid, ask))

    async def scenario() -> Mt5Collector:
        c = make_collector(term, producer, bridge=server.address if server else None)
        task = asyncio.create_task(c.run())
        await until(lambda: c.health.ticks == 3)
        for k in range(1, 41):  # 40 ms with 4 ticks each, all symbols
            for sym, px in prices.items():
                for j in range(4):
                    add(sym, t0 + k, px + k * 1e-5 + j * 1e-6, px + 0.0003 + k * 1e-5)
        term.add_tick("EURUSD", t0 + 40, math.nan, 1.2)  # malformed, same ms as good ticks
        await until(lambda: c.health.ticks == len(expected))
        # Cut the link mid-millisecond; ticks keep arriving in that ms and after it.
        if server is not None:
            server.drop_connections()
        term.disconnect(refuse_initialize=1)
        await until(lambda: c.health.reconnects >= 1)
        for sym, px in prices.items():
            add(sym, t0 + 40, px + 0.001, px + 0.0013)
            add(sym, t0 + 41, px + 0.002, px + 0.0023)
        term.add_tick("USDJPY", t0 + 41, 150.0, -1.0)  # malformed after the reconnect
        await until(lambda: c.health.ticks == len(expected) and c.health.rejected == 2)
        await stop(c, task)
        return c

    try:
        c = asyncio.run(scenario())
    finally:
        if server is not None:
            server.close()
    assert producer.flush(15) == 0
    ticks, rejects = _read_back(kafka_settings, len(expected), 2)
    codec = make_codec(None)
    decoded = [(m, codec.decode(m.value, RawTick, m.topic)) for m in ticks]
    assert sorted((t.symbol, t.time_msc, t.bid, t.ask) for _, t in decoded) == sorted(expected)
    assert len(decoded) == len(expected) == 3 + 3 * 40 * 4 + 6
    for m, t in decoded:
        assert m.key == t.symbol.encode()
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % 4
        assert (t.broker, t.source) == ("ICM", "MT5")
    reasons = sorted((codec.decode(m.value, RejectedRecord, m.topic).reason, m.key)
                     for m in rejects)
    assert reasons == [("invalid_price", b"EURUSD"), ("invalid_price", b"USDJPY")]
    dead = codec.decode(rejects[0].value, RejectedRecord, rejects[0].topic)
    assert dead.source_topic == "collector:mt5:mt5-icmarkets" and b"time_msc" in dead.original
    assert c.health.reconnects >= 1
    assert all(PASSWORD.encode() not in m.value for m in ticks + rejects)
