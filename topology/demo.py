"""``tickstream demo``: the whole system on a private broker, for a fixed time, then a summary.

Steps (each a real part of the project, nothing faked):

1. a private :class:`~devstack.broker.LocalBroker` on a free port, every topic created;
2. history into ``ticks.history`` with the loader (:mod:`offline.load`): the two-broker Lean
   ticks in ``../shared/data/lean`` (all days, or the first ``history_days``), or simulated
   history written as a canonical CSV when that folder is absent;
3. :mod:`offline.replay` of that topic into a feature matrix and :mod:`offline.train`
   (walk-forward report, PNG). The verdict is reported as it is; the demo then uses the
   saved version anyway (``force``: a version named ``demo``, in the demo's own model
   folder, never promoted anywhere else), with an entry threshold just above 0.5 so that
   every scored bar trades and commands appear within seconds;
4. the worker (:class:`~devstack.localstack.WorkerProcess`), the storage sink on embedded
   chdb (:class:`~devstack.sink.SinkProcess`);
5. a warm-up: ``tickstream collect simulate`` with ``realtime: false`` sends the 40 minutes
   of simulated quotes before the current minute, so the indicators (MACD needs 34 bars)
   are warm when the live quotes start and the first live tick closes a fully featured bar;
6. the live collectors for ``duration_s`` seconds: the simulator quoting from several
   brokers in real time (with its calendar and news events), plus three undecodable records
   sent to ``ticks.raw`` (the decode dead-letter path);
7. the end: collectors stopped, one closing quote per symbol and broker at its last clean
   price (so the validator decides any quote it still holds for jump confirmation; they are
   counted as ticks in), the worker and the sink drained, then stopped, the store counted.

**Nothing lost**: ``ticks_in`` (every record on ``ticks.raw``, read back from the topic) =
``clean`` (records on ``ticks.clean``) + ``rejected`` (records on ``ticks.rejected`` whose
source is ``ticks.raw``) + ``duplicates`` (the worker's ``tickstream_duplicates_total``).

Every process started is stopped in ``finally`` (collectors, worker, sink, broker, in that
order), after Ctrl-C or SIGTERM too; the summary lists their pids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from devstack.broker import LocalBroker, free_port
from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from devstack.sink import SinkProcess
from topology.demo_feeds import FeedServer
from topology.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LEAN = REPO_ROOT.parent / "shared" / "data" / "lean"
DEMO_CONFIG = REPO_ROOT / "config" / "demo-simulate.yaml"
WARMUP_MIN = 40
WARMUP_TICKS_PER_S = 0.5
MALFORMED_SENT = 3
MINUTE_MS = 60_000
#: The demo's entry threshold: just above 0.5 (the risk stage's lower bound), so every
#: scored bar opens a position when flat.
DEMO_ENTRY_THRESHOLD = 0.5001
MODEL_VERSION = "demo"
OUTPUT_TOPICS = ("ticks.raw", "ticks.clean", "ticks.rejected", "bars.m1", "features",
                 "trading.commands", "events.calendar", "events.news")
STORED = {"ticks": "ticks.clean", "bars_m1": "bars.m1", "features": "features",
          "commands": "trading.commands", "rejects": "ticks.rejected"}


class DemoError(RuntimeError):
    """A step of the demo failed: one line saying which."""


class View(Protocol):
    """What the demo tells its user while it runs (:mod:`topology.demo_view`)."""

    def step(self, text: str) -> None: ...
    def lines(self, text: str) -> None: ...
    def progress(self, what: str) -> Callable[[int], None]: ...
    def done_progress(self) -> None: ...
    def live(self, stats: Stats, remaining_s: float) -> None: ...
    def end_live(self) -> None: ...


@dataclass
class DemoOptions:
    duration_s: float = 120.0
    history: Path | None = DEFAULT_LEAN
    history_days: int | None = None
    workdir: Path = Path("var/demo")
    partitions: int = 4


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


@dataclass
class Stats:
    """What the demo read back from the topics (and the worker's /metrics)."""

    live_from_us: int = 0
    raw_by_broker: Counter[str] = field(default_factory=Counter)
    raw_malformed: int = 0
    raw_recent: dict[str, deque[int]] = field(default_factory=dict)
    clean: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    rejects_from_raw: int = 0
    rejects_other: int = 0
    bars: int = 0
    bars_live: int = 0
    features: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    commands_live: int = 0
    latest_commands: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=6))
    clean_latency_ms: list[float] = field(default_factory=list)
    command_latency_ms: list[float] = field(default_factory=list)
    last_clean: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    keys: dict[str, set[Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: (kind, source) -> market events on events.calendar / events.news
    events: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def raw(self) -> int:
        return sum(self.raw_by_broker.values()) + self.raw_malformed

    @property
    def duplicates(self) -> int:
        return int(self.metrics.get("tickstream_duplicates_total", 0))

    def ticks_per_s(self, now_us: int, window_s: float = 5.0) -> dict[str, float]:
        lo = now_us - int(window_s * 1e6)
        out = {}
        for broker, q in sorted(self.raw_recent.items()):
            while q and q[0] < lo:
                q.popleft()
            out[broker] = round(len(q) / window_s, 1)
        return out

    def latency(self) -> dict[str, float | None]:
        return {"tick_to_clean_p50_ms": _pct(self.clean_latency_ms, 0.5),
                "tick_to_clean_p99_ms": _pct(self.clean_latency_ms, 0.99),
                "tick_to_command_p50_ms": _pct(self.command_latency_ms, 0.5),
                "tick_to_command_p99_ms": _pct(self.command_latency_ms, 0.99)}


class TopicStats:
    """Reads the output topics from the beginning and keeps :class:`Stats`."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        from schemas.codec import make_codec

        self.settings, self.stats = settings, stats
        self.codec = make_codec(None)
        self.logical = {settings.topic(t): t for t in OUTPUT_TOPICS}
        self.reader = TopicReader(settings, list(self.logical))

    def poll(self, timeout_s: float = 0.2) -> int:
        msgs = self.reader.poll(timeout_s)
        for m in msgs:
            self._one(m)
        return len(msgs)

    def close(self) -> None:
        self.reader.close()

    def _key(self, topic: str, key: Any) -> None:
        self.stats.keys.setdefault(topic, set()).add(key)

    def _one(self, m: Message) -> None:
        from schemas.codec import MalformedRecord
        from schemas.records import (
            Bar,
            CleanTick,
            FeatureVector,
            MarketEvent,
            RawTick,
            RejectedRecord,
            TradingCommand,
        )

        st, topic = self.stats, self.logical[m.topic]
        end = st.end_offsets
        end[(m.topic, m.partition)] = max(end.get((m.topic, m.partition), 0), m.offset + 1)
        types: dict[str, Any] = {
            "ticks.raw": RawTick, "ticks.clean": CleanTick, "ticks.rejected": RejectedRecord,
            "bars.m1": Bar, "features": FeatureVector, "trading.commands": TradingCommand,
            "events.calendar": MarketEvent, "events.news": MarketEvent}
        schema = types[topic].SCHEMA
        try:
            r = self.codec.decode_dict(schema, m.value, m.topic)
        except MalformedRecord:
            if topic == "ticks.raw":
                st.raw_malformed += 1
            return
        if topic == "ticks.raw":
            st.raw_by_broker[r["broker"]] += 1
            if r["recv_time_us"] >= st.live_from_us > 0:
                st.raw_recent.setdefault(r["broker"], deque()).append(r["recv_time_us"])
        elif topic == "ticks.clean":
            st.clean += 1
            st.last_clean[(r["symbol"], r["broker"])] = (r["bid"], r["ask"])
            self._key(topic, (r["broker"], r["symbol"], r["time_msc"], r["bid"], r["ask"]))
            if r["recv_time_us"] >= st.live_from_us > 0:
                st.clean_latency_ms.append((r["processed_time_us"] - r["recv_time_us"]) / 1000)
        elif topic == "ticks.rejected":
            st.rejects[r["reason"]] += 1
            if r["source_topic"] == self.settings.topic("ticks.raw"):
                st.rejects_from_raw += 1
            else:
                st.rejects_other += 1
            self._key(topic, (r["source_topic"], r["source_partition"], r["source_offset"]))
        elif topic == "bars.m1":
            st.bars += 1
            if r["trigger_recv_time_us"] >= st.live_from_us > 0:
                st.bars_live += 1
            self._key(topic, (r["symbol"], r["bar_time"]))
        elif topic.startswith("events."):
            st.events[(r["kind"], r["source"])] += 1
        elif topic == "features":
            st.features += 1
            self._key(topic, (r["symbol"], r["bar_time"]))
        else:
            st.commands[r["action"]] += 1
            self._key(topic, r["command_id"])
            st.latest_commands.append({k: r[k] for k in (
                "action", "symbol", "price", "confidence", "reason", "bar_time")})
            if r["trigger_recv_time_us"] >= st.live_from_us > 0:
                st.commands_live += 1
                st.command_latency_ms.append(
                    (r["created_time_us"] - r["trigger_recv_time_us"]) / 1000)


def scrape_metrics(port: int, timeout_s: float = 2.0) -> dict[str, float]:
    """The worker's /metrics, unlabelled samples by name, labelled ones as name{v,...}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name
            if s.labels:
                name += "{" + ",".join(f"{v}" for _, v in sorted(s.labels.items())) + "}"
            out[name] = float(s.value)
    return out


class Children:
    """Every process the demo started, stopped in reverse order of start."""

    def __init__(self) -> None:
        self.broker: LocalBroker | None = None
        self.worker: WorkerProcess | None = None
        self.sink: SinkProcess | None = None
        self.collectors: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.pids: dict[str, int] = {}

    def collect(self, name: str, kind: str, config: Path, env: dict[str, str],
                log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "topology.cli", "collect", kind, "--config", str(config)],
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)
        self.collectors.append((name, proc))
        self.pids[f"collect-{name}"] = proc.pid
        return proc

    def check_running(self, workdir: Path) -> None:
        """A process that ended on its own ends the demo with its log's name."""
        running: list[tuple[str, subprocess.Popen[bytes] | None]] = [
            (f"collector {n}", p) for n, p in self.collectors]
        running += [("worker", self.worker.process if self.worker else None),
                    ("sink", self.sink.proc if self.sink else None),
                    ("broker", self.broker.process if self.broker else None)]
        for name, proc in running:
            if proc is not None and proc.poll() is not None:
                raise DemoError(f"the {name} exited with {proc.returncode} (logs in {workdir})")

    def stop_collectors(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for _name, proc in self.collectors:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.collectors:
            try:
                codes[name] = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait(10)
        self.collectors = []
        return codes

    def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = dict(self.stop_collectors())
        if self.worker is not None:
            codes["worker"] = self.worker.stop()
            self.worker = None
        if self.sink is not None:
            codes["sink"] = self.sink.stop()
            self.sink = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        return codes


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (KeyboardInterrupt)."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """While stopping everything, a second Ctrl-C must not leave processes behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def demo_env(workdir: Path, partitions: int, bootstrap: str, web_port: int) -> dict[str, str]:
    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TICKSTREAM_APP_ID": "tickstream-demo",
        "TICKSTREAM_TOPIC_PREFIX": "",
        "TICKSTREAM_PARTITIONS": str(partitions),
        "TICKSTREAM_DATA_DIR": str(workdir / "worker"),
        "TICKSTREAM_WEB_PORT": str(web_port),
        "TICKSTREAM_MODEL_DIR": str(workdir / "models"),
        "TICKSTREAM_MODEL_ALLOW_SYMBOLS": "*",
        "TICKSTREAM_STORE_URL": f"chdb://{workdir / 'chdb'}",
        "TICKSTREAM_SINK_BATCH_MS": "200",
        "TICKSTREAM_RISK_ENTRY_THRESHOLD": str(DEMO_ENTRY_THRESHOLD),
        "TICKSTREAM_RISK_COOLDOWN_S": "0",
        "TICKSTREAM_RISK_EVENT_BLACKOUT_MIN": "0",
        "TICKSTREAM_RISK_MAX_SPREAD_PIPS": "10",
    }


def _fresh_workdir(workdir: Path) -> Path:
    workdir = workdir.resolve()
    if workdir.exists():
        marker = workdir / ".tickstream-demo"
        if any(workdir.iterdir()) and not marker.exists():
            raise DemoError(f"{workdir} exists and was not made by tickstream demo: "
                            "choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / ".tickstream-demo").write_text("state of the last `tickstream demo` run\n")
    return workdir


def history_source(opts: DemoOptions, workdir: Path) -> tuple[str, Path, str]:
    """(format, path to load, description): Lean (maybe the first days only) or simulated."""
    lean = opts.history
    if lean is not None and lean.is_dir() and any(lean.rglob("*_quote.zip")):
        files = sorted(lean.rglob("*_quote.zip"))
        days = sorted({f.name[:8] for f in files})
        if opts.history_days is not None and opts.history_days < len(days):
            keep = set(days[: opts.history_days])
            sub = workdir / "history" / "lean"
            for f in files:
                if f.name[:8] in keep:
                    dest = sub / f.relative_to(lean)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.symlink_to(f)
            return "lean", sub, (f"Lean ticks in {lean}, first {opts.history_days} of "
                                 f"{len(days)} days")
        return "lean", lean, f"Lean ticks in {lean}, all {len(days)} days"
    return "csv", simulated_history(workdir, opts.history_days or 2), (
        f"simulated history ({lean} not found)")


def simulated_history(workdir: Path, days: int) -> Path:
    """A canonical CSV of simulated two-broker EURUSD/NZDUSD ticks (when Lean is absent)."""
    import csv

    from connectors.simulator.ticks import simulate

    out = workdir / "history" / "simulated.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
    ticks = simulate(3, ("EURUSD", "NZDUSD"), ("OANDA", "FXCM"), start,
                     seconds=days * 86_400, ticks_per_s=0.2)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["broker", "symbol", "time_msc", "bid", "ask"])
        for t in sorted(ticks, key=lambda t: t.time_msc):
            w.writerow([t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask)])
    return out


