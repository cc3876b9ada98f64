"""docs/reliability.md from one run's result (figures only; the prose around them says what
each scenario does and is kept short)."""

from __future__ import annotations

import json
from typing import Any


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON line: everything, with the accounting details' examples cut short."""
    return result


def _g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def summary_lines(result: dict[str, Any]) -> str:
    out = []
    for name, res in result["scenarios"].items():
        if "error" in res:
            out.append(f"{name}: ERROR {res['error'][:200]}")
        elif name == "steady":
            out.append(f"steady: sent {res['sent']} accounted {res['accounted']} "
                       f"lost {res['lost']} conflicting {res['conflicting']}")
            for rate, r in res["rates"].items():
                out.append(f"  {rate}/s: p50/p99 {r['latency_ms'].get('p50')}/"
                           f"{r['latency_ms'].get('p99')} ms")
        else:
            keys = ("lost", "conflicting", "reemitted_identical", "n_kills",
                    "health_not_ok_after_stop_s", "health_ok_after_cont_s")
            out.append(f"{name}: " + ", ".join(f"{k} {res[k]}" for k in keys if k in res))
    return "\n".join(out)


def summary_rows(sc: dict[str, Any]) -> list[tuple[str, tuple[str, str]]]:
    """One line per scenario: pass/FAIL against its target and the figures behind it."""
    rows: list[tuple[str, tuple[str, str]]] = []
    for name, res in sc.items():
        if "error" in res:
            rows.append((name, ("**ERROR**", f"`{res['error'][:150]}`")))
            continue
        if name == "steady":
            ok = res["lost"] == 0 and res["conflicting"] == 0 and res["accounted"] == res["sent"]
            lat = ", ".join(f"{k}/s {_fmt(v['latency_ms'].get('p50'))}/"
                            f"{_fmt(v['latency_ms'].get('p99'))} ms"
                            for k, v in res["rates"].items())
            rows.append((name, (_verdict(ok), f"sent {_fmt(res['sent'])}, accounted "
                                f"{_fmt(res['accounted'])}, lost {res['lost']}, conflicting "
                                f"{res['conflicting']}; p50/p99 {lat}")))
        elif name == "kills":
            ok = (res["lost"] == 0 and res["conflicting"] == 0
                  and res["n_kills"] >= res.get("n_kills_planned", 5))
            rows.append((name, (_verdict(ok), f"{res['n_kills']} SIGKILLs: lost "
                                f"{res['lost']}, conflicting {res['conflicting']}, identical "
                                f"re-emissions {res['reemitted_identical']}")))
        elif name == "stall":
            ok = (res["lost"] == 0 and res["conflicting"] == 0
                  and res["health_not_ok_after_stop_s"] is not None
                  and res["health_ok_after_cont_s"] is not None)
            rows.append((name, (_verdict(ok), f"{res['stall_s']:.0f} s SIGSTOP: lost "
                                f"{res['lost']}; /health/ not-ok after "
                                f"{_fmt(res['health_not_ok_after_stop_s'])} s, ok again "
                                f"{_fmt(res['health_ok_after_cont_s'])} s after SIGCONT")))
        elif name == "restart":
            p1, p2 = res["phase1_same_worker"], res["phase2_worker_restarted"]
            ok = p2["lost"] == 0 and p2["conflicting"] == 0 and not p2["start_error"]
            rows.append((name, (_verdict(ok), f"worker exit after "
                                f"{_fmt(p1['worker_exit_after_restart_s'])} s (code "
                                f"{_fmt(p1['worker_exit_code'])}); surviving producer "
                                f"undelivered {_fmt(p2['old_producer_undelivered'])}; "
                                f"restarted worker "
                                f"{'did not start' if p2['start_error'] else 'started'}, "
                                f"lost {_fmt(p2['lost'])} of "
                                f"{_fmt(p2['ticks_on_new_broker'])} ticks on the new broker")))
        elif name == "badinput":
            b = res["bad"]
            ok = b["unaccounted"] == 0 and res["lost"] == 0 and res["conflicting"] == 0
            rows.append((name, (_verdict(ok), f"{b['bad_sent']} bad records: unaccounted "
                                f"{b['unaccounted']}, unexpected reason "
                                f"{b['not_the_expected_reason']}; good ticks lost "
                                f"{res['lost']}, conflicting {res['conflicting']}")))
        elif name == "soak":
            rss, lag = res.get("rss_mb") or {}, res.get("lag_ticks") or {}
            ok = res["unaccounted_at_end"] == 0 and res["worker_alive"]
            rows.append((name, (_verdict(ok), f"{res['seconds']:.0f} s at {res['rate']:.0f}/s:"
                                f" RSS {_fmt(rss.get('start'))} → {_fmt(rss.get('end'))} MB "
                                f"(max {_fmt(rss.get('max'))}, {_fmt(rss.get('slope_per_min'))}"
                                f" MB/min), lag max {_fmt(lag.get('max'))} ticks, unaccounted "
                                f"{_fmt(res['unaccounted_at_end'])}")))
    return rows


