"""Choose and kill a task when an allocation cannot be satisfied.

Follows mm/oom_kill.c of Linux 3.14 (KERNEL §1–5), in that file's order: the unkillable test and
find_lock_task_mm, oom_badness, the scan, the dumps, oom_kill_process, the constraint and panic checks, the
zonelist OOM lock, and out_of_memory. The scan over the task table is vectorised (numpy); the scalar
functions of the same names are the reference it is tested against.

Later kernels' changes are switches of the run's profile (`cpu.features`, oomemu/config/profiles.py), each
tested at the place the kernel changed; with every switch off the code is 3.14's. The 4.2 oom_lock mutex and
the 4.6 oom_reaper (which the kernel keeps in this file too) are at the end.
"""
import numpy as np

from oomemu import sync
from oomemu.config.profiles import DEFAULT_KERNEL, features_for
from oomemu.include.gfp import GFP_KERNEL, __GFP_THISNODE, gfp_zone
from oomemu.include.mmzone import MAX_ORDER, PAGE_SHIFT, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_NAMES, ZONE_OOM_LOCKED
from oomemu.include.oom import (CONSTRAINT_CPUSET, CONSTRAINT_MEMCG, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_NAMES, CONSTRAINT_NONE, OOM_FLAG_ORIGIN, OOM_SCAN_ABORT, OOM_SCAN_CONTINUE,
                                OOM_SCAN_OK, OOM_SCAN_SELECT, OOM_SCORE_ADJ_MIN)
from oomemu.include.sched import (CAP_SYS_ADMIN, EXIT_DEAD, MMF_OOM_SKIP, PF_EXITING, PF_KTHREAD, SIGKILL,
                                  SIGNAL_GROUP_COREDUMP, SIGNAL_GROUP_EXIT, TIF_MEMDIE)
from oomemu.kernel import cpuset, printk
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.kernel import sysctl as ksysctl
from oomemu.kernel import time as ktime
from oomemu.lib import ratelimit
from oomemu.machine import (G_HZ, G_LAST_KILL_JIFFY, G_OOM_LOCK, G_OOM_REAPER_LIST, G_OOM_SCORES_TAKEN, G_STOP, L_OOM_LOCK, L_OOM_REAPER, G_NR_KILLS, G_NR_MM_ROWS, G_NR_TASK_ROWS, G_OOM_RS, G_OOM_SEQ, G_TOTAL_SWAP,
                            G_TOTALRAM, K_CPU, K_KILLER_PID, K_KIND, K_NS, K_PID, K_POINTS, K_ROW,
                            K_SEQ, K_MEMCG, G_TASKLIST_RW, L_KILL_LOG, L_TASKLIST, L_ZONE_SCAN, MAX_KILLS, MM_ANONPAGES,
                            MM_FLAGS, MM_USERS,
                            MM_FILEPAGES, MM_NCOLS, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, Z_FLAGS, Z_IDX,
                            Z_LOWMEM_RESERVE, Z_MANAGED, Z_NCOLS, Z_NODE, Z_NR_FREE, Z_STAT, Z_WMARK)
from oomemu.include.mmzone import (NR_ACTIVE_ANON, NR_ACTIVE_FILE, NR_FREE_PAGES, NR_INACTIVE_ANON,
                                   NR_INACTIVE_FILE, NR_ISOLATED_ANON, NR_ISOLATED_FILE)
from oomemu.mm import memcontrol, mempolicy, page_alloc, vmstat
from oomemu.trace import events as tp

# oom_kill_process() kinds, recorded in the kill log and the trace
KILL_VICTIM = 1           # the task select_bad_process chose (or its sacrificed child)
KILL_ALLOCATING = 2       # oom_kill_allocating_task
KILL_SYSRQ = 3            # SysRq-F (force_kill)
KILL_MEMCG = 4            # mem_cgroup_out_of_memory (oomemu/mm/memcontrol.py)
KILL_KINDS = {KILL_VICTIM: "oom", KILL_ALLOCATING: "allocating_task", KILL_SYSRQ: "sysrq", KILL_MEMCG: "memcg"}

ABORT = -2                # select_bad_process()'s (struct task_struct *)-1
ULONG_MAX = (1 << 64) - 1
LONG_MIN = -(1 << 63)     # 5.9's oom_badness() for a task that may not be killed
FEATURES_3_14 = features_for(DEFAULT_KERNEL)


def K(pages):
    """Pages to kB. Follows: the K() macro of mm/oom_kill.c."""
    return pages << (PAGE_SHIFT - 10)


# --- task helpers --------------------------------------------------------------------------------------------

def is_global_init(m, p):
    """Follows: is_global_init() of 3.14: the task whose pid is 1 (the thread, not the group)."""
    return m.v_task_pid[p] == 1


def oom_unkillable_task(m, p, memcg, nodemask, current=-1):
    """True for init, kernel threads, (given a memcg) tasks outside it, and tasks whose memory cannot be where
    the allocation needs it. Follows: oom_unkillable_task(), 3.14 (KERNEL §2.3); `current` is the allocating
    task (-1: a kworker, in the top cpuset).
    """
    if is_global_init(m, p):
        return True
    if m.v_task_flags[p] & PF_KTHREAD:
        return True
    if memcg is not None and not memcontrol.task_in_mem_cgroup(m, p, memcg):
        return True   # when we are killing within a memcg, only its tasks
    return not has_intersects_mems_allowed(m, p, nodemask, current)


def has_intersects_mems_allowed(m, start, mask, current):
    """Could any thread of start's process have memory the allocation may use? With a (mempolicy) mask: a
    thread whose policy meets it; without: a thread whose cpuset mems meet current's.
    Follows: has_intersects_mems_allowed(), 3.14 (KERNEL §2.3)."""
    if not m.numa_constraints:
        return True
    for t in thread_group(m, start):
        if mask is not None:
            if mempolicy.mempolicy_nodemask_intersects(m, t, mask):
                return True
        elif cpuset.cpuset_mems_allowed_intersects(m, current, t):
            return True
    return False


def mems_disjoint_vector(m, order, nodemask, current):
    """not has_intersects_mems_allowed() for every row of `order` (index array or slice) at once.
    Emulator-only: the vectorised twin, tested against it."""
    n = int(m.glob[G_NR_TASK_ROWS])
    if nodemask is not None:
        mask = cpuset.node_mask_of(nodemask)
        bound = np.isin(m.task_mpol_mode[:n], (mempolicy.MPOL_BIND, mempolicy.MPOL_INTERLEAVE))
        meets = ~bound | ((m.task_mpol_nodes[:n] & mask) != 0)
    else:
        meets = (m.task_mems[:n] & cpuset.cpuset_mems_allowed(m, current)) != 0
    leaders = m.task_leader[:n]
    group_meets = np.zeros(n, dtype=bool)
    valid = leaders >= 0
    np.logical_or.at(group_meets, leaders[valid], meets[valid])
    rows = np.arange(n)[order]
    return ~group_meets[np.maximum(leaders[rows], 0)]


def thread_group(m, p):
    """Rows of p's thread group in creation order (leader first).

    Follows: while_each_thread() over the group (emulator-only helper).
    """
    n = int(m.glob[G_NR_TASK_ROWS])
    return (m.task_leader[:n] == m.v_task_leader[p]).nonzero()[0].tolist()


def find_lock_task_mm(cpu, p):
    """The first thread of p's group that still has an mm, returned with its task_lock held; -1 if none.

    Follows: mm/oom_kill.c find_lock_task_mm(), 3.14 (KERNEL §2.4).
    """
    m = cpu.m
    for t in thread_group(m, p):
        lk = m.task_lock_index(t)
        sync.spin_lock(cpu, lk)
        if m.v_task_mm[t] != -1:
            return t  # returns with task_lock(t) held
        sync.spin_unlock(cpu, lk)
    return -1


def task_unlock(cpu, t):
    """Release p->alloc_lock. Follows: task_unlock()."""
    sync.spin_unlock(cpu, cpu.m.task_lock_index(t))


def task_lock(cpu, t):
    """Take p->alloc_lock. Follows: task_lock(). Differs: striped over 64 locks."""
    sync.spin_lock(cpu, cpu.m.task_lock_index(t))


def has_capability_sys_admin(m, p):
    """has_capability_noaudit(p, CAP_SYS_ADMIN): uid 0 holds every capability.

    Follows: kernel/capability.c has_capability_noaudit(), 3.14.
    """
    return m.v_task_uid[p] == 0 or bool(m.v_task_caps[p] & CAP_SYS_ADMIN)


def get_mm_rss(m, mm):
    """MM_FILEPAGES + MM_ANONPAGES. Follows: get_mm_rss()."""
    return m.v_mm[mm * MM_NCOLS + MM_FILEPAGES] + m.v_mm[mm * MM_NCOLS + MM_ANONPAGES]


def _oom_score_adj_min_honoured(cpu):
    return "ignore_oom_score_adj_min" not in cpu.debug_break


# --- badness -------------------------------------------------------------------------------------------------