def load_and_train(settings: Settings, opts: DemoOptions, workdir: Path,
                   view: View) -> dict[str, Any]:
    from offline.load import load_paths
    from offline.replay import replay
    from offline.train import format_summary, train

    fmt, path, what = history_source(opts, workdir)
    view.step(f"loading {what} into ticks.history")
    t0 = time.monotonic()
    loaded = load_paths(settings, fmt, [path], progress=view.progress("load"))
    view.done_progress()
    if loaded["failed"] or not loaded["ticks"]:
        raise DemoError(f"loading {path} failed: {loaded['paths'][0]['detail']}")
    streams = [f"{s['broker']} {s['symbol']} {s['ticks']:,}"
               for p in loaded["paths"] for s in p["streams"]]
    view.lines(f"loaded {loaded['ticks']:,} ticks in {time.monotonic() - t0:.1f} s: "
               + ", ".join(streams))
    view.step("replaying ticks.history through the stages into a feature matrix")
    features = workdir / "features.parquet"
    rep = replay(settings, settings, out=features, topic="ticks.history",
                 progress=view.progress("replay"))
    view.done_progress()
    view.lines(f"replayed {rep['ticks']:,} ticks: {rep['rows']:,} labelled rows -> {features}")
    view.step("training (walk-forward, then the model)")
    result = train(features, workdir / "models", settings.symbols, version=MODEL_VERSION,
                   force=True, progress=lambda s: view.step(f"train: {s}"))
    view.lines(format_summary(result).replace(
        "(--force: promoted without an edge)", "(forced for this demo only: no edge)"))
    if result["forced"]:
        view.lines(f"DEMO ONLY: version {MODEL_VERSION!r} is NOT promoted (no edge over the "
                   "baselines); the demo saved it with --force in its own model folder and "
                   f"trades it with entry threshold {DEMO_ENTRY_THRESHOLD}")
    pooled = result["walk_forward"]["pooled"]
    return {
        "history": {"source": what, "format": fmt, "ticks": loaded["ticks"],
                    "streams": streams},
        "replay": {"ticks": rep["ticks"], "rows": rep["rows"], "features": str(features)},
        "train": {"version": result["version"], "rows": result["rows"],
                  "beats_best_baseline": result["beats_best_baseline"],
                  "promoted": bool(result["beats_best_baseline"]),
                  "used_by_demo": True, "forced_for_demo": result["forced"],
                  "logloss_model": pooled["model"]["logloss"],
                  "logloss_vs_best_baseline": pooled["logloss_vs_best"],
                  "auc": pooled["model"]["auc"],
                  "entry_threshold": DEMO_ENTRY_THRESHOLD},
        "reports": [result["report_png"]],
    }


