"""Throughput and latency of the whole topology against baselines measured in the same run.

Every figure is on the run's input (:mod:`bench.inputs`: real two-broker Lean ticks by
default, any canonical CSV, or the simulator), the same ticks for each:

* ``topology_ticks_per_s``: a fresh worker catches up on a preloaded ``ticks.raw`` (a model
  loaded, every stage running); ticks in / span of its outputs (``ticks.clean`` +
  ``ticks.rejected``; their count is known exactly from the offline run of the same
  ticks). Repeated ``runs`` times, each a fresh app (its own topics, group and worker):
  the median, and ``topology_ticks_per_s_spread`` (min / median / max and every run).
* ``topology_worker_cpu_us_per_tick``: the worker's CPU time (user + system, sampled every
  20 ms) over the processing span only, per tick; the same spread.
* ``scale_out``: the same ticks through 1 and then 2 worker processes of one consumer group
  (Kafka's partition assignment shares the partitions out), on topics with a partition
  count that puts the input's symbols on different workers (with two symbols the hash alone
  decides: EURUSD and NZDUSD are on partitions 5 and 9 of 12, one worker of two would get
  both). Ticks/s and CPU per tick of each, their ratio, and whether every bar and feature
  vector is byte-identical. ``ticks_raw_partition_records`` shows where the input falls.
* ``faust_passthrough_msgs_per_s``: a bare Faust agent forwarding a preloaded topic.
* ``aiokafka_passthrough_msgs_per_s``: a raw aiokafka ``getmany`` → ``send`` loop.
* ``latency_ms``: ticks of the input offered at a steady rate (default 2,000/s) by the
  collectors' producer path, read back by a consumer with a 5 ms fetch wait: tick → its
  CleanTick, the bar-closing tick → its TradingCommand, and ``broker_floor`` (the same
  producer → the same consumer on a plain topic, no worker). Every run is a fresh app: its
  floor on its own topic (measured before its worker starts), then its own worker on its
  own topics, so each run starts on empty partitions (Tansu's latency grows with partition
  size). ``added_over_floor`` is the median over runs of (worker - that run's floor). The
  producer is warmed up before each clock starts. History offered at 2,000 ticks/s runs
  event time hundreds of times faster than the wall clock, so bars close often; latency
  is wall time from send to receipt, matched by ``seq`` (clean ticks) and by the trigger
  tick's receive stamp (commands).
* ``topology_ticks_per_s_with_sink`` and ``ratio_with_sink_vs_without``: one throughput
  run on a fresh app with the storage sink process beside the worker (into a private
  clickhouse-server); ``sink_beside_topology`` gives the sink's lag when the worker's last
  output is out, its catch-up time and rows/s (``with_sink=False``: not measured).
* ``offline_process_ticks_per_s``: ``tickstream process`` on the input CSV (its own
  ``ticks_per_s``: timed from after the model load to its summary), with its default
  jobs (``offline_process_jobs``: one shard process per usable CPU) and, for reference,
  ``offline_process_one_job_ticks_per_s`` with ``--jobs 1``. ``stages_compiled`` says
  whether the per-tick stages ran compiled (``make native``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.inputs import BenchInput
from bench.kafka_tools import (
    Span,
    assign_from,
    bench_env,
    consumer,
    percentiles,
    produce_all,
    producer,
    read_span,
)
from connectors.simulator import simulate
from devstack.localstack import WorkerProcess
from schemas.codec import make_codec
from schemas.records import CleanTick, RawTick, TradingCommand
from stages.pipeline import Outputs, Pipeline, PipelineConfig
from stages.train import train_model
from stages.types import Tick
from topology.admin import ensure_topics
from topology.settings import Settings

RISK = {"TICKSTREAM_RISK_ENTRY_THRESHOLD": "0.51", "TICKSTREAM_RISK_EXIT_THRESHOLD": "0.5",
        "TICKSTREAM_RISK_COOLDOWN_S": "0", "TICKSTREAM_RISK_MAX_SPREAD_PIPS": "10",
        # History at full speed: a bar closes on event time only, never on the wall-clock
        # idle timer (whose outcome would depend on how busy the machine is).
        "TICKSTREAM_BAR_IDLE_FLUSH_MS": "3600000"}
CODEC = make_codec(None)


def train_bench_model(settings: Settings, out: Path) -> Path:
    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    o = Outputs()
    rows = []
    for t in simulate(1, symbols=("EURUSD",), seconds=5400):
        pipeline.on_tick(t, o)
        rows += o.features
        o.clear()
    train_model([r.to_dict() for r in rows], [r.close for r in rows], 3, out, "v1",
                (rows[0].bar_time, rows[-1].bar_time))
    return out


def raw_bytes(t: Tick, topic: str, seq: int | None = None) -> bytes:
    return bytes(CODEC.encode(RawTick(
        broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, time_msc=t.time_msc,
        recv_time_us=t.recv_time_us, seq=seq, source="SIMULATOR"), topic))


# ---- offline ------------------------------------------------------------------------------
def offline_process(env: dict[str, str], model_dir: Path, src: Path, n_ticks: int,
                    *extra: str) -> tuple[float, dict[str, Any]]:
    """``tickstream process FILE --model DIR --json [extra]`` as users run it (its own
    process, its GC tuning, by default one shard process per usable CPU); ticks/s over its
    processing time (``seconds``: reading, stages, model; not the interpreter's start-up),
    best of three, and that run's JSON."""
    best: tuple[float, dict[str, Any]] = (0.0, {})
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-m", "topology.cli", "process", str(src), "--model",
             str(model_dir), "--json", *extra],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=900, check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["ticks_in"] != n_ticks:
            raise RuntimeError(f"process read {result['ticks_in']} ticks of {n_ticks}")
        best = max(best, (n_ticks / result["seconds"], result), key=lambda b: b[0])
    return best


