"""The fault scenarios. Each runs on its own app (unique topic prefix and app id), on the
suite's broker or on a private one when it stops the broker, and returns its figures."""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.reliability import data
from bench.reliability.harness import (
    Arrival,
    BadInput,
    Collector,
    HealthWatch,
    Offline,
    Sender,
    Stack,
    account,
    app_env,
    cpu_s,
    dead_letters,
    encode_tick,
    percentiles,
    reject_key,
    rss_mb,
    run_offline,
    tick_key,
)
from devstack.broker import LocalBroker
from schemas.codec import make_codec
from schemas.records import Bar, CleanTick, RawTick
from stages.types import Tick
from topology.admin import ensure_topics


@dataclass
class Context:
    """What every scenario gets: the data, a scratch folder, the model, the shared broker."""

    root: Path
    workdir: Path
    broker: LocalBroker
    model: Path
    quick: bool
    seed: int
    soak_s: float
    log: Callable[[str], None]

    def stack(self, name: str, bootstrap: str | None = None, **extra: str) -> Stack:
        env = app_env(bootstrap or self.broker.bootstrap, self.workdir,
                      TICKSTREAM_MODEL_DIR=str(self.model), **extra)
        stack = Stack(env, self.workdir, name)
        ensure_topics(stack.settings)
        return stack

    def private_broker(self, name: str, port: int = 0) -> LocalBroker:
        return LocalBroker(port=port, log_path=self.workdir / f"{name}-tansu.log").start()


def tail_keys(sent: list[Tick], per_stream: int = 3) -> set[tuple[str, ...]]:
    """The last ticks of every broker/symbol stream: the validator may still hold them
    when the input ends (offline's end-of-input flush releases them; a live worker waits
    for the next tick), so they are not judged."""
    seen: Counter[tuple[str, str]] = Counter()
    out: set[tuple[str, ...]] = set()
    for t in reversed(sent):
        s = (t.broker, t.symbol)
        if seen[s] < per_stream:
            seen[s] += 1
            out.add(tick_key(t))
    return out


def wait_complete(coll: Collector, off: Offline, slack: int, timeout_s: float) -> float:
    """Until the online clean + rejected outputs cover offline's (minus ``slack`` held at
    the end) and then go quiet; returns the seconds waited."""
    t0 = time.monotonic()
    want = len(off.rows["clean"]) + len(off.rows["rejected"]) - slack
    want_bars = sum(r["trigger_recv_time_us"] != "0" for r in off.rows["bars"])
    deadline = t0 + timeout_s
    last, changed = -1, t0
    while time.monotonic() < deadline:
        if (coll.count("ticks.clean") + coll.count("ticks.rejected") >= want
                and coll.count("bars.m1") >= want_bars):
            break
        with coll.lock:
            n = sum(coll.counts.values())
        if n != last:
            last, changed = n, time.monotonic()
        elif time.monotonic() - changed >= 12.0:
            break  # nothing more is coming: what is missing is reported as lost
        coll.stop_event.wait(0.1)
    coll.wait_quiet(1.5, max(2.0, deadline - time.monotonic()))
    return round(time.monotonic() - t0, 1)


WARM_UP = 40


def warm_up(stack: Stack, coll: Collector, ticks: list[Tick], live: bool) -> list[Tick]:
    """Send a few ticks and wait until they come out, so the measured feed starts on a
    worker that is consuming (Ready in the log comes before the partitions are fetched)."""
    s = Sender(stack.settings, ticks, 50.0, live=live)
    s.start()
    s.join()
    s.check()
    coll.wait_until(lambda c: c.count("ticks.clean") + c.count("ticks.rejected")
                    >= len(ticks) - 12, 90)
    return s.sent


def latency_since(coll: Collector, t0: float) -> dict[str, float]:
    with coll.lock:
        return percentiles(v for t, v, _r in coll.latency_ms if t >= t0)


