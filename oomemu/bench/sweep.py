"""Sweep throughput: runs per second of `oomemu sweep` on the local pool with -j 1 and -j 2 (each run its own
machine: a 1-CPU hog that is OOM-killed, tracing off), and the engine's overhead per run (the pool's wall time
per run minus the run's own wall time inside its worker: dispatch, the row, results.csv)."""
import time

from oomemu.bench.core import figure, in_child

GROUP = "sweep"
FIGURES = {
    "sweep_runs_per_s_j1": ("oomemu sweep, local pool -j 1: runs per second", "runs/s", None, None),
    "sweep_runs_per_s_j2": ("oomemu sweep, local pool -j 2: runs per second", "runs/s", None, None),
    "sweep_speedup_j2_vs_j1": ("sweep throughput -j 2 vs -j 1", "x", ">=", 1.7),
    "sweep_overhead_ms_per_run": ("sweep engine overhead per run (-j 1, outside the run itself)", "ms", "<=", 50.0),
}

RUN_SCENARIO = """
[machine]
cpus = 1
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "8MiB" }
[sysctl]
oom_dump_tasks = 0
[[task]]
comm = "hog"
count = 2
program = [{ op = "fault", pages = "5MiB", chunk = 16 }, { op = "exit" }]
[run]
seconds = 2
trace = false
"""


def _sweep_round(out_dir, runs, jobs):
    """Child body: a sweep of `runs` runs (one axis over run.seed) on a local pool of `jobs`; its timings."""
    import tomllib
    from pathlib import Path

    from oomemu.experiment.engine import LocalEngine
    from oomemu.experiment.spec import sweep_from_dict
    from oomemu.experiment.sweep import run_sweep
    spec = {"scenario": tomllib.loads(RUN_SCENARIO), "metrics": ["kills"],
            "sweep": {"run.seed": list(range(1, runs + 1))}, "name": f"bench-j{jobs}"}
    sweep = sweep_from_dict(spec, source="bench")
    t0 = time.monotonic()
    result = run_sweep(sweep, out=Path(out_dir), engine=LocalEngine(jobs), lean=True, plots=False)
    total = time.monotonic() - t0
    walls = [float(r["wall_s"]) for r in result.rows]
    return {"runs": len(result.rows), "map_s": result.wall_s, "total_s": total, "run_wall_s": walls,
            "errors": result.errors, "verdicts": sorted({r["verdict"] for r in result.rows})}


def measure(bench):
    rounds = 1 if bench.quick else 2
    runs = 4 if bench.quick else 8
    rate = {1: [], 2: []}
    overhead, details = [], []
    for r in range(rounds):
        for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
            d = bench._dir(f"sweep-j{jobs}-{r}")
            res = in_child(_sweep_round, str(d), runs, jobs)
            bench._done(d)
            if res["errors"] or res["runs"] != runs:
                raise RuntimeError(f"bench sweep -j {jobs}: {res['runs']} of {runs} runs, {res['errors'][:1]}")
            rate[jobs].append(res["runs"] / res["map_s"])
            if jobs == 1:
                overhead.append((res["map_s"] - sum(res["run_wall_s"])) / res["runs"] * 1e3)
            details.append({"jobs": jobs, "map_s": round(res["map_s"], 3), "total_s": round(res["total_s"], 3),
                            "mean_run_wall_s": round(sum(res["run_wall_s"]) / res["runs"], 3),
                            "verdicts": res["verdicts"]})
    f = bench.figures
    f["sweep_runs_per_s_j1"] = figure("sweep_runs_per_s_j1", rate[1], note=f"{runs} runs a round")
    f["sweep_runs_per_s_j2"] = figure("sweep_runs_per_s_j2", rate[2])
    f["sweep_speedup_j2_vs_j1"] = figure("sweep_speedup_j2_vs_j1", [b / a for a, b in zip(rate[1], rate[2])],
                                         note="per round: runs/s with -j 2 / runs/s with -j 1")
    f["sweep_overhead_ms_per_run"] = figure("sweep_overhead_ms_per_run", overhead,
                                            note="(pool wall time - the runs' own wall times) / runs, -j 1, "
                                                 "pool start included")
    bench.details["sweep"] = details
