"""Broker-less tests of the health agent and the worker's ``/health/`` page (Faust
``agent.test_context()`` with the memory store, as in tests/unit/agents/test_agents.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from faust_fakes import RecordingProducer, close_consumer_loop

from agents.health import collector_status, health_report
from schemas.codec import make_codec
from schemas.records import CollectorHealth, ControlMessage, RejectedRecord
from topology.app import create_app
from topology.settings import Settings

CODEC = make_codec(None)


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Any]:
    s = Settings.from_env(
        {"TICKSTREAM_TABLE_STORE": "memory://", "TICKSTREAM_TOPIC_PREFIX": "h.",
         "TICKSTREAM_MODEL_DIR": str(tmp_path / "models")}, env_file=None,
    )
    a = create_app(s, web_enabled=False)
    a.producer = RecordingProducer()
    yield a
    close_consumer_loop(a)


def agent(app: Any, name: str) -> Any:
    return next(a for a in app.agents.values() if a.name == name)


def report(name: str, state: str = "RUNNING", *, age_s: float = 0.0, ticks: int = 10,
           connected: bool = True, **extra: Any) -> CollectorHealth:
    now = int(time.time() * 1000)
    return CollectorHealth(
        name=name, kind="simulate", state=state, connected=connected,
        time_ms=now - int(age_s * 1000), started_ms=now - 60_000, ticks=ticks, events=1,
        rejected=0, errors=0, reconnects=0, ticks_per_s=ticks / 60, interval_s=1.0, **extra,
    )


def encoded(rec: CollectorHealth) -> bytes:
    return bytes(CODEC.encode(rec, "h.collectors.health"))


async def test_agent_keeps_the_latest_report_per_collector(app: Any) -> None:
    async with agent(app, "health").test_context() as ag:
        await ag.put(encoded(report("sim-a", ticks=1)), key=b"sim-a")
        await ag.put(encoded(report("mt5-icm", detail='{"server_offset_s": 7200}')),
                     key=b"mt5-icm")
        await ag.put(encoded(report("sim-a", ticks=2)), key=b"sim-a")
        await ag.put(encoded(report("sim-a", "STOPPED", ticks=3, connected=False)),
                     key=b"sim-a")
    table = app.tables["collector_health"]
    assert set(table.keys()) == {b"sim-a", b"mt5-icm"}
    latest = orjson.loads(table[b"sim-a"])
    assert (latest["state"], latest["ticks"], latest["connected"]) == ("STOPPED", 3, False)
    changelog = app.producer.by_topic(table.changelog_topic.get_topic_name())
    assert [orjson.loads(v)["ticks"] for k, v in changelog if k == b"sim-a"] == [1, 2, 3]


async def test_agent_dead_letters_what_it_cannot_decode(app: Any) -> None:
    async with agent(app, "health").test_context() as ag:
        await ag.put(b"\x00 not a report", key=b"x")
        await ag.put(encoded(report(" ")), key=b" ")
    dls = [CODEC.decode(v, RejectedRecord) for _k, v in app.producer.by_topic("h.ticks.rejected")]
    assert [(d.reason, d.stage) for d in dls] == [("malformed", "health"),
                                                 ("invalid_health", "health")]
    assert dls[0].original == b"\x00 not a report"
    assert len(app.tables["collector_health"]) == 0


async def test_health_page_shows_collectors_model_kill_switch_and_quality(app: Any) -> None:
    async with agent(app, "control").test_context() as ag:
        await ag.put(bytes(CODEC.encode(ControlMessage(
            command="kill_switch_on", reason="drill", issued_by="pytest", time_ms=1),
            "h.control")), key=b"kill_switch")
    async with agent(app, "health").test_context() as ag:
        await ag.put(encoded(report("fresh", detail='{"quiet_brokers": ["PEP"]}')),
                     key=b"fresh")
        await ag.put(encoded(report("late", age_s=30)), key=b"late")
        await ag.put(encoded(report("gone", "STOPPED", age_s=600, connected=False)),
                     key=b"gone")
    quality = {"ICM": {"ticks_per_s": 2.0, "score": 0.9}}
    app.tables["broker_quality"].data[b"EURUSD"] = orjson.dumps(quality)

    view = app.web.views["/health/"]
    response = await view.get(None)
    assert response.status == 200 and response.content_type == "application/json"
    page = orjson.loads(response.body)
    assert set(page["collectors"]) == {"fresh", "late", "gone"}
    fresh, late, gone = (page["collectors"][n] for n in ("fresh", "late", "gone"))
    assert fresh["ok"] and not fresh["stale"] and fresh["age_s"] < 30
    assert fresh["detail"] == {"quiet_brokers": ["PEP"]} and fresh["ticks"] == 10
    assert late["stale"] and not late["ok"] and late["age_s"] >= 30  # 3 intervals of 1 s
    assert gone["state"] == "STOPPED" and not gone["stale"] and not gone["ok"]
    assert page["ok"] is False  # "late" is stale; a stopped collector does not count
    assert page["kill_switch"]["on"] is True and page["kill_switch"]["reason"] == "drill"
    assert page["model"]["healthy"] is False and "model_dir" in page["model"]
    assert page["broker_quality"] == {"EURUSD": quality}
    # The service shape beside those keys: no tick and no assignment in this test.
    assert (page["service"], page["status"]) == ("tickstream-worker", "degraded")
    assert page["brokers"] == {} and page["aggregation"]["consumers"] == 0
    assert page["aggregation"]["consumer_group"]["partitions"] == []
    assert page["quality"]["completeness"] is None
    alias = await app.web.views["/health"].get(None)
    assert set(orjson.loads(alias.body)) == set(page)


def test_report_is_ok_when_every_running_collector_is_fresh() -> None:
    now = int(time.time() * 1000)
    table = {b"a": orjson.dumps(report("a").to_dict()),
             b"b": orjson.dumps(report("b", "STOPPED", connected=False).to_dict())}
    page = health_report(table, None, now_ms=now)
    assert page["ok"] is True and page["model"] is None and page["broker_quality"] == {}
    assert page["kill_switch"] == {"on": False}
    failed = {**table, b"c": orjson.dumps(report("c", "FAILED", connected=False).to_dict())}
    assert health_report(failed, None, now_ms=now)["ok"] is False


def test_staleness_follows_the_report_interval() -> None:
    rec = report("a").to_dict()
    t = rec["time_ms"]
    assert not collector_status(rec, t + 2_900)["stale"]  # interval 1 s: stale after 3 s
    assert collector_status(rec, t + 3_100)["stale"]
    assert not collector_status({**rec, "interval_s": 0.0}, t + 14_000)["stale"]  # default 5 s
    disconnected = collector_status({**rec, "connected": False}, t)
    assert not disconnected["stale"] and not disconnected["ok"]
