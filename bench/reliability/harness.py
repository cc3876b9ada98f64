"""Plumbing shared by the reliability scenarios: a private app, a paced sender, a reader of
every output topic, the offline reference run and the accounting against it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from devstack.kafka_io import Message, TopicReader
from devstack.localstack import WorkerProcess
from schemas.codec import Codec, MalformedRecord, make_codec
from schemas.records import (
    Bar,
    CleanTick,
    FeatureVector,
    RawTick,
    Record,
    RejectedRecord,
    TradingCommand,
)
from stages.types import Tick
from topology.settings import Settings

OUTPUTS = ("ticks.clean", "ticks.rejected", "bars.m1", "features", "trading.commands")
# Risk settings that trade on a small model (the same as the worker integration tests).
RISK = {"TICKSTREAM_RISK_ENTRY_THRESHOLD": "0.51", "TICKSTREAM_RISK_EXIT_THRESHOLD": "0.5",
        "TICKSTREAM_RISK_COOLDOWN_S": "0", "TICKSTREAM_RISK_MAX_SPREAD_PIPS": "10"}


def now_us() -> int:
    return time.time_ns() // 1000


def free_port() -> int:
    from devstack.broker import free_port as fp

    return fp()


def app_env(bootstrap: str, workdir: Path, **extra: str) -> dict[str, str]:
    """A private app (unique topic prefix, app id, web port) on ``bootstrap``."""
    u = uuid.uuid4().hex[:8]
    return {
        "TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TICKSTREAM_TOPIC_PREFIX": f"rel{u}.",
        "TICKSTREAM_APP_ID": f"rel{u}",
        "TICKSTREAM_PARTITIONS": "4",
        "TICKSTREAM_TABLE_STORE": "memory://",
        "TICKSTREAM_DATA_DIR": str(workdir / f"worker-{u}"),
        "TICKSTREAM_WEB_PORT": str(free_port()),
        **RISK,
        **extra,
    }


@dataclass
class Stack:
    """One app: its environment, settings and (re)startable worker processes."""

    env: dict[str, str]
    workdir: Path
    name: str
    worker: WorkerProcess | None = None
    starts: int = 0

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env, env_file=None)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-worker.log"

    def topics(self) -> dict[str, str]:
        s = self.settings
        return {n: s.topic(n) for n in OUTPUTS}

    def start_worker(self, ready_timeout_s: float = 90.0) -> float:
        """Start a worker; returns the seconds until it logged Ready."""
        t0 = time.monotonic()
        self.worker = WorkerProcess(self.env, self.log_path)
        self.starts += 1
        self.worker.start(ready_timeout_s)
        return time.monotonic() - t0

    def worker_pid(self) -> int | None:
        w = self.worker
        if w is None or w.process is None or w.process.poll() is not None:
            return None
        return int(w.process.pid)

    def stage_modules(self) -> str | None:
        """The worker's own line on which stage modules ran compiled."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if "stage modules:" in line:
                return line.split("stage modules:", 1)[1].strip()
        return None

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback")
        except FileNotFoundError:
            return 0


# ---- sending ------------------------------------------------------------------------------

@dataclass
class BadInput:
    """One deliberately bad record: what was sent and (when it decodes) the tick it holds."""

    kind: str
    key: bytes | None
    value: bytes
    tick: Tick | None  # decodable as a RawTick: goes into the offline reference too
    # False: not part of the value stream offline judges (a re-send with a bad key)
    in_reference: bool = True
    partition: int = -1  # where it landed (delivery report)
    offset: int = -1
    timestamp_ms: int = 0  # the record's CreateTime

    def delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.partition, self.offset = int(msg.partition()), int(msg.offset())
            self.timestamp_ms = int(msg.timestamp()[1])


def encode_tick(codec: Codec, t: Tick, topic: str) -> bytes:
    return bytes(codec.encode(RawTick(
        broker=t.broker, symbol=t.symbol, bid=t.bid, ask=t.ask, time_msc=t.time_msc,
        recv_time_us=t.recv_time_us, source="HISTORY"), topic))


