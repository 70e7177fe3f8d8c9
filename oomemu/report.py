"""The run's report: report.json, the verdict, `[expect]` results, the summary table and the exit status.

Exit status (DESIGN §7): 0 ran and met [expect]; 1 an invariant broke or [expect] was not met; 2 the scenario
or command line is wrong; 3 the emulator itself failed (a worker died, a lock timed out); 130 interrupted.
"""
import json

from oomemu.config.profiles import enabled

from oomemu.check import all_invariants, check_run, is_broken, not_checked, run_all, with_memcg_snapshots
from oomemu.check.signals import stuck_tasks
from oomemu.check.state import state_of
from oomemu.include.mmzone import MAX_NR_ZONES, NR_FREE_PAGES, ZONE_NAMES
from oomemu.machine import (G_NR_KILLS, G_NR_TASK_ROWS, K_CPU, K_KILLER_PID, K_KIND, K_MEMCG, K_NS, K_ROW, K_PID, K_POINTS, MAX_KILLS,
                            Z_MANAGED, Z_STAT)
from oomemu.mm import memcontrol, vmstat
from oomemu.mm.oom_kill import KILL_KINDS, KILL_MEMCG
from oomemu.trace.reader import TraceError
from oomemu.trace.ring import RingWriter

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_EMULATOR = 3
EXIT_INTERRUPTED = 130     # 128 + the signal: 130 SIGINT, 143 SIGTERM, 129 SIGHUP


def kills_of(m):
    """The kill log as dicts, in kill order."""
    n = min(int(m.glob[G_NR_KILLS]), MAX_KILLS)
    out = []
    for i in range(n):
        k = m.kill[i]
        out.append({"pid": int(k[K_PID]), "comm": m.kill_comm[i].decode("ascii", "replace"),
                    "points": int(k[K_POINTS]), "kind": KILL_KINDS.get(int(k[K_KIND]), "?"),
                    "by_cpu": int(k[K_CPU]), "by_pid": int(k[K_KILLER_PID]), "time_s": round(int(k[K_NS]) / 1e9, 6),
                    "memcg": m.memcg_names[int(k[K_MEMCG])] if k[K_KIND] == KILL_MEMCG else None,
                    "cgroup": m.memcg_names[int(m.task_memcg[int(k[K_ROW])])] if m.memcg_enabled else "/",
                    "cpuset": m.cpuset_names[int(m.task_cpuset[int(k[K_ROW])])]})
    return out


def tasks_of(m):
    """How each user process ended, from the quiescent machine: "killed" (SIGKILL; `killed_by` names the
    path: oom, allocating_task, sysrq, memcg, or signal for any other sender), "exited" (with its exit_code)
    or "alive" at the end of the run; with its cpuset, mems, threads and the ENOMEM failures it saw."""
    from oomemu.include.sched import PF_KTHREAD
    from oomemu.kernel.cpuset import nodes_of_mask
    n = int(m.glob[G_NR_TASK_ROWS])
    out = []
    for p in range(n):
        if m.task_leader[p] != p or m.task_pid[p] <= 0 or m.task_flags[p] & PF_KTHREAD:
            continue
        threads = int((m.task_leader[:n] == p).sum())
        done = bool(m.task_exit_state[p]) and int(m.sig_nr_live[p]) <= 0
        status = int(m.task_exit_code[p])
        row = {"pid": int(m.task_pid[p]), "comm": m.task_comm[p].decode("ascii", "replace"), "threads": threads,
               "cpuset": m.cpuset_names[int(m.task_cpuset[p])], "mems": list(nodes_of_mask(int(m.task_mems[p]))),
               "ended": "alive", "exit_code": None, "signal": None, "killed_by": None,
               "enomem": int(m.sig_enomem[p]), "oom_score_adj": int(m.sig_oom_score_adj[p])}
        if done and status & 0x7f:
            row.update(ended="killed", signal=status & 0x7f,
                       killed_by=KILL_KINDS.get(int(m.sig_kill_kind[p]), "signal"))
        elif done:
            row.update(ended="exited", exit_code=(status >> 8) & 0xff)
        out.append(row)
    return out


def outcome_of(outcome, kills):
    """The run's plain outcome in one word (before any race is recognised)."""
    if outcome.reason in ("worker-died", "emulator-failure"):
        return "emulator-failure"
    if outcome.reason in ("interrupted", "environment-error", "panic", "stall"):
        return outcome.reason
    return "oom-kill" if kills else "no-oom-kill"


