"""Scenario throughput and scaling: `oomemu run` scenarios with 1, 2 and 8 CPU processes, each CPU with its own task
looping `fault` + `free all` with memory to spare, sampled in the steady state; tracing off, then on."""
import time

from oomemu.bench.core import figure, in_child

GROUP = "scaling"
FIGURES = {
    "run_allocs_per_s_1cpu": ("oomemu run, 1 CPU process, fault+free loop, tracing off", "/s", ">=", 1e6),
    "run_allocs_per_s_2cpu": ("oomemu run, 2 CPU processes, aggregate, tracing off", "/s", None, None),
    "run_allocs_per_s_8cpu": ("oomemu run, 8 CPU processes, aggregate, tracing off", "/s", None, None),
    "run_allocs_per_cpu_s_1cpu": ("oomemu run, 1 CPU: allocs per CPU-second of the worker", "/s", None, None),
    "scaling_2_vs_1": ("scaling: 2 CPU processes vs 1 (tracing off)", "x", ">=", 1.7),
    "oversubscription_8_vs_2": ("oversubscription: 8 CPU processes vs 2 on 2 cores (tracing off)", "x", ">=", 0.8),
    "run_allocs_per_s_1cpu_traced": ("oomemu run, 1 CPU process, tracing on", "/s", ">=", 1e6),
    "run_allocs_per_s_2cpu_traced": ("oomemu run, 2 CPU processes, tracing on", "/s", None, None),
    "run_allocs_per_s_8cpu_traced": ("oomemu run, 8 CPU processes, tracing on", "/s", None, None),
    "scaling_2_vs_1_traced": ("scaling: 2 CPU processes vs 1 (tracing on)", "x", ">=", 1.7),
    "oversubscription_8_vs_2_traced": ("oversubscription: 8 vs 2 CPU processes (tracing on)", "x", ">=", 0.8),
}


# --- scenario runs ---------------------------------------------------------------------------------------------

def throughput_scenario(nr_cpus, trace, seconds, pages=2048, chunk=256):
    """One task per CPU looping fault(pages) + free all on a 256 MiB machine (memory to spare)."""
    return f"""
[machine]
cpus = {nr_cpus}
[[machine.node]]
zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "240MiB" }}
[[task]]
comm = "alloc"
count = {nr_cpus}
cpu = "any"
program = [
  {{ op = "fault", pages = {pages}, chunk = {chunk} }},
  {{ op = "free", pages = "all" }},
  {{ op = "repeat" }},
]
[run]
seconds = {seconds}
trace = {str(bool(trace)).lower()}
"""


def _run_scenario_sampled(text, name, out_dir, warmup):
    """Child body: run a scenario (api.run) while sampling the CPUs' allocs counters every supervisor poll."""
    from oomemu.api import run
    from oomemu.config import load_scenario_text
    from oomemu.mm import vmstat
    sc = load_scenario_text(text, name=name)
    samples = []

    def progress(m, outcome):
        samples.append((time.monotonic(), int(m.cpu[:m.nr_cpus, vmstat.NR_ALLOCS].sum())))

    report = run(sc, out=out_dir, progress=progress)
    live = [s for s in samples if s[1] > 0]
    rate = None
    if len(live) >= 2:
        t_start = live[0][0] + warmup
        window = [s for s in live if s[0] >= t_start] or live
        if len(window) < 2:
            window = live
        (t0, a0), (t1, a1) = window[0], window[-1]
        rate = (a1 - a0) / (t1 - t0) if t1 > t0 else None
    allocs = sum(v["allocs"] for k, v in report["per_cpu"].items() if k.startswith("cpu"))
    cpu_s = sum(v for k, v in report["workers"]["cpu_seconds"].items() if k.startswith("cpu"))
    if rate is None and report["elapsed_s"]:
        rate = allocs / report["elapsed_s"]   # too few samples (a slow trace drain): the whole run's average
    return {"rate": rate, "allocs": allocs, "elapsed_s": report["elapsed_s"], "cpu_s": cpu_s,
            "trace": report["trace"], "ended_by": report["ended_by"], "error": report["error"],
            "window_s": (window[-1][0] - window[0][0]) if len(live) >= 2 else 0.0}