def not_eligible(features):
    """What oom_badness() returns for a task that may not be killed: 0, or LONG_MIN with 5.9's signed badness."""
    return LONG_MIN if features.signed_badness else 0


def mm_has_oom_skip(m, mm):
    """test_bit(MMF_OOM_SKIP, &mm->flags). Follows: include/linux/sched.h MMF_OOM_SKIP, 4.9."""
    return bool(m.v_mm[mm * MM_NCOLS + MM_FLAGS] & MMF_OOM_SKIP)


def oom_badness(cpu, p, memcg, nodemask, totalpages):
    """How much memory killing p would free, in pages, adjusted by oom_score_adj; 0 means "not eligible".

    Follows: mm/oom_kill.c oom_badness(), 3.14 (KERNEL §4.1): rss + nr_ptes + swapents, 3% off for
    CAP_SYS_ADMIN, plus adj × (totalpages / 1000), at least 1. Switches: `mmf_oom_skip` (4.9: an mm the
    reaper is done with scores as ineligible; 4.8's MMF_OOM_REAPED, seen in 4.8.15 and 4.9.0), `no_root_bonus`
    (4.17; no CAP_SYS_ADMIN test in 4.17.0), `signed_badness` (5.9: LONG_MIN when ineligible, no clamp to 1;
    seen in 5.9.1), `nr_pmds` (4.0–4.15: + mm_nr_pmds; seen in 4.8.15) and `pgtables_bytes` (4.16:
    mm_pgtables_bytes / PAGE_SIZE, the same PTE + PMD pages).
    """
    m = cpu.m
    f = cpu.features
    if oom_unkillable_task(m, p, memcg, nodemask, cpu.current):
        return not_eligible(f)
    t = find_lock_task_mm(cpu, p)
    if t == -1:
        return not_eligible(f)
    adj = m.v_sig_oom_score_adj[m.v_task_leader[t]]
    mm = m.v_task_mm[t]
    if (adj == OOM_SCORE_ADJ_MIN and _oom_score_adj_min_honoured(cpu)) or (f.mmf_oom_skip and mm_has_oom_skip(m, mm)):
        task_unlock(cpu, t)
        return not_eligible(f)
    points = get_mm_rss(m, mm) + m.v_mm[mm * MM_NCOLS + MM_NR_PTES] + m.v_mm[mm * MM_NCOLS + MM_SWAPENTS]
    if f.nr_pmds or f.pgtables_bytes:
        points += mm_nr_pmds(m, mm)
    task_unlock(cpu, t)
    if not f.no_root_bonus and has_capability_sys_admin(m, p):
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    if f.signed_badness:
        return points
    return points if points > 0 else 1