def check_expect(expect, verdict, kills, tasks=()):
    """Each stated expectation with whether it held (`tasks`: tasks_of())."""
    results = []
    n = len(kills)
    victims = [k["comm"] for k in kills]
    if expect.kills_min is not None:
        results.append({"what": f"kills >= {expect.kills_min}", "ok": n >= expect.kills_min, "seen": n})
    if expect.kills_max is not None:
        results.append({"what": f"kills <= {expect.kills_max}", "ok": n <= expect.kills_max, "seen": n})
    if expect.victims is not None:
        bad = sorted({v for v in victims if v not in expect.victims})
        results.append({"what": f"victims in {list(expect.victims)}", "ok": not bad, "seen": sorted(set(victims))})
    if expect.killed_in is not None:
        root = expect.killed_in.rstrip("/") + "/"
        where = sorted({k.get("cgroup", "/") for k in kills})
        inside = all(k.get("memcg") is not None and (k.get("cgroup", "/") + "/").startswith(root) for k in kills)
        results.append({"what": f"every kill a memcg OOM kill inside {expect.killed_in}", "ok": inside,
                        "seen": where})
    if expect.never_killed:
        bad = sorted({v for v in victims if v in expect.never_killed})
        results.append({"what": f"never killed: {list(expect.never_killed)}", "ok": not bad, "seen": bad})
    if expect.panic is not None:
        results.append({"what": f"panic = {str(expect.panic).lower()}", "ok": (verdict == "panic") == expect.panic,
                        "seen": verdict == "panic"})
    if expect.verdict is not None and expect.min_rate is None:
        results.append({"what": f"verdict = {expect.verdict}", "ok": verdict == expect.verdict, "seen": verdict})
    if expect.verdict_not:
        results.append({"what": f"verdict not in {list(expect.verdict_not)}", "ok": verdict not in expect.verdict_not,
                        "seen": verdict})
    if expect.kill_cpuset is not None:
        outside = sorted({f"{k['comm']} in {k['cpuset']}" for k in kills if k.get("cpuset") != expect.kill_cpuset})
        results.append({"what": f"every victim in cpuset {expect.kill_cpuset}", "ok": not outside, "seen": outside})
    for want in expect.tasks:
        results.append(_check_task(want, tasks))
    return results


def _check_task(want, tasks):
    """One [[expect.task]]: every process of that comm ended as it says (and enough of them existed)."""
    mine = [t for t in tasks if t["comm"] == want["comm"]]
    parts = []
    if want["ended"] is not None:
        parts.append("ended " + "|".join(want["ended"]))
    if want["killed_by"] is not None:
        parts.append("killed by " + "|".join(want["killed_by"]))
    if want["exit_code"] is not None:
        parts.append(f"exit code {want['exit_code']}")
    if want["enomem"] is not None:
        low, high = want["enomem"]
        parts.append(f"ENOMEM {'>= ' + str(low) if low is not None else ''}"
                     f"{' <= ' + str(high) if high is not None else ''}".rstrip())
    bad = []
    for t in mine:
        ok = want["ended"] is None or t["ended"] in want["ended"]
        if t["ended"] == "killed" and want["killed_by"] is not None:
            ok = ok and t["killed_by"] in want["killed_by"]
        if t["ended"] == "exited" and want["exit_code"] is not None:
            ok = ok and t["exit_code"] == want["exit_code"]
        if want["enomem"] is not None:
            low, high = want["enomem"]
            ok = ok and (low is None or t["enomem"] >= low) and (high is None or t["enomem"] <= high)
        if not ok:
            bad.append({k: t[k] for k in ("pid", "ended", "killed_by", "exit_code", "enomem")})
    enough = len(mine) >= want["min_count"]
    seen = bad if enough else f"{len(mine)} process(es) named {want['comm']}"
    return {"what": f"tasks {want['comm']}: {', '.join(parts) or 'exist'} (at least {want['min_count']})",
            "ok": enough and not bad, "seen": seen}


def zones_of(m):
    out = []
    for z in range(m.nr_zones):
        if m.zone[z, Z_MANAGED]:
            out.append({"node": z // MAX_NR_ZONES, "zone": ZONE_NAMES[z % MAX_NR_ZONES],
                        "managed": int(m.zone[z, Z_MANAGED]), "free": int(m.zone[z, Z_STAT + NR_FREE_PAGES])})
    return out