def _accounting_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = ["| run | output | offline (judged) | online unique | lost | extra | "
           "identical re-emissions | conflicting |", "|---|---|---|---|---|---|---|---|"]
    for label, res in rows:
        det = res.get("detail") or {}
        for kind in ("clean", "rejected", "bars", "features", "commands"):
            d = det.get(kind)
            if not d:
                continue
            out.append(f"| {label} | {kind} | {_fmt(d['expected'])} | "
                       f"{_fmt(d['online_unique'])} | {_fmt(d['lost'])} | {_fmt(d['extra'])} | "
                       f"{_fmt(d['reemitted_identical'])} | {_fmt(d.get('conflicting', 0))} |")
    return out


def _examples(res: dict[str, Any]) -> list[str]:
    out = []
    for kind, d in (res.get("detail") or {}).items():
        if isinstance(d, dict) and d.get("examples") and (d.get("lost") or d.get("extra")
                                                           or d.get("conflicting")):
            for e in d["examples"][:2]:
                out.append(f"  - {kind}: `{str(e)[:300]}`")
    return out


def render(result: dict[str, Any], command: str) -> str:
    sc = result["scenarios"]
    L: list[str] = [
        "# Reliability: the fault suite (`make reliability`)", "",
        f"Generated by `{command}` on {result['date_utc']} in {result['seconds']:.0f} s "
        f"({result.get('cpus')} cores shared with other work, Tansu on the same cores; "
        f"1-minute load average {result.get('load_average_1min_at_start')} at the start). "
        "Re-run with `make reliability`; `python -m bench.reliability --quick` is the short "
        "variant, and `tests/integration/test_reliability_quick.py` runs part of it in "
        "`make test`.",
        "",
        "Input: real quotes of two brokers, OANDA and FXCM, EURUSD and NZDUSD, from "
        "`../shared/data/lean` (2014-05-12, merged by time from the moment all four "
        "streams have begun; FXCM's clock shifted +5 h to UTC). *Live* runs re-time each "
        "tick as it is sent (event time = receive time = wall clock), so "
        "`recv_time_us` → clean-tick arrival at a reader is end-to-end latency; "
        "*historical* runs keep the vendor times (receive time = event time + 20 ms) and "
        "replay faster than real time, so minute bars, features and commands come out. "
        "Every run is judged against `tickstream process` on exactly the ticks that were "
        "sent, by natural key: broker+symbol+time_msc+prices for clean ticks and dead "
        "letters, symbol+bar_time for bars and features, command_id for commands. "
        "Wall-clock stamps (`processed_time_us`, `created_time_us`) and the trigger time of "
        "a bar (a live worker may close a quiet bar on its idle timer) are not compared. "
        "The last 3 ticks of each broker/symbol stream are not judged (the validator may "
        "still hold them when the input stops; offline releases them at end of input), nor "
        "are bars that only offline's end-of-input flush closes. *Lost*: a key offline "
        "produced that never came out online; *identical re-emissions*: a key that came "
        "out again with the same content (at-least-once output after a crash: expected); "
        "*conflicting*: a key that came out with two contents, or with a content that "
        "differs from offline's.",
        "",
        "Every app is private (unique topic prefix and app id); the stall, restart and soak "
        "scenarios run on their own broker. Worker settings are the defaults, with the "
        "memory table store the tests use (table recovery reads each changelog to the high "
        "watermark of a Fetch response, so Tansu's short ListOffsets needs no workaround: "
        "docs/platform-notes.md). A small model trained on another Lean "
        "day and the test suite's risk thresholds make commands happen.",
        "",
        "Fuzzing and TLS are covered by tests, not here: `tests/unit/*/test_fuzz_*.py`, "
        "`tests/integration/test_tls.py`.",
        "",
    ]
    L += ["## Summary", "", "| scenario | verdict | figures |", "|---|---|---|"]
    for name, line in summary_rows(sc):
        L.append(f"| {name} | {line[0]} | {line[1]} |")
    L.append("")
    # 1
    st = sc.get("steady")
    if st is not None:
        L += ["## 1. Steady feeds, nothing killed", ""]
        if "error" in st:
            L += [f"Did not complete: `{st['error'][:500]}`", ""]
        else:
            ok = st["lost"] == 0 and st["conflicting"] == 0 and st["accounted"] == st["sent"]
            L += [f"Real ticks, live re-timing, {st['seconds_per_rate']:.0f} s per rate, one "
                  "worker, the rates one after another (each drained before the next). "
                  f"Over all rates: sent {_fmt(st['sent'])}, clean {_fmt(st['online_clean'])},"
                  f" rejected {_fmt(st['online_rejected'])}, duplicates counted "
                  f"{_fmt(st['offline']['duplicates'])}: *accounted* (clean + rejected + "
                  f"duplicates) {_fmt(st['accounted'])}; lost **{st['lost']}**, conflicting "
                  f"**{st['conflicting']}**: {_verdict(ok)}. Worker ready "
                  f"{st['ready_s']} s after start; its stage modules: "
                  f"{st.get('stage_modules') or 'not logged'}.", "",
                  "| ticks/s asked | achieved | sent | clean out | latency p50 / p99 / max "
                  "(ms) | worker CPU (cores) |", "|---|---|---|---|---|---|"]
            for rate, r in st["rates"].items():
                lat = r["latency_ms"]
                L.append(
                    f"| {rate} | {_fmt(r['achieved_rate'])} | {_fmt(r['sent'])} | "
                    f"{_fmt(r['clean_out'])} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))}"
                    f" / {_fmt(lat.get('max'))} | {_fmt(r.get('worker_cpu_share'))} |")
            L += ["", "Latency is `recv_time_us` (stamped by the sender) → arrival of the "
                  "clean tick at the suite's reader, so it includes the broker both ways; "
                  "*clean out* counts the phase's clean ticks seen before the next phase "
                  "began (crossed FXCM quotes are rejected, not clean).", ""]
            L += _accounting_table([("steady", st)]) + _examples(st) + [""]
    # 2
    k = sc.get("kills")
    if k is not None:
        L += ["## 2. SIGKILLs during a steady replay", ""]
        if "error" in k:
            L += [f"Did not complete: `{k['error'][:500]}`", ""]
        else:
            ok = (k["lost"] == 0 and k["conflicting"] == 0
                  and k["n_kills"] >= k.get("n_kills_planned", 5))
            L += [f"Historical replay at {k['rate']:.0f} ticks/s, {_fmt(k['sent'])} ticks; "
                  f"**{k['n_kills']} SIGKILLs** of the worker at random moments, each "
                  "followed by a new worker (no static membership: the killed member lingers "
                  "until its session expires). "
                  f"Lost **{k['lost']}**, conflicting **{k['conflicting']}**, identical "
                  f"re-emissions {k['reemitted_identical']}: {_verdict(ok)}.", "",
                  "| kill | after (s) | ticks sent by then | new worker ready (s) | "
                  "kill → next clean tick (s) |", "|---|---|---|---|---|"]
            for i, e in enumerate(k["kills"], 1):
                L.append(f"| {i} | {e['after_s']} | {_fmt(e['sent_at_kill'])} | "
                         f"{e['restart_ready_s']} | {e['kill_to_output_s']} |")
            L += ["", *_accounting_table([("kills", k)]), *_examples(k), ""]
    # 3
    s = sc.get("stall")
    if s is not None:
        L += ["## 3. Broker stalled (SIGSTOP … SIGCONT)", ""]
        if "error" in s:
            L += [f"Did not complete: `{s['error'][:500]}`", ""]
        else:
            ok = s["lost"] == 0 and s["conflicting"] == 0 and \
                s["health_not_ok_after_stop_s"] is not None and \
                s["health_ok_after_cont_s"] is not None
            L += [f"Live feed at {s['rate']:.0f} ticks/s on a private broker; the broker "
                  f"process stopped for {s['stall_s']:.0f} s. `/health/` polled every "
                  "0.25 s.", "",
                  "| figure | value |", "|---|---|",
                  f"| lost / conflicting | {s['lost']} / {s['conflicting']} |",
                  f"| sent / accounted | {_fmt(s['sent'])} / {_fmt(s['accounted'])} |",
                  f"| `/health/` not-ok after SIGSTOP | "
                  f"{_fmt(s['health_not_ok_after_stop_s'])} s |",
                  f"| `/health/` ok again after SIGCONT | "
                  f"{_fmt(s['health_ok_after_cont_s'])} s |",
                  f"| worker alive afterwards | {s['worker_alive_after']} |",
                  f"| latency p50 / p99 / max over the run | {_fmt(s['latency_ms'].get('p50'))}"
                  f" / {_fmt(s['latency_ms'].get('p99'))} / "
                  f"{_fmt(s['latency_ms'].get('max'))} ms |",
                  f"| verdict | {_verdict(ok)} |", "",
                  "Health transitions (s since polling began; SIGSTOP at "
                  f"{s['sigstop_at_s']} s, SIGCONT at {s['sigcont_at_s']} s): " +
                  "; ".join(f"{t} {st_}" for t, st_ in s["health_transitions"]), ""]
            L += [*_examples(s), ""]
    # 4
    r = sc.get("restart")
    if r is not None:
        L += ["## 4. Broker restarted (stop, new empty broker on the same port)", ""]
        if "error" in r:
            L += [f"Did not complete: `{r['error'][:500]}`", ""]
        else:
            p1 = r["phase1_same_worker"]
            p2 = r["phase2_worker_restarted"]
            L += [f"Live feed at {r['rate']:.0f} ticks/s. The broker is stopped (SIGTERM) "
                  "and a new, empty one started on the same port; the harness recreates "
                  "the topics on it at once (as an operator or the deployment would). "
                  f"Phase 1 watches the running worker (and the sender's producer, which "
                  f"lives through the restart like a collector's) for {r['observe_s']:.0f} s;"
                  " phase 2 starts a new worker, sends 10 s more through a fresh producer "
                  "(a restarted collector), and judges everything the new broker's "
                  "`ticks.raw` holds against offline `process` on the same ticks.", "",
                  "| figure | value |", "|---|---|",
                  f"| ticks sent when the stop began / when the broker was gone / outputs "
                  f"read from it | {_fmt(r['sent_before_stop'])} / "
                  f"{_fmt(r.get('sent_when_broker_gone'))} / "
                  f"{_fmt(r['outputs_read_before_stop'])} |",
                  f"| new broker up after the stop | {r['new_broker_up_after_stop_s']} s |",
                  f"| phase 1: worker alive at the deadline | {p1['worker_alive_at_deadline']}"
                  f" (exit after {_fmt(p1['worker_exit_after_restart_s'])} s, code "
                  f"{_fmt(p1['worker_exit_code'])}) |",
                  f"| phase 1: `/health/` not-ok after the stop | "
                  f"{_fmt(p1['health_not_ok_after_stop_s'])} s; at the deadline "
                  f"{_fmt(p1['health_at_deadline'])} |",
                  f"| phase 1: ticks sent since / outputs on the new broker | "
                  f"{_fmt(p1['ticks_sent_since_restart'])} / "
                  f"{_fmt(p1['outputs_on_new_broker'])} (first clean tick after "
                  f"{_fmt(p1['first_clean_after_restart_s'])} s) |",
                  f"| phase 2: old worker stopped in / rc | {p2['old_worker_stop_s']} s / "
                  f"{_fmt(p2['old_worker_rc'])} |",
                  f"| phase 2: new worker ready | {_fmt(p2['new_worker_ready_s'])} s"
                  f"{' (did not start: see below)' if p2['start_error'] else ''} |",
                  f"| producer that lived through the restart: ticks sent since / "
                  f"undelivered at its flush | "
                  f"{_fmt(p2['old_producer_ticks_sent_total'] - r['sent_before_stop'])} / "
                  f"{_fmt(p2['old_producer_undelivered'])} |",
                  f"| phase 2: a fresh producer (restarted collector): sent / undelivered | "
                  f"{_fmt(p2['fresh_producer_ticks_sent'])} / "
                  f"{_fmt(p2['fresh_producer_undelivered'])} |",
                  f"| phase 2: ticks on the new broker / sent after the stop but never "
                  f"reached it | {_fmt(p2['ticks_on_new_broker'])} / "
                  f"{_fmt(p2['ticks_never_reached_new_broker'])} |",
                  f"| phase 2: lost / conflicting vs offline | {p2['lost']} / "
                  f"{p2['conflicting']} |", "",
                  "Health transitions: " + "; ".join(
                      f"{t} {st_}" for t, st_ in r["health_transitions"]), ""]
            if p2.get("start_error"):
                L += ["The new worker did not start; the end of its error:", "", "```text",
                      str(p2["start_error"]), "```", ""]
            L += [*_examples(p2), ""]
    # 5
    b = sc.get("badinput")
    if b is not None:
        L += ["## 5. Bad inputs mixed into real data, across a SIGKILL", ""]
        if "error" in b:
            L += [f"Did not complete: `{b['error'][:500]}`", ""]
        else:
            bad = b["bad"]
            ok = bad["unaccounted"] == 0 and b["lost"] == 0 and b["conflicting"] == 0
            L += [f"{_fmt(b['good_ticks'])} real ticks (historical, {b['rate']:.0f}/s) with "
                  f"{bad['bad_sent']} bad records, each kind once before and once after a "
                  f"SIGKILL (new worker {b['sigkill_restart_s']} s later). "
                  f"Unaccounted bad inputs **{bad['unaccounted']}**, dead letters carrying "
                  f"the original bytes {bad['dead_letters_with_original_bytes']} of "
                  f"{bad['bad_sent']}, not the expected reason {bad['not_the_expected_reason']};"
                  f" good ticks lost **{b['lost']}**, conflicting **{b['conflicting']}**: "
                  f"{_verdict(ok)}.", "",
                  "| kind | sent | accounted | what happened |", "|---|---|---|---|"]
            for kind, v in bad["kinds"].items():
                what = "; ".join(f"{o} x{n}" for o, n in v["outcomes"].items())
                L.append(f"| {kind} | {v['sent']} | {v['accounted']} | {what} |")
            L += ["", "null_key / wrong_key are re-sends of the tick just sent with no key or "
                  "another symbol's key: accounted when dead-lettered or deduplicated.", ""]
            L += _accounting_table([("badinput", b)]) + _examples(b) + [""]
    # 6
    so = sc.get("soak")
    if so is not None:
        L += ["## 6. Soak", ""]
        if "error" in so:
            L += [f"Did not complete: `{so['error'][:500]}`", ""]
        else:
            L += [f"Live feed at {so['rate']:.0f} ticks/s for {so['seconds']:.0f} s on a "
                  f"private broker: {_fmt(so['sent'])} ticks, {_fmt(so['clean'])} clean, "
                  f"{_fmt(so['rejected'])} rejected, unaccounted after draining "
                  f"{_fmt(so['unaccounted_at_end'])}; worker alive {so['worker_alive']}. "
                  "Slopes are least squares over the samples after the first 20%. The "
                  "dedupe window holds 600 s of event time (`TICKSTREAM_DEDUPE_WINDOW_MS`), "
                  "so at a steady rate the state grows until the window is full: a soak "
                  "shorter than 10 minutes shows growth by design. The 10-minute soak is "
                  "`python -m bench.reliability --only soak --soak-s 600` (it does not fit "
                  "the 15-minute budget of the whole suite on 2 shared cores).", "",
                  "| series | start | end | max | slope per minute |", "|---|---|---|---|---|"]
            for name, label in (("rss_mb", "worker RSS (MB, /proc/PID/status)"),
                                ("state_bytes", "state: latest pipeline_state + "
                                 "dedupe_segments values (bytes)"),
                                ("lag_ticks", "lag: sent - clean - rejected (ticks)"),
                                ("p50_ms", "latency p50 per sample window (ms)"),
                                ("p99_ms", "latency p99 per sample window (ms)")):
                d = so.get(name) or {}
                L.append(f"| {label} | {_fmt(d.get('start'))} | {_fmt(d.get('end'))} | "
                         f"{_fmt(d.get('max'))} | {_fmt(d.get('slope_per_min'))} |")
            L.append("")
    L += ["## Raw figures", "", "The run's JSON (the last line `python -m bench.reliability` "
          "prints), soak samples included:", "", "```json",
          json.dumps(result, sort_keys=True, default=str, indent=1)[:60_000], "```", ""]
    return "\n".join(L)