def summary_of(acc: dict[str, Any], off: Offline, sent: int) -> dict[str, Any]:
    dups = int(off.result.get("duplicates", 0))
    clean = acc["clean_all_unique"]
    rej = acc["rejected_all_unique"]
    return {
        "sent": sent,
        "offline": {"clean": off.result.get("clean"), "rejected": off.result.get("rejected"),
                    "duplicates": dups, "bars": off.result.get("bars"),
                    "features": off.result.get("features"),
                    "commands": off.result.get("commands")},
        "online_clean": clean, "online_rejected": rej,
        "accounted": clean + rej + dups,
        "lost": acc["lost_total"], "conflicting": acc["conflicting_total"],
        "reemitted_identical": sum(int(v.get("reemitted_identical", 0)) for v in acc.values()
                                   if isinstance(v, dict)),
        "detail": acc,
    }


# ---- 1. steady feeds ----------------------------------------------------------------------

def steady(ctx: Context, rates: list[float], seconds: float) -> dict[str, Any]:
    """One worker, one app; the rates one after another (lowest first, so the broker's
    partitions are still small at the high rate), a pause between them."""
    codec = make_codec(None)
    total = int(sum(rates) * seconds) + WARM_UP + 10
    ticks = data.real_slice(ctx.root, total)
    stack = ctx.stack("steady")
    coll = Collector(stack.settings)
    coll.start()
    ready_s = stack.start_worker()
    pid = stack.worker_pid()
    sent = warm_up(stack, coll, ticks[:WARM_UP], True)
    at = WARM_UP
    phases: dict[str, Any] = {}
    for rate in rates:
        n = max(1, int(rate * seconds))
        cpu0 = cpu_s(pid)
        sender = Sender(stack.settings, ticks[at:at + n], rate, live=True)
        sender.start()
        sender.join()
        sender.check()
        cpu1 = cpu_s(pid)
        at += n
        sent += sender.sent
        lo, hi = sender.sent[0].recv_time_us, sender.sent[-1].recv_time_us
        # let this phase drain before the next (its last ticks' latency is its own)
        coll.wait_quiet(3.0, 60)
        with coll.lock:
            lat = [v for _t, v, r in coll.latency_ms if lo <= r <= hi]
        phases[str(int(rate))] = {
            "rate": rate, "sent": len(sender.sent), "clean_out": len(lat),
            "latency_ms": percentiles(lat),
            "worker_cpu_share": None if cpu0 is None or cpu1 is None else
            round((cpu1 - cpu0) / max(1e-9, sender.finished_at - sender.started_at), 3),
            "achieved_rate": round(len(sender.sent) / max(
                1e-9, sender.finished_at - sender.started_at), 1)}
        ctx.log(f"steady {rate:g}/s: {phases[str(int(rate))]}")
    off = run_offline(stack.env, sent, ctx.workdir, "steady", ctx.model)
    tail = tail_keys(sent)
    waited = wait_complete(coll, off, len(tail), 60)
    coll.stop()
    rc = stack.worker.stop() if stack.worker else None
    acc = account(codec, coll.arrivals, off, tail)
    res = summary_of(acc, off, len(sent))
    res.update({"seconds_per_rate": seconds, "rates": phases, "ready_s": round(ready_s, 1),
                "stage_modules": stack.stage_modules(),
                "drain_wait_s": waited, "judged_excludes_tail": len(tail), "worker_rc": rc,
                "tracebacks": stack.tracebacks()})
    ctx.log(f"steady: sent {res['sent']} accounted {res['accounted']} lost {res['lost']} "
            f"conflicting {res['conflicting']}")
    return res


# ---- 2. SIGKILLs --------------------------------------------------------------------------