def oom_scores_of(m):
    """Each task's /proc/PID/oom_score and oom_score_adj as the profile's kernel showed them at the first OOM
    (oomemu/fs/proc/base.py); empty if the run never reached out_of_memory."""
    from oomemu.machine import G_NR_TASK_ROWS
    n = int(m.glob[G_NR_TASK_ROWS])
    out = []
    for t in range(n):
        score = int(m.task_first_oom_score[t])
        if score == -1:
            continue
        out.append({"pid": int(m.task_pid[t]), "comm": m.task_comm[t].decode("ascii", "replace"),
                    "oom_score": score & ((1 << 64) - 1), "oom_score_adj": int(m.task_first_oom_adj[t])})
    return out


def exit_code_of(outcome, checks, expect, stalls_unresolved=False):
    """The run's exit status (module docstring): a signal wins, then the emulator's own failures, then the
    kernel's (an invariant or [expect])."""
    if outcome.reason == "interrupted":
        return 128 + signal_number(outcome.signal)
    if outcome.reason in ("worker-died", "emulator-failure", "environment-error") or stalls_unresolved:
        return EXIT_EMULATOR
    if any(is_broken(c) for c in checks) or not all(e["ok"] for e in expect):
        return EXIT_FAILED
    return EXIT_OK


def signal_number(name):
    import signal
    try:
        return int(signal.Signals[name]) if name else 2
    except KeyError:
        return 2


def _skip_reason(outcome):
    if outcome.reason == "interrupted":
        return f"the run was interrupted ({outcome.signal} during {outcome.during})"
    if outcome.reason == "worker-died":
        return f"a worker died: {outcome.error}"
    if outcome.reason == "emulator-failure":
        return f"the emulator failed: {outcome.error}"
    if outcome.reason == "environment-error":
        return f"the run could not be completed: {outcome.error}"
    return None


def all_not_checked(reason):
    return [not_checked(name, ref, reason) for name, ref in all_invariants()]


def build_report(scenario, m, outcome, run_dir, guard=None, on_check=None):
    """Everything report.json holds, from the quiescent machine and the supervisor's outcome. `guard` is polled
    during the check: a signal there ends the check (its invariants are listed not-checked) and the report
    says `interrupted` during `check`."""
    if m is None:
        return _report_without_machine(scenario, outcome, run_dir)
    import time
    t_check = time.monotonic()
    kills = kills_of(m)
    state = state_of(m)
    skip = _skip_reason(outcome)
    races = []
    trace_ok = scenario.run.trace and outcome.trace_ok
    stats = None
    if skip:
        checks = all_not_checked(skip)
    elif not trace_ok:
        why = "the run had trace = false" if not scenario.run.trace else \
            f"the trace could not be written: {outcome.env_errors[0] if outcome.env_errors else outcome.error}"
        checks = run_all(None, state, outcome.snapshots, snapshot_skips=outcome.snapshot_skips, no_trace_reason=why)
    else:
        def stop():
            if guard is not None and guard.signum is not None:
                outcome.reason, outcome.signal, outcome.during = "interrupted", guard.name, "check"
                return f"the check was interrupted ({guard.name})"
            return None
        try:
            found = check_run(run_dir, state, outcome.snapshots, snapshot_skips=outcome.snapshot_skips,
                              ended_by=outcome.reason, stop=stop, on_progress=on_check)
            checks, races, stats = found.results, found.races, found.stats
        except (TraceError, OSError) as exc:
            reason = f"the trace could not be read: {exc}"
            checks = all_not_checked(reason)
            if outcome.reason not in ("interrupted",):
                outcome.reason, outcome.error = "environment-error", reason
    checks = with_memcg_snapshots(checks, outcome.memcg_snapshots)
    check_s = time.monotonic() - t_check
    plain = outcome_of(outcome, kills)
    unresolved = [s for s in outcome.stalls if "recovered_after_s" not in s]
    if unresolved and plain not in ("interrupted", "environment-error", "emulator-failure"):
        plain = "emulator-stall"
    verdict = races[0]["race"] if races and plain not in ("interrupted", "emulator-stall") else plain
    tasks = tasks_of(m)
    expect = check_expect(scenario.expect, verdict, kills, tasks)
    code = exit_code_of(outcome, checks, expect, bool(unresolved))
    if guard is not None and guard.signum is not None and outcome.reason != "interrupted":
        outcome.reason, outcome.signal, outcome.during = "interrupted", guard.name, "report"
        plain = verdict = "interrupted"
        code = exit_code_of(outcome, checks, expect)
    error = outcome.error
    if unresolved and not error:
        # A process the host stopped is the cause; rows waiting on what it holds stall after it: name it first.
        first = sorted(unresolved, key=lambda st: st.get("process_status") != "stopped")
        error = "emulator-stall: " + first[0]["summary"]
        if len(first) > 1:
            error += f" (also stalled: {', '.join(st['row'] for st in first[1:])})"
    per_cpu = {}
    for row in range(m.nr_rows_cpu):
        per_cpu[m.row_name(row)] = vmstat.counters_of(m, row)
    return {
        "scenario": scenario.name, "source": scenario.source, "run_dir": str(run_dir),
        "verdict": verdict, "outcome": plain, "races": races, "exit_code": code, "ended_by": outcome.reason,
        "error": error, "interrupted": _interruption(outcome), "warnings": list(outcome.warnings),
        "elapsed_s": round(outcome.elapsed, 3), "kills": kills, "tasks": tasks,
        "counters": vmstat.counters_total(m), "per_cpu": per_cpu,
        "zones": zones_of(m), "min_free_kbytes": m.min_free_kbytes,
        "kernel": scenario.machine.kernel, "features": enabled(scenario.features), "oom_scores": oom_scores_of(m),
        "memcgs": memcontrol.memcg_report(m) if m.memcg_enabled else [],
        "checks": checks, "expect": expect, "stuck": stuck_tasks(state),
        "stalls": [{k: v for k, v in s.items() if not k.startswith("_")} for s in outcome.stalls],
        "hung_tasks": outcome.hung_tasks,
        "workers": {"pids": outcome.worker_pids, "cpu_seconds": outcome.worker_cpu_seconds},
        "trace": {"records": outcome.trace_records, "lost": outcome.trace_lost, "bytes": outcome.trace_bytes,
                  "limit_bytes": outcome.trace_limit, "limit_why": outcome.trace_limit_why,
                  "writer": "compiled" if RingWriter.compiled else "python"},
        "timing": {"boot_to_first_alloc_s": outcome.boot_to_first_alloc_s, "teardown_s": round(outcome.teardown_s, 3),
                   "check_s": round(check_s, 3), "check": stats},
    }


