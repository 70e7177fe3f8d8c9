"""select_bad_process over task tables of 1k, 10k and 100k tasks (tracing off, and 100k tracing on)."""
import time

from oomemu.bench.core import figure, in_child
from oomemu.trace.ring import H_DRAINED, H_LOST, H_WRITTEN

GROUP = "select"
FIGURES = {
    "select_bad_process_ms_1k": ("select_bad_process, 1k tasks, tracing off", "ms", None, None),
    "select_bad_process_ms_10k": ("select_bad_process, 10k tasks, tracing off", "ms", None, None),
    "select_bad_process_ms_100k": ("select_bad_process, 100k tasks, tracing off", "ms", "<=", 10.0),
    "select_bad_process_ms_100k_traced": ("select_bad_process, 100k tasks, tracing on", "ms", "<=", 10.0),
}


def _select_bad_process(sizes, repeats, traced_size):
    """Child body: fill a big task table with numpy and time the vectorised scan at each size."""
    import numpy as np

    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    from oomemu.include.sched import TASK_INTERRUPTIBLE
    from oomemu.machine import (G_NR_MM_ROWS, G_NR_TASK_ROWS, G_TOTAL_SWAP, G_TOTALRAM, MM_ANONPAGES,
                                MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, MM_USERS)
    from oomemu.mm import oom_kill
    from oomemu.percpu import CpuContext
    from oomemu.trace.ring import RingWriter
    biggest = max(sizes)
    sc = load_scenario_text(f"[machine]\ncpus = 2\nmax_tasks = {min(200000, biggest + 16)}\n", name="bench-select")
    m = create_machine(sc)
    cpu = CpuContext(m, 0, sc)
    first = int(m.glob[G_NR_TASK_ROWS])            # init, kthreadd, kswapd0 come from boot
    rows = np.arange(first, biggest)
    rng = np.random.default_rng(1)
    # one process in eight has a second thread (the row after its leader), sharing its mm
    thread = (rows % 8 == 1) & (rows > first)
    leader = np.where(thread, rows - 1, rows)
    m.task_pid[rows] = rows + 1
    m.task_leader[rows] = leader
    m.task_tgid[rows] = leader + 1
    m.task_parent[rows] = 0
    m.task_mm[rows] = leader
    m.task_cpu[rows] = rows % 2
    m.task_seq[rows] = rows
    m.task_uid[rows] = np.where(rows % 50 == 0, 0, 1000)
    m.task_caps[rows] = 0
    m.task_flags[rows] = 0
    m.task_tif[rows] = 0
    m.task_exit_state[rows] = 0
    m.task_state[rows] = TASK_INTERRUPTIBLE
    m.task_comm[rows] = b"task"
    m.sig_oom_score_adj[rows] = np.where(rows % 97 == 0, -1000, rng.integers(-200, 200, len(rows)))
    m.sig_oom_flags[rows] = 0
    mm_rows = rows[~thread]
    m.mm[mm_rows, MM_ANONPAGES] = rng.integers(0, 5000, len(mm_rows))
    m.mm[mm_rows, MM_FILEPAGES] = rng.integers(0, 500, len(mm_rows))
    m.mm[mm_rows, MM_SWAPENTS] = 0
    m.mm[mm_rows, MM_NR_PTES] = (m.mm[mm_rows, MM_ANONPAGES] + m.mm[mm_rows, MM_FILEPAGES] + 511) // 512
    m.mm[mm_rows, MM_TOTAL_VM] = m.mm[mm_rows, MM_ANONPAGES] + m.mm[mm_rows, MM_FILEPAGES]
    m.mm[mm_rows, MM_USERS] = 1
    m.mm[rows[thread] - 1, MM_USERS] = 2
    m.glob[G_NR_MM_ROWS] = biggest
    totalpages = int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])
    out = {}
    tracer = RingWriter(m, 0)
    for n, traced in [(n, False) for n in sizes] + [(traced_size, True)]:
        m.glob[G_NR_TASK_ROWS] = n
        cpu.trace = tracer if traced else None
        times = []
        chosen = None
        for _ in range(repeats):
            tracer.head[tracer.hw + H_DRAINED] = tracer.head[tracer.hw + H_WRITTEN]
            t0 = time.perf_counter()
            chosen = oom_kill.select_bad_process(cpu, totalpages, None, False)
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"{n}{'_traced' if traced else ''}"] = {"ms": times, "chosen": [int(chosen[0]), int(chosen[1])]}
    out["trace_lost"] = int(tracer.head[tracer.hw + H_LOST])
    return out


# -- select_bad_process ---------------------------------------------------------------------------------------
def measure(bench):
    sizes = (1000, 10000, 100000)
    res = in_child(_select_bad_process, sizes, bench.repeats, 100000)
    f = bench.figures
    f["select_bad_process_ms_1k"] = figure("select_bad_process_ms_1k", res["1000"]["ms"])
    f["select_bad_process_ms_10k"] = figure("select_bad_process_ms_10k", res["10000"]["ms"])
    f["select_bad_process_ms_100k"] = figure("select_bad_process_ms_100k", res["100000"]["ms"])
    f["select_bad_process_ms_100k_traced"] = figure("select_bad_process_ms_100k_traced",
                                                    res["100000_traced"]["ms"])
    lost = res.pop("trace_lost")
    bench.details["select"] = {k: v["chosen"] for k, v in res.items()}
    bench.details["select"]["trace_lost"] = lost