def kills(ctx: Context, n_kills: int, rate: float, gap_s: tuple[float, float],
          restart_s: float = 30.0) -> dict[str, Any]:
    rng = random.Random(ctx.seed)
    codec = make_codec(None)
    per_kill = (gap_s[0] + gap_s[1]) / 2 + restart_s  # the feed must outlast every kill
    n = int(rate * (n_kills * per_kill + 10))
    ticks = data.historical(data.real_slice(ctx.root, n))
    # Default settings: table recovery reads each changelog to its Fetch high watermark
    # (engine/high_watermarks.py), so no workaround for Tansu's ListOffsets is needed.
    stack = ctx.stack("kills")
    coll = Collector(stack.settings)
    coll.start()
    stack.start_worker()
    sender = Sender(stack.settings, ticks, rate, live=False)
    sender.start()
    events: list[dict[str, Any]] = []
    stop = sender.stop_event
    while len(events) < n_kills and sender.is_alive():
        wait = rng.uniform(*gap_s)
        if stop.wait(wait) or not sender.is_alive():
            break
        assert stack.worker is not None
        at_sent = sender.count
        t_kill = time.monotonic()
        clean_before = coll.count("ticks.clean")
        stack.worker.kill()
        ready_s = stack.start_worker()

        def resumed(c: Collector, before: int = clean_before) -> bool:
            return c.count("ticks.clean") > before

        coll.wait_until(resumed, 60)
        events.append({"after_s": round(wait, 1), "sent_at_kill": at_sent,
                       "restart_ready_s": round(ready_s, 1),
                       "kill_to_output_s": round(time.monotonic() - t_kill, 1)})
        ctx.log(f"kill {len(events)}: {events[-1]}")
    if len(events) >= n_kills:
        sender.stop_event.wait(rng.uniform(*gap_s))  # a stretch after the last restart
        sender.stop()  # the feed was sized for slow restarts; it need not run on
    sender.join()
    sender.check()
    off = run_offline(stack.env, sender.sent, ctx.workdir, "kills", ctx.model)
    tail = tail_keys(sender.sent)
    waited = wait_complete(coll, off, len(tail), 120)
    coll.stop()
    rc = stack.worker.stop() if stack.worker else None
    acc = account(codec, coll.arrivals, off, tail)
    res = summary_of(acc, off, len(sender.sent))
    res.update({"rate": rate, "kills": events, "n_kills": len(events),
                "n_kills_planned": n_kills,
                "drain_wait_s": waited, "worker_rc": rc,
                "tracebacks": stack.tracebacks(),
                "sender_error": repr(sender.error) if sender.error else None,
                "settings": "defaults + memory store"})
    ctx.log(f"kills: {len(events)} kills, lost {res['lost']} conflicting {res['conflicting']} "
            f"re-emitted {res['reemitted_identical']}")
    return res


# ---- 3. broker stalled --------------------------------------------------------------------

def stall(ctx: Context, stall_s: float, rate: float = 120.0) -> dict[str, Any]:
    codec = make_codec(None)
    pre, post = 5.0, 12.0
    ticks = data.real_slice(ctx.root, int(rate * (pre + stall_s + post)) + 10)
    broker = ctx.private_broker("stall")
    try:
        stack = ctx.stack("stall", bootstrap=broker.bootstrap)
        coll = Collector(stack.settings)
        coll.start()
        stack.start_worker()
        warm = warm_up(stack, coll, ticks[:WARM_UP], True)
        watch = HealthWatch(stack.env["TICKSTREAM_WEB_PORT"])
        watch.start()
        sender = Sender(stack.settings, ticks[WARM_UP:], rate, live=True,
                        duration_s=pre + stall_s + post)
        sender.start()
        sender.stop_event.wait(pre)
        assert broker.process is not None
        t_stop = watch.rel(time.monotonic())
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            sender.stop_event.wait(stall_s)
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        t_cont = watch.rel(time.monotonic())
        sender.join()
        sender.check()
        sent = warm + sender.sent
        off = run_offline(stack.env, sent, ctx.workdir, "stall", ctx.model)
        tail = tail_keys(sent)
        waited = wait_complete(coll, off, len(tail), 90)
        watch.stop()
        alive = stack.worker_pid() is not None
        coll.stop()
        rc = stack.worker.stop() if stack.worker else None
    finally:
        broker.stop()
    acc = account(codec, coll.arrivals, off, tail)
    res = summary_of(acc, off, len(sent))
    not_ok = watch.first(t_stop, lambda ok: ok is not True)
    back = watch.first(t_cont, lambda ok: ok is True)
    # ok again only counts when it stays ok from then on
    res.update({
        "stall_s": stall_s, "rate": rate, "sigstop_at_s": round(t_stop, 2),
        "sigcont_at_s": round(t_cont, 2),
        "health_not_ok_after_stop_s": None if not_ok is None else round(not_ok - t_stop, 2),
        "health_ok_after_cont_s": None if back is None else round(back - t_cont, 2),
        "health_transitions": watch.transitions()[:20],
        "worker_alive_after": alive, "worker_rc": rc, "drain_wait_s": waited,
        "latency_ms": latency_since(coll, sender.started_at),
        "tracebacks": stack.tracebacks(),
        "sender_error": repr(sender.error) if sender.error else None,
        "undelivered": sender.undelivered})
    ctx.log(f"stall: lost {res['lost']} health not-ok after {res['health_not_ok_after_stop_s']}"
            f" s, ok after SIGCONT {res['health_ok_after_cont_s']} s")
    return res