def simulator_configs(workdir: Path, now_ms: int) -> tuple[Path, Path, dict[str, Any]]:
    """The warm-up and the live simulator configurations, written under ``workdir``."""
    from connectors.simulator.config import load_config
    from connectors.simulator.ticks import TickStream

    base = yaml.safe_load(DEMO_CONFIG.read_text())
    boundary = now_ms - now_ms % MINUTE_MS
    start = boundary - WARMUP_MIN * MINUTE_MS
    warm = {**base, "name": "demo-warmup", "realtime": False, "start_ms": start,
            "ticks_per_s": WARMUP_TICKS_PER_S}
    health = warm.pop("health_interval_s", None)
    cfg = load_config(warm)
    stream = TickStream(cfg.seed, cfg.symbols, cfg.brokers, start, cfg.ticks_per_s,
                        cfg.anomalies, cfg.prices)
    ticks = stream.until(boundary)
    last: dict[str, float] = {}
    for t in ticks:
        last[t.symbol] = round((t.bid + t.ask) / 2, 6)
    warm["max_ticks"] = len(ticks)
    if health is not None:
        warm["health_interval_s"] = health
    live = {**base, "prices": {**base.get("prices", {}), **last}}
    warm_path, live_path = workdir / "simulate-warmup.yaml", workdir / "simulate-live.yaml"
    warm_path.write_text(yaml.safe_dump(warm, sort_keys=False))
    live_path.write_text(yaml.safe_dump(live, sort_keys=False))
    return warm_path, live_path, {"warmup_ticks": len(ticks), "warmup_from_ms": start,
                                  "warmup_to_ms": boundary}