def badness_vector(m, rows, totalpages, honour_adj_min=True, killable=False, features=None, snap=None):
    """oom_badness() for many rows at once (each with an mm); not_eligible() where not eligible. `rows` is an
    index array or a slice (a slice reads the columns in place, with no gather); `killable` says the caller
    already excluded init and kernel threads (the scan's OK rows); `features` is the profile (None: 3.14);
    `snap` (badness_snapshot) scores a copy of the counters taken once, so the trace can say what was read.

    Emulator-only: the vectorised twin of oom_badness(), tested against it.
    """
    mmc = m.mm[:int(m.glob[G_NR_MM_ROWS])] if snap is None else snap["mm"]
    # Sum the four columns over the mm rows in use first, then gather once per candidate.
    per_mm = mmc[:, MM_FILEPAGES] + mmc[:, MM_ANONPAGES] + mmc[:, MM_NR_PTES] + mmc[:, MM_SWAPENTS]
    if features is not None and (features.nr_pmds or features.pgtables_bytes):
        per_mm += -(-mmc[:, MM_NR_PTES] // PTRS_PER_PMD)
    mms = m.task_mm[rows] if snap is None else snap["task_mm"][rows]
    points = per_mm[mms]
    if features is None or not features.no_root_bonus:
        root = (m.task_uid[rows] == 0) | ((m.task_caps[rows] & CAP_SYS_ADMIN) != 0)
        if root.any():
            points[root] -= points[root] * 3 // 100
    adj = m.sig_oom_score_adj[m.task_leader[rows]] if snap is None else snap["adj"][m.task_leader[rows]]
    unit = totalpages // 1000
    if unit:
        points += adj.astype(np.int64) * unit
    signed = features is not None and features.signed_badness
    if not signed:
        np.maximum(points, 1, out=points)
    never = LONG_MIN if signed else 0
    if honour_adj_min:
        points[adj == OOM_SCORE_ADJ_MIN] = never
    if features is not None and features.mmf_oom_skip:
        points[(mmc[:, MM_FLAGS][mms] & MMF_OOM_SKIP) != 0] = never
    if not killable:
        points[(m.task_pid[rows] == 1) | ((m.task_flags[rows] & PF_KTHREAD) != 0)] = never
    return points


# --- the scan ------------------------------------------------------------------------------------------------

def tsk_is_oom_victim(m, task):
    """The task's process was chosen by the OOM killer (signal->oom_mm is set). Follows: tsk_is_oom_victim(), 4.9."""
    return m.v_sig_oom_mm[m.v_task_leader[task]] != -1


def __task_will_free_mem(m, task):
    """The process is dying and not dumping core. Follows: mm/oom_kill.c __task_will_free_mem(), 4.8 (seen in
    4.8.15 and 5.9.1): SIGNAL_GROUP_EXIT, or the last thread with PF_EXITING."""
    sig = m.v_sig_flags[m.v_task_leader[task]]
    if sig & SIGNAL_GROUP_COREDUMP:
        return False
    if sig & SIGNAL_GROUP_EXIT:
        return True
    return bool(m.v_task_flags[task] & PF_EXITING) and m.v_sig_nr_live[m.v_task_leader[task]] <= 1


def task_will_free_mem(m, task, features):
    """current/p is exiting and will free its memory soon.

    Follows: include/linux/oom.h task_will_free_mem(), 3.19 (seen in 3.19.0 per KERNEL §8): PF_EXITING and not
    SIGNAL_GROUP_COREDUMP. With `kill_all_sharers` it is 4.8's "fortified" form in mm/oom_kill.c (seen in
    4.8.15): the task has an mm, that mm is not MMF_OOM_SKIP (with `mmf_oom_skip`), and every process sharing
    it is dying too. Differs: no core dumps are modelled, so the COREDUMP test never matters.
    """
    if not features.kill_all_sharers:
        return bool(m.v_task_flags[task] & PF_EXITING) and not m.v_sig_flags[m.v_task_leader[task]] & SIGNAL_GROUP_COREDUMP
    mm = m.v_task_mm[task]
    if mm == -1 or not __task_will_free_mem(m, task):
        return False
    if features.mmf_oom_skip and mm_has_oom_skip(m, mm):
        return False
    if m.v_mm[mm * MM_NCOLS + MM_USERS] <= 1:
        return True
    leader = m.v_task_leader[task]
    return all(__task_will_free_mem(m, q) for q in _processes(m) if m.v_task_mm[q] == mm and q != leader)


def oom_scan_process_thread(m, task, totalpages, nodemask, force_kill, features=None, current=-1):
    """Classify one thread for the scan: CONTINUE, ABORT, SELECT or OK, in 3.14's exact test order.

    Follows: mm/oom_kill.c oom_scan_process_thread(), 3.14 (KERNEL §2.2). Switches: `drop_exit_state_test`
    (3.18: zombies are scanned; a released task is off the task list either way), `tsk_is_oom_victim` and
    `mmf_oom_skip` (4.9 oom_evaluate_task, seen in 4.9.0: a victim process ABORTs the scan unless its oom_mm
    is MMF_OOM_SKIP, then it is passed over), `task_will_free_mem` (3.19) and `no_exiting_abort` (4.6, seen
    in 4.6.2: no exiting-task ABORT at all). Differs: no freezer (no thaw), no ptrace (the PT_TRACE_EXIT
    exception never applies); 4.9+ visit processes, not threads, which gives the same verdicts here.
    """
    f = features or FEATURES_3_14
    if f.drop_exit_state_test:
        if m.v_task_exit_state[task] == EXIT_DEAD:
            return OOM_SCAN_CONTINUE  # released: not on the task list any more
    elif m.v_task_exit_state[task]:
        return OOM_SCAN_CONTINUE
    if oom_unkillable_task(m, task, None, nodemask, current):
        return OOM_SCAN_CONTINUE
    if f.tsk_is_oom_victim:
        if not force_kill and tsk_is_oom_victim(m, task):
            oom_mm = m.v_sig_oom_mm[m.v_task_leader[task]]
            if f.mmf_oom_skip and mm_has_oom_skip(m, oom_mm):
                return OOM_SCAN_CONTINUE
            return OOM_SCAN_ABORT
    elif m.v_task_tif[task] & TIF_MEMDIE:
        if not force_kill:
            mm = m.v_task_mm[task]
            if f.mmf_oom_skip and mm != -1 and mm_has_oom_skip(m, mm):
                return OOM_SCAN_CONTINUE
            return OOM_SCAN_ABORT
    if m.v_task_mm[task] == -1:
        return OOM_SCAN_CONTINUE
    if m.v_sig_oom_flags[m.v_task_leader[task]] & OOM_FLAG_ORIGIN:
        return OOM_SCAN_SELECT
    if not f.no_exiting_abort and not force_kill:
        exiting = task_will_free_mem(m, task, f) if f.task_will_free_mem else m.v_task_flags[task] & PF_EXITING
        if exiting:
            return OOM_SCAN_ABORT
    return OOM_SCAN_OK


def scan_order(m):
    """Task rows in for_each_process_thread() order: processes by creation, each followed by its threads.

    Emulator-only.
    """
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    leaders = m.task_leader[:n]
    if (leaders == rows).all():
        return rows  # no threads: creation order is row order
    return rows[np.lexsort((rows, m.task_seq[leaders]))]


def classify_all(m, order, force_kill, features=None, nodemask=None, current=-1):
    """oom_scan_process_thread() over `order` (index array or slice) at once; returns an array of OOM_SCAN_*
    (emulator-only twin)."""
    f = features or FEATURES_3_14
    exit_state = m.task_exit_state[order]
    gone = (exit_state == EXIT_DEAD) if f.drop_exit_state_test else (exit_state != 0)
    unkillable = (m.task_pid[order] == 1) | ((m.task_flags[order] & PF_KTHREAD) != 0)
    if m.numa_constraints:
        unkillable |= mems_disjoint_vector(m, order, nodemask, current)
    mms = m.task_mm[order]
    no_mm = mms == -1
    leaders = m.task_leader[order]
    mm_flags = m.mm[:, MM_FLAGS]
    if f.tsk_is_oom_victim:
        oom_mm = m.sig_oom_mm[leaders]
        memdie = oom_mm != -1
        skip = memdie & ((mm_flags[oom_mm] & MMF_OOM_SKIP) != 0) if f.mmf_oom_skip else None
    else:
        memdie = (m.task_tif[order] & TIF_MEMDIE) != 0
        skip = memdie & ~no_mm & ((mm_flags[mms] & MMF_OOM_SKIP) != 0) if f.mmf_oom_skip else None
    origin = (m.sig_oom_flags[leaders] & OOM_FLAG_ORIGIN) != 0
    verdict = np.full(len(mms), OOM_SCAN_OK, dtype=np.int8)
    # Apply the tests last to first so that the earliest matching test wins, as in the sequential code.
    if not force_kill and not f.no_exiting_abort:
        exiting = (m.task_flags[order] & PF_EXITING) != 0
        if f.task_will_free_mem and exiting.any():
            rows = np.arange(order.start or 0, order.stop) if isinstance(order, slice) else np.asarray(order)
            exiting = np.array([bool(e) and task_will_free_mem(m, int(t), f)
                                for e, t in zip(exiting.tolist(), rows.tolist())], dtype=bool)
        verdict[exiting] = OOM_SCAN_ABORT
    verdict[origin] = OOM_SCAN_SELECT
    verdict[no_mm] = OOM_SCAN_CONTINUE
    if not force_kill:
        verdict[memdie] = OOM_SCAN_ABORT
        if skip is not None:
            verdict[skip] = OOM_SCAN_CONTINUE
    verdict[unkillable] = OOM_SCAN_CONTINUE
    verdict[gone] = OOM_SCAN_CONTINUE
    return verdict


def select_bad_process(cpu, totalpages, nodemask, force_kill, current=None):
    """Pick the thread with the highest badness; returns (row, score 0..1000), (-1, 0) or (ABORT, 0).
    `current` is the task whose cpuset the mems test compares with (default cpu.current; -1 for a kworker).

    Follows: mm/oom_kill.c select_bad_process(), 3.14 (KERNEL §2.1): any ABORT wins at once; a SELECT takes
    ULONG_MAX points; ties keep a chosen thread-group leader, else the later thread wins. With
    `signed_badness` (5.9) chosen_points starts at LONG_MIN and negative scores are eligible.
    """
    m = cpu.m
    f = cpu.features
    order = scan_order(m)
    # Work in row order over whole columns (slices, no gathers), then put the results in scan order once.
    in_use = slice(0, len(order))
    verdict = classify_all(m, in_use, force_kill, f, nodemask, cpu.current if current is None else current)[order]
    aborts = order[verdict == OOM_SCAN_ABORT]
    if len(aborts):
        tp.trace_oom_scan_result(cpu, 0, 0, m.v_task_pid[int(aborts[0])], len(order))
        return ABORT, 0
    selects = order[verdict == OOM_SCAN_SELECT]
    if len(selects):
        chosen, chosen_points = int(selects[-1]), ULONG_MAX
    else:
        ok = order[verdict == OOM_SCAN_OK]
        # Traced, the scan scores one copy of the counters (other CPUs keep faulting) and says what it read.
        snap = badness_snapshot(m, len(order)) if cpu.trace is not None else None
        points = badness_vector(m, in_use, totalpages, _oom_score_adj_min_honoured(cpu), killable=True,
                                features=f, snap=snap)[ok]
        tp.trace_many(cpu, "oom_scan_candidate", m.task_pid[ok], points, tp.CAND_SCAN, 0)
        if snap is not None:
            _trace_badness_inputs(cpu, ok, snap)
        chosen, chosen_points = _pick(m, ok, points, "pick_lowest_badness" in cpu.debug_break, not_eligible(f))
    if chosen == -1:
        tp.trace_oom_scan_result(cpu, 0, 0, 0, len(order))
        return -1, 0
    tp.trace_oom_scan_result(cpu, m.v_task_pid[chosen], chosen_points, 0, len(order))
    return chosen, chosen_score(f, chosen_points, totalpages)


def chosen_score(f, chosen_points, totalpages):
    """The score oom_kill_process() prints for the chosen task: chosen_points * 1000 / totalpages.

    Follows: the end of mm/oom_kill.c select_bad_process() (3.14: unsigned long arithmetic, stored in an
    unsigned int) and of mem_cgroup_out_of_memory(); with `signed_badness` (5.9) a signed long division,
    which truncates a negative score toward zero, and a selected (ULONG_MAX) task scores 0.
    """
    if f.signed_badness:
        return _c_div(chosen_points * 1000, totalpages) if chosen_points != ULONG_MAX else 0
    return ((chosen_points * 1000) & ULONG_MAX) // totalpages & 0xFFFFFFFF


def badness_snapshot(m, n):
    """A copy of what badness_vector reads for the first n task rows: the mm table, task_mm, oom_score_adj."""
    return {"mm": m.mm[:int(m.glob[G_NR_MM_ROWS])].copy(), "task_mm": m.task_mm[:n].copy(),
            "adj": m.sig_oom_score_adj[:n].copy()}


def _trace_badness_inputs(cpu, rows, snap):
    """One oom_badness_mm record per candidate row: the mm counters and oom_score_adj its score came from."""
    m = cpu.m
    mmc = snap["mm"][snap["task_mm"][rows]]
    tp.trace_many(cpu, "oom_badness_mm", m.task_pid[rows], mmc[:, MM_FILEPAGES] + mmc[:, MM_ANONPAGES],
                  mmc[:, MM_NR_PTES], mmc[:, MM_SWAPENTS], snap["adj"][m.task_leader[rows]])


def _c_div(a, b):
    """C's integer division of longs: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _pick(m, rows, points, lowest=False, never=0):
    """The sequential choice among OK threads: highest points; a tie keeps a chosen leader, else replaces.
    `never` is the ineligible score (0, or LONG_MIN with signed badness)."""
    eligible = points > 0 if never == 0 else points != never
    if not eligible.any():
        return -1, 0
    best = points[eligible].min() if lowest else points.max()
    chosen = -1
    for row in rows[points == best].tolist():
        if chosen == -1 or m.v_task_leader[chosen] != chosen:
            chosen = row
    return chosen, int(best)


# --- dumps ---------------------------------------------------------------------------------------------------

def dump_tasks(cpu, memcg, nodemask):
    """Print the per-process memory table. Follows: mm/oom_kill.c dump_tasks(), 3.14 (KERNEL §3.5).

    Switches: `nr_pmds` (an nr_pmds column; seen in 4.2.8 to 4.9.0), `pgtables_bytes` (the page-table column is
    pgtables_bytes, in bytes; seen in 4.17.0), `dump_tasks_state` (the "Tasks state" preamble and the 7-wide pid;
    KERNEL §3.5 dates it 4.18 from a tree that also carries 5.x lines, so it is dated here by 4.19.1, which has it).
    """
    m = cpu.m
    f = cpu.features
    lines = []
    if f.dump_tasks_state:
        lines.append("Tasks state (memory values in pages):")
    pid_head = "[  pid  ]" if f.dump_tasks_state else "[ pid ]"
    if f.pgtables_bytes:
        lines.append(f"{pid_head}   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name")
    elif f.nr_pmds:
        lines.append(f"{pid_head}   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name")
    else:
        lines.append(f"{pid_head}   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name")
    pid_width = 7 if f.dump_tasks_state else 5
    for p in _processes(m):
        if oom_unkillable_task(m, p, memcg, nodemask, cpu.current):
            continue
        t = find_lock_task_mm(cpu, p)
        if t == -1:
            continue
        mm = m.v_task_mm[t]
        c = m.mm[mm]
        if f.pgtables_bytes:
            tables = f"{mm_pgtables_bytes(m, mm):8d}"
        elif f.nr_pmds:
            tables = f"{c[MM_NR_PTES]:7d} {mm_nr_pmds(m, mm):7d}"
        else:
            tables = f"{c[MM_NR_PTES]:7d}"
        lines.append(f"[{m.v_task_pid[t]:{pid_width}d}] {m.v_task_uid[t]:5d} {m.v_task_tgid[t]:5d} {c[MM_TOTAL_VM]:8d} "
                     f"{c[MM_FILEPAGES] + c[MM_ANONPAGES]:8d} {tables} {c[MM_SWAPENTS]:8d}"
                     f"         {m.v_sig_oom_score_adj[m.v_task_leader[t]]:5d} {printk.task_comm(m, t)}")
        task_unlock(cpu, t)
    printk.printk(cpu, printk.KERN_INFO, "\n".join(lines))


def _processes(m):
    """Group leaders still on the task list, in creation order. Follows: for_each_process()."""
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    leaders = rows[(m.task_leader[:n] == rows) & (m.task_exit_state[:n] != EXIT_DEAD) & (m.task_pid[:n] > 0)]
    return leaders.tolist()


def show_mem(cpu):
    """The Mem-Info block: per-zone free/min/low/high, reserves and buddy lists. Follows: show_free_areas(), 3.14.

    Differs: only the counters the emulator keeps are printed, in 3.14's layout for every profile.
    """
    m = cpu.m
    lines = ["Mem-Info:"]
    for z in range(m.nr_zones):
        if not m.zone[z, Z_MANAGED]:
            continue
        zr = m.zone[z]
        name = f"Node {zr[Z_NODE]} {ZONE_NAMES[zr[Z_IDX]]}"
        lines.append(f"{name} free:{K(zr[Z_STAT + NR_FREE_PAGES])}kB min:{K(zr[Z_WMARK + WMARK_MIN])}kB "
                     f"low:{K(zr[Z_WMARK + WMARK_LOW])}kB high:{K(zr[Z_WMARK + WMARK_HIGH])}kB "
                     f"active_anon:{K(zr[Z_STAT + NR_ACTIVE_ANON])}kB inactive_anon:{K(zr[Z_STAT + NR_INACTIVE_ANON])}kB "
                     f"active_file:{K(zr[Z_STAT + NR_ACTIVE_FILE])}kB inactive_file:{K(zr[Z_STAT + NR_INACTIVE_FILE])}kB "
                     f"isolated(anon):{K(zr[Z_STAT + NR_ISOLATED_ANON])}kB isolated(file):{K(zr[Z_STAT + NR_ISOLATED_FILE])}kB "
                     f"present:{K(zr[Z_MANAGED])}kB "
                     f"managed:{K(zr[Z_MANAGED])}kB")
        lines.append("lowmem_reserve[]: " + " ".join(str(v) for v in zr[Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 4]))
    for z in range(m.nr_zones):
        if not m.zone[z, Z_MANAGED]:
            continue
        zr = m.zone[z]
        parts = [f"{zr[Z_NR_FREE + o]}*{K(1 << o)}kB" for o in range(MAX_ORDER)]
        total = sum(int(zr[Z_NR_FREE + o]) << o for o in range(MAX_ORDER))
        lines.append(f"Node {zr[Z_NODE]} {ZONE_NAMES[zr[Z_IDX]]}: {' '.join(parts)} = {K(total)}kB")
    pagecache = int(m.zone[:, Z_STAT + NR_INACTIVE_FILE].sum() + m.zone[:, Z_STAT + NR_ACTIVE_FILE].sum())
    lines.append(f"{pagecache} total pagecache pages")
    lines.append(f"{int(m.glob[G_TOTALRAM])} pages RAM")
    printk.printk(cpu, printk.KERN_INFO, "\n".join(lines))


def _nodemask_text(nodemask):
    """%*pbl of a nodemask, "(null)" for none."""
    return "(null)" if nodemask is None else cpuset.nodelist(cpuset.node_mask_of(nodemask))


def dump_header(cpu, p, gfp_mask, order, memcg, nodemask, constraint=CONSTRAINT_NONE):
    """The "invoked oom-killer" report: the line, cpuset, stack, Mem-Info and (by sysctl) the task table.

    Follows: mm/oom_kill.c dump_header(), 3.14 (KERNEL §3.4). Switches: `symbolic_gfp` (gfp_mask=%#x(%pGg);
    seen in 4.6.2, not in 4.2.8), `header_nodemask` (nodemask=%*pbl, (null) for none; seen in 4.9.0, not in
    4.8.15), `oom_kill_summary` (5.0: the cpuset line moves into a last oom-kill: line about the victim; seen
    in 5.0.1 and 5.9.1, not in 4.19.1). The cpuset line is kernel/cpuset.py's. Differs: dump_stack() prints
    only its first line; gfp bits keep 3.14's values in every profile (5.x renumbered them).
    """
    m = cpu.m
    f = cpu.features
    cur = cpu.current
    comm = printk.task_comm(m, cur)
    adj = m.v_sig_oom_score_adj[m.v_task_leader[cur]] if cur >= 0 else 0
    if f.symbolic_gfp:
        mask = f"{gfp_mask:#x}({gfp_names(gfp_mask)})"
        where = f", nodemask={_nodemask_text(nodemask)}" if f.header_nodemask else ""
        printk.printk(cpu, printk.KERN_WARNING,
                      f"{comm} invoked oom-killer: gfp_mask={mask}{where}, order={order}, oom_score_adj={adj}")
    else:
        printk.printk(cpu, printk.KERN_WARNING,
                      f"{comm} invoked oom-killer: gfp_mask=0x{gfp_mask:x}, order={order}, oom_score_adj={adj}")
    if not f.oom_kill_summary:
        cpuset.cpuset_print_task_mems_allowed(cpu, cur)
    pid = m.v_task_pid[cur] if cur >= 0 else 0
    printk.printk(cpu, printk.KERN_WARNING,
                  f"CPU: {cpu.id} PID: {pid} Comm: {comm} Not tainted {cpu.scenario.machine.kernel}.0-oomemu #1")
    if memcg is not None:
        memcontrol.mem_cgroup_print_oom_info(cpu, memcg, p)
    else:
        show_mem(cpu)
    if ksysctl.sysctl_oom_dump_tasks(cpu.m):
        dump_tasks(cpu, memcg, nodemask)
    if f.oom_kill_summary and p >= 0:
        dump_oom_summary(cpu, p, memcg, constraint, nodemask)


def dump_oom_summary(cpu, victim, memcg=None, constraint=CONSTRAINT_NONE, nodemask=None):
    """One line about the OOM's context and its victim. Follows: mm/oom_kill.c dump_oom_summary(), 5.0 (seen in
    5.0.1 and 5.9.1): constraint, nodemask, the victim's cpuset name and mems, global_oom or oom_memcg=, the
    victim's memcg, comm, pid and uid."""
    m = cpu.m
    constraint = CONSTRAINT_NAMES[CONSTRAINT_MEMCG if memcg is not None else constraint]
    domain = "global_oom" if memcg is None else f"oom_memcg={memcontrol.memcg_name(m, memcg)}"
    task_memcg = memcontrol.memcg_name(m, m.v_task_memcg[victim]) if m.memcg_enabled else "/"
    printk.printk(cpu, printk.KERN_INFO,
                  f"oom-kill:constraint={constraint},nodemask={_nodemask_text(nodemask)},"
                  f"cpuset={cpuset.cgroup_name(cpuset.task_cs_name(m, victim))},"
                  f"mems_allowed={cpuset.nodelist(cpuset.cpuset_mems_allowed(m, victim))},{domain},"
                  f"task_memcg={task_memcg},task={printk.task_comm(m, victim)},"
                  f"pid={m.v_task_pid[victim]},uid={m.v_task_uid[victim]}")