# ---- 4. broker restarted ------------------------------------------------------------------

def _raw_ticks(stack: Stack) -> list[Tick]:
    """What ``ticks.raw`` holds on the (new) broker, in send order."""
    from devstack.kafka_io import TopicReader

    codec = make_codec(None)
    got: list[tuple[int, Tick]] = []
    reader = TopicReader(stack.settings, [stack.settings.topic("ticks.raw")])
    try:
        deadline = time.monotonic() + 20
        quiet = 0
        while time.monotonic() < deadline and quiet < 5:
            batch = reader.poll(0.2)
            quiet = 0 if batch else quiet + 1
            for m in batch:
                r = codec.decode(m.value, RawTick)
                got.append((r.recv_time_us, Tick(r.broker, r.symbol, r.time_msc, r.bid, r.ask,
                                                 r.recv_time_us)))
    finally:
        reader.close()
    got.sort(key=lambda x: x[0])
    return [t for _r, t in got]


def restart(ctx: Context, observe_s: float, rate: float = 120.0) -> dict[str, Any]:
    codec = make_codec(None)
    pre = 6.0
    ticks = data.real_slice(ctx.root, int(rate * (pre + 2 * observe_s + 40)) + 10)
    broker = ctx.private_broker("restart")
    port = broker.port
    res: dict[str, Any] = {"rate": rate, "observe_s": observe_s}
    new: LocalBroker | None = None
    try:
        stack = ctx.stack("restart", bootstrap=broker.bootstrap)
        coll = Collector(stack.settings)
        coll.start()
        stack.start_worker()
        warm_up(stack, coll, ticks[:WARM_UP], True)
        watch = HealthWatch(stack.env["TICKSTREAM_WEB_PORT"])
        watch.start()
        sender = Sender(stack.settings, ticks[WARM_UP:], rate, live=True, flush_s=15.0)
        sender.start()
        sender.stop_event.wait(pre)
        sent_before = sender.ticks_sent
        t_stop = watch.rel(time.monotonic())
        broker.stop()
        sent_gone = sender.ticks_sent
        coll.stop()
        pre_out = coll.count("ticks.clean") + coll.count("ticks.rejected")
        new = ctx.private_broker("restart-new", port=port)
        t_up = watch.rel(time.monotonic())
        topics_error = None
        try:
            ensure_topics(stack.settings)
        except Exception as exc:  # reported, not fatal to the suite
            topics_error = repr(exc)
        t_topics = watch.rel(time.monotonic())
        coll2 = Collector(stack.settings)
        coll2.start()
        # Phase 1: the same worker, untouched, for observe_s.
        t_deadline = time.monotonic() + observe_s
        exit_at = None
        while time.monotonic() < t_deadline:
            if exit_at is None and stack.worker_pid() is None:
                exit_at = round(watch.rel(time.monotonic()) - t_up, 2)
            if coll2.count("ticks.clean") > 0 and exit_at is None:
                pass
            coll2.stop_event.wait(0.25)
        first_clean = None
        with coll2.lock:
            n_after = coll2.counts["ticks.clean"] + coll2.counts["ticks.rejected"]
            if coll2.latency_ms:
                first_clean = round(watch.rel(coll2.latency_ms[0][0]) - t_up, 2)
        sent_phase1 = sender.ticks_sent - sent_before
        alive = stack.worker_pid() is not None
        proc = stack.worker.process if stack.worker else None
        rc_exit = proc.returncode if proc is not None and proc.poll() is not None else None
        res.update({
            "sent_before_stop": sent_before, "sent_when_broker_gone": sent_gone,
            "outputs_read_before_stop": pre_out,
            "new_broker_up_after_stop_s": round(t_up - t_stop, 2),
            "topics_recreated_after_s": round(t_topics - t_up, 2),
            "topics_error": topics_error,
            "phase1_same_worker": {
                "worker_alive_at_deadline": alive, "worker_exit_after_restart_s": exit_at,
                "worker_exit_code": rc_exit,
                "ticks_sent_since_restart": sent_phase1,
                "outputs_on_new_broker": n_after,
                "first_clean_after_restart_s": first_clean,
                "health_not_ok_after_stop_s": (
                    None if (x := watch.first(t_stop, lambda ok: ok is not True)) is None
                    else round(x - t_stop, 2)),
                "health_at_deadline": watch.samples[-1][1] if watch.samples else None,
            },
        })
        ctx.log(f"restart phase 1: {res['phase1_same_worker']}")
        # Phase 2: what an operator would do: restart the worker, then observe again.
        t2 = time.monotonic()
        stop_rc = stack.worker.stop() if stack.worker else None
        stop_s = round(time.monotonic() - t2, 1)
        ready_s = None
        start_error = None
        try:
            ready_s = round(stack.start_worker(), 1)
        except Exception as exc:
            start_error = str(exc)[-700:]
        sender.stop()  # the collector-side producer that lived through the restart
        sender.join()
        # ... and a restarted one (a fresh producer, as a restarted collector would have)
        used = WARM_UP + sender.ticks_sent
        sender2 = Sender(stack.settings, ticks[used:used + int(rate * 10)], rate, live=True,
                         flush_s=15.0)
        sender2.start()
        sender2.join()
        raw = _raw_ticks(stack)
        off = run_offline(stack.env, raw, ctx.workdir, "restart", ctx.model)
        tail = tail_keys(raw)
        waited = wait_complete(coll2, off, len(tail), observe_s)
        watch.stop()
        coll2.stop()
        rc = stack.worker.stop() if stack.worker else None
        acc = account(codec, coll2.arrivals, off, tail)
        phase2 = summary_of(acc, off, len(raw))
        phase2.update({"old_worker_stop_s": stop_s, "old_worker_rc": stop_rc,
                       "new_worker_ready_s": ready_s, "start_error": start_error,
                       "drain_wait_s": waited, "worker_rc": rc,
                       "old_producer_ticks_sent_total": sender.ticks_sent,
                       "old_producer_undelivered": sender.undelivered,
                       "old_producer_error": repr(sender.error) if sender.error else None,
                       "fresh_producer_ticks_sent": sender2.ticks_sent,
                       "fresh_producer_undelivered": sender2.undelivered,
                       "ticks_on_new_broker": len(raw),
                       "ticks_never_reached_new_broker":
                           sender.ticks_sent - sent_before + sender2.ticks_sent - len(raw)})
        res["phase2_worker_restarted"] = phase2
        res["health_transitions"] = watch.transitions()[:20]
        res["tracebacks"] = stack.tracebacks()
        ctx.log(f"restart phase 2: lost {phase2['lost']} of {len(raw)} on the new broker")
    finally:
        if new is not None:
            new.stop()
        broker.stop()
    return res