class Sender(threading.Thread):
    """Produces ``ticks`` to ``ticks.raw`` at ``rate`` per second, on deadlines.

    ``live``: every tick is re-timed when sent (time_msc = recv_time = wall clock).
    ``bad``: records sent just before the tick with that index. ``loop``: cycle through the
    ticks until ``duration_s`` has passed (re-timed, so the cycle never repeats a key).
    What went out is kept in ``sent`` (ticks, in order, bad decodable ones included) unless
    ``keep`` is false.
    """

    def __init__(self, settings: Settings, ticks: Sequence[Tick], rate: float, *,
                 live: bool, bad: dict[int, list[BadInput]] | None = None,
                 duration_s: float | None = None, keep: bool = True,
                 flush_s: float = 60.0) -> None:
        super().__init__(daemon=True, name="reliability-sender")
        self.settings = settings
        self.topic = settings.topic("ticks.raw")
        self.codec = make_codec(None)
        self.ticks = ticks
        self.rate = rate
        self.live = live
        self.bad = bad or {}
        self.duration_s = duration_s
        self.keep = keep
        self.flush_s = flush_s
        self.sent: list[Tick] = []
        self.bad_sent: list[BadInput] = []
        self.count = 0  # records handed to the producer (ticks + bad inputs)
        self.ticks_sent = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.undelivered = 0
        self._last_ms: dict[tuple[str, str], int] = {}

    def _retime(self, t: Tick) -> Tick:
        """Event time = receive time = now, strictly increasing per broker and symbol (two
        quotes in one millisecond with the same prices would otherwise be duplicates)."""
        us = now_us()
        stream = (t.broker, t.symbol)
        ms = max(us // 1000, self._last_ms.get(stream, 0) + 1)
        self._last_ms[stream] = ms
        return replace(t, time_msc=ms, recv_time_us=max(us, ms * 1000))

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the scenario
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def _run(self) -> None:
        from connectors.producer import RecordProducer

        producer = RecordProducer(self.settings, codec=self.codec)  # dropped with this frame
        n = len(self.ticks)
        t0 = self.started_at = time.monotonic()
        i = 0
        while not self.stop_event.is_set():
            if self.duration_s is None:
                if i >= n:
                    break
            elif time.monotonic() - t0 >= self.duration_s:
                break
            due = int((time.monotonic() - t0) * self.rate) + 1
            while i < due and not self.stop_event.is_set():
                if self.duration_s is None and i >= n:
                    break
                for b in self.bad.get(i, ()):
                    producer.send_raw(self.topic, b.key, b.value, on_delivery=b.delivered)
                    self.count += 1
                    self.bad_sent.append(b)
                    if b.tick is not None and b.in_reference and self.keep:
                        self.sent.append(b.tick)
                t = self.ticks[i % n]
                if self.live:
                    t = self._retime(t)
                producer.send_raw(self.topic, t.symbol.encode(),
                                       encode_tick(self.codec, t, self.topic))
                if self.keep:
                    self.sent.append(t)
                self.count += 1
                self.ticks_sent += 1
                i += 1
            next_at = t0 + i / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(min(delay, 0.05))
        self.undelivered = producer.flush(self.flush_s)

    def stop(self) -> None:
        self.stop_event.set()

    def check(self) -> None:
        """Raise what stopped the sender, if anything did."""
        if self.error is not None:
            raise RuntimeError(f"sender failed: {self.error!r}") from self.error


# ---- reading ------------------------------------------------------------------------------

@dataclass
class Arrival:
    topic: str  # logical name
    msg: Message
    at_us: int


class Collector(threading.Thread):
    """Reads every output topic from the beginning; counts, and latency of clean ticks.

    ``keep``: store every message (the accounting needs them); a soak keeps only counts.
    """

    def __init__(self, settings: Settings, *, keep: bool = True) -> None:
        super().__init__(daemon=True, name="reliability-collector")
        self.names = {settings.topic(n): n for n in OUTPUTS}
        self.reader = TopicReader(settings, sorted(self.names))
        self.codec = make_codec(None)
        self.keep = keep
        self.arrivals: list[Arrival] = []
        self.counts: Counter[str] = Counter()
        # (arrival monotonic, latency ms, the tick's recv_time_us)
        self.latency_ms: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.last_clean_at = 0.0

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                # consume() returns only at its timeout unless max_messages are waiting:
                # a short timeout keeps the reader's own batching out of the latency
                batch = self.reader.poll(0.002, 1000)
                if not batch:
                    continue
                at = now_us()
                mono = time.monotonic()
                with self.lock:
                    for m in batch:
                        name = self.names.get(m.topic, m.topic)
                        self.counts[name] += 1
                        if self.keep:
                            self.arrivals.append(Arrival(name, m, at))
                        if name == "ticks.clean":
                            self.last_clean_at = mono
                            try:
                                c = self.codec.decode(m.value, CleanTick)
                            except MalformedRecord:
                                continue
                            self.latency_ms.append(
                                (mono, (at - c.recv_time_us) / 1000.0, c.recv_time_us))
        finally:
            self.reader.close()

    def count(self, name: str) -> int:
        with self.lock:
            return self.counts[name]

    def wait_until(self, predicate: Callable[[Collector], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            self.stop_event.wait(0.1)
        return predicate(self)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Until no output arrived for ``quiet_s`` (or the deadline)."""
        deadline = time.monotonic() + timeout_s
        last = -1
        changed = time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                n = sum(self.counts.values())
            if n != last:
                last, changed = n, time.monotonic()
            elif time.monotonic() - changed >= quiet_s:
                return
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def percentiles(values: Iterable[float], ps: Sequence[float] = (50, 99)) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {f"p{p:g}": float("nan") for p in ps} | {"n": 0}
    out: dict[str, float] = {"n": len(v)}
    for p in ps:
        k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
        out[f"p{p:g}"] = round(v[k], 2)
    out["max"] = round(v[-1], 2)
    return out


# ---- offline reference --------------------------------------------------------------------

@dataclass
class Offline:
    result: dict[str, Any]
    rows: dict[str, list[dict[str, str]]]
    seconds: float


def write_ticks_csv(ticks: Iterable[Tick], path: Path) -> int:
    """Canonical CSV; recv_time_us is always written (0 stays 0)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("broker", "symbol", "time_msc", "bid", "ask", "seq", "recv_time_us"))
        n = 0
        for t in ticks:
            w.writerow((t.broker, t.symbol, t.time_msc, repr(t.bid), repr(t.ask), "",
                        t.recv_time_us))
            n += 1
    return n


def run_offline(env: dict[str, str], ticks: list[Tick], workdir: Path, name: str,
                model: Path | None) -> Offline:
    src = workdir / f"{name}-ticks.csv"
    write_ticks_csv(ticks, src)
    out = workdir / f"{name}-offline"
    cmd = [sys.executable, "-m", "topology.cli", "process", str(src), "--out", str(out),
           "--json"]
    if model is not None:
        cmd += ["--model", str(model)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env={**os.environ, **env})
    seconds = time.monotonic() - t0
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows: dict[str, list[dict[str, str]]] = {}
    for kind in ("clean", "rejected", "bars", "features", "commands"):
        path = out / f"{kind}.csv"
        if path.exists():
            with path.open(newline="") as fh:
                rows[kind] = list(csv.DictReader(fh))
        else:
            rows[kind] = []
    return Offline(result, rows, seconds)


# ---- accounting ---------------------------------------------------------------------------

def record_row(rec: Record) -> dict[str, str]:
    """A record's fields as ``tickstream process --out`` writes them."""
    return {f: "" if (v := getattr(rec, f)) is None else str(v) for f in type(rec).FIELDS}


@dataclass
class Kind:
    logical: str
    offline: str
    record: type[Record]
    key: tuple[str, ...]
    skip: tuple[str, ...]  # fields that legitimately differ (wall-clock stamps, triggers)


KINDS = (
    Kind("ticks.clean", "clean", CleanTick, ("broker", "symbol", "time_msc", "bid", "ask"),
         ("processed_time_us",)),
    Kind("bars.m1", "bars", Bar, ("symbol", "bar_time"), ("trigger_recv_time_us",)),
    Kind("features", "features", FeatureVector, ("symbol", "bar_time"),
         ("trigger_recv_time_us",)),
    Kind("trading.commands", "commands", TradingCommand, ("command_id",),
         ("created_time_us", "trigger_recv_time_us")),
)


@dataclass
class Tally:
    expected: int = 0
    online_unique: int = 0
    lost: int = 0
    extra: int = 0
    reemitted_identical: int = 0
    conflicting: int = 0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"expected": self.expected, "online_unique": self.online_unique,
                "lost": self.lost, "extra": self.extra,
                "reemitted_identical": self.reemitted_identical,
                "conflicting": self.conflicting, "examples": self.examples[:3]}


def compare_kind(kind: Kind, online: list[Record], offline_rows: list[dict[str, str]],
                 exclude: Callable[[tuple[str, ...]], bool],
                 optional: Callable[[dict[str, str]], bool]) -> Tally:
    """Online records of one kind against the offline rows, by natural key.

    ``exclude(key)``: keys not judged at all (the replay's tail). ``optional(row)``: offline
    rows the live worker need not have produced (closed only by the end-of-input flush);
    they still count when present.
    """
    tally = Tally()

    def content(r: dict[str, str]) -> tuple[str, ...]:
        return tuple(v for k, v in r.items() if k not in kind.skip)

    off: dict[tuple[str, ...], tuple[str, ...]] = {}
    required: set[tuple[str, ...]] = set()
    for r in offline_rows:
        k = tuple(r[f] for f in kind.key)
        if exclude(k):
            continue
        off[k] = content({f: r[f] for f in kind.record.FIELDS})
        if not optional(r):
            required.add(k)
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    conflicted: set[tuple[str, ...]] = set()
    for rec in online:
        r = record_row(rec)
        k = tuple(r[f] for f in kind.key)
        if exclude(k):
            continue
        c = content(r)
        prev = seen.get(k)
        if prev is None:
            seen[k] = c
            if k in off and off[k] != c and k not in conflicted:
                conflicted.add(k)
                tally.examples.append(f"{k}: online {c} != offline {off[k]}")
        elif prev == c:
            tally.reemitted_identical += 1
        elif k not in conflicted:
            conflicted.add(k)
            tally.examples.append(f"{k}: online emitted {prev} and {c}")
    tally.expected = len(required)
    tally.online_unique = len(seen)
    tally.lost = len(required - seen.keys())
    tally.extra = len(seen.keys() - off.keys())
    tally.conflicting = len(conflicted)
    if tally.lost:
        tally.examples.append(f"lost e.g. {sorted(required - seen.keys())[:2]}")
    return tally


def dead_letters(codec: Codec, arrivals: list[Arrival]) -> tuple[list[RejectedRecord], int]:
    """Unique dead letters (by source position and reason) and how many were re-emitted."""
    out: list[RejectedRecord] = []
    seen: set[tuple[Any, ...]] = set()
    again = 0
    for a in arrivals:
        if a.topic != "ticks.rejected":
            continue
        r = codec.decode(a.msg.value, RejectedRecord)
        ident: tuple[Any, ...] = (
            (r.source_topic, r.source_partition, r.source_offset, r.reason)
            if r.source_offset >= 0 else (r.original, r.reason))
        if ident in seen:
            again += 1
            continue
        seen.add(ident)
        out.append(r)
    return out, again


def reject_key(codec: Codec, r: RejectedRecord) -> tuple[str, ...] | None:
    try:
        t = codec.decode(r.original, RawTick)
    except MalformedRecord:
        return None
    return (t.broker, t.symbol, str(t.time_msc), repr(t.bid), repr(t.ask), r.reason)


def account(codec: Codec, arrivals: list[Arrival], offline: Offline,
            tail_keys: set[tuple[str, ...]] | None = None,
            skip_sources: set[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Every output kind against offline ``process`` on the same ticks; dead letters of
    ``skip_sources`` (partition, offset of ticks.raw records offline never saw) aside."""
    tail = tail_keys or set()
    online: dict[str, list[Record]] = {k.logical: [] for k in KINDS}
    for a in arrivals:
        for k in KINDS:
            if a.topic == k.logical:
                online[k.logical].append(codec.decode(a.msg.value, k.record))
    end_bars = {(r["symbol"], r["bar_time"]) for r in offline.rows["bars"]
                if r["trigger_recv_time_us"] == "0"}
    out: dict[str, Any] = {}
    for k in KINDS:
        if k.logical == "ticks.clean":
            def excl(key: tuple[str, ...]) -> bool:
                return key in tail

            def opt(row: dict[str, str]) -> bool:
                return False
        else:
            def excl(key: tuple[str, ...]) -> bool:
                return False

            def opt(row: dict[str, str]) -> bool:
                return (row["symbol"], row["bar_time"]) in end_bars
        out[k.offline] = compare_kind(k, online[k.logical], offline.rows[k.offline],
                                      excl, opt).as_dict()
    out["clean_all_unique"] = len({(c.broker, c.symbol, c.time_msc, c.bid, c.ask)
                                   for c in online["ticks.clean"]
                                   if isinstance(c, CleanTick)})
    letters, again = dead_letters(codec, arrivals)
    skip = skip_sources or set()
    letters = [r for r in letters if (r.source_partition, r.source_offset) not in skip]
    out["rejected_all_unique"] = len(letters)
    on_rej: Counter[tuple[str, ...]] = Counter()
    undecodable = 0
    for r in letters:
        key = reject_key(codec, r)
        if key is None:
            undecodable += 1
        elif key[:5] not in tail:
            on_rej[key] += 1
    off_rej: Counter[tuple[str, ...]] = Counter()
    for row in offline.rows["rejected"]:
        key = (row["broker"], row["symbol"], row["time_msc"], row["bid"], row["ask"],
               row["reason"])
        if key[:5] not in tail:
            off_rej[key] += 1
    out["rejected"] = {
        "expected": sum(off_rej.values()), "online_unique": sum(on_rej.values()),
        "lost": sum((off_rej - on_rej).values()), "extra": sum((on_rej - off_rej).values()),
        "reemitted_identical": again, "undecodable_originals": undecodable,
        "examples": [str(x) for x in list(off_rej - on_rej)[:2] + list(on_rej - off_rej)[:2]],
    }
    out["lost_total"] = sum(int(v["lost"]) for v in out.values() if isinstance(v, dict))
    out["conflicting_total"] = sum(int(v.get("conflicting", 0)) for v in out.values()
                                   if isinstance(v, dict))
    return out


def tick_key(t: Tick) -> tuple[str, ...]:
    return (t.broker, t.symbol, str(t.time_msc), repr(t.bid), repr(t.ask))


# ---- observing the worker -----------------------------------------------------------------

def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def health(port: str | int, timeout_s: float = 1.0) -> tuple[bool | None, str]:
    """``GET /health/``: (ok, detail); ok is None when the endpoint did not answer."""
    url = f"http://127.0.0.1:{port}/health/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return None, type(exc).__name__
    ok = bool(body.get("ok"))
    worker = body.get("worker") or {}
    problems = worker.get("problems") if isinstance(worker, dict) else None
    return ok, json.dumps(problems, sort_keys=True)[:200] if problems else ""


class HealthWatch(threading.Thread):
    """Polls ``/health/`` every ``interval_s``; keeps (seconds since start, ok, detail)."""

    def __init__(self, port: str | int, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True, name="reliability-health")
        self.port = port
        self.interval_s = interval_s
        self.samples: list[tuple[float, bool | None, str]] = []
        self.t0 = time.monotonic()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            ok, detail = health(self.port, timeout_s=min(1.0, self.interval_s * 4))
            self.samples.append((time.monotonic() - self.t0, ok, detail))
            self.stop_event.wait(self.interval_s)

    def rel(self, t_mono: float) -> float:
        return t_mono - self.t0

    def first(self, after: float, pred: Callable[[bool | None], bool]) -> float | None:
        for t, ok, _d in self.samples:
            if t >= after and pred(ok):
                return round(t, 2)
        return None

    def transitions(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        prev: str | None = None
        for t, ok, detail in self.samples:
            state = {True: "ok", False: "not-ok", None: "no answer"}[ok]
            if state != prev:
                out.append((round(t, 2), state + (f" {detail}" if detail else "")))
                prev = state
        return out

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
