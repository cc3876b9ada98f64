"""``tickstream replay`` on real two-broker ticks: deterministic, equal to ``process``,
and no feature at or before bar t depends on any tick after it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectors.files import write_canonical
from connectors.history.parse import read_history
from offline.process import run_process
from offline.replay import ReplayError, replay
from schemas.records import FeatureVector
from stages.features import FEATURE_SET
from stages.types import Tick
from topology.settings import Settings

pytestmark = pytest.mark.data

SETTINGS = Settings.from_env({}, env_file=None)


@pytest.fixture(scope="module")
def day_csv(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours of EURUSD from OANDA and FXCM (their clocks applied), in time order."""
    lean = shared_data / "lean"
    ticks = [t for t in read_history("lean", lean / "oanda/tick/eurusd/20140512_quote.zip")
             if isinstance(t, Tick)]
    ticks += [t for t in read_history("lean", lean / "fxcm/tick/eurusd/20140512_quote.zip")
              if isinstance(t, Tick)]
    start = 1_399_881_600_000  # 2014-05-12 08:00 UTC
    ticks = sorted((t for t in ticks if start <= t.time_msc < start + 6 * 3_600_000),
                   key=lambda t: t.time_msc)
    ticks = [Tick(t.broker, t.symbol, t.time_msc, t.bid, t.ask, (t.time_msc + 20) * 1000)
             for t in ticks]
    path = tmp_path_factory.mktemp("replay") / "eurusd.csv"
    with path.open("w", newline="") as fh:
        write_canonical(ticks, fh)
    return path