# ---- 5. bad inputs ------------------------------------------------------------------------

BAD_KINDS = ("nan_bid", "inf_ask", "neg_inf_bid", "zero_price", "negative_price",
             "future_timestamp", "zero_timestamp", "no_recv_time", "null_key", "wrong_key",
             "wrong_schema", "truncated_avro", "symbol_10kB", "value_900kB")
EXPECTED_REASON = {"nan_bid": "malformed", "inf_ask": "malformed", "neg_inf_bid": "malformed",
                   "zero_price": "non_positive_price", "negative_price": "non_positive_price",
                   "future_timestamp": "future_timestamp", "zero_timestamp": "stale_timestamp",
                   "wrong_schema": "malformed", "truncated_avro": "malformed",
                   "symbol_10kB": "unknown_symbol", "value_900kB": "malformed"}


def make_bad(kind: str, near: Tick, topic: str, rng: random.Random) -> BadInput:
    codec = make_codec(None)
    t: Tick | None = None
    key: bytes | None = near.symbol.encode()
    if kind == "nan_bid":
        t = replace(near, bid=math.nan)
    elif kind == "inf_ask":
        t = replace(near, ask=math.inf)
    elif kind == "neg_inf_bid":
        t = replace(near, bid=-math.inf)
    elif kind == "zero_price":
        t = replace(near, bid=0.0)
    elif kind == "negative_price":
        t = replace(near, bid=-near.bid, ask=-near.ask)
    elif kind == "future_timestamp":
        t = replace(near, time_msc=near.time_msc + 3_600_000)
    elif kind == "zero_timestamp":
        t = replace(near, time_msc=0)
    elif kind == "no_recv_time":
        t = replace(near, recv_time_us=0, bid=round(near.bid - 0.00001, 5))
    elif kind in ("null_key", "wrong_key"):
        # A collector re-send of the tick just sent, with no key / another symbol's key.
        key = None if kind == "null_key" else b"GBPJPY"
        return BadInput(kind, key, encode_tick(codec, near, topic), near, in_reference=False)
    elif kind == "symbol_10kB":
        t = replace(near, symbol="X" * 10_000)
        key = t.symbol.encode()
    if t is not None:
        return BadInput(kind, key, encode_tick(codec, t, topic), t)
    if kind == "wrong_schema":
        value = bytes(codec.encode(Bar(
            symbol=near.symbol, bar_time=near.time_msc // 60_000 * 60_000, open=near.bid,
            high=near.ask, low=near.bid, close=near.bid, bid_close=near.bid,
            ask_close=near.ask, tick_count=1, mean_spread=near.ask - near.bid,
            fresh_brokers=1), topic))
    elif kind == "truncated_avro":
        full = encode_tick(codec, near, topic)
        value = full[: len(full) // 2]
    elif kind == "value_900kB":
        header = encode_tick(codec, near, topic)[:10]  # magic + RawTick fingerprint
        value = header + rng.randbytes(900_000)
    else:
        raise ValueError(kind)
    return BadInput(kind, key, value, None)


def judge_bad(codec: Any, bad: list[BadInput], arrivals: list[Arrival]) -> dict[str, Any]:
    """Where every bad input went: dead letters (by original bytes), clean ticks (by
    natural key), or nowhere."""
    letters, _again = dead_letters(codec, arrivals)
    by_pos: dict[tuple[int, int], list[str]] = {}
    by_bytes: dict[bytes, list[str]] = {}
    by_key: dict[tuple[str, ...], list[str]] = {}
    for r in letters:
        by_pos.setdefault((r.source_partition, r.source_offset), []).append(r.reason)
        by_bytes.setdefault(bytes(r.original), []).append(r.reason)
        k = reject_key(codec, r)
        if k is not None:
            by_key.setdefault(k[:5], []).append(r.reason)
    clean: Counter[tuple[str, ...]] = Counter()
    for a in arrivals:
        if a.topic == "ticks.clean":
            c = codec.decode(a.msg.value, CleanTick)
            clean[(c.broker, c.symbol, str(c.time_msc), repr(c.bid), repr(c.ask))] += 1
    kinds: dict[str, dict[str, Any]] = {}
    unaccounted = 0
    wrong_reason = 0
    for b in bad:
        # The dead letter names the source record's partition and offset (delivery report).
        reasons = by_pos.get((b.partition, b.offset), []) if b.offset >= 0 else []
        if not reasons and b.tick is not None and b.kind not in ("null_key", "wrong_key"):
            # released later by the validator (offset -1): by natural key
            reasons = [x for x in by_key.get(tick_key(b.tick), [])]
        n_clean = clean[tick_key(b.tick)] if b.tick is not None else 0
        if b.kind in ("null_key", "wrong_key"):
            # A copy of a tick already sent: a dead letter, or (deduplicated) no output
            # beyond the original's one clean tick.
            ok = (len(reasons) == 1) or (not reasons and n_clean <= 1)
            outcome = (f"dead letter {reasons[0]}" if len(reasons) == 1 else
                       "deduplicated (no second output)" if ok else
                       f"{len(reasons)} dead letters, {n_clean} clean")
        else:
            distinct = len(set(reasons))
            ok = (distinct == 1 and n_clean == 0) or (not reasons and n_clean == 1)
            outcome = (f"dead letter {reasons[0]}" if distinct == 1 and n_clean == 0 else
                       "accepted as a clean tick" if ok else
                       f"{len(reasons)} dead letters {sorted(set(reasons))}, {n_clean} clean")
            exp = EXPECTED_REASON.get(b.kind)
            if exp is not None and (not reasons or reasons[0] != exp):
                wrong_reason += 1
        entry = kinds.setdefault(b.kind, {"sent": 0, "accounted": 0, "outcomes": Counter()})
        entry["sent"] += 1
        entry["accounted"] += int(ok)
        entry["outcomes"][outcome] += 1
        unaccounted += int(not ok)
    for v in kinds.values():
        v["outcomes"] = dict(v["outcomes"])
    originals_intact = sum(1 for b in bad if b.value in by_bytes
                           and by_pos.get((b.partition, b.offset)))
    return {"kinds": kinds, "bad_sent": len(bad), "unaccounted": unaccounted,
            "not_the_expected_reason": wrong_reason,
            "dead_letters_with_original_bytes": originals_intact}


def bad_inputs(ctx: Context, n: int, rate: float, per_kind: int = 2) -> dict[str, Any]:
    rng = random.Random(ctx.seed + 5)
    codec = make_codec(None)
    ticks = data.historical(data.real_slice(ctx.root, n, skip=50_000))
    stack = ctx.stack("badinput")
    topic = stack.settings.topic("ticks.raw")
    bad: dict[int, list[BadInput]] = {}
    half = n // 2
    for rep in range(per_kind):
        lo, hi = (50, half - 50) if rep % 2 == 0 else (half + 50, n - 50)
        for kind in BAD_KINDS:
            i = rng.randrange(lo, hi)
            j = i - 1
            while j > 0 and not ticks[j].ask > ticks[j].bid:
                j -= 1  # a quote that is valid itself, so the bad field is the only fault
            bad.setdefault(i, []).append(make_bad(kind, ticks[j], topic, rng))
    coll = Collector(stack.settings)
    coll.start()
    stack.start_worker()
    sender = Sender(stack.settings, ticks, rate, live=False, bad=bad)
    sender.start()
    while sender.is_alive() and sender.ticks_sent < half:
        sender.stop_event.wait(0.1)
    assert stack.worker is not None
    t_kill = time.monotonic()
    stack.worker.kill()
    ready_s = stack.start_worker()
    restart_s = round(time.monotonic() - t_kill, 1)
    sender.join()
    sender.check()
    # A tick without a receive time is judged online against its record's timestamp (the
    # worker's documented fallback clock); offline has no record timestamps, so it gets
    # that same clock as its receive time.
    fallback = {id(b.tick): b.timestamp_ms * 1000 for b in sender.bad_sent
                if b.kind == "no_recv_time" and b.tick is not None}
    reference = [replace(t, recv_time_us=fallback[id(t)]) if id(t) in fallback else t
                 for t in sender.sent]
    off = run_offline(stack.env, reference, ctx.workdir, "badinput", ctx.model)
    tail = tail_keys(sender.sent)
    n_malformed = sum(1 for b in sender.bad_sent if b.tick is None)
    waited = wait_complete(coll, off, len(tail) - n_malformed, 90)
    coll.stop()
    rc = stack.worker.stop() if stack.worker else None
    resent = {(b.partition, b.offset) for b in sender.bad_sent if not b.in_reference}
    acc = account(codec, coll.arrivals, off, tail, resent)
    # every record but the bad-key re-sends (judged on their own), undecodable ones included
    res = summary_of(acc, off, sender.count - len(resent))
    res["bad"] = judge_bad(codec, sender.bad_sent, coll.arrivals)
    res["bad_key_resends_not_in_reference"] = len(resent)
    res.update({"rate": rate, "good_ticks": n, "sigkill_restart_s": restart_s,
                "ready_s": round(ready_s, 1), "drain_wait_s": waited, "worker_rc": rc,
                "tracebacks": stack.tracebacks(),
                "sender_error": repr(sender.error) if sender.error else None})
    ctx.log(f"bad inputs: {res['bad']['bad_sent']} sent, unaccounted "
            f"{res['bad']['unaccounted']}, lost {res['lost']} conflicting {res['conflicting']}")
    return res


# ---- 6. soak ------------------------------------------------------------------------------

class StateSize:
    """Bytes of the latest value per key in the pipeline's state changelogs."""

    def __init__(self, stack: Stack) -> None:
        from devstack.kafka_io import TopicReader
        from topology.tables import DEDUPE_SEGMENTS, PIPELINE_STATE

        s = stack.settings
        self.reader = TopicReader(s, [PIPELINE_STATE.changelog(s), DEDUPE_SEGMENTS.changelog(s)])
        self.latest: dict[tuple[str, bytes | None], int] = {}
        self.records = 0

    def poll(self, budget_s: float = 0.5) -> int:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            batch = self.reader.poll(0.05)
            if not batch:
                break
            for m in batch:
                self.records += 1
                if m.value:
                    self.latest[(m.topic, m.key)] = len(m.value) + len(m.key or b"")
                else:
                    self.latest.pop((m.topic, m.key), None)
        return sum(self.latest.values())

    def close(self) -> None:
        self.reader.close()


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per minute) of the samples after the first 20%."""
    pts = points[len(points) // 5:]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    den = sum((p[0] - mx) ** 2 for p in pts)
    if den == 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den * 60.0, 3)


def soak(ctx: Context, seconds: float, rate: float = 2000.0,
         sample_s: float = 10.0) -> dict[str, Any]:
    ticks = data.real_slice(ctx.root, 150_000)
    broker = ctx.private_broker("soak")
    samples: list[dict[str, Any]] = []
    try:
        stack = ctx.stack("soak", bootstrap=broker.bootstrap)
        coll = Collector(stack.settings, keep=False)
        coll.start()
        stack.start_worker()
        base = len(warm_up(stack, coll, list(ticks[-WARM_UP:]), True))
        pid = stack.worker_pid()
        state = StateSize(stack)
        sender = Sender(stack.settings, ticks, rate, live=True, duration_s=seconds, keep=False)
        sender.start()
        t0 = time.monotonic()
        lat_from = 0
        while sender.is_alive():
            sender.stop_event.wait(sample_s)
            with coll.lock:
                out = coll.counts["ticks.clean"] + coll.counts["ticks.rejected"] - base
                window = [v for _t, v, _r in coll.latency_ms[lat_from:]]
                lat_from = len(coll.latency_ms)
            lat = percentiles(window)
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": rss_mb(pid),
                            "cpu_s": cpu_s(pid), "sent": sender.ticks_sent, "out": out,
                            "lag": sender.ticks_sent - out, "state_bytes": state.poll(),
                            "p50_ms": lat["p50"], "p99_ms": lat["p99"]})
            ctx.log(f"soak {samples[-1]}")
        sender.check()
        coll.wait_until(lambda c: c.count("ticks.clean") + c.count("ticks.rejected") - base
                        >= sender.ticks_sent, 60)
        coll.wait_quiet(2.0, 20.0)
        alive = stack.worker_pid() is not None
        end_rss = rss_mb(pid)
        state_end = state.poll(2.0)
        state.close()
        coll.stop()
        rc = stack.worker.stop() if stack.worker else None
    finally:
        broker.stop()

    def series(name: str) -> dict[str, Any]:
        pts = [(float(s["t_s"]), float(s[name])) for s in samples if s[name] is not None]
        vals = [p[1] for p in pts]
        if not vals:
            return {}
        return {"start": vals[0], "end": vals[-1], "max": max(vals),
                "slope_per_min": slope_per_min(pts)}

    accounted = coll.counts["ticks.clean"] + coll.counts["ticks.rejected"] - base
    res = {"seconds": seconds, "rate": rate, "sent": sender.ticks_sent,
           "clean": coll.counts["ticks.clean"], "rejected": coll.counts["ticks.rejected"],
           "unaccounted_at_end": sender.ticks_sent - accounted,
           "rss_mb": series("rss_mb"), "state_bytes": series("state_bytes"),
           "lag_ticks": series("lag"), "p99_ms": series("p99_ms"), "p50_ms": series("p50_ms"),
           "rss_mb_after_drain": end_rss, "state_bytes_after_drain": state_end,
           "worker_alive": alive, "worker_rc": rc, "tracebacks": stack.tracebacks(),
           "latency_ms_all": percentiles(v for _t, v, _r in coll.latency_ms),
           "samples": samples,
           "sender_error": repr(sender.error) if sender.error else None}
    ctx.log(f"soak: rss {res['rss_mb']} state {res['state_bytes']} lag {res['lag_ticks']}")
    return res
