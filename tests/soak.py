"""Soak and long-run measurements for `oomemu run` (not collected by pytest: run it by hand).

    python tests/soak.py --minutes 60               # every shipped scenario, round after round, for an hour
    python tests/soak.py --measure 10,60,300        # long traced runs of tests/data/long-load.toml

The soak runs each scenario of configs/ (races, controls, defaults) in turn with `python -m oomemu run`, and
counts as a failure: an exit status other than 0 or 1, a traceback or "Exception ignored" on stderr, a missing
or unreadable report.json, a worker process still alive after the run, a new /dev/shm entry, or a run that
outlives its deadline by more than a minute. It prints one line a run and a summary: runs, failures (with
their stderr), the peak resident memory of any supervisor (sampled every 0.1 s), leftovers, and how long it
ran. Exit status 0 when nothing failed.

--measure runs the long-load scenario for each duration with the trace on and reports the supervisor's peak
resident memory (its own process, sampled every 0.1 s, the check included), the check's time, the trace's size
and records, and the whole run's wall time.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LONG_LOAD = ROOT / "tests" / "data" / "long-load.toml"


def shm_entries():
    try:
        return {e for e in os.listdir("/dev/shm") if "oomemu" in e}
    except FileNotFoundError:
        return set()


def run_once(scenario, out, seconds=None, timeout=None):
    """Run one scenario; returns a dict with the exit status, stderr, peak RSS (supervisor only), wall time."""
    cmd = [sys.executable, "-m", "oomemu", "run", str(scenario), "--out", str(out), "--quiet"]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak, children_peak = 0, 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
            children_peak = max([children_peak] + [c.memory_info().rss for c in ps.children()])
        except psutil.Error:
            pass
        if timeout is not None and time.monotonic() - t0 > timeout:
            proc.kill()
            break
        time.sleep(0.1)
    out_s, err = proc.communicate()
    wall = time.monotonic() - t0
    report = None
    try:
        report = json.loads((Path(out) / "report.json").read_text())
    except (OSError, ValueError):
        pass
    return {"code": proc.returncode, "stderr": err, "peak_rss": peak, "worker_peak_rss": children_peak,
            "wall_s": wall, "report": report, "timed_out": timeout is not None and wall > timeout}


def leftovers(report):
    if not report:
        return []
    return [pid for pid in report.get("workers", {}).get("pids", {}).values()
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def shipped_scenarios():
    paths = sorted(glob.glob(str(ROOT / "configs" / "**" / "*.toml"), recursive=True))
    return [Path(p) for p in paths if "/sweeps/" not in p]


def soak(minutes, work):
    deadline = time.monotonic() + minutes * 60
    t0 = time.monotonic()
    shm_before = shm_entries()
    runs, failures, peak, worker_peak, left = 0, [], 0, 0, []
    scenarios = shipped_scenarios()
    i = 0
    while time.monotonic() < deadline:
        sc = scenarios[i % len(scenarios)]
        i += 1
        out = work / f"soak{i:05d}"
        res = run_once(sc, out, timeout=None)
        runs += 1
        peak, worker_peak = max(peak, res["peak_rss"]), max(worker_peak, res["worker_peak_rss"])
        problems = []
        if res["code"] not in (0, 1):
            problems.append(f"exit {res['code']}")
        if "Traceback" in res["stderr"] or "Exception ignored" in res["stderr"]:
            problems.append("traceback on stderr")
        if res["report"] is None:
            problems.append("no report.json")
        elif res["report"]["elapsed_s"] + 60 < res["wall_s"]:
            problems.append(f"took {res['wall_s']:.0f} s for a {res['report']['elapsed_s']:.0f} s run")
        alive = leftovers(res["report"])
        if alive:
            problems.append(f"workers left running: {alive}")
            left += alive
        verdict = res["report"]["verdict"] if res["report"] else "-"
        print(f"{runs:5d} {time.monotonic() - t0:7.0f}s {sc.relative_to(ROOT)}: exit {res['code']} {verdict} "
              f"{res['wall_s']:.1f}s rss {res['peak_rss'] >> 20} MiB" + (f"  FAILED: {problems}" if problems else ""),
              flush=True)
        if problems:
            failures.append({"scenario": str(sc), "problems": problems, "stderr": res["stderr"][-2000:]})
        else:
            shutil.rmtree(out, ignore_errors=True)
    shm_left = sorted(shm_entries() - shm_before)
    summary = {"minutes": round((time.monotonic() - t0) / 60, 1), "runs": runs, "failures": len(failures),
               "peak_supervisor_rss_mib": peak >> 20, "peak_worker_rss_mib": worker_peak >> 20,
               "leftover_processes": left, "leftover_shm": shm_left, "failed": failures[:10]}
    print(json.dumps(summary, indent=2))
    return 1 if failures or left or shm_left else 0


def measure(durations, work):
    rows = []
    for seconds in durations:
        out = work / f"long{seconds}"
        res = run_once(LONG_LOAD, out, seconds=seconds)
        rep = res["report"] or {}
        timing, trace = rep.get("timing", {}), rep.get("trace", {})
        row = {"seconds": seconds, "exit": res["code"], "verdict": rep.get("verdict"), "wall_s": round(res["wall_s"], 1),
               "check_s": timing.get("check_s"), "peak_supervisor_rss_mib": res["peak_rss"] >> 20,
               "trace_mib": (trace.get("bytes") or 0) >> 20, "records": trace.get("records"), "lost": trace.get("lost"),
               "checks": {c["invariant"]: c["status"] for c in rep.get("checks", [])}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return 0 if all(r["exit"] in (0, 1) for r in rows) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, help="soak every shipped scenario for this long")
    ap.add_argument("--measure", metavar="S,S,...", help="long traced runs of these lengths (seconds)")
    ap.add_argument("--work", help="directory for the run directories (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="oomemu-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    code = 0
    if args.measure:
        code |= measure([float(s) for s in args.measure.split(",")], work)
    if args.minutes:
        code |= soak(args.minutes, work)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