def gfp_names(gfp_mask):
    """The %pGg rendering of a gfp mask: the largest composite names first, then single __GFP_ bits, joined by
    "|"; "" for 0. Follows: lib/vsprintf.c flags_string() with gfpflag_names (4.5). Differs: the names and
    bits are 3.14's."""
    from oomemu.include import gfp
    names, left = [], gfp_mask
    for name in ("GFP_TRANSHUGE", "GFP_HIGHUSER_MOVABLE", "GFP_HIGHUSER", "GFP_USER", "GFP_TEMPORARY",
                 "GFP_KERNEL", "GFP_NOFS", "GFP_NOIO", "GFP_ATOMIC"):
        value = getattr(gfp, name)
        if value and left & value == value:
            names.append(name)
            left &= ~value
    for name, value in sorted(gfp.GFP_NAMES.items(), key=lambda kv: kv[1]):
        if name.startswith("__GFP_") and value and left & value == value:
            names.append(name)
            left &= ~value
    if left:
        names.append(f"{left:#x}")
    return "|".join(names)


# --- killing -------------------------------------------------------------------------------------------------

def mark_oom_victim(cpu, t, self_marked=False):
    """Set TIF_MEMDIE on one thread with an atomic bit operation. 3.14 does this inline
    (set_tsk_thread_flag(), an atomic set_bit); the name is 4.2's (4.0: mark_tsk_oom_victim).

    With `tsk_is_oom_victim` (4.9, seen in 4.9.0) the first mark also records the mm in signal->oom_mm, which
    stays for the life of the process.
    """
    m = cpu.m
    if cpu.features.tsk_is_oom_victim and m.v_task_mm[t] != -1:
        leader = m.v_task_leader[t]
        if m.v_sig_oom_mm[leader] == -1:
            m.v_sig_oom_mm[leader] = m.v_task_mm[t]
    sync.set_bit(cpu, m.v_task_tif, t, TIF_MEMDIE)
    tp.trace_mark_victim(cpu, m.v_task_pid[t], int(self_marked))