def test_replay_is_byte_identical_and_equals_process(day_csv: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    res = replay(None, SETTINGS, out=a, files=[day_csv])
    replay(None, SETTINGS, out=b, files=[day_csv])
    assert a.read_bytes() == b.read_bytes()
    table = pq.read_table(a)
    meta = json.loads(table.schema.metadata[b"tickstream"])
    assert meta["feature_set"] == FEATURE_SET and meta["horizon_min"] == 5
    assert res["rows"] == table.num_rows > 300
    assert set(table.column("label").to_pylist()) <= {-1, 0, 1}

    run_process([day_csv], SETTINGS, None, tmp_path / "offline")
    with (tmp_path / "offline" / "features.csv").open() as fh:
        offline = {int(r["bar_time"]): r for r in csv.DictReader(fh)}
    rows = table.to_pylist()
    assert rows and all(r["bar_time"] in offline for r in rows)
    for r in rows:
        off = offline[r["bar_time"]]
        for name in FeatureVector.FIELDS:
            want = off[name]
            got = r[name]
            assert ("" if got is None else str(got)) == want, (name, r["bar_time"])
    # rows without a bar H minutes ahead are not in the file; every other bar is
    unlabelled = res["symbols"]["EURUSD"]["unlabelled"]
    assert len(rows) + unlabelled == len(offline)


def test_nothing_at_or_before_bar_t_depends_on_later_ticks(day_csv: Path, tmp_path: Path) -> None:
    lines = day_csv.read_text().splitlines()
    header, body = lines[0], lines[1:]
    full = tmp_path / "full.parquet"
    replay(None, SETTINGS, out=full, files=[day_csv])
    cut_ms = int(body[len(body) // 2].split(",")[2]) // 60_000 * 60_000  # a minute boundary
    early = [ln for ln in body if int(ln.split(",")[2]) < cut_ms]
    late = [ln for ln in body if int(ln.split(",")[2]) >= cut_ms]
    # truncated after the cut, and with every later price moved by 50 pips
    truncated = tmp_path / "trunc.csv"
    truncated.write_text("\n".join([header, *early]) + "\n")
    perturbed = tmp_path / "pert.csv"
    moved = []
    for ln in late:
        f = ln.split(",")
        f[3], f[4] = repr(float(f[3]) + 0.005), repr(float(f[4]) + 0.005)
        moved.append(",".join(f))
    perturbed.write_text("\n".join([header, *early, *moved]) + "\n")
    feature_cols = [n for n in pq.read_schema(full).names
                    if n not in ("label", "future_close", "threshold")]

    def before_cut(path: Path) -> dict[int, dict[str, object]]:
        t = pq.read_table(path, columns=feature_cols).to_pylist()
        # the bar of the minute before the cut closes on the first later tick: excluded
        return {r["bar_time"]: r for r in t if r["bar_time"] < cut_ms - 60_000}

    reference = before_cut(full)
    assert len(reference) > 100
    for variant in (truncated, perturbed):
        out = tmp_path / f"{variant.stem}.parquet"
        replay(None, SETTINGS, out=out, files=[variant])
        got = before_cut(out)
        if variant is perturbed:
            assert set(got) == set(reference)
        else:  # the last bars before the cut have no bar 5 minutes ahead: no label, no row
            assert set(got) <= set(reference) and len(got) >= len(reference) - 6
        for t in got:
            assert got[t] == reference[t], t


def test_an_empty_range_is_one_clear_error(day_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no ticks"):
        replay(None, SETTINGS, out=tmp_path / "x.parquet", files=[day_csv], from_ms=0, to_ms=1)
    assert not (tmp_path / "x.parquet").exists()


def test_replay_from_the_store_equals_replay_of_the_files(day_csv: Path, tmp_path: Path) -> None:
    """``process --store`` fills a store with the Lean ticks' outputs; ``replay --store``
    labels the stored feature vectors: the same matrix as ``replay --file`` of the ticks."""
    url = f"chdb://{tmp_path / 'store'}"
    res = run_process([day_csv], SETTINGS, None, None, store=url)
    assert res["stored"]["features"] == res["features"] > 300
    assert res["stored"]["ticks"] == res["clean"]
    assert res["stored"]["rejects"] == sum(res["rejected"].values())
    run_process([day_csv], SETTINGS, None, None, store=url, jobs=2)  # stored again: collapses
    files, stored = tmp_path / "files.parquet", tmp_path / "store.parquet"
    replay(None, SETTINGS, out=files, files=[day_csv])
    summary = replay(None, SETTINGS, out=stored, store=url)
    a, b = pq.read_table(files), pq.read_table(stored)
    assert a.num_rows == b.num_rows == summary["rows"] > 300
    assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
    meta_a = json.loads(a.schema.metadata[b"tickstream"])
    meta_b = json.loads(b.schema.metadata[b"tickstream"])
    inputs = {"ticks", "first_tick_ms", "last_tick_ms", "first_bar_ms", "last_bar_ms"}
    assert {k: v for k, v in meta_a.items() if k not in inputs} == {
        k: v for k, v in meta_b.items() if k not in inputs}
    # a window and a symbol filter apply to the bar time
    start = int(a.column("bar_time")[0].as_py()) + 3_600_000
    part = replay(None, SETTINGS, out=tmp_path / "part.parquet", store=url, from_ms=start,
                  symbols=["EURUSD"])
    assert 0 < part["rows"] < summary["rows"]
    with pytest.raises(ReplayError, match="no stored feature vectors"):
        replay(None, SETTINGS, out=tmp_path / "x.parquet", store=url, symbols=["GBPUSD"])
    with pytest.raises(ReplayError, match="no tables"):
        replay(None, SETTINGS, out=tmp_path / "x.parquet", store=f"chdb://{tmp_path / 'empty'}")


def test_ticks_decoded_column_wise_are_the_codecs_in_order() -> None:
    """replay --topic's decode: every RawTick as decode_dict reads it, in record order, the
    malformed ones counted (a cut record, garbage, another framing's bytes)."""
    import random

    from offline.replay import decode_ticks
    from schemas.codec import Codec, MalformedRecord
    from schemas.records import RawTick

    codec = Codec()
    rng = random.Random(3)
    values = []
    for i in range(300):
        values.append(codec.encode(RawTick(
            broker=("OANDA", "FXCM")[i % 2], symbol=("EURUSD", "NZDUSD")[i % 3 % 2],
            bid=1.1 + i * 1e-5, ask=1.1002 + i * 1e-5, time_msc=1_400_000_000_000 + i,
            recv_time_us=(1_400_000_000_000 + i) * 1000, source="HISTORY",
            seq=None if i % 4 else i, last=None if i % 5 else 1.1001,
            volume=None if i % 7 else float(i))))
    values[10] = values[10][:-3]
    values[20] = rng.randbytes(30)
    values[30] = b"\x00\x00\x00\x00\x01" + values[30][10:]
    ticks, malformed = decode_ticks(codec, values, "t")
    want = []
    bad = 0
    for v in values:
        try:
            r = codec.decode_dict(RawTick.SCHEMA, v, "t")
        except MalformedRecord:
            bad += 1
            continue
        want.append(Tick(r["broker"], r["symbol"], r["time_msc"], r["bid"], r["ask"],
                         r["recv_time_us"], r["seq"], r["last"], r["volume"]))
    assert malformed == bad == 3
    key = [(t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.recv_time_us, t.seq, t.last,
            t.volume) for t in ticks]
    assert key == [(t.broker, t.symbol, t.time_msc, t.bid, t.ask, t.recv_time_us, t.seq,
                    t.last, t.volume) for t in want]
    assert any(t.last is None for t in ticks) and any(t.volume == 0.0 for t in ticks)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_stages_see_each_symbol_in_time_order_whatever_the_input_order(day_csv: Path,
                                                                        jobs: int) -> None:
    """feature_rows takes each symbol's ticks in a stable sort by time: the same vectors as
    the stages over ``sorted(ticks, key=(symbol, time))``, for ticks that arrive interleaved
    across symbols and out of time order (equal times keep their input order, so which
    broker's quote comes first is the input's), in one process or dealt out to forked
    ones (3 jobs for 2 symbols: 2 processes)."""
    import random

    from offline.replay import feature_rows
    from stages.pipeline import Outputs, Pipeline, PipelineConfig

    ticks = [t for t in read_history("csv", day_csv) if isinstance(t, Tick)]
    # a second symbol from the same quotes, and the input shuffled in blocks
    ticks += [Tick(t.broker, "NZDUSD", t.time_msc, t.bid, t.ask, t.recv_time_us)
              for t in ticks[::3]]
    rng = random.Random(5)
    blocks = [ticks[i:i + 500] for i in range(0, len(ticks), 500)]
    rng.shuffle(blocks)
    shuffled = [t for b in blocks for t in b]
    config = PipelineConfig.from_settings(SETTINGS)

    pipeline, out, flat = Pipeline(config), Outputs(), []
    for t in sorted(shuffled, key=lambda t: (t.symbol, t.time_msc)):
        pipeline.on_tick(t, out)
        flat += out.features
        out.clear()
    pipeline.flush(out)  # each symbol's last bar
    flat += out.features
    want: dict[str, list[FeatureVector]] = {}
    for fv in flat:
        want.setdefault(fv.symbol, []).append(fv)
    got = feature_rows(shuffled, config, jobs)
    assert sorted(got) == ["EURUSD", "NZDUSD"]
    assert got == want
    assert min(len(v) for v in want.values()) > 100
