"""The metrics a sweep records per run, read from the run's report (and, for latencies, its trace).

- `kills`: OOM kills (the report's kill list);
- any counter of report.json by its name (`oom_invocations`, `oom_lock_busy` (busy trylocks), `scan_aborts`,
  `direct_reclaims`, ...) or as `counters.NAME`;
- `elapsed_s`, and any other number in report.json by its dotted path (`timing.teardown_s`, `trace.records`);
- `kill_latency_p50_ms`, `kill_latency_p90_ms`, `kill_latency_p99_ms`, `kill_latency_max_ms`: per kill, the
  time from the SIGKILL's `signal_generate` to the victim's `mmput` that gave its pages back (trace needed);
- `extra_kills`: kills beyond the first (`kills - 1`, at least 0).

Verdict rates are always recorded (summary.json: every verdict's rate with its 95% Wilson interval).
"""
from __future__ import annotations

from typing import Any

from oomemu.errors import ScenarioError

COUNTERS = ("fast_path_allocs", "allocs", "alloc_failures", "slowpath_entries", "kswapd_wakeups", "direct_reclaims",
            "direct_reclaim_progress0", "pages_reclaimed", "pages_swapped_out", "oom_invocations", "oom_lock_busy",
            "scan_aborts", "kills", "sharer_kills", "self_memdie", "panics", "pages_freed", "user_steps",
            "signals_delivered", "task_exits", "kswapd_runs", "no_watermark_allocs", "direct_throttles", "pgactivate",
            "pgdeactivate", "pgscan")
LATENCY = {"kill_latency_p50_ms": 50, "kill_latency_p90_ms": 90, "kill_latency_p99_ms": 99,
           "kill_latency_max_ms": 100}
NAMED = ("kills", "extra_kills", "elapsed_s") + tuple(LATENCY)
REPORT_SECTIONS = ("counters", "timing", "trace", "min_free_kbytes", "elapsed_s")


def check_metric(name: str) -> None:
    """A ScenarioError unless `name` is a metric the sweep can record."""
    if name in NAMED or name in COUNTERS:
        return
    head, _, rest = name.partition(".")
    if head in REPORT_SECTIONS and rest and (head != "counters" or rest in COUNTERS):
        return
    if head == "counters":
        raise ScenarioError(f"unknown counter {rest!r}; counters: {', '.join(COUNTERS)}")
    raise ScenarioError(f"unknown metric {name!r}; allowed: {', '.join(NAMED)}, a counter "
                        f"({', '.join(COUNTERS[:4])}, ...), or a dotted path in report.json "
                        f"(timing.teardown_s, trace.records)")


def needs_trace(metrics) -> bool:
    return any(m in LATENCY for m in metrics)


def metric_values(report: dict[str, Any], metrics, run_dir=None) -> dict[str, float | None]:
    """Each metric's value for one finished run (None where the run has no such value)."""
    out: dict[str, float | None] = {}
    latencies = None
    for name in metrics:
        if name == "kills":
            out[name] = len(report.get("kills", []))
        elif name == "extra_kills":
            out[name] = max(0, len(report.get("kills", [])) - 1)
        elif name in COUNTERS:
            out[name] = report.get("counters", {}).get(name)
        elif name in LATENCY:
            if latencies is None:
                latencies = kill_latencies_ms(run_dir) if run_dir is not None else []
            out[name] = percentile(latencies, LATENCY[name])
        else:
            value: Any = report
            for step in name.split("."):
                value = value.get(step) if isinstance(value, dict) else None
            out[name] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return out


def percentile(values, q):
    """Percentile q (0..100) by linear interpolation; None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def kill_latencies_ms(run_dir) -> list[float]:
    """Per SIGKILL in a run's trace: ms from its `signal_generate` to the victim's first `mmput` after it that
    freed pages. Kills whose victim never gave pages back in the trace are left out."""
    from oomemu.trace.reader import load_trace
    try:
        tr = load_trace(run_dir)
    except (FileNotFoundError, OSError, ValueError):
        return []
    gen, mmput = tr.of("signal_generate"), tr.of("mmput")
    out = []
    for s in gen[gen["a"][:, 0] == 9]:
        put = mmput[(mmput["pid"] == s["a"][1]) & (mmput["a"][:, 2] > 0) & (mmput["ts"] >= s["ts"])]
        if len(put):
            out.append((int(put[0]["ts"]) - int(s["ts"])) / 1e6)
    return out