def _interruption(outcome):
    if outcome.reason != "interrupted":
        return None
    return {"signal": outcome.signal, "during": outcome.during}


def _report_without_machine(scenario, outcome, run_dir):
    """A run that ended before its machine existed (a signal at boot, or an environment error)."""
    plain = outcome_of(outcome, [])
    reason = _skip_reason(outcome) or "the machine was never booted"
    return {"scenario": scenario.name, "source": scenario.source, "run_dir": str(run_dir),
            "verdict": plain, "outcome": plain, "races": [], "exit_code": exit_code_of(outcome, [], []),
            "ended_by": outcome.reason, "error": outcome.error, "interrupted": _interruption(outcome),
            "warnings": list(outcome.warnings), "elapsed_s": 0.0, "kills": [], "tasks": [], "counters": {}, "per_cpu": {}, "zones": [], "min_free_kbytes": None,
            "checks": all_not_checked(reason), "expect": [], "stuck": [], "stalls": [], "hung_tasks": [],
            "workers": {"pids": {}, "cpu_seconds": {}},
            "trace": {"records": 0, "lost": 0, "bytes": 0, "limit_bytes": 0, "limit_why": "", "writer": None},
            "timing": {"boot_to_first_alloc_s": None, "teardown_s": 0.0, "check_s": 0.0}}