def run_demo(opts: DemoOptions, view: View) -> dict[str, Any]:
    """Run every step; returns the summary (what ``--json`` prints)."""
    workdir = _fresh_workdir(opts.workdir)
    children = Children()
    summary: dict[str, Any] = {"workdir": str(workdir), "duration_s": opts.duration_s,
                               "interrupted": False}
    stats = Stats()
    reader: TopicStats | None = None
    feeds: FeedServer | None = None
    settings: Settings | None = None
    started = time.monotonic()
    try:
        with _signals_as_interrupt():
            view.step("starting a private local broker")
            children.broker = LocalBroker(log_path=workdir / "broker.log").start()
            children.pids["broker"] = children.broker.process.pid  # type: ignore[union-attr]
            env = demo_env(workdir, opts.partitions, children.broker.bootstrap, free_port())
            settings = Settings.from_env({**os.environ, **env}, env_file=None)
            from topology.admin import ensure_topics

            logging.getLogger("topology.admin").setLevel(logging.WARNING)
            ensure_topics(settings)
            view.lines(f"broker {children.broker.bootstrap}, state in {workdir}")
            summary.update(load_and_train(settings, opts, workdir, view))
            view.step("starting the worker and the storage sink (embedded chdb)")
            children.sink = SinkProcess(env, workdir / "sink.log", cwd=REPO_ROOT)
            children.pids["sink"] = children.sink.proc.pid
            children.worker = WorkerProcess(env, workdir / "worker.log")
            children.worker.start(ready_timeout_s=120)
            children.pids["worker"] = children.worker.process.pid  # type: ignore[union-attr]
            children.sink.wait_assigned(60)
            warm_cfg, live_cfg, warm = simulator_configs(workdir, time.time_ns() // 1_000_000)
            summary["warmup"] = warm
            view.step(f"warm-up: {warm['warmup_ticks']:,} simulated quotes of the last "
                      f"{WARMUP_MIN} minutes (tickstream collect simulate, realtime: false)")
            proc = children.collect("warmup", "simulate", warm_cfg, env,
                                    workdir / "collect-warmup.log")
            code = proc.wait(120)
            children.collectors.remove(("warmup", proc))
            if code != 0:
                raise DemoError(f"the warm-up collector exited with {code}: see "
                                f"{workdir / 'collect-warmup.log'}")
            _wait_worker(settings, warm["warmup_ticks"], view)
            reader = TopicStats(settings, stats)
            stats.live_from_us = time.time_ns() // 1000
            # Where a second program can look while the demo runs (its own consumer, a
            # Prometheus scrape): the broker, the worker's web port, the topics.
            (workdir / "endpoints.json").write_text(json.dumps({
                "bootstrap": settings.bootstrap, "web_port": settings.web_port,
                "health": f"http://127.0.0.1:{settings.web_port}/health/",
                "metrics": f"http://127.0.0.1:{settings.web_port}/metrics",
                "commands_topic": settings.topic("trading.commands")}, indent=2) + "\n")
            view.step(f"live for {opts.duration_s:g} s: the simulator quoting from several "
                      "brokers (with its own calendar and news events), the calendar and news "
                      "collectors polling simulated feeds on 127.0.0.1; Ctrl-C stops it")
            children.collect("simulator", "simulate", live_cfg, env,
                             workdir / "collect-simulator.log")
            feeds = FeedServer()
            for kind, path in feeds.configs(workdir).items():
                children.collect(kind, kind, path, env, workdir / f"collect-{kind}.log")
            _send_malformed(settings)
            end = time.monotonic() + opts.duration_s
            next_scrape = 0.0
            while (left := end - time.monotonic()) > 0:
                reader.poll(0.2)
                if time.monotonic() >= next_scrape:
                    with contextlib.suppress(OSError, ValueError):
                        stats.metrics = scrape_metrics(settings.web_port)
                    next_scrape = time.monotonic() + 1.0
                children.check_running(workdir)
                view.live(stats, left)
            view.end_live()
            view.step("stopping the collectors, draining the worker and the sink")
            summary["collector_exit"] = children.stop_collectors()
            closing = _send_closing_quotes(settings, stats)
            summary["closing_quotes"] = closing
            _drain(reader, stats, settings, view)
            _wait_sink(settings, stats, children.sink)
    except KeyboardInterrupt:
        summary["interrupted"] = True
        view.end_live()
        view.step("interrupted: stopping everything")
    finally:
        with _no_interrupts():
            if reader is not None:
                reader.close()
            if feeds is not None:
                feeds.close()
            summary["exit_codes"] = children.stop_all()
    summary["pids"] = children.pids
    if not summary["interrupted"] and settings is not None:
        summary.update(_summarise(stats, workdir, settings))
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _send_malformed(settings: Settings) -> None:
    from connectors.producer import RecordProducer

    producer = RecordProducer(settings)
    topic = settings.topic("ticks.raw")
    for i in range(MALFORMED_SENT):
        producer.send_raw(topic, "EURUSD", b"\x00tickstream demo: not an Avro record %d" % i)
    if producer.flush(10):
        raise DemoError("the broker did not take the demo's malformed records")


def _send_closing_quotes(settings: Settings, stats: Stats) -> int:
    """One quote per (symbol, broker) at its last clean price, now: it decides any quote
    the validator still holds for jump confirmation (it is a tick in like any other)."""
    from connectors.producer import RecordProducer
    from schemas.records import RawTick

    producer = RecordProducer(settings)
    now_us = time.time_ns() // 1000
    for (symbol, broker), (bid, ask) in sorted(stats.last_clean.items()):
        producer.send("ticks.raw", symbol, RawTick(
            broker=broker, symbol=symbol, bid=bid, ask=ask, time_msc=now_us // 1000,
            recv_time_us=now_us, source="SIMULATOR"))
    if producer.flush(10):
        raise DemoError("the broker did not take the closing quotes")
    return len(stats.last_clean)


def _wait_worker(settings: Settings, ticks: int, view: View, timeout_s: float = 120.0) -> None:
    """Until the worker consumed the warm-up, so the live ticks do not queue behind it."""
    deadline = time.monotonic() + timeout_s
    consumed = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            consumed = int(scrape_metrics(settings.web_port).get(
                "tickstream_records_in_total", 0))
        if consumed >= ticks:
            return
        time.sleep(0.2)
    view.lines(f"warning: the worker took {consumed:,} of the {ticks:,} warm-up quotes in "
               f"{timeout_s:.0f} s; going live anyway")


def _accounted(stats: Stats) -> int:
    return stats.clean + stats.rejects_from_raw + stats.duplicates


def _drain(reader: TopicStats, stats: Stats, settings: Settings, view: View,
           timeout_s: float = 60.0) -> None:
    """Until every tick in is accounted for and the worker consumed all of ticks.raw."""
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if reader.poll(0.2):
            quiet_since = time.monotonic()
        with contextlib.suppress(OSError, ValueError):
            stats.metrics = scrape_metrics(settings.web_port)
        consumed = int(stats.metrics.get("tickstream_records_in_total", -1))
        if consumed == stats.raw and _accounted(stats) == stats.raw \
                and time.monotonic() - quiet_since > 1.0:
            return
    view.lines(f"warning: after {timeout_s:.0f} s the worker accounts for "
               f"{_accounted(stats):,} of {stats.raw:,} ticks in")


def _wait_sink(settings: Settings, stats: Stats, sink: SinkProcess | None,
               timeout_s: float = 60.0) -> None:
    """Until the sink committed every record the demo read from the stored topics."""
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka_client import consumer_config
    from topology.sink_app import SINK_TOPICS, sink_group

    if sink is None:
        return
    stored = {settings.topic(t) for t in SINK_TOPICS}
    want = {k: v for k, v in stats.end_offsets.items() if k[0] in stored}
    consumer = Consumer(consumer_config(settings, **{"group.id": sink_group(settings)}))
    try:
        def done() -> bool:
            got = consumer.committed([TopicPartition(t, p) for t, p in want], timeout=5)
            return all(tp.offset >= want[(tp.topic, tp.partition)] for tp in got)

        sink.wait_for(done, timeout_s, "the sink to commit every stored record", poll_s=0.3)
    finally:
        consumer.close()


def _summarise(stats: Stats, workdir: Path, settings: Settings) -> dict[str, Any]:
    from storage.backend import open_backend
    from storage.queries import count

    backend = open_backend(settings.store_url)
    try:
        stored = {table: count(backend, table) for table in STORED}
    finally:
        backend.close()
    distinct = {table: len(stats.keys.get(topic, ())) for table, topic in STORED.items()}
    records = {"ticks": stats.clean, "bars_m1": stats.bars, "features": stats.features,
               "commands": sum(stats.commands.values()),
               "rejects": stats.rejects_from_raw + stats.rejects_other}
    accounted = _accounted(stats)
    m = stats.metrics
    return {
        "ticks_in": stats.raw,
        "ticks_per_broker": dict(sorted(stats.raw_by_broker.items())),
        "malformed_in": stats.raw_malformed,
        "clean": stats.clean,
        "duplicates": stats.duplicates,
        "rejected": stats.rejects_from_raw,
        "rejects_by_reason": dict(sorted(stats.rejects.items())),
        "nothing_lost": {
            "ticks_in": stats.raw, "clean": stats.clean, "rejected": stats.rejects_from_raw,
            "duplicates": stats.duplicates, "accounted": accounted,
            "holds": accounted == stats.raw,
            "how": "ticks_in = records on ticks.raw (read back); clean = records on "
                   "ticks.clean; rejected = records on ticks.rejected from ticks.raw; "
                   "duplicates = the worker's tickstream_duplicates_total",
        },
        "worker_records_in": int(m.get("tickstream_records_in_total", -1)),
        "bars": stats.bars, "bars_live": stats.bars_live, "features": stats.features,
        "commands": sum(stats.commands.values()), "commands_live": stats.commands_live,
        "commands_by_action": dict(sorted(stats.commands.items())),
        "events": {f"{kind.lower()} from {source}": n
                   for (kind, source), n in sorted(stats.events.items())},
        "latency_ms": {**stats.latency(), "over": "live ticks and the commands they "
                       "triggered (receive time to clean tick / to command)"},
        "records_through_topics": records,
        "distinct_keys_through_topics": distinct,
        "rows_stored": stored,
        "stored_equals_topics": stored == distinct,
        "store": str(settings.store_url),
        "logs": sorted(str(p) for p in workdir.glob("*.log")),
    }


def print_summary(summary: dict[str, Any], out: Any = sys.stdout) -> None:
    """The summary as lines of text (``--json`` prints the dict instead)."""
    def p(text: str) -> None:
        print(text, file=out)

    if summary.get("interrupted"):
        p(f"demo interrupted after {summary['seconds']} s; every process it started was "
          f"stopped (pids {sorted(summary['pids'].values())})")
        return
    lat = summary["latency_ms"]
    nl = summary["nothing_lost"]
    p("")
    p(f"tickstream demo: {summary['duration_s']:g} s live, {summary['seconds']} s in all")
    p("ticks per broker: " + ", ".join(f"{b} {n:,}" for b, n in
                                        summary["ticks_per_broker"].items())
      + f" (+{summary['malformed_in']} undecodable)")
    p(f"nothing lost: {nl['ticks_in']:,} in = {nl['clean']:,} clean + {nl['rejected']:,} "
      f"rejected + {nl['duplicates']:,} duplicates: {'yes' if nl['holds'] else 'NO'}")
    p("rejects by reason: " + ", ".join(f"{r} {n:,}" for r, n in
                                         summary["rejects_by_reason"].items()))
    p(f"bars: {summary['bars']:,} ({summary['bars_live']:,} closed by live ticks), "
      f"feature vectors {summary['features']:,}")
    p(f"commands: {summary['commands']:,} ({summary['commands_live']:,} from live ticks): "
      + ", ".join(f"{a} {n}" for a, n in summary["commands_by_action"].items()))
    p("market events: " + (", ".join(f"{k} {n}" for k, n in summary["events"].items())
                           or "none"))
    p(f"latency tick -> clean p50/p99: {lat['tick_to_clean_p50_ms']} / "
      f"{lat['tick_to_clean_p99_ms']} ms; tick -> command p50/p99: "
      f"{lat['tick_to_command_p50_ms']} / {lat['tick_to_command_p99_ms']} ms")
    p("rows stored (" + summary["store"] + "): " + ", ".join(
        f"{t} {n:,}" for t, n in summary["rows_stored"].items())
      + (" = the records through the topics" if summary["stored_equals_topics"]
         else " (DIFFERENT from the topics: " + json.dumps(
             summary["distinct_keys_through_topics"]) + ")"))
    t = summary["train"]
    p(f"model {t['version']}: {'promoted' if t['promoted'] else 'NOT promoted (no edge)'}, "
      f"used by the demo only; walk-forward log loss {t['logloss_model']:.4f} "
      f"({t['logloss_vs_best_baseline']:+.4f} vs the best baseline)")
    p("PNG reports: " + ", ".join(summary["reports"]))
    p(f"logs and state: {summary['workdir']}")
