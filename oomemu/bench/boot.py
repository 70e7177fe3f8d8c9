"""Boot and teardown of `oomemu run` on the default scenario (timings from its report)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from oomemu.bench.core import figure

GROUP = "boot"
FIGURES = {
    "boot_to_first_alloc_s": ("boot -> first allocation (report timing, default scenario)", "s", "<=", 0.5),
    "start_to_first_alloc_s": ("`oomemu run` process start -> first allocation", "s", "<=", 0.5),
    "teardown_s": ("teardown (report timing: stop and reap the workers)", "s", "<=", 0.5),
    "run_wall_s": ("`oomemu run` default scenario, wall clock end to end", "s", None, None),
}


def _boot_round(out_dir, seconds):
    """`python -m oomemu run --quiet` on the default scenario in a subprocess; timings from its report."""
    cmd = [sys.executable, "-m", "oomemu", "run", "--quiet", "--out", str(out_dir)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t_wall0 = time.time()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=str(out_dir.parent))
    wall = time.monotonic() - t0
    report_path = out_dir / "report.json"
    if not report_path.exists():
        raise RuntimeError(f"oomemu run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(report_path.read_text())
    timing = report["timing"]
    # scenario.json is written first thing in run_scenario, just before the boot clock starts
    started = (out_dir / "scenario.json").stat().st_mtime - t_wall0
    first = timing["boot_to_first_alloc_s"]
    return {"wall_s": wall, "boot_to_first_alloc_s": first, "teardown_s": timing["teardown_s"],
            "start_to_first_alloc_s": None if first is None else started + first, "exit_code": proc.returncode,
            "verdict": report["verdict"]}


# -- boot and teardown -----------------------------------------------------------------------------------------
def measure(bench):
    rounds = min(bench.repeats, 2 if bench.quick else 3)
    seconds = 0.3 if bench.quick else None
    runs = []
    for r in range(rounds):
        d = bench._dir(f"boot-{r}")
        runs.append(_boot_round(d, seconds))
        bench._done(d)
    f = bench.figures
    f["boot_to_first_alloc_s"] = figure("boot_to_first_alloc_s", [x["boot_to_first_alloc_s"] for x in runs],
                                        note="the supervisor polls every 20 ms")
    f["start_to_first_alloc_s"] = figure("start_to_first_alloc_s", [x["start_to_first_alloc_s"] for x in runs],
                                         note="from Popen to scenario.json's mtime, plus boot_to_first_alloc")
    f["teardown_s"] = figure("teardown_s", [x["teardown_s"] for x in runs])
    f["run_wall_s"] = figure("run_wall_s", [x["wall_s"] for x in runs],
                             note=f"--seconds {seconds}" if seconds else "the whole default scenario")
    bench.details["boot"] = [{"exit_code": x["exit_code"], "verdict": x["verdict"]} for x in runs]