mark_tsk_oom_victim = mark_oom_victim   # 4.0's name for it


def exit_oom_victim(cpu, t):
    """Clear TIF_MEMDIE. Follows: mm/oom_kill.c exit_oom_victim(), 4.2 (4.0: unmark_oom_victim); no
    oom_victims count is kept (only oom_killer_disable() waits on it, and no freezer is modelled)."""
    m = cpu.m
    if sync.test_and_clear_bit(cpu, m.v_task_tif, t, TIF_MEMDIE):
        tp.trace_exit_oom_victim(cpu, m.v_task_pid[t])


def _children(m, t):
    """Child processes of thread t (group leaders whose real parent is t), in creation order."""
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    return rows[(m.task_parent[:n] == t) & (m.task_leader[:n] == rows)].tolist()


def _record_kill(cpu, victim, points, kind, memcg=None):
    m = cpu.m
    with sync.spinlock(cpu, L_KILL_LOG):
        i = int(m.glob[G_NR_KILLS])
        if i < MAX_KILLS:
            row = m.kill[i]
            row[K_NS] = ktime.ns_since_boot(m)
            row[K_PID] = m.v_task_pid[victim]
            row[K_ROW] = victim
            row[K_POINTS] = points
            row[K_CPU] = cpu.id
            row[K_KILLER_PID] = m.v_task_pid[cpu.current] if cpu.current >= 0 else 0
            row[K_KIND] = kind
            row[K_SEQ] = i
            row[K_MEMCG] = -1 if memcg is None else memcg
            m.kill_comm[i] = m.task_comm[victim]
        m.glob[G_NR_KILLS] = i + 1
        m.glob[G_LAST_KILL_JIFFY] = ktime.jiffies(m)


def oom_kill_process(cpu, p, gfp_mask, order, points, totalpages, memcg, nodemask, message, kind=KILL_VICTIM):
    """Kill p (or its worst child), every other process sharing its mm, and mark the victim TIF_MEMDIE.

    Follows: mm/oom_kill.c oom_kill_process(), 3.14 (KERNEL §5.1), step for step. Switches:
    `task_will_free_mem` (3.19: the exiting test), `no_sacrifice_child` (5.1: no "Kill process" line and no
    child scan; absent in 5.2.1, present in 5.0.1), `oom_reaper` (4.6, seen in 4.6.2: SIGKILL before
    TIF_MEMDIE; the sharer loop of _kill_sharers decides can_oom_reap; the reaper is woken with the victim);
    `mmf_oom_skip` (4.9: an exiting p is handed to the reaper too).
    """
    m = cpu.m
    f = cpu.features
    exiting = task_will_free_mem(m, p, f) if f.task_will_free_mem else m.v_task_flags[p] & PF_EXITING
    if exiting:
        mark_oom_victim(cpu, p)  # it is already on its way out: let it use the reserves
        if f.oom_reaper and f.mmf_oom_skip:
            wake_oom_reaper(cpu, p)
        return
    if ratelimit.__ratelimit(cpu, G_OOM_RS, "oom_kill_process"):
        dump_header(cpu, p, gfp_mask, order, memcg, nodemask, cpu.oom_constraint)
    if f.no_sacrifice_child:
        victim = p
    else:
        task_lock(cpu, p)
        printk.printk(cpu, printk.KERN_ERR, f"{message}: Kill process {m.v_task_pid[p]} ({printk.task_comm(m, p)}) "
                                            f"score {points} or sacrifice child")
        task_unlock(cpu, p)
        victim = _sacrifice_child(cpu, p, memcg, nodemask, totalpages)
    t = find_lock_task_mm(cpu, victim)
    if t == -1:
        return
    victim = t
    mm = m.v_task_mm[victim]
    m.v_sig_kill_kind[m.v_task_leader[victim]] = kind   # emulator-only: who killed it (report.json tasks)
    if f.oom_reaper:
        # 4.6 sends SIGKILL and then marks the victim, both under its task_lock (which keeps exit_mm, and its
        # exit_oom_victim, from running in between). Differs: the emulator's signal code takes task_lock
        # itself, so the mark comes first under the lock and SIGKILL right after the unlock.
        mark_oom_victim(cpu, victim)
    printk.printk(cpu, printk.KERN_ERR, killed_process_line(cpu, victim, mm, message))
    task_unlock(cpu, victim)
    if f.oom_reaper:
        ksignal.do_send_sig_info(cpu, SIGKILL, victim, True)
    can_oom_reap = _kill_sharers(cpu, victim, mm)
    if not f.oom_reaper:
        mark_oom_victim(cpu, victim)
    vmstat.count_vm_event(cpu, vmstat.NR_KILLS)
    tp.trace_oom_kill(cpu, m.v_task_pid[victim], points, kind, m.v_sig_oom_score_adj[m.v_task_leader[victim]],
                      int(bool(m.v_task_flags[victim] & PF_KTHREAD)))
    _record_kill(cpu, victim, points, kind, memcg)
    if memcg is not None:
        memcontrol.note_oom_kill(cpu, victim, memcg)
    if not f.oom_reaper:
        ksignal.do_send_sig_info(cpu, SIGKILL, victim, True)
    elif can_oom_reap:
        wake_oom_reaper(cpu, victim)


def killed_process_line(cpu, victim, mm, message):
    """The "Killed process" line. Follows: oom_kill_process(), 3.14 (KERNEL §5.1 step 6). Switches: `shmem_rss`
    (", shmem-rss:…kB"; seen in 4.6.2, not in 4.2.8; no shmem exists, so 0), `no_sacrifice_child` (the line
    starts with the message; seen in 5.2.1, not in 5.0.1), `kill_message_uid` (UID, pgtables in kB and
    oom_score_adj; seen in 5.9.1, not in 5.2.1)."""
    m = cpu.m
    f = cpu.features
    c = m.mm[mm]
    line = (f"Killed process {m.v_task_pid[victim]} ({printk.task_comm(m, victim)}) total-vm:{K(c[MM_TOTAL_VM])}kB, "
            f"anon-rss:{K(c[MM_ANONPAGES])}kB, file-rss:{K(c[MM_FILEPAGES])}kB")
    if f.shmem_rss:
        line += ", shmem-rss:0kB"
    if f.kill_message_uid:
        line += (f", UID:{m.v_task_uid[victim]} pgtables:{mm_pgtables_bytes(m, mm) >> 10}kB "
                 f"oom_score_adj:{m.v_sig_oom_score_adj[m.v_task_leader[victim]]}")
    if f.no_sacrifice_child:
        line = f"{message}: {line}"
    return line


def _sacrifice_child(cpu, p, memcg, nodemask, totalpages):
    """The child (with its own mm) of any of p's threads with the highest badness above 0, else p itself.

    Follows: the child loop of oom_kill_process(), 3.14 (KERNEL §5.1 step 4); victim_points starts at 0
    and the parent's own score is not compared.
    """
    m = cpu.m
    victim, victim_points = p, 0
    p_mm = m.v_task_mm[p]
    with sync.read_locked(cpu, L_TASKLIST, G_TASKLIST_RW):  # read_lock(&tasklist_lock)
        for t in thread_group(m, p):
            for child in _children(m, t):
                if m.v_task_mm[child] == p_mm:
                    continue
                child_points = oom_badness(cpu, child, memcg, nodemask, totalpages)
                tp.trace_oom_scan_candidate(cpu, m.v_task_pid[child], child_points, tp.CAND_CHILD,
                                            m.v_task_pid[p])
                if child_points > victim_points:
                    victim, victim_points = child, child_points
    if victim != p:
        tp.trace_oom_sacrifice_child(cpu, m.v_task_pid[p], m.v_task_pid[victim], victim_points)
    return victim