# -- scenario throughput, scaling, oversubscription --------------------------------------------------------
def measure(bench):
    """1, 2 and 8 CPU processes, interleaved by round; tracing off, then (not with --quick) tracing on.

    With tracing on, the supervisor's drain (about 0.25 µs a record) shares the two cores with the CPU
    processes, so traced scaling stays below untraced; lost records, if any, are in the details. Traced
    runs are fewer, to keep the whole benchmark short.
    """
    plans = [(False, 2 if bench.quick else max(2, bench.repeats - 2), 0.5 if bench.quick else 1.2)]
    if not bench.quick:
        plans.append((True, 2, 0.7))
    warmup = 0.1 if bench.quick else 0.2
    runs = {}
    skipped = []
    for trace, rounds, seconds in plans:
        for r in range(rounds):
            if trace and bench.time_left() < (45 if r else 35):
                skipped.append(f"tracing-on round {r + 1}: out of time")
                continue
            for ncpu in ((1, 2, 8) if r % 2 == 0 else (8, 2, 1)):
                d = bench._dir(f"scal-{ncpu}-{int(trace)}-{r}")
                res = in_child(_run_scenario_sampled, throughput_scenario(ncpu, trace, seconds),
                               f"bench-{ncpu}cpu", str(d), warmup)
                runs.setdefault((trace, ncpu), []).append(res)
                bench._done(d)
    f = bench.figures
    for trace in (False, True):
        sfx = "_traced" if trace else ""
        if (trace, 1) not in runs:
            for fid in FIGURES:
                if fid.endswith("_traced"):
                    f[fid] = figure(fid, [], note="not measured: --quick, or out of time (see details)")
            continue
        rate = {n: [x["rate"] for x in runs[(trace, n)]] for n in (1, 2, 8)}
        f["run_allocs_per_s_1cpu" + sfx] = figure("run_allocs_per_s_1cpu" + sfx, rate[1])
        f["run_allocs_per_s_2cpu" + sfx] = figure("run_allocs_per_s_2cpu" + sfx, rate[2])
        f["run_allocs_per_s_8cpu" + sfx] = figure("run_allocs_per_s_8cpu" + sfx, rate[8])
        f["scaling_2_vs_1" + sfx] = figure("scaling_2_vs_1" + sfx,
                                           [b / a for a, b in zip(rate[1], rate[2]) if a and b],
                                           note="per round: aggregate rate of 2 CPUs / rate of 1")
        f["oversubscription_8_vs_2" + sfx] = figure("oversubscription_8_vs_2" + sfx,
                                                    [c / b for b, c in zip(rate[2], rate[8]) if b and c],
                                                    note="per round: aggregate rate of 8 CPUs / rate of 2")
        if not trace:
            f["run_allocs_per_cpu_s_1cpu"] = figure(
                "run_allocs_per_cpu_s_1cpu", [x["allocs"] / x["cpu_s"] for x in runs[(False, 1)] if x["cpu_s"]],
                note="whole run: allocations / CPU seconds of the CPU worker")
    bench.details["scaling"] = {
        f"{'traced' if t else 'untraced'}_{n}cpu": [
            {"rate": None if x["rate"] is None else round(x["rate"]), "elapsed_s": x["elapsed_s"],
             "window_s": round(x["window_s"], 3), "cpu_s": round(x["cpu_s"], 2),
             "allocs_per_cpu_s": round(x["allocs"] / x["cpu_s"]) if x["cpu_s"] else None,
             "trace_records": x["trace"]["records"], "trace_lost": x["trace"]["lost"], "ended_by": x["ended_by"]}
            for x in v]
        for (t, n), v in sorted(runs.items())}
    if skipped:
        bench.details["scaling"]["skipped"] = skipped
