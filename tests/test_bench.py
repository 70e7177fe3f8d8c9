"""`oomemu bench`: the quick run produces every figure, and the pure-Python reference it compares the fast path
with does the same bookkeeping as the emulator (same pages, same free lists, after the same operations)."""
import json
import random

from conftest import run_cli

FIGURE_KEYS = (
    "fastpath_allocs_per_s", "reference_allocs_per_s", "fastpath_vs_reference", "fastpath_notrace_allocs_per_s",
    "trace_cost_us_per_event", "trace_events_per_alloc", "trace_emit_us_per_event",
    "run_allocs_per_s_1cpu", "run_allocs_per_s_2cpu", "run_allocs_per_s_8cpu", "run_allocs_per_cpu_s_1cpu",
    "scaling_2_vs_1", "oversubscription_8_vs_2",
    "run_allocs_per_s_1cpu_traced", "run_allocs_per_s_2cpu_traced", "run_allocs_per_s_8cpu_traced",
    "scaling_2_vs_1_traced", "oversubscription_8_vs_2_traced",
    "oom_kill_latency_p50_ms", "oom_kill_latency_p99_ms", "oom_kill_delivery_p50_ms", "oom_kill_teardown_p50_ms",
    "oom_kills_measured",
    "select_bad_process_ms_1k", "select_bad_process_ms_10k", "select_bad_process_ms_100k",
    "select_bad_process_ms_100k_traced",
    "boot_to_first_alloc_s", "start_to_first_alloc_s", "teardown_s", "run_wall_s",
    "shm_mib_per_gib_1", "shm_mib_per_gib_16", "shm_mib_per_gib_64", "boot_s_64gib",
    "sweep_runs_per_s_j1", "sweep_runs_per_s_j2", "sweep_speedup_j2_vs_j1", "sweep_overhead_ms_per_run",
    "ctl_steps_per_s_pct", "ctl_steps_per_s_random", "ctl_switches_per_s_random", "ctl_runs_per_s",
    "free_hooks_ratio",
)
ENTRY_KEYS = ("title", "unit", "value", "median", "min", "max", "spread_pct", "n", "samples", "target", "met", "miss")


def test_bench_quick_json_has_every_figure():
    """`oomemu bench --quick --json` prints one JSON document with every figure (no thresholds checked)."""
    res = run_cli("bench", "--quick", "--json", timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["format"] == "oomemu-bench" and doc["quick"] is True
    assert not doc["errors"], doc["errors"]
    assert set(doc["figures"]) == set(FIGURE_KEYS)
    for key in FIGURE_KEYS:
        entry = doc["figures"][key]
        missing = [k for k in ENTRY_KEYS if k not in entry]
        assert not missing, f"{key} lacks {missing}"
        if key.endswith("_traced") and key[:3] in ("run", "sca", "ove"):
            continue  # tracing-on scenario runs are skipped by --quick
        assert entry["value"] is not None and entry["n"] >= 1, f"{key} was not measured: {entry}"
        if entry["target"] is not None:
            assert isinstance(entry["met"], bool)


QUICK_TEXT = """
[machine]
cpus = 1
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "0", Normal = "8MiB" }
"""


def _same(loop, ref):
    assert ref.state() == loop.state()


def test_reference_matches_emulator_page_counts():
    """The same random sequence of allocations and frees leaves the same pages and counts in both allocators:
    free pages per order and NR_FREE_PAGES per zone, the per-CPU list, the mm's rss; the allocators hand out the
    very same PFNs. The machine is small so the fast path falls back from Normal to DMA below the watermark."""
    from oomemu.bench import EmulatorLoop, ReferenceAllocator
    loop = EmulatorLoop.boot(QUICK_TEXT)
    ref = ReferenceAllocator.from_machine(loop.m)
    _same(loop, ref)
    rng = random.Random(5)
    held = []
    zones_used = set()
    for step in range(400):
        if step < 20 or len(held) < 3500 and (not held or rng.random() < 0.5):
            for _ in range(rng.randint(1, 120) if step >= 20 else 120):
                a, b = loop.alloc(), ref.alloc()
                assert a is not None and a == b, f"step {step}: emulator gave {a}, reference {b}"
                held.append(a)
                zones_used.add(int(loop.m.page_zone[a]))
        else:
            rng.shuffle(held)
            n = rng.randint(1, len(held))
            freed, held = held[:n], held[n:]
            loop.unmap(len(freed))
            ref.unmap(len(freed))
            for pfn in freed:
                loop.free(pfn)
                ref.free(pfn)
        if step % 50 == 0:
            _same(loop, ref)
            loop.drain_trace()               # as the supervisor's poll would: the ring holds one poll's worth
    _same(loop, ref)
    assert len(zones_used) == 2, "the sequence should have reached below Normal's watermark into DMA"
    loop.unmap(len(held))
    ref.unmap(len(held))
    for pfn in held:
        loop.free(pfn)
        ref.free(pfn)
    _same(loop, ref)
    for _ in range(5):                       # the benchmark's own loop
        assert loop.cycle(256) == ref.cycle(256)
    _same(loop, ref)
    assert loop.trace_lost() == 0