def _kill_sharers(cpu, victim, mm):
    """SIGKILL every other process using mm, except kernel threads and OOM_SCORE_ADJ_MIN ones (3.14); returns
    can_oom_reap.

    Follows the sharer loop of oom_kill_process(), 3.14 (KERNEL §5.1 step 7). Switches: `oom_reaper` (4.6, seen
    in 4.6.2: the "sharing same memory" line is gone, and a spared sharer (init, a kernel thread,
    OOM_SCORE_ADJ_MIN) means the reaper must not touch the mm), `kill_all_sharers` (4.8, seen in 4.8.15 and
    4.9.0: OOM_SCORE_ADJ_MIN sharers are killed too; only init pins the mm, which then gets MMF_OOM_SKIP and an
    "oom killer … has mm pinned by …" line; kernel threads are passed over).
    """
    m = cpu.m
    f = cpu.features
    victim_leader = m.v_task_leader[victim]
    can_oom_reap = True
    for q in _processes(m):
        if m.v_task_mm[q] != mm or q == victim_leader:
            continue
        if f.kill_all_sharers:
            if is_global_init(m, q):
                can_oom_reap = False
                if f.mmf_oom_skip:
                    sync.set_bit(cpu, m.v_mm, mm * MM_NCOLS + MM_FLAGS, MMF_OOM_SKIP)
                printk.printk(cpu, printk.KERN_INFO,
                              f"oom killer {m.v_task_pid[victim]} ({printk.task_comm(m, victim)}) has mm pinned by "
                              f"{m.v_task_pid[q]} ({printk.task_comm(m, q)})")
                continue
            if m.v_task_flags[q] & PF_KTHREAD:
                continue
        else:
            spared = m.v_task_flags[q] & PF_KTHREAD or (
                m.v_sig_oom_score_adj[q] == OOM_SCORE_ADJ_MIN and _oom_score_adj_min_honoured(cpu))
            if f.oom_reaper and is_global_init(m, q):
                spared = True
            if spared:
                can_oom_reap = False  # left alive, and so the mm is never freed (KERNEL §9 R5)
                continue
        if not f.oom_reaper:
            task_lock(cpu, q)
            printk.printk(cpu, printk.KERN_ERR, f"Kill process {m.v_task_pid[q]} ({printk.task_comm(m, q)}) "
                                                "sharing same memory")
            task_unlock(cpu, q)
        vmstat.count_vm_event(cpu, vmstat.NR_SHARER_KILLS)
        m.v_sig_kill_kind[q] = m.v_sig_kill_kind[victim_leader]
        tp.trace_oom_kill_sharer(cpu, m.v_task_pid[q], mm, m.v_sig_oom_score_adj[q], 0)
        ksignal.do_send_sig_info(cpu, SIGKILL, q, True)
    return can_oom_reap


# --- constraint and panic ------------------------------------------------------------------------------------

def constrained_alloc(cpu, zonelist, gfp_mask, nodemask):
    """The allocation's constraint and the pages it may use: (CONSTRAINT_*, totalpages).

    Follows: constrained_alloc(), 3.14 (KERNEL §3.1): NONE over all RAM and swap for the page-fault path (no
    zonelist) and __GFP_THISNODE; MEMORY_POLICY over the spanned pages of the nodemask's nodes (plus swap)
    when the nodemask leaves out a node with memory; CPUSET over current's mems when a zone of the walk is
    not cpuset_zone_allowed_softwall(); else NONE.
    """
    m = cpu.m
    totalpages = int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])
    if zonelist is None or gfp_mask & __GFP_THISNODE:
        return CONSTRAINT_NONE, totalpages
    swap = int(m.glob[G_TOTAL_SWAP])
    if nodemask is not None and not set(range(m.nr_nodes)) <= set(nodemask):
        return CONSTRAINT_MEMORY_POLICY, swap + sum(mempolicy.node_spanned_pages(m, nid) for nid in sorted(nodemask))
    high = gfp_zone(gfp_mask)
    vz = m.v_zone
    for z in zonelist:
        if vz[z * Z_NCOLS + Z_IDX] > high or (nodemask is not None and vz[z * Z_NCOLS + Z_NODE] not in nodemask):
            continue
        if not cpuset.cpuset_zone_allowed_softwall(cpu, z, gfp_mask):
            mems = cpuset.cpuset_current_mems_allowed(cpu)
            return CONSTRAINT_CPUSET, swap + sum(mempolicy.node_spanned_pages(m, nid)
                                                 for nid in cpuset.nodes_of_mask(mems))
    return CONSTRAINT_NONE, totalpages


def check_panic_on_oom(cpu, constraint, gfp_mask, order, nodemask):
    """panic_on_oom: 1 panics for system-wide OOMs, 2 for all. Follows: check_panic_on_oom(), 3.14 (§3.3)."""
    mode = ksysctl.sysctl_panic_on_oom(cpu.m)
    if not mode:
        return
    if mode != 2 and constraint != CONSTRAINT_NONE:
        return
    dump_header(cpu, -1, gfp_mask, order, None, nodemask, constraint)
    printk.panic(cpu, f"Out of memory: {'compulsory' if mode == 2 else 'system-wide'} panic_on_oom is enabled\n")


# --- the zonelist OOM lock -------------------------------------------------------------------------------------

def _zonelist_zones(m, zonelist, gfp_mask):
    high = gfp_zone(gfp_mask)
    return [z for z in zonelist if m.v_zone[z * Z_NCOLS + Z_IDX] <= high]


def _zone_mask(zones):
    mask = 0
    for z in zones:
        mask |= 1 << z
    return mask


def try_set_zonelist_oom(cpu, zonelist, gfp_mask):
    """Take the OOM "lock" on every zone of the zonelist up to gfp_zone, all or nothing: 1 taken, 0 busy.

    Follows: mm/oom_kill.c try_set_zonelist_oom(), 3.14 (KERNEL §1.2): pass 1 checks, pass 2 sets, both
    under zone_scan_lock.
    """
    m = cpu.m
    vz = m.v_zone
    zones = _zonelist_zones(m, zonelist, gfp_mask)
    locked = "skip_zone_scan_lock" not in cpu.debug_break
    if locked:
        sync.spin_lock(cpu, L_ZONE_SCAN)
    try:
        ret = 1
        for z in zones:
            if vz[z * Z_NCOLS + Z_FLAGS] & ZONE_OOM_LOCKED:
                ret = 0
                break
        else:
            for z in zones:
                sync.sched_point(cpu, "zone_set_flag", z)  # zone_set_flag(): an atomic set_bit
                vz[z * Z_NCOLS + Z_FLAGS] |= ZONE_OOM_LOCKED
        seq = m.v_glob[G_OOM_SEQ]
        m.v_glob[G_OOM_SEQ] = seq + 1
        above_min, free = _free_above_min(m, zones) if ret else (0, 0)
        tp.trace_oom_lock_try(cpu, ret, _zone_mask(zones), above_min, free, seq=seq + 1)
    finally:
        if locked:
            sync.spin_unlock(cpu, L_ZONE_SCAN)
    if not ret:
        vmstat.count_vm_event(cpu, vmstat.NR_OOM_LOCK_BUSY)  # from the allocator and the page-fault path alike
    return ret


def _free_above_min(m, zones):
    """(Σ max(0, free - (min watermark + lowmem_reserve)), Σ free) over `zones`, the reserve taken against the
    request's classzone (the first zone of the walk): what the trace records when the OOM lock is taken, so a
    checker can tell whether memory the request could use had already come back above min (KERNEL §9 R3 step 5,
    §6.4 step 4). Emulator-only."""
    vz = m.v_zone
    above = total = 0
    if not zones:
        return 0, 0
    classzone_idx = vz[zones[0] * Z_NCOLS + Z_IDX]
    for z in zones:
        zb = z * Z_NCOLS
        free = vz[zb + Z_STAT + NR_FREE_PAGES]
        total += free
        above += max(0, free - vz[zb + Z_WMARK + WMARK_MIN] - vz[zb + Z_LOWMEM_RESERVE + classzone_idx])
    return above, total


def clear_zonelist_oom(cpu, zonelist, gfp_mask):
    """Clear ZONE_OOM_LOCKED on the same zones, whoever set it. Follows: clear_zonelist_oom(), 3.14 (§1.3)."""
    m = cpu.m
    if "skip_clear_zonelist_oom" in cpu.debug_break:
        return
    vz = m.v_zone
    zones = _zonelist_zones(m, zonelist, gfp_mask)
    with sync.spinlock(cpu, L_ZONE_SCAN):
        seq = m.v_glob[G_OOM_SEQ]
        m.v_glob[G_OOM_SEQ] = seq + 1
        tp.trace_oom_lock_release(cpu, _zone_mask(zones), seq=seq + 1)
        for z in zones:
            sync.sched_point(cpu, "zone_clear_flag", z)  # zone_clear_flag(): an atomic clear_bit
            vz[z * Z_NCOLS + Z_FLAGS] &= ~ZONE_OOM_LOCKED


