"""The race x profile matrix: every race scenario of configs/races/ under every kernel profile, N runs a cell.

    python tests/race/race_matrix.py                      # 20 runs a cell, every race and control, every profile
    python tests/race/race_matrix.py --runs 4 --kernels 3.14,4.6 --races r1,r6
    python tests/race/race_matrix.py --races r1 --kernels 4.9 --features kill_all_sharers=false

Each cell counts how many of its runs reached the race's verdict (the scenario's [expect] verdict); a control's
row counts the same verdict, which it must never reach. Prints a Markdown table (or --json) and keeps every
run under --out (default runs/race-matrix/); a run already there (its report.json) is not run again. Runs one at a time: the races are about timing, and side-by-side
runs on few cores change it.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _races(selected, controls):
    files = sorted((ROOT / "configs" / "races").glob("r*.toml"))
    if controls:
        files += sorted((ROOT / "configs" / "races" / "controls").glob("r*.toml"))
    out = []
    for f in files:
        key = f.stem.split("-")[0]
        if selected and key not in selected and f.stem not in selected:
            continue
        out.append(f)
    return out


def _features(text):
    out = {}
    for part in filter(None, (text or "").split(",")):
        name, _, value = part.partition("=")
        out[name.strip()] = value.strip().lower() in ("1", "true", "on", "yes")
    return out


def _rejudge(run_dir):
    """The verdict of a finished run as today's race detectors see its trace and final state."""
    from oomemu.check.races import detect_races
    from oomemu.check.state import load_state
    from oomemu.trace.reader import load_trace
    report = json.loads((run_dir / "report.json").read_text())
    races = detect_races(load_trace(run_dir), load_state(run_dir / "machine.npz"), report["ended_by"])
    return races[0]["race"] if races else report["outcome"]


def main(argv=None):
    import oomemu
    from oomemu.config.profiles import KERNELS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs a cell (default 20)")
    ap.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated profiles (default: all)")
    ap.add_argument("--races", default="", help="comma-separated race keys or file stems, e.g. r1,r4-memcg-parallel "
                    "(default: all)")
    ap.add_argument("--no-controls", action="store_true", help="leave out configs/races/controls/")
    ap.add_argument("--only-controls", action="store_true", help="only configs/races/controls/")
    ap.add_argument("--control-runs", type=int, help="runs a control cell (default: --runs)")
    ap.add_argument("--seconds", type=float, help="run.seconds for every run (default: each scenario's own)")
    ap.add_argument("--features", default="", help="[kernel] features for every cell, e.g. oom_reaper=false")
    ap.add_argument("--out", default="runs/race-matrix", help="where the runs go")
    ap.add_argument("--json", action="store_true", help="print the cells as JSON")
    ap.add_argument("--rejudge", action="store_true",
                    help="for runs already in --out, decide the verdict again from their trace and final state")
    args = ap.parse_args(argv)
    kernels = [k for k in args.kernels.split(",") if k]
    bad = [k for k in kernels if k not in KERNELS]
    if bad or args.runs < 1:
        print(f"race_matrix: --kernels must be among {', '.join(KERNELS)}; --runs >= 1", file=sys.stderr)
        return 2
    features = _features(args.features)
    races = _races(set(filter(None, args.races.split(","))), not args.no_controls)
    if args.only_controls:
        races = [r for r in races if r.parent.name == "controls"]
    cells = []
    t0 = time.monotonic()
    for path in races:
        base = oomemu.Scenario.load(path)
        control = path.parent.name == "controls"
        race_file = path.parent.parent / path.name if control else path
        verdict = oomemu.Scenario.load(race_file).expect.verdict   # a control counts its race's verdict
        runs = args.control_runs or args.runs if control else args.runs
        name = ("control " if control else "") + path.stem
        row = {"race": name, "verdict": verdict, "cells": {}}
        for kernel in kernels:
            sc = base.replace("machine.kernel", kernel)
            if features:
                sc = sc.replace("kernel", {"features": features})
            if args.seconds:
                sc = sc.replace("run.seconds", args.seconds)
            seen = []
            for i in range(runs):
                out = Path(args.out) / path.parent.name / path.stem / f"{kernel}" / f"run{i:03d}"
                done = out / "report.json"
                if done.is_file():          # resume: a run already in --out counts as it ended
                    seen.append(_rejudge(out) if args.rejudge else json.loads(done.read_text())["verdict"])
                    continue
                report = oomemu.run(sc, out=out)
                seen.append(report.verdict)
            row["cells"][kernel] = {"hits": seen.count(verdict), "runs": runs,
                                    "verdicts": {v: seen.count(v) for v in sorted(set(seen))}}
            print(f"{name} {kernel}: {seen.count(verdict)}/{runs} {verdict} {row['cells'][kernel]['verdicts']}",
                  file=sys.stderr, flush=True)
        cells.append(row)
    if args.json:
        print(json.dumps({"runs": args.runs, "features": features, "rows": cells,
                          "seconds": round(time.monotonic() - t0)}, indent=2))
        return 0
    print("| race (verdict) | " + " | ".join(kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    for row in cells:
        print(f"| {row['race']} (`{row['verdict']}`) | "
              + " | ".join(f"{c['hits']}/{c['runs']}" for c in row["cells"].values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
