"""Shared by the worker integration tests: risk settings that trade, a small model, rows."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connectors.producer import RecordProducer
from connectors.simulator import simulate
from schemas.records import FeatureVector, RawTick
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.train import train_model
from stages.types import Tick
from topology.settings import Settings

RISK = {"TICKSTREAM_RISK_ENTRY_THRESHOLD": "0.51", "TICKSTREAM_RISK_EXIT_THRESHOLD": "0.5",
        "TICKSTREAM_RISK_COOLDOWN_S": "0", "TICKSTREAM_RISK_MAX_SPREAD_PIPS": "10"}


def train_small_model(tmp: Path, settings: Settings) -> Path:
    """A model trained on another stretch of simulated history, via the same pipeline."""
    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    out = Outputs()
    rows: list[FeatureVector] = []
    for t in simulate(1, symbols=("EURUSD",), seconds=5400):
        pipeline.on_tick(t, out)
        rows += out.features
        out.clear()
    models = tmp / "models"
    train_model([r.to_dict() for r in rows], [r.close for r in rows], 3, models, "v1",
                (rows[0].bar_time, rows[-1].bar_time))
    return models


def send_ticks(producer: RecordProducer, ticks: Iterable[Tick]) -> None:
    """Produce ``ticks`` to ``ticks.raw`` as a simulator collector would, and flush."""
    for t in ticks:
        producer.send("ticks.raw", t.symbol, RawTick(
            broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, time_msc=t.time_msc,
            recv_time_us=t.recv_time_us, source="SIMULATOR"))
    assert producer.flush() == 0


def row(rec: Any, skip: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """A record's fields as ``tickstream process --out`` writes them (``csv.writer``: None
    as an empty field, a float in its shortest round-trip form)."""
    return tuple("" if (v := getattr(rec, f)) is None else str(v)
                 for f in type(rec).FIELDS if f not in skip)


def csv_rows(path: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [tuple(v for k, v in r.items() if k not in skip) for r in csv.DictReader(fh)]