# --- out_of_memory ---------------------------------------------------------------------------------------------

async def out_of_memory(cpu, zonelist, gfp_mask, order, nodemask, force_kill, from_kworker=False):
    """Kill the worst task to free memory, or let a dying current use the reserves; True if it did either.

    Follows: mm/oom_kill.c out_of_memory(), 3.14 (KERNEL §3.2), step for step (3.14 returns nothing; the result
    is 4.2's "progress", which the 3.14 caller ignores). `from_kworker` runs it as the SysRq-F work item
    would, with a kernel thread as current (no current-based shortcuts; it still takes the killable
    one-jiffy sleep after a kill). Switches at their steps:
    the dying-current shortcut (`task_will_free_mem` 3.19; `oom_reaper` 4.6: only with an mm; `mmf_oom_skip`
    4.9, seen in 4.9.0: task_will_free_mem alone, and the reaper is woken for current), no panic for SysRq
    (`oom_reaper`, seen in 4.6.2), `deadlocked_on_memory` (seen in 4.19.1 and 5.9.1, not in 4.17.0). Differs:
    the one-jiffy sleep after a kill is kept in every profile (4.19.1 no longer sleeps here).
    """
    m = cpu.m
    f = cpu.features
    cur = -1 if from_kworker else cpu.current
    vmstat.count_vm_event(cpu, vmstat.NR_OOM_INVOCATIONS)
    if not m.v_glob[G_OOM_SCORES_TAKEN]:
        from oomemu.fs.proc import base as proc_base
        proc_base.record_first_oom_scores(cpu)   # emulator-only: /proc oom_score at the first OOM, for the report
    freed = sum(notifier(cpu) for notifier in m.oom_notify_list)
    if freed > 0:
        return True  # got some memory back in the last second
    if cur >= 0 and _current_will_exit(m, cur, f):
        vmstat.count_vm_event(cpu, vmstat.NR_SELF_MEMDIE)
        mark_oom_victim(cpu, cur, self_marked=True)
        if f.oom_reaper and f.mmf_oom_skip:
            wake_oom_reaper(cpu, cur)
        return True
    constraint, totalpages = constrained_alloc(cpu, zonelist, gfp_mask, nodemask)
    mpol_mask = nodemask if constraint == CONSTRAINT_MEMORY_POLICY else None
    tp.trace_out_of_memory(cpu, constraint, totalpages, gfp_mask, order, int(force_kill))
    cpu.oom_constraint = constraint   # oc->constraint, for the 5.0 summary line of dump_header
    check_panic_on_oom(cpu, constraint, gfp_mask, order, mpol_mask)
    if (ksysctl.sysctl_oom_kill_allocating_task(m) and cur >= 0 and m.v_task_mm[cur] != -1
            and not oom_unkillable_task(m, cur, None, nodemask, cur)
            and m.v_sig_oom_score_adj[m.v_task_leader[cur]] != OOM_SCORE_ADJ_MIN):
        oom_kill_process(cpu, cur, gfp_mask, order, 0, totalpages, None, nodemask,
                         "Out of memory (oom_kill_allocating_task)", KILL_ALLOCATING)
        return True  # no sleep in this mode (KERNEL §9 R9)
    sync.sched_point(cpu, "oom.select")
    p, points = select_bad_process(cpu, totalpages, mpol_mask, force_kill, cur)
    if p == -1:
        if f.deadlocked_on_memory:
            dump_header(cpu, -1, gfp_mask, order, None, mpol_mask)
            printk.printk(cpu, printk.KERN_WARNING, "Out of memory and no killable processes...")
            if not force_kill:
                printk.panic(cpu, "System is deadlocked on memory\n")
        elif not (f.oom_reaper and force_kill):
            dump_header(cpu, -1, gfp_mask, order, None, mpol_mask)
            printk.panic(cpu, "Out of memory and no killable processes...\n")
        return False
    killed = False
    if p == ABORT:
        vmstat.count_vm_event(cpu, vmstat.NR_SCAN_ABORTS)
    else:
        sync.sched_point(cpu, "oom.kill", p)
        oom_kill_process(cpu, p, gfp_mask, order, points, totalpages, None, nodemask, "Out of memory",
                         KILL_SYSRQ if force_kill else KILL_VICTIM)
        killed = True
    if killed and (cur >= 0 or from_kworker):
        # Give the victim a jiffy to exit and free its memory; a fatal signal ends the wait at once. The
        # SysRq-F kworker sleeps too (here the writing task stands in for it).
        sync.sched_point(cpu, "oom.sleep")
        await ksched.schedule_timeout_killable(cpu, 1)
    return True


def _current_will_exit(m, cur, f):
    """out_of_memory's "current is dying" test, as the profile has it (see out_of_memory)."""
    if f.oom_reaper and f.mmf_oom_skip:
        return task_will_free_mem(m, cur, f)
    if f.oom_reaper and m.v_task_mm[cur] == -1:
        return False
    if ksignal.fatal_signal_pending(m, cur):
        return True
    return task_will_free_mem(m, cur, f) if f.task_will_free_mem else bool(m.v_task_flags[cur] & PF_EXITING)


async def pagefault_out_of_memory(cpu):
    """A user fault that failed with VM_FAULT_OOM: OOM-kill if the lock is free, else just return and re-fault.

    Follows: mm/oom_kill.c pagefault_out_of_memory(), 3.14 (KERNEL §1.6): a pending memcg OOM is handled by
    mem_cgroup_oom_synchronize() instead. With `oom_lock_mutex` (4.2, seen in 4.2.8) it takes a trylock of
    oom_lock instead of the zonelist lock.
    """
    if cpu.m.memcg_enabled and await memcontrol.mem_cgroup_oom_synchronize(cpu, True):
        return
    if cpu.features.oom_lock_mutex:
        if mutex_trylock_oom_lock(cpu):
            try:
                await out_of_memory(cpu, None, 0, 0, None, False)
            finally:
                mutex_unlock_oom_lock(cpu)
        return
    zonelist = page_alloc.node_zonelist(cpu.m, 0, GFP_KERNEL)  # first_online_node
    if try_set_zonelist_oom(cpu, zonelist, GFP_KERNEL):
        await out_of_memory(cpu, None, 0, 0, None, False)
        clear_zonelist_oom(cpu, zonelist, GFP_KERNEL)


# --- the oom_lock mutex (4.2) ------------------------------------------------------------------------------------

def _all_zones(m):
    return (1 << m.nr_zones) - 1


def mutex_trylock_oom_lock(cpu):
    """mutex_trylock(&oom_lock): True if taken. Follows: mm/oom_kill.c DEFINE_MUTEX(oom_lock), 4.2 (seen in
    4.2.8; KERNEL §8, C-dc56401). The trace records it as an OOM lock over every zone, with a sequence number
    taken under the mutex's wait_lock, so the lock-exclusion invariant replays it exactly."""
    m = cpu.m
    locked = "skip_zone_scan_lock" not in cpu.debug_break   # the break: test and set without the wait_lock
    if locked:
        sync.spin_lock(cpu, L_OOM_LOCK)
    try:
        free = m.v_glob[G_OOM_LOCK] == 0
        if free:
            if not locked:
                _widen_race_window()
            m.v_glob[G_OOM_LOCK] = cpu.current + 1 if cpu.current >= 0 else m.max_tasks + 1 + cpu.id
        seq = m.v_glob[G_OOM_SEQ]
        m.v_glob[G_OOM_SEQ] = seq + 1
        tp.trace_oom_lock_try(cpu, int(free), _all_zones(m), seq=seq + 1)
    finally:
        if locked:
            sync.spin_unlock(cpu, L_OOM_LOCK)
    if not free:
        vmstat.count_vm_event(cpu, vmstat.NR_OOM_LOCK_BUSY)
    return free


async def mutex_lock_oom_lock(cpu):
    """mutex_lock(&oom_lock), sleeping until it is free (SysRq-F's moom_callback, 4.2).

    Differs: the sleeper polls once a jiffy (TASK_UNINTERRUPTIBLE) instead of queueing on the mutex.
    """
    while not mutex_trylock_oom_lock(cpu):
        await ksched.schedule_timeout_uninterruptible(cpu, 1)


def mutex_unlock_oom_lock(cpu):
    """mutex_unlock(&oom_lock). Follows: mutex_unlock(), 4.2. (The `skip_clear_zonelist_oom` break never
    releases it, as it never clears ZONE_OOM_LOCKED on 3.14.)"""
    m = cpu.m
    if "skip_clear_zonelist_oom" in cpu.debug_break:
        return
    with sync.spinlock(cpu, L_OOM_LOCK):
        seq = m.v_glob[G_OOM_SEQ]
        m.v_glob[G_OOM_SEQ] = seq + 1
        tp.trace_oom_lock_release(cpu, _all_zones(m), seq=seq + 1)
        m.v_glob[G_OOM_LOCK] = 0