def write_report(report, run_dir):
    """Write report.json whole or not at all (a temporary file renamed over it). Raises OSError."""
    import os
    tmp = run_dir / ".report.json.tmp"
    try:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, run_dir / "report.json")
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def summary_lines(report):
    """A short plain-text summary of a run."""
    c = report["counters"]
    lines = [f"oomemu: {report['scenario']}: {report['verdict']} after {report['elapsed_s']:.2f}s "
             f"(ended by {report['ended_by']}); run directory {report['run_dir']}"]
    if report["error"]:
        lines.append(f"  error: {report['error']}")
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    if report.get("interrupted"):
        lines.append(f"  interrupted by {report['interrupted']['signal']} during {report['interrupted']['during']}")
    for st in report.get("stalls", []):
        state = f" (moved again after {st['recovered_after_s']:.1f} s)" if "recovered_after_s" in st else ""
        lines.append(f"  warning: emulator-stall: {st['summary']}{state}")
    for h in report.get("hung_tasks", []):
        lines.append(f"  warning: {h['line']}")
    if not report["counters"]:
        lines += [f"  invariant {c['invariant']}: not-checked ({c['details'][0]})" for c in report["checks"][:1]]
        return lines
    for race in report["races"]:
        lines.append(f"  race {race['race']}: {race['details'][0]}")
    for s in report["stuck"]:
        lines.append(f"  stuck after SIGKILL: {s['chain']}")
    lines.append(f"  allocations {c['allocs']} (fast path {c['fast_path_allocs']}), slowpath {c['slowpath_entries']}, "
                 f"kswapd wake-ups {c['kswapd_wakeups']}, direct reclaims {c['direct_reclaims']}")
    lines.append(f"  OOM: invocations {c['oom_invocations']}, lock busy {c['oom_lock_busy']}, "
                 f"scan aborts {c['scan_aborts']}, kills {c['kills']}, panics {c['panics']}")
    for k in report["kills"]:
        lines.append(f"  killed pid {k['pid']} ({k['comm']}) score {k['points']} [{k['kind']}] "
                     f"by cpu {k['by_cpu']} pid {k['by_pid']} at {k['time_s']:.3f}s")
    for chk in report["checks"]:
        status = chk.get("status") or ("ok" if chk["ok"] else "BROKEN")
        if status == "not-checked":
            lines.append(f"  invariant {chk['invariant']}: not-checked ({chk['details'][0]})")
            continue
        lines.append(f"  invariant {chk['invariant']}: {status}")
        lines += [f"    {d}" for d in chk["details"][:5]]
    for e in report["expect"]:
        lines.append(f"  expect {e['what']}: {'ok' if e['ok'] else 'NOT MET (saw ' + json.dumps(e['seen']) + ')'}")
    return lines


def wilson_interval(k, n, z=1.959964):
    """The 95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def build_batch_report(scenario, reports, batch_dir, repeat):
    """How often each verdict occurred over the runs, and whether the batch met [expect]."""
    n = len(reports)
    counts = {}
    for r in reports:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    verdicts = {v: {"count": c, "rate": round(c / n, 4), "ci95": [round(x, 4) for x in wilson_interval(c, n)]}
                for v, c in sorted(counts.items(), key=lambda kv: -kv[1])}
    codes = [r["exit_code"] for r in reports]
    expect = []
    want = scenario.expect
    if want.verdict is not None:
        k = counts.get(want.verdict, 0)
        minimum = want.min_rate if want.min_rate is not None else 1.0
        expect.append({"what": f"rate of {want.verdict} >= {minimum}", "ok": n > 0 and k / n >= minimum,
                       "seen": round(k / n, 4) if n else None})
    if any(c >= 128 for c in codes) or n < repeat:
        code = next((c for c in codes if c >= 128), EXIT_INTERRUPTED)
    elif EXIT_EMULATOR in codes:
        code = EXIT_EMULATOR
    elif EXIT_FAILED in codes or not all(e["ok"] for e in expect):
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    return {"scenario": scenario.name, "batch_dir": str(batch_dir), "runs": n, "requested": repeat,
            "verdicts": verdicts, "expect": expect, "exit_code": code, "exit_codes": codes,
            "errors": [r["error"] for r in reports if r["error"]],
            "run_dirs": [r["run_dir"] for r in reports]}


def batch_lines(batch):
    """The batch summary: one line per verdict with its rate and 95% interval."""
    lines = [f"oomemu: {batch['scenario']}: {batch['runs']} runs; batch directory {batch['batch_dir']}",
             f"  {'verdict':24s} {'runs':>5s} {'rate':>7s}   95% CI"]
    for v, d in batch["verdicts"].items():
        lo, hi = d["ci95"]
        lines.append(f"  {v:24s} {d['count']:5d} {d['rate']:7.1%}   [{lo:.1%}, {hi:.1%}]")
    for e in batch["expect"]:
        lines.append(f"  expect {e['what']}: {'ok' if e['ok'] else 'NOT MET (saw ' + str(e['seen']) + ')'}")
    bad = sum(1 for c in batch["exit_codes"] if c)
    if bad:
        lines.append(f"  {bad} run(s) did not pass on their own (see their report.json)")
    return lines
