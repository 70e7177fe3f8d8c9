"""OOM kill latency: a 2-CPU scenario whose parents fork hogs again and again; per kill, the time from the victim's
`signal_generate` (SIGKILL) to its `mmput` record that gave pages back, from trace.msgpack."""
from oomemu.bench.core import figure, in_child, percentile as _pct
from oomemu.bench.scaling import _run_scenario_sampled

GROUP = "oom"
FIGURES = {
    "oom_kill_latency_p50_ms": ("OOM kill latency p50: SIGKILL generated -> pages back in buddy", "ms", "<=", 1.0),
    "oom_kill_latency_p99_ms": ("OOM kill latency p99", "ms", "<=", 10.0),
    "oom_kill_delivery_p50_ms": ("  of which SIGKILL generated -> victim's exit_mm, p50", "ms", None, None),
    "oom_kill_teardown_p50_ms": ("  of which exit_mm -> mmput freed the pages, p50", "ms", None, None),
    "oom_kills_measured": ("OOM kills measured (all rounds)", "", None, None),
}


OOM_SCENARIO = """
[machine]
cpus = 2
max_tasks = 8192
[[machine.node]]
zones = {{ DMA = "0", DMA32 = "0", Normal = "8MiB" }}
[sysctl]
oom_dump_tasks = 0
[[task]]
comm = "spawner"
count = 2
cpu = "any"
program = [
  {{ op = "fork", comm = "hog", program = [
      {{ op = "fault", pages = "{hog}", chunk = 16 }},
      {{ op = "sleep", ms = 20 }},
  ] }},
  {{ op = "wait" }},
  {{ op = "repeat" }},
]
[run]
seconds = {seconds}
trace = true
"""


def _oom_latencies(out_dir):
    """Per kill in a finished run: (generate→mmput, generate→exit_mm, exit_mm→mmput) in ms, and unmatched kills."""
    from oomemu.trace.reader import load_trace
    tr = load_trace(out_dir)
    gen, mmput, exit_mm = tr.of("signal_generate"), tr.of("mmput"), tr.of("exit_mm")
    total, delivery, teardown, unmatched = [], [], [], 0
    for s in gen[gen["a"][:, 0] == 9]:
        victim = s["a"][1]
        put = mmput[(mmput["pid"] == victim) & (mmput["a"][:, 2] > 0) & (mmput["ts"] >= s["ts"])]
        if not len(put):
            unmatched += 1
            continue
        t_put = int(put[0]["ts"])
        total.append((t_put - int(s["ts"])) / 1e6)
        ex = exit_mm[(exit_mm["pid"] == victim) & (exit_mm["ts"] >= s["ts"]) & (exit_mm["ts"] <= t_put)]
        if len(ex):
            delivery.append((int(ex[0]["ts"]) - int(s["ts"])) / 1e6)
            teardown.append((t_put - int(ex[0]["ts"])) / 1e6)
    return {"total": total, "delivery": delivery, "teardown": teardown, "unmatched": unmatched,
            "lost": int(tr.lost)}


def _oom_round(out_dir, seconds, hog):
    res = _run_scenario_sampled(OOM_SCENARIO.format(seconds=seconds, hog=hog), "bench-oom", out_dir, 0.0)
    lat = _oom_latencies(out_dir)
    lat["run"] = res
    return lat


# -- OOM kill latency ----------------------------------------------------------------------------------------
def measure(bench):
    rounds = min(bench.repeats, 2 if bench.quick else 3)
    seconds = 0.5 if bench.quick else 1.0
    per_round = []
    total, delivery, teardown = [], [], []
    unmatched = lost = 0
    for r in range(rounds):
        d = bench._dir(f"oom-{r}")
        res = in_child(_oom_round, str(d), seconds, "5MiB")
        bench._done(d)
        per_round.append(res)
        total += res["total"]
        delivery += res["delivery"]
        teardown += res["teardown"]
        unmatched += res["unmatched"]
        lost += res["lost"]
    f = bench.figures
    f["oom_kill_latency_p50_ms"] = figure("oom_kill_latency_p50_ms", [_pct(x["total"], 50) for x in per_round],
                                          value=_pct(total, 50), note="value: p50 over all kills of all rounds")
    f["oom_kill_latency_p99_ms"] = figure("oom_kill_latency_p99_ms", [_pct(x["total"], 99) for x in per_round],
                                          value=_pct(total, 99), note="value: p99 over all kills of all rounds")
    f["oom_kill_delivery_p50_ms"] = figure("oom_kill_delivery_p50_ms",
                                           [_pct(x["delivery"], 50) for x in per_round], value=_pct(delivery, 50))
    f["oom_kill_teardown_p50_ms"] = figure("oom_kill_teardown_p50_ms",
                                           [_pct(x["teardown"], 50) for x in per_round], value=_pct(teardown, 50))
    f["oom_kills_measured"] = figure("oom_kills_measured", [len(x["total"]) for x in per_round],
                                     value=len(total))
    bench.details["oom"] = {"kills_unmatched": unmatched, "trace_lost": lost,
                           "max_ms": max(total) if total else None,
                           "rounds": [{"kills": len(x["total"]), "verdict_ended_by": x["run"]["ended_by"],
                                       "elapsed_s": x["run"]["elapsed_s"]} for x in per_round]}