# --- the oom_reaper (4.6) ------------------------------------------------------------------------------------------

MAX_OOM_REAP_RETRIES = 10
_QUEUED_LAST = -2          # task_oom_reaper_list of the last queued task (its next is NULL, yet it is queued)


def wake_oom_reaper(cpu, tsk):
    """Queue tsk for the oom_reaper and wake it. Follows: mm/oom_kill.c wake_oom_reaper(), 4.6 (seen in 4.6.2):
    a task already queued is not queued again; the list is pushed at its head under oom_reaper_lock."""
    m = cpu.m
    if m.oom_reaper_row < 0:
        return  # no oom_reaper thread (oom_reaper_th == NULL)
    with sync.spinlock(cpu, L_OOM_REAPER):
        head = m.v_glob[G_OOM_REAPER_LIST]
        if head == tsk or m.v_task_oom_reaper_list[tsk] != -1:
            return
        m.v_task_oom_reaper_list[tsk] = head if head != -1 else _QUEUED_LAST
        m.v_glob[G_OOM_REAPER_LIST] = tsk
    tp.trace_wake_oom_reaper(cpu, m.v_task_pid[tsk])
    sync.ring_doorbell(m, m.oom_reaper_row)   # wake_up(&oom_reaper_wait)


def _oom_reaper_dequeue(cpu):
    """Take the head of oom_reaper_list, or -1 (the oom_reaper loop's locked step)."""
    m = cpu.m
    with sync.spinlock(cpu, L_OOM_REAPER):
        tsk = m.v_glob[G_OOM_REAPER_LIST]
        if tsk != -1:
            nxt = m.v_task_oom_reaper_list[tsk]
            m.v_glob[G_OOM_REAPER_LIST] = -1 if nxt == _QUEUED_LAST else nxt
    return tsk


def __oom_reap_task(cpu, tsk):
    """Unmap the victim's anonymous memory if its mmap_sem can be had for read without waiting; False to try
    again later.

    Follows: mm/oom_kill.c __oom_reap_task(), 4.6 (seen in 4.6.2): find_lock_task_mm, take an mm_users
    reference unless it is already 0, down_read_trylock, unmap, log "oom_reaper: reaped process …", up_read;
    with `oom_reaper_hides_victim` (4.6) the victim's oom_score_adj becomes OOM_SCORE_ADJ_MIN and its TIF_MEMDIE
    is cleared, so the next OOM can choose someone else; then mmput, which may be the last. With `mmf_oom_skip`
    (4.9) the mm is signal->oom_mm when there is one. Differs: only anonymous pages exist to unmap (no
    mlocked, hugetlb or shared VMAs); swap entries stay; 4.9's reaper also takes oom_lock, which this one does
    not (later kernels dropped it, af5679fbc669, version UNVERIFIED).
    """
    from oomemu.kernel import fork, rwsem
    from oomemu.mm import mmap
    m = cpu.m
    f = cpu.features
    p = find_lock_task_mm(cpu, tsk)
    if p == -1:
        return True  # it already passed exit_mm: nothing left to reap
    mm = m.v_task_mm[p]
    lk = m.mm_lock_index(mm)
    with sync.spinlock(cpu, lk):
        users = m.v_mm[mm * MM_NCOLS + MM_USERS]
        if users > 0:
            m.v_mm[mm * MM_NCOLS + MM_USERS] = users + 1
    task_unlock(cpu, p)
    if users <= 0:
        return True
    try:
        if not rwsem.down_read_trylock(cpu, mm):
            return False
        freed = mmap.unmap_anon_pages(cpu, mm)
        c = m.mm[mm]
        printk.printk(cpu, printk.KERN_INFO,
                      f"oom_reaper: reaped process {m.v_task_pid[tsk]} ({printk.task_comm(m, tsk)}), now "
                      f"anon-rss:{K(c[MM_ANONPAGES])}kB, file-rss:{K(c[MM_FILEPAGES])}kB, shmem-rss:0kB")
        tp.trace_oom_reap(cpu, m.v_task_pid[tsk], mm, freed, 0, 1)
        rwsem.up_read(cpu, mm)
        if f.oom_reaper_hides_victim:
            m.v_sig_oom_score_adj[m.v_task_leader[tsk]] = OOM_SCORE_ADJ_MIN
            exit_oom_victim(cpu, tsk)
        return True
    finally:
        fork.mmput(cpu, mm)


def oom_reap_task(cpu, tsk):
    """Try to reap tsk up to MAX_OOM_REAP_RETRIES times, HZ/10 apart; log "unable to reap" if it never could.

    Follows: mm/oom_kill.c oom_reap_task(), 4.6 (seen in 4.6.2; KERNEL §8). With `mmf_oom_skip` (4.9, seen in
    4.9.0) the victim's mm gets MMF_OOM_SKIP afterwards, reaped or not ("somebody can't call up_write"), so
    the OOM killer moves on.
    """
    m = cpu.m
    f = cpu.features
    attempts = 0
    while True:
        attempts += 1
        if attempts > MAX_OOM_REAP_RETRIES:
            break
        if __oom_reap_task(cpu, tsk):
            break
        schedule_timeout_idle(cpu, m.v_glob[G_HZ] // 10)   # a wait: a scheduling point of its own
    if attempts > MAX_OOM_REAP_RETRIES:
        printk.printk(cpu, printk.KERN_INFO,
                      f"oom_reaper: unable to reap pid:{m.v_task_pid[tsk]} ({printk.task_comm(m, tsk)})")
        tp.trace_oom_reap(cpu, m.v_task_pid[tsk], -1, 0, attempts - 1, 0)
    if f.mmf_oom_skip:
        mm = m.v_sig_oom_mm[m.v_task_leader[tsk]]
        if mm == -1:
            mm = m.v_task_mm[tsk]
        if mm != -1:
            sync.set_bit(cpu, m.v_mm, mm * MM_NCOLS + MM_FLAGS, MMF_OOM_SKIP)
    with sync.spinlock(cpu, L_OOM_REAPER):
        m.v_task_oom_reaper_list[tsk] = -1   # tsk->oom_reaper_list = NULL


def schedule_timeout_idle(cpu, timeout):
    """Sleep `timeout` jiffies in the reaper's own process (TASK_IDLE: no signal ends it). Follows:
    schedule_timeout_idle(), 4.6. Differs: a kthread that is its own process waits on its doorbell with a
    deadline on oomemu.kernel.time's clock; it still parks for quiescent snapshots."""
    _kthread_wait(cpu, ktime.now_ns(cpu.m) + ktime.jiffies_to_ns(cpu.m, timeout), lambda: False, "idle")


def _kthread_wait(cpu, deadline_ns, done, name):
    """Wait on this row's doorbell until done() or (deadline_ns not None) the clock reaches it; park for
    snapshots on the way, as kswapd does."""
    m = cpu.m
    doorbell = sync.DoorbellWaiter(m, cpu.id)
    while not m.v_glob[G_STOP] and not done():
        sync.pause_point(cpu)
        poll = ktime.now_ns(m) + _KTHREAD_POLL_MS * 1_000_000
        if deadline_ns is not None:
            if ktime.now_ns(m) >= deadline_ns:
                return
            poll = min(poll, deadline_ns)
        if doorbell.wait_until(cpu, poll, name):
            sync.drain_doorbell(m, cpu.id)


_KTHREAD_POLL_MS = 5   # like kswapd: look up this often to park for the supervisor's snapshots


def oom_reaper(cpu):
    """The oom_reaper kthread: sleep until a victim is queued, reap it, repeat until the machine stops.

    Follows: mm/oom_kill.c oom_reaper(), 4.6 (seen in 4.6.2). Runs as its own OS process, like kswapd.
    """
    m = cpu.m
    while not m.v_glob[G_STOP]:
        _kthread_wait(cpu, None, lambda: m.v_glob[G_OOM_REAPER_LIST] != -1, "idle")  # wait_event_freezable
        if m.v_glob[G_STOP]:
            break
        tsk = _oom_reaper_dequeue(cpu)
        if tsk != -1:
            oom_reap_task(cpu, tsk)


# --- page-table sizes ----------------------------------------------------------------------------------------

PTRS_PER_PMD = 512


def mm_nr_pmds(m, mm):
    """PMD pages of mm. Follows: mm_nr_pmds(), 4.0. Differs: derived from nr_ptes (one PMD page per 512
    page-table pages), since the emulator counts page tables but does not build them."""
    ptes = m.v_mm[mm * MM_NCOLS + MM_NR_PTES]
    return -(-ptes // PTRS_PER_PMD)


def mm_pgtables_bytes(m, mm):
    """Bytes of page tables of mm (PTE and PMD pages). Follows: mm_pgtables_bytes(), 4.16 (seen in 4.17.0)."""
    return (m.v_mm[mm * MM_NCOLS + MM_NR_PTES] + mm_nr_pmds(m, mm)) << PAGE_SHIFT
