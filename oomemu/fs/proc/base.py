"""What /proc/PID/oom_score and /proc/PID/oom_score_adj read, as the run's kernel profile shows them.

Follows fs/proc/base.c of Linux 3.14 (KERNEL §4.2), with 5.9's signed formula under `signed_badness`.
"""
from oomemu.machine import G_NR_TASK_ROWS, G_TOTAL_SWAP, G_TOTALRAM
from oomemu.mm import oom_kill

ULONG_MASK = (1 << 64) - 1


def _c_div(a, b):
    """C's integer division of longs: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def proc_oom_score(cpu, task):
    """/proc/PID/oom_score of task row `task`.

    Follows: fs/proc/base.c proc_oom_score(), 3.14 (KERNEL §4.2): oom_badness(task, totalram + swap) × 1000 /
    totalpages, unsigned (0 for a task that may not be killed). With `signed_badness` it is 5.9's (seen in
    5.9.1): 0 for LONG_MIN, else (1000 + badness × 1000 / totalpages) × 2 / 3 in signed long arithmetic (C
    division truncates toward zero), stored into an unsigned long. The root bonus goes with `no_root_bonus`
    (4.17) as in oom_badness().
    """
    m = cpu.m
    totalpages = int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])
    badness = oom_kill.oom_badness(cpu, task, None, None, totalpages)
    if cpu.features.signed_badness:
        if badness == oom_kill.LONG_MIN:
            return 0
        return _c_div((1000 + _c_div(badness * 1000, totalpages)) * 2, 3) & ULONG_MASK
    return (badness * 1000 // totalpages) & ULONG_MASK


def proc_oom_score_adj(m, task):
    """/proc/PID/oom_score_adj: the process's signal->oom_score_adj. Follows: oom_score_adj_read(), 3.14."""
    return int(m.v_sig_oom_score_adj[m.v_task_leader[task]])


def record_first_oom_scores(cpu):
    """At the machine's first out_of_memory: keep every task's oom_score and oom_score_adj as /proc would have
    read them then (report.json's `oom_scores`). Emulator-only; the first CPU to get here records them."""
    from oomemu import sync
    from oomemu.machine import G_OOM_SCORES_TAKEN
    m = cpu.m
    if sync.test_and_set_bit(cpu, m.v_glob, G_OOM_SCORES_TAKEN, 1):
        return
    n = int(m.glob[G_NR_TASK_ROWS])
    for t in range(n):
        if m.v_task_pid[t] <= 0 or m.v_task_exit_state[t]:
            continue
        score = proc_oom_score(cpu, t)
        m.task_first_oom_score[t] = score - (1 << 64) if score >= 1 << 63 else score
        m.task_first_oom_adj[t] = proc_oom_score_adj(m, t)