# ---- baselines ----------------------------------------------------------------------------
def preload_plain(settings: Settings, topic: str, n: int, partitions: int = 4) -> None:
    from topology.admin import PlannedTopic, create_planned

    create_planned(settings, [PlannedTopic(topic, partitions, {})])
    keys = [f"KEY{i:02d}".encode() for i in range(28)]
    payload = b"x" * 96
    produce_all(producer(settings), topic, ((keys[i % 28], payload) for i in range(n)))


def faust_passthrough(settings: Settings, n: int, tmp: Path) -> float:
    src, dst = settings.topic("fp.src"), settings.topic("fp.dst")
    preload_plain(settings, src, n)
    from topology.admin import PlannedTopic, create_planned

    create_planned(settings, [PlannedTopic(dst, 4, {})])
    env = {**os.environ, "BENCH_APP_ID": f"{settings.app_id}-fp", "BENCH_SRC": src,
           "BENCH_DST": dst, "BENCH_BOOTSTRAP": settings.kafka_bootstrap_servers[0],
           "BENCH_PARTITIONS": "4", "BENCH_LINGER_MS": str(settings.producer_linger_ms),
           "BENCH_STREAM_BUFFER": str(settings.stream_buffer_maxsize)}
    log = (tmp / "faust-passthrough.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "bench.faust_passthrough", "--datadir",
         str(tmp / "fp-data"), "worker", "-l", "info", "--without-web"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        span = read_span(settings, [dst], n, timeout_s=max(120.0, n / 500))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    return span.count / span.seconds


def aiokafka_passthrough(settings: Settings, n: int) -> float:
    src, dst = settings.topic("ak.src"), settings.topic("ak.dst")
    preload_plain(settings, src, n)
    from topology.admin import PlannedTopic, create_planned

    create_planned(settings, [PlannedTopic(dst, 4, {})])

    async def loop() -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        bootstrap = ",".join(settings.kafka_bootstrap_servers)
        cons = AIOKafkaConsumer(
            src, bootstrap_servers=bootstrap, group_id=f"{settings.app_id}-ak",
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=5,
            session_timeout_ms=10_000, max_poll_records=10_000,
        )
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await cons.start()
        await prod.start()
        try:
            done = 0
            while done < n:
                batches = await cons.getmany(timeout_ms=200, max_records=10_000)
                futs = []
                for msgs in batches.values():
                    for m in msgs:
                        futs.append(await prod.send(dst, m.value, key=m.key))
                if futs:
                    await asyncio.gather(*futs)
                    await cons.commit()
                done += len(futs)
        finally:
            await prod.stop()
            await cons.stop()

    asyncio.run(loop())
    span = read_span(settings, [dst], n, timeout_s=60)
    return span.count / span.seconds


# ---- the topology -------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    """What the worker will publish for a list of ticks (from the offline run of them)."""

    per_tick: int  # clean ticks + dead letters
    bars: int
    features: int


def expected_outputs(settings: Settings, ticks: list[Tick]) -> Expected:
    pipeline = Pipeline(PipelineConfig.from_settings(settings))
    out = Outputs()
    n = bars = features = 0
    for t in ticks:
        pipeline.on_tick(t, out)
        n += len(out.clean) + len(out.rejects)
        bars += len(out.bars)
        features += len(out.features)
        out.clear()
    return Expected(n, bars, features)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler(threading.Thread):
    """Samples a process's CPU seconds every 20 ms with the wall clock, so its CPU can be
    counted over the processing span only (not its start-up, nor the idle time after)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.samples.append((time.time(), process_cpu_s(self.pid)))
            except (OSError, IndexError, ValueError):
                return
            self.stopping.wait(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds used from wall time ``t0`` to ``t1`` (the nearest samples around)."""
        before = [c for t, c in self.samples if t <= t0]
        after = [c for t, c in self.samples if t >= t1]
        start = before[-1] if before else self.samples[0][1]
        end = after[0] if after else self.samples[-1][1]
        return end - start


def preload_ticks(settings: Settings, ticks: list[Tick]) -> dict[int, int]:
    """``ticks`` onto ``ticks.raw`` keyed by symbol; the records per partition."""
    ensure_topics(settings)
    raw = settings.topic("ticks.raw")
    produce_all(producer(settings), raw,
                ((t.symbol.encode(), raw_bytes(t, raw)) for t in ticks))
    return partition_counts(ticks, settings.partitions)


def partition_counts(ticks: list[Tick], partitions: int) -> dict[int, int]:
    """Ticks per partition of ``ticks.raw`` (keyed by symbol, murmur2 as the producer does;
    the broker's watermarks are not exact on Tansu), partitions with none left out."""
    from aiokafka.partitioner import murmur2

    per_symbol: dict[str, int] = {}
    for t in ticks:
        per_symbol[t.symbol] = per_symbol.get(t.symbol, 0) + 1
    out: dict[int, int] = {}
    for sym, n in per_symbol.items():
        p = (murmur2(sym.encode()) & 0x7FFFFFFF) % partitions
        out[p] = out.get(p, 0) + n
    return dict(sorted(out.items()))


def spreading_partitions(symbols: list[str], workers: int, near: int) -> int:
    """A partition count, nearest ``near``, at which ``symbols`` fall on partitions that a
    round-robin assignment (Faust's, partition ``p`` to worker ``p % workers``) gives to
    every worker in turn, as evenly as the symbols allow.

    With few symbols the hash decides alone whether more workers can help: EURUSD and
    NZDUSD fall on partitions 5 and 9 of 12 (both odd: one worker of two gets both). An
    operator chooses the partition count; nothing here shards by hand.
    """
    from aiokafka.partitioner import murmur2

    def imbalance(p: int) -> int:
        per = [0] * workers
        for sym in symbols:
            per[((murmur2(sym.encode()) & 0x7FFFFFFF) % p) % workers] += 1
        return max(per) - min(per)

    candidates = range(workers, 4 * max(near, workers) + 1)
    return min(candidates, key=lambda p: (imbalance(p), abs(p - near), p))


def start_workers(envs: list[dict[str, str]], tmp: Path, name: str) -> list[WorkerProcess]:
    """Start the workers at the same moment (so they join the group in one generation)
    and wait until every one is ready."""
    workers = [WorkerProcess(e, tmp / f"{name}-{i}.log") for i, e in enumerate(envs)]
    errors: list[BaseException] = []

    def start(w: WorkerProcess) -> None:
        try:
            w.start(ready_timeout_s=120)
        except BaseException as exc:  # reported below, after every start returned
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for w in workers:
            w.stop()
        raise errors[0]
    return workers


def _collector(values: list[bytes]) -> Any:
    def on_message(m: Any) -> None:
        values.append(m.value())
    return on_message


@dataclass
class Throughput:
    ticks_per_s: float
    cpu_us_per_tick: float  # every worker's CPU over the processing span, per tick
    partitions: dict[int, int]  # ticks.raw records per partition
    workers: list[WorkerProcess]
    outputs: dict[str, list[bytes]] | None = None  # bars.m1 and features, when collected


def topology_throughput(settings: Settings, envs: list[dict[str, str]], ticks: list[Tick],
                        tmp: Path, expected: Expected, *, collect: bool = False,
                        name: str = "worker") -> Throughput:
    """Ticks/s through fresh workers (one per env, one consumer group) over a preloaded
    ``ticks.raw``: ticks over the span of their per-tick outputs (``ticks.clean`` +
    ``ticks.rejected``, CreateTime stamps), and their CPU microseconds per tick over the
    same span. ``collect``: also read back every bar and feature vector (their bytes)."""
    partitions = preload_ticks(settings, ticks)
    workers = start_workers(envs, tmp, name)
    samplers = []
    for w in workers:
        assert w.process is not None
        samplers.append(CpuSampler(w.process.pid))
        samplers[-1].start()
    try:
        span = read_span(settings,
                         [settings.topic("ticks.clean"), settings.topic("ticks.rejected")],
                         expected.per_tick, timeout_s=max(180.0, len(ticks) / 200))
    except BaseException:  # a timeout or Ctrl-C: no worker is left behind
        for w in workers:
            w.stop()
        raise
    finally:
        for sm in samplers:
            sm.stop()
    t0, t1 = span.first_ms / 1000, span.last_ms / 1000
    cpu = sum(sm.between(t0, t1) for sm in samplers)
    outputs = None
    if collect:
        outputs = {}
        for topic, n in (("bars.m1", expected.bars), ("features", expected.features)):
            values: list[bytes] = []
            read_span(settings, [settings.topic(topic)], n, timeout_s=60,
                      on_message=_collector(values))
            outputs[topic] = sorted(values)
    return Throughput(len(ticks) / span.seconds, cpu * 1e6 / len(ticks), partitions, workers,
                      outputs)


def topology_throughput_with_sink(bootstrap: str, model_dir: str, ticks: list[Tick],
                                  tmp: Path, expected_outputs: Expected) -> dict[str, Any]:
    """:func:`topology_throughput` on a fresh app with the storage sink beside the worker
    (its own process and group, default batches, into a private clickhouse-server): the
    topology's ticks/s, and how far the sink is behind when the worker's last output is out
    (``sink_lag_records_at_end``: clean ticks + dead letters not yet stored), how long it
    takes to catch up, and its rows/s over the run (first row stored to the last)."""
    from bench.storage import StorePoller, sink_env
    from devstack.clickhouse import ClickHouseServer
    from devstack.sink import SinkProcess

    env = bench_env(bootstrap, str(tmp / "worker-sink"), **RISK, TICKSTREAM_MODEL_DIR=model_dir)
    settings = Settings.from_env(env, env_file=None)
    ensure_topics(settings)
    expected = expected_outputs.per_tick
    with ClickHouseServer(root=tmp / "ch-topology") as server:
        url = server.store_url("topology")
        sink = SinkProcess(sink_env(env, url), tmp / "sink-topology.log")
        poller = StorePoller(url, ("ticks", "rejects"))
        worker = None
        try:
            sink.wait_assigned()
            poller.start()
            run = topology_throughput(settings, [env], ticks, tmp, expected_outputs,
                                      name="worker-sink")
            worker = run.workers[0]
            tps, cpu_us = run.ticks_per_s, run.cpu_us_per_tick
            end = time.time()
            catchup = sink.wait_for(lambda: poller.rows_at(time.time()) >= expected,
                                    120, f"{expected} rows stored")
        finally:
            if worker is not None:
                worker.stop()
            poller.stop()
            code = sink.stop()
        if code != 0:
            raise RuntimeError(f"sink exited {code}:\n{sink.output()[-2000:]}")
    first, last = poller.first_time(1), poller.first_time(expected)
    assert first is not None and last is not None
    return {
        "topology_ticks_per_s": round(tps),
        "topology_worker_cpu_us_per_tick": round(cpu_us, 1),
        "sink_lag_records_at_end": expected - poller.rows_at(end),
        "sink_catchup_s": round(catchup, 2),
        "sink_rows_per_s": round(expected / max(1e-3, last - first)),
        "sink_rows": expected,
    }


class Reader(threading.Thread):
    """Reads topics from their end with a 5 ms fetch wait and stamps each record's arrival."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        super().__init__(daemon=True)
        # 5 ms fetch wait; no 500 ms back-off after an empty or failed fetch.
        self.c = consumer(settings, **{"fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 5})
        assign_from(self.c, topics, start="end")
        self.got: list[tuple[int, str, bytes]] = []
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            # poll() returns as soon as one record is there (consume(n) would wait for n
            # records or its timeout, and stamp early records late).
            m = self.c.poll(0.05)
            now = time.monotonic_ns()
            self.ready.set()
            if m is not None and not m.error():
                self.got.append((now, m.topic(), m.value()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.c.close()


def offer(settings: Settings, topic: str, items: list[tuple[bytes, bytes]],
          rate: float) -> list[int]:
    """Send ``items`` at ``rate``/s through the collectors' producer config; send times."""
    from topology.admin import PlannedTopic, create_planned

    p = producer(settings)
    # Steady state, not start-up: the producer is idempotent, and its first record waits
    # about 0.5 s for the producer id and connections; measured, the first ~900 records of
    # every run (0.45 s at 2,000/s) carried that stall and made the whole p99. Pay it on a
    # warm-up topic before the clock starts.
    warmup = settings.topic("bench.warmup")
    create_planned(settings, [PlannedTopic(warmup, 1, {})])
    p.list_topics(topic, timeout=10)
    p.produce(warmup, value=b"warm-up")
    p.flush(30)
    sent: list[int] = []
    start = time.monotonic()
    for i, (key, value) in enumerate(items):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent.append(time.monotonic_ns())
        p.produce(topic, value=value, key=key)
        p.poll(0)
    p.flush(30)
    return sent


def broker_floor(settings: Settings, topic: str, rate: float,
                 seconds: float) -> dict[str, float]:
    """A plain producer → consumer on ``topic`` (4 partitions, created if missing)."""
    from topology.admin import PlannedTopic, create_planned

    create_planned(settings, [PlannedTopic(topic, 4, {})])
    reader = Reader(settings, [topic])
    reader.start()
    reader.ready.wait(10)
    n = int(rate * seconds)
    run = time.monotonic_ns().to_bytes(8, "big")  # tells this run's records from earlier ones
    items = [(f"K{i % 28}".encode(), i.to_bytes(8, "big") + run + b"x" * 72) for i in range(n)]
    sent = offer(settings, topic, items, rate)
    deadline = time.monotonic() + 10
    while len(reader.got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.stop()
    lat = [(t - sent[int.from_bytes(v[:8], "big")]) / 1e6
           for t, _, v in reader.got if v[8:16] == run]
    return percentiles(lat)


def topology_latency(settings: Settings, ticks: list[Tick], rate: float,
                     seq_base: int = 0) -> dict[str, Any]:
    """Offer ``ticks`` (numbered from ``seq_base``, unique over runs on the same topics)."""
    raw = settings.topic("ticks.raw")
    clean_t, cmd_t = settings.topic("ticks.clean"), settings.topic("trading.commands")
    reader = Reader(settings, [clean_t, cmd_t])
    reader.start()
    reader.ready.wait(10)
    items = [(t.symbol.encode(), raw_bytes(t, raw, seq=seq_base + i))
             for i, t in enumerate(ticks)]
    sent = offer(settings, raw, items, rate)
    expected_clean = expected_outputs(settings, ticks).per_tick  # upper bound incl. rejects
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sum(1 for _, tp, _ in reader.got if tp == clean_t) >= expected_clean * 0.9:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # the last bars' commands
    reader.stop()
    by_recv: dict[int, int] = {}
    for i, t in enumerate(ticks):
        by_recv.setdefault(t.recv_time_us, i)
    clean_lat, cmd_lat = [], []
    for arrived, tp, value in reader.got:
        if tp == clean_t:
            c = CODEC.decode(value, CleanTick)
            if c.seq is not None and 0 <= c.seq - seq_base < len(sent):
                clean_lat.append((arrived - sent[c.seq - seq_base]) / 1e6)
        else:
            cmd = CODEC.decode(value, TradingCommand)
            j = by_recv.get(cmd.trigger_recv_time_us)
            if j is not None:
                cmd_lat.append((arrived - sent[j]) / 1e6)
    return {"tick_to_clean": clean_lat, "tick_to_command": cmd_lat}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = ("p50", "p99", "max")
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
    out["n"] = sum(int(r.get("n", 0)) for r in runs)
    return out


def spread(values: list[float], digits: int = 0) -> dict[str, Any]:
    """min / median / max of repeated runs, and the runs in order."""
    def r(x: float) -> float:
        return round(x, digits) if digits else round(x)
    return {"min": r(min(values)), "median": r(statistics.median(values)),
            "max": r(max(values)), "runs": [r(v) for v in values]}


#: Partitions of the topology's topics: the project's default, as users run it.
PARTITIONS = 12


def app_env(bootstrap: str, tmp: Path, name: str, model_dir: str,
            partitions: int = PARTITIONS) -> dict[str, str]:
    return bench_env(bootstrap, str(tmp / name), **RISK, TICKSTREAM_MODEL_DIR=model_dir,
                     TICKSTREAM_PARTITIONS=str(partitions))


def worker_envs(env: dict[str, str], tmp: Path, n: int) -> list[dict[str, str]]:
    """``n`` workers of one app (one consumer group): own data dirs and web ports."""
    from devstack.broker import free_port

    return [{**env, "TICKSTREAM_DATA_DIR": f"{env['TICKSTREAM_DATA_DIR']}-{i}",
             "TICKSTREAM_WEB_PORT": str(free_port())} for i in range(n)]


def run(bootstrap: str, inp: BenchInput, *, passthrough_msgs: int = 30_000,
        aiokafka_msgs: int = 200_000, rate: float = 2000.0, latency_s: float = 10.0,
        runs: int = 3, latency_runs: int = 3, with_sink: bool = True,
        scale_workers: int = 2) -> dict[str, Any]:
    """Every topology figure on ``inp`` (see the module docstring)."""
    ticks = inp.ticks
    with tempfile.TemporaryDirectory(prefix="tickstream-bench-") as d:
        tmp = Path(d)
        env = bench_env(bootstrap, str(tmp / "worker"), **RISK)
        settings = Settings.from_env(env, env_file=None)
        model_dir = str(train_bench_model(settings, tmp / "models"))
        env["TICKSTREAM_MODEL_DIR"] = model_dir
        settings = Settings.from_env(env, env_file=None)
        expected = expected_outputs(settings, ticks)
        result: dict[str, Any] = {"ticks_in": len(ticks), **inp.summary(),
                                  "expected_outputs": expected.__dict__}
        progress(f"offline process on {len(ticks)} ticks")
        tps, off = offline_process(env, settings.model_dir, inp.csv, len(ticks))
        result["offline_process_ticks_per_s"] = round(tps)
        result["offline_process_jobs"] = off["jobs"]
        result["stages_compiled"] = off["stages_compiled"]
        result["offline_process_one_job_ticks_per_s"] = round(
            offline_process(env, settings.model_dir, inp.csv, len(ticks), "--jobs", "1")[0])
        progress("baselines: aiokafka and Faust passthrough")
        result["aiokafka_passthrough_msgs_per_s"] = round(
            aiokafka_passthrough(settings, aiokafka_msgs))
        result["faust_passthrough_msgs_per_s"] = round(
            faust_passthrough(settings, passthrough_msgs, tmp))
        # Repeated runs, each a fresh app (its own topics, group and worker).
        tps_runs, cpu_runs = [], []
        for r in range(runs):
            progress(f"topology run {r + 1} of {runs}: one worker")
            run_env = app_env(bootstrap, tmp, f"run{r}", model_dir)
            t = topology_throughput(Settings.from_env(run_env, env_file=None), [run_env],
                                    ticks, tmp, expected, name=f"run{r}")
            for w in t.workers:
                w.stop()
            tps_runs.append(t.ticks_per_s)
            cpu_runs.append(t.cpu_us_per_tick)
            if r == 0:
                result["ticks_raw_partition_records"] = t.partitions
        result["topology_ticks_per_s"] = round(statistics.median(tps_runs))
        result["topology_ticks_per_s_spread"] = spread(tps_runs)
        result["topology_worker_cpu_us_per_tick"] = round(statistics.median(cpu_runs), 1)
        result["topology_worker_cpu_us_per_tick_spread"] = spread(cpu_runs, 1)
        tps = statistics.median(tps_runs)
        result["ratio_vs_faust_passthrough"] = round(
            tps / result["faust_passthrough_msgs_per_s"], 2)
        result["ratio_vs_aiokafka_passthrough"] = round(
            tps / result["aiokafka_passthrough_msgs_per_s"], 3)
        if scale_workers > 1:
            result.update(scale_out(bootstrap, model_dir, inp, tmp, expected, scale_workers))
        if with_sink:  # the same ticks, a fresh app, the storage sink running beside it
            progress("topology with the storage sink beside the worker")
            sunk = topology_throughput_with_sink(bootstrap, model_dir, ticks, tmp, expected)
            result["topology_ticks_per_s_with_sink"] = sunk.pop("topology_ticks_per_s")
            result["topology_worker_cpu_us_per_tick_with_sink"] = sunk.pop(
                "topology_worker_cpu_us_per_tick")
            result["ratio_with_sink_vs_without"] = round(
                result["topology_ticks_per_s_with_sink"] / tps, 3)
            result["sink_beside_topology"] = sunk
        result["latency_ms"] = latency(bootstrap, model_dir, ticks, rate, latency_s,
                                       latency_runs, tmp)
        return result


def scale_out(bootstrap: str, model_dir: str, inp: BenchInput, tmp: Path,
              expected: Expected, workers: int) -> dict[str, Any]:
    """The input through 1 and then ``workers`` worker processes of one consumer group, on
    topics with a partition count that spreads the input's symbols over the workers (see
    :func:`spreading_partitions`); whether both give byte-identical bars and features."""
    symbols = sorted({t.symbol for t in inp.ticks})
    parts = spreading_partitions(symbols, workers, PARTITIONS)
    got: dict[int, Throughput] = {}
    for n in (1, workers):
        progress(f"scale-out: {n} worker process(es) of one group, {parts} partitions")
        env = app_env(bootstrap, tmp, f"scale{n}", model_dir, parts)
        t = topology_throughput(Settings.from_env(env, env_file=None),
                                worker_envs(env, tmp, n), inp.ticks, tmp, expected,
                                collect=True, name=f"scale{n}")
        for w in t.workers:
            w.stop()
        got[n] = t
    one, many = got[1], got[workers]
    return {"scale_out": {
        "partitions": parts,
        "ticks_raw_partition_records": one.partitions,
        "workers_1_ticks_per_s": round(one.ticks_per_s),
        f"workers_{workers}_ticks_per_s": round(many.ticks_per_s),
        "workers_1_cpu_us_per_tick": round(one.cpu_us_per_tick, 1),
        f"workers_{workers}_cpu_us_per_tick": round(many.cpu_us_per_tick, 1),
        f"ratio_{workers}_vs_1": round(many.ticks_per_s / one.ticks_per_s, 3),
        "outputs_identical": one.outputs == many.outputs and one.outputs is not None,
        "usable_cpus": len(os.sched_getaffinity(0)),
    }}


def latency(bootstrap: str, model_dir: str, ticks: list[Tick], rate: float,
            latency_s: float, runs: int, tmp: Path) -> dict[str, Any]:
    """Ticks of the input offered at ``rate``/s: added latency over the broker floor.

    Each latency run on fresh topics, the floor's and the worker's alike: Tansu's
    produce→fetch latency grows with the partition's size (measured: p50 6 → 9 → 24 → 39 ms
    over four runs of 20k records on the same topic, no worker at all), so runs on reused
    topics measure the broker filling up. Per run: a fresh app (its own topics and worker),
    its floor on its own topic, then the worker, on its own slice of the input (the input
    again from its start when it is shorter than every run together).
    """
    n = int(rate * latency_s)
    floors, cleans = [], []
    all_cmd: list[float] = []
    for r in range(runs):
        progress(f"latency run {r + 1} of {runs}: {n} ticks at {rate:.0f}/s")
        lat_env = app_env(bootstrap, tmp, f"latency-worker-{r}", model_dir)
        lat_settings = Settings.from_env(lat_env, env_file=None)
        ensure_topics(lat_settings)
        # The floor first, with no worker running (an idle worker's fetches cost the
        # broker CPU, which would raise the floor).
        floors.append(broker_floor(lat_settings, lat_settings.topic("floor"), rate,
                                   latency_s))
        start = (r * n) % max(1, len(ticks) - n) if len(ticks) > n else 0
        lat_worker = WorkerProcess(lat_env, tmp / f"latency-worker-{r}.log").start()
        try:
            lat = topology_latency(lat_settings, ticks[start:start + n], rate, seq_base=r * n)
        finally:
            lat_worker.stop()
        cleans.append(percentiles(lat["tick_to_clean"]))
        all_cmd += lat["tick_to_command"]
    return {
        "offered_ticks_per_s": rate,
        "broker_floor": median_of(floors),
        "tick_to_clean": median_of(cleans),
        "tick_to_command": percentiles(all_cmd),
        # Paired: each run's worker minus that run's floor, median over runs.
        "added_over_floor": {
            q: round(statistics.median(c[q] - f[q] for c, f in zip(cleans, floors,
                                                                     strict=True)), 2)
            for q in ("p50", "p99")
        },
        "runs": {"broker_floor": floors, "tick_to_clean": cleans},
    }


def progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


__all__ = ["Span", "run"]
