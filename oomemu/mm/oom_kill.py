"""Choose and kill a task when an allocation cannot be satisfied.

Follows mm/oom_kill.c of Linux 3.14 (KERNEL §1–5), in that file's order: the unkillable test and
find_lock_task_mm, oom_badness, the scan, the dumps, oom_kill_process, the constraint and panic checks, the
zonelist OOM lock, and out_of_memory. The scan over the task table is vectorised (numpy); the scalar
functions of the same names are the reference it is tested against.
"""
import numpy as np

from oomemu import sync
from oomemu.include.gfp import GFP_KERNEL, gfp_zone
from oomemu.include.mmzone import MAX_ORDER, PAGE_SHIFT, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_NAMES, ZONE_OOM_LOCKED
from oomemu.include.oom import (CONSTRAINT_NONE, OOM_FLAG_ORIGIN, OOM_SCAN_ABORT, OOM_SCAN_CONTINUE,
                                OOM_SCAN_OK, OOM_SCAN_SELECT, OOM_SCORE_ADJ_MIN)
from oomemu.include.sched import CAP_SYS_ADMIN, PF_EXITING, PF_KTHREAD, SIGKILL, TIF_MEMDIE
from oomemu.kernel import printk
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.kernel import time as ktime
from oomemu.lib import ratelimit
from oomemu.machine import (G_LAST_KILL_JIFFY, G_NR_KILLS, G_NR_MM_ROWS, G_NR_TASK_ROWS, G_OOM_RS, G_OOM_SEQ, G_TOTAL_SWAP,
                            G_TOTALRAM, K_CPU, K_KILLER_PID, K_KIND, K_NS, K_PID, K_POINTS, K_ROW,
                            K_SEQ, L_KILL_LOG, L_TASKLIST, L_ZONE_SCAN, MAX_KILLS, MM_ANONPAGES,
                            MM_FILEPAGES, MM_NCOLS, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, Z_FLAGS, Z_IDX,
                            Z_LOWMEM_RESERVE, Z_MANAGED, Z_NCOLS, Z_NODE, Z_NR_FREE, Z_STAT, Z_WMARK)
from oomemu.include.mmzone import NR_FREE_PAGES, NR_LRU_ANON, NR_LRU_FILE
from oomemu.mm import page_alloc, vmstat
from oomemu.trace import events as tp

# oom_kill_process() kinds, recorded in the kill log and the trace
KILL_VICTIM = 1           # the task select_bad_process chose (or its sacrificed child)
KILL_ALLOCATING = 2       # oom_kill_allocating_task
KILL_SYSRQ = 3            # SysRq-F (force_kill)
KILL_KINDS = {KILL_VICTIM: "oom", KILL_ALLOCATING: "allocating_task", KILL_SYSRQ: "sysrq"}

ABORT = -2                # select_bad_process()'s (struct task_struct *)-1
ULONG_MAX = (1 << 64) - 1


def K(pages):
    """Pages to kB. Follows: the K() macro of mm/oom_kill.c."""
    return pages << (PAGE_SHIFT - 10)


# --- task helpers --------------------------------------------------------------------------------------------

def is_global_init(m, p):
    """Follows: is_global_init() of 3.14: the task whose pid is 1 (the thread, not the group)."""
    return m.v_task_pid[p] == 1


def oom_unkillable_task(m, p, memcg, nodemask):
    """True for init and kernel threads. Follows: oom_unkillable_task(), 3.14 (KERNEL §2.3).

    Differs: no memcgs and no cpusets/mempolicies exist, so the last two tests always pass.
    """
    if is_global_init(m, p):
        return True
    return bool(m.v_task_flags[p] & PF_KTHREAD)


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

def oom_badness(cpu, p, memcg, nodemask, totalpages):
    """How much memory killing p would free, in pages, adjusted by oom_score_adj; 0 means "not eligible".

    Follows: mm/oom_kill.c oom_badness(), 3.14 (KERNEL §4.1): rss + nr_ptes + swapents, 3% off for
    CAP_SYS_ADMIN, plus adj × (totalpages / 1000), at least 1.
    """
    m = cpu.m
    if oom_unkillable_task(m, p, memcg, nodemask):
        return 0
    t = find_lock_task_mm(cpu, p)
    if t == -1:
        return 0
    adj = m.v_sig_oom_score_adj[m.v_task_leader[t]]
    if adj == OOM_SCORE_ADJ_MIN and _oom_score_adj_min_honoured(cpu):
        task_unlock(cpu, t)
        return 0
    mm = m.v_task_mm[t]
    points = get_mm_rss(m, mm) + m.v_mm[mm * MM_NCOLS + MM_NR_PTES] + m.v_mm[mm * MM_NCOLS + MM_SWAPENTS]
    task_unlock(cpu, t)
    if has_capability_sys_admin(m, p):
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    return points if points > 0 else 1


def badness_vector(m, rows, totalpages, honour_adj_min=True, killable=False):
    """oom_badness() for many rows at once (each with an mm); 0 where not eligible. `rows` is an index array or
    a slice (a slice reads the columns in place, with no gather); `killable` says the caller already excluded
    init and kernel threads (the scan's OK rows).

    Emulator-only: the vectorised twin of oom_badness(), tested against it.
    """
    mmc = m.mm[:int(m.glob[G_NR_MM_ROWS])]
    # Sum the four columns over the mm rows in use first, then gather once per candidate.
    per_mm = mmc[:, MM_FILEPAGES] + mmc[:, MM_ANONPAGES] + mmc[:, MM_NR_PTES] + mmc[:, MM_SWAPENTS]
    points = per_mm[m.task_mm[rows]]
    root = (m.task_uid[rows] == 0) | ((m.task_caps[rows] & CAP_SYS_ADMIN) != 0)
    if root.any():
        points[root] -= points[root] * 3 // 100
    adj = m.sig_oom_score_adj[m.task_leader[rows]]
    unit = totalpages // 1000
    if unit:
        points += adj.astype(np.int64) * unit
    np.maximum(points, 1, out=points)
    if honour_adj_min:
        points[adj == OOM_SCORE_ADJ_MIN] = 0
    if not killable:
        points[(m.task_pid[rows] == 1) | ((m.task_flags[rows] & PF_KTHREAD) != 0)] = 0
    return points


# --- the scan ------------------------------------------------------------------------------------------------

def oom_scan_process_thread(m, task, totalpages, nodemask, force_kill):
    """Classify one thread for the scan: CONTINUE, ABORT, SELECT or OK, in 3.14's exact test order.

    Follows: mm/oom_kill.c oom_scan_process_thread(), 3.14 (KERNEL §2.2). Differs: no freezer (no thaw),
    no ptrace (the PT_TRACE_EXIT exception never applies).
    """
    if m.v_task_exit_state[task]:
        return OOM_SCAN_CONTINUE
    if oom_unkillable_task(m, task, None, nodemask):
        return OOM_SCAN_CONTINUE
    if m.v_task_tif[task] & TIF_MEMDIE:
        if not force_kill:
            return OOM_SCAN_ABORT
    if m.v_task_mm[task] == -1:
        return OOM_SCAN_CONTINUE
    if m.v_sig_oom_flags[m.v_task_leader[task]] & OOM_FLAG_ORIGIN:
        return OOM_SCAN_SELECT
    if m.v_task_flags[task] & PF_EXITING and not force_kill:
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


def classify_all(m, order, force_kill):
    """oom_scan_process_thread() over `order` (index array or slice) at once; returns an array of OOM_SCAN_*
    (emulator-only twin)."""
    exit_state = m.task_exit_state[order] != 0
    unkillable = (m.task_pid[order] == 1) | ((m.task_flags[order] & PF_KTHREAD) != 0)
    memdie = (m.task_tif[order] & TIF_MEMDIE) != 0
    no_mm = m.task_mm[order] == -1
    origin = (m.sig_oom_flags[m.task_leader[order]] & OOM_FLAG_ORIGIN) != 0
    exiting = (m.task_flags[order] & PF_EXITING) != 0
    verdict = np.full(len(exit_state), OOM_SCAN_OK, dtype=np.int8)
    # Apply the tests last to first so that the earliest matching test wins, as in the sequential code.
    if not force_kill:
        verdict[exiting] = OOM_SCAN_ABORT
    verdict[origin] = OOM_SCAN_SELECT
    verdict[no_mm] = OOM_SCAN_CONTINUE
    if not force_kill:
        verdict[memdie] = OOM_SCAN_ABORT
    verdict[unkillable] = OOM_SCAN_CONTINUE
    verdict[exit_state] = OOM_SCAN_CONTINUE
    return verdict


def select_bad_process(cpu, totalpages, nodemask, force_kill):
    """Pick the thread with the highest badness; returns (row, score 0..1000), (-1, 0) or (ABORT, 0).

    Follows: mm/oom_kill.c select_bad_process(), 3.14 (KERNEL §2.1): any ABORT wins at once; a SELECT takes
    ULONG_MAX points; ties keep a chosen thread-group leader, else the later thread wins.
    """
    m = cpu.m
    order = scan_order(m)
    # Work in row order over whole columns (slices, no gathers), then put the results in scan order once.
    in_use = slice(0, len(order))
    verdict = classify_all(m, in_use, force_kill)[order]
    aborts = order[verdict == OOM_SCAN_ABORT]
    if len(aborts):
        tp.trace_oom_scan_result(cpu, 0, 0, m.v_task_pid[int(aborts[0])], len(order))
        return ABORT, 0
    selects = order[verdict == OOM_SCAN_SELECT]
    if len(selects):
        chosen, chosen_points = int(selects[-1]), ULONG_MAX
    else:
        ok = order[verdict == OOM_SCAN_OK]
        points = badness_vector(m, in_use, totalpages, _oom_score_adj_min_honoured(cpu), killable=True)[ok]
        tp.trace_many(cpu, "oom_scan_candidate", m.task_pid[ok], points, tp.CAND_SCAN, 0)
        chosen, chosen_points = _pick(m, ok, points, "pick_lowest_badness" in cpu.debug_break)
    if chosen == -1:
        tp.trace_oom_scan_result(cpu, 0, 0, 0, len(order))
        return -1, 0
    score = ((chosen_points * 1000) & ULONG_MAX) // totalpages & 0xFFFFFFFF
    tp.trace_oom_scan_result(cpu, m.v_task_pid[chosen], chosen_points, 0, len(order))
    return chosen, score


def _pick(m, rows, points, lowest=False):
    """The sequential choice among OK threads: highest points; a tie keeps a chosen leader, else replaces."""
    eligible = points > 0
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
    """Print the per-process memory table. Follows: mm/oom_kill.c dump_tasks(), 3.14 (KERNEL §3.5)."""
    m = cpu.m
    lines = ["[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"]
    for p in _processes(m):
        if oom_unkillable_task(m, p, memcg, nodemask):
            continue
        t = find_lock_task_mm(cpu, p)
        if t == -1:
            continue
        mm = m.v_task_mm[t]
        c = m.mm[mm]
        lines.append(f"[{m.v_task_pid[t]:5d}] {m.v_task_uid[t]:5d} {m.v_task_tgid[t]:5d} {c[MM_TOTAL_VM]:8d} "
                     f"{c[MM_FILEPAGES] + c[MM_ANONPAGES]:8d} {c[MM_NR_PTES]:7d} {c[MM_SWAPENTS]:8d}"
                     f"         {m.v_sig_oom_score_adj[m.v_task_leader[t]]:5d} {printk.task_comm(m, t)}")
        task_unlock(cpu, t)
    printk.printk(cpu, printk.KERN_INFO, "\n".join(lines))


def _processes(m):
    """Group leaders still on the task list, in creation order. Follows: for_each_process()."""
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    from oomemu.include.sched import EXIT_DEAD
    leaders = rows[(m.task_leader[:n] == rows) & (m.task_exit_state[:n] != EXIT_DEAD) & (m.task_pid[:n] > 0)]
    return leaders.tolist()


def show_mem(cpu):
    """The Mem-Info block: per-zone free/min/low/high, reserves and buddy lists. Follows: show_free_areas(), 3.14.

    Differs: only the counters the emulator keeps are printed.
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
                     f"active_anon:0kB inactive_anon:{K(zr[Z_STAT + NR_LRU_ANON])}kB active_file:0kB "
                     f"inactive_file:{K(zr[Z_STAT + NR_LRU_FILE])}kB present:{K(zr[Z_MANAGED])}kB "
                     f"managed:{K(zr[Z_MANAGED])}kB")
        lines.append("lowmem_reserve[]: " + " ".join(str(v) for v in zr[Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 4]))
    for z in range(m.nr_zones):
        if not m.zone[z, Z_MANAGED]:
            continue
        zr = m.zone[z]
        parts = [f"{zr[Z_NR_FREE + o]}*{K(1 << o)}kB" for o in range(MAX_ORDER)]
        total = sum(int(zr[Z_NR_FREE + o]) << o for o in range(MAX_ORDER))
        lines.append(f"Node {zr[Z_NODE]} {ZONE_NAMES[zr[Z_IDX]]}: {' '.join(parts)} = {K(total)}kB")
    pagecache = int(m.zone[:, Z_STAT + NR_LRU_FILE].sum())
    lines.append(f"{pagecache} total pagecache pages")
    lines.append(f"{int(m.glob[G_TOTALRAM])} pages RAM")
    printk.printk(cpu, printk.KERN_INFO, "\n".join(lines))


def dump_header(cpu, p, gfp_mask, order, memcg, nodemask):
    """The "invoked oom-killer" report: the line, cpuset, stack, Mem-Info and (by sysctl) the task table.

    Follows: mm/oom_kill.c dump_header(), 3.14 (KERNEL §3.4). Differs: dump_stack() prints only its first line.
    """
    m = cpu.m
    cur = cpu.current
    comm = printk.task_comm(m, cur)
    adj = m.v_sig_oom_score_adj[m.v_task_leader[cur]] if cur >= 0 else 0
    printk.printk(cpu, printk.KERN_WARNING,
                  f"{comm} invoked oom-killer: gfp_mask=0x{gfp_mask:x}, order={order}, oom_score_adj={adj}")
    nodes = f"0-{m.nr_nodes - 1}" if m.nr_nodes > 1 else "0"
    printk.printk(cpu, printk.KERN_INFO, f"{comm} cpuset=/ mems_allowed={nodes}")
    pid = m.v_task_pid[cur] if cur >= 0 else 0
    printk.printk(cpu, printk.KERN_WARNING, f"CPU: {cpu.id} PID: {pid} Comm: {comm} Not tainted 3.14.0-oomemu #1")
    show_mem(cpu)
    if cpu.scenario.sysctl.oom_dump_tasks:
        dump_tasks(cpu, memcg, nodemask)


# --- killing -------------------------------------------------------------------------------------------------

def mark_tsk_oom_victim(cpu, t, self_marked=False):
    """Set TIF_MEMDIE on one thread with an atomic bit operation. 3.14 does this inline
    (set_tsk_thread_flag(), an atomic set_bit); the name is 4.0's."""
    sync.set_bit(cpu, cpu.m.v_task_tif, t, TIF_MEMDIE)
    tp.trace_mark_victim(cpu, cpu.m.v_task_pid[t], int(self_marked))


def _children(m, t):
    """Child processes of thread t (group leaders whose real parent is t), in creation order."""
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    return rows[(m.task_parent[:n] == t) & (m.task_leader[:n] == rows)].tolist()


def _record_kill(cpu, victim, points, kind):
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
            m.kill_comm[i] = m.task_comm[victim]
        m.glob[G_NR_KILLS] = i + 1
        m.glob[G_LAST_KILL_JIFFY] = ktime.jiffies(m)


def oom_kill_process(cpu, p, gfp_mask, order, points, totalpages, memcg, nodemask, message, kind=KILL_VICTIM):
    """Kill p (or its worst child), every other process sharing its mm, and mark the victim TIF_MEMDIE.

    Follows: mm/oom_kill.c oom_kill_process(), 3.14 (KERNEL §5.1), step for step.
    """
    m = cpu.m
    if m.v_task_flags[p] & PF_EXITING:
        mark_tsk_oom_victim(cpu, p)  # it is already on its way out: let it use the reserves
        return
    if ratelimit.__ratelimit(cpu, G_OOM_RS, "oom_kill_process"):
        dump_header(cpu, p, gfp_mask, order, memcg, nodemask)
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
    c = m.mm[mm]
    printk.printk(cpu, printk.KERN_ERR, f"Killed process {m.v_task_pid[victim]} ({printk.task_comm(m, victim)}) "
                                        f"total-vm:{K(c[MM_TOTAL_VM])}kB, anon-rss:{K(c[MM_ANONPAGES])}kB, "
                                        f"file-rss:{K(c[MM_FILEPAGES])}kB")
    task_unlock(cpu, victim)
    _kill_sharers(cpu, victim, mm)
    mark_tsk_oom_victim(cpu, victim)
    vmstat.count_vm_event(cpu, vmstat.NR_KILLS)
    tp.trace_oom_kill(cpu, m.v_task_pid[victim], points, kind, m.v_sig_oom_score_adj[m.v_task_leader[victim]],
                      int(bool(m.v_task_flags[victim] & PF_KTHREAD)))
    _record_kill(cpu, victim, points, kind)
    ksignal.do_send_sig_info(cpu, SIGKILL, victim, True)


def _sacrifice_child(cpu, p, memcg, nodemask, totalpages):
    """The child (with its own mm) of any of p's threads with the highest badness above 0, else p itself.

    Follows: the child loop of oom_kill_process(), 3.14 (KERNEL §5.1 step 4); victim_points starts at 0
    and the parent's own score is not compared.
    """
    m = cpu.m
    victim, victim_points = p, 0
    p_mm = m.v_task_mm[p]
    with sync.spinlock(cpu, L_TASKLIST):
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
    """SIGKILL every other process using mm, except kernel threads and OOM_SCORE_ADJ_MIN ones (3.14)."""
    m = cpu.m
    victim_leader = m.v_task_leader[victim]
    for q in _processes(m):
        if m.v_task_mm[q] != mm or q == victim_leader or m.v_task_flags[q] & PF_KTHREAD:
            continue
        if m.v_sig_oom_score_adj[q] == OOM_SCORE_ADJ_MIN and _oom_score_adj_min_honoured(cpu):
            continue  # left alive, and so the mm is never freed (KERNEL §9 R5)
        task_lock(cpu, q)
        printk.printk(cpu, printk.KERN_ERR, f"Kill process {m.v_task_pid[q]} ({printk.task_comm(m, q)}) "
                                            "sharing same memory")
        task_unlock(cpu, q)
        vmstat.count_vm_event(cpu, vmstat.NR_SHARER_KILLS)
        tp.trace_oom_kill_sharer(cpu, m.v_task_pid[q], mm, m.v_sig_oom_score_adj[q], 0)
        ksignal.do_send_sig_info(cpu, SIGKILL, q, True)


# --- constraint and panic ------------------------------------------------------------------------------------

def constrained_alloc(m, zonelist, gfp_mask, nodemask):
    """The allocation's constraint and the pages it may use. Follows: constrained_alloc(), 3.14 (KERNEL §3.1).

    Differs: no cpusets or mempolicies exist, so the answer is always CONSTRAINT_NONE over all RAM and swap.
    """
    return CONSTRAINT_NONE, int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])


def check_panic_on_oom(cpu, constraint, gfp_mask, order, nodemask):
    """panic_on_oom: 1 panics for system-wide OOMs, 2 for all. Follows: check_panic_on_oom(), 3.14 (§3.3)."""
    mode = cpu.scenario.sysctl.panic_on_oom
    if not mode:
        return
    if mode != 2 and constraint != CONSTRAINT_NONE:
        return
    dump_header(cpu, -1, gfp_mask, order, None, nodemask)
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
            if not locked:
                _widen_race_window()
            for z in zones:
                vz[z * Z_NCOLS + Z_FLAGS] |= ZONE_OOM_LOCKED
        seq = m.v_glob[G_OOM_SEQ]
        m.v_glob[G_OOM_SEQ] = seq + 1
        tp.trace_oom_lock_try(cpu, ret, _zone_mask(zones), seq=seq + 1)
    finally:
        if locked:
            sync.spin_unlock(cpu, L_ZONE_SCAN)
    if not ret:
        vmstat.count_vm_event(cpu, vmstat.NR_OOM_LOCK_BUSY)  # from the allocator and the page-fault path alike
    return ret


def _widen_race_window():
    """Debug break only: widen the check-then-set window the missing lock leaves open (2 ms)."""
    import time
    time.sleep(0.002)


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
            vz[z * Z_NCOLS + Z_FLAGS] &= ~ZONE_OOM_LOCKED


# --- out_of_memory ---------------------------------------------------------------------------------------------

async def out_of_memory(cpu, zonelist, gfp_mask, order, nodemask, force_kill, from_kworker=False):
    """Kill the worst task to free memory, or let a dying current use the reserves.

    Follows: mm/oom_kill.c out_of_memory(), 3.14 (KERNEL §3.2), step for step. `from_kworker` runs it as the
    SysRq-F work item would, with a kernel thread as current (no current-based shortcuts, no sleep).
    """
    m = cpu.m
    cur = -1 if from_kworker else cpu.current
    vmstat.count_vm_event(cpu, vmstat.NR_OOM_INVOCATIONS)
    freed = sum(notifier(cpu) for notifier in m.oom_notify_list)
    if freed > 0:
        return  # got some memory back in the last second
    if cur >= 0 and (ksignal.fatal_signal_pending(m, cur) or m.v_task_flags[cur] & PF_EXITING):
        vmstat.count_vm_event(cpu, vmstat.NR_SELF_MEMDIE)
        mark_tsk_oom_victim(cpu, cur, self_marked=True)
        return
    constraint, totalpages = constrained_alloc(m, zonelist, gfp_mask, nodemask)
    mpol_mask = None
    tp.trace_out_of_memory(cpu, constraint, totalpages, gfp_mask, order, int(force_kill))
    check_panic_on_oom(cpu, constraint, gfp_mask, order, mpol_mask)
    if (cpu.scenario.sysctl.oom_kill_allocating_task and cur >= 0 and m.v_task_mm[cur] != -1
            and not oom_unkillable_task(m, cur, None, nodemask)
            and m.v_sig_oom_score_adj[m.v_task_leader[cur]] != OOM_SCORE_ADJ_MIN):
        oom_kill_process(cpu, cur, gfp_mask, order, 0, totalpages, None, nodemask,
                         "Out of memory (oom_kill_allocating_task)", KILL_ALLOCATING)
        return  # no sleep in this mode (KERNEL §9 R9)
    p, points = select_bad_process(cpu, totalpages, mpol_mask, force_kill)
    if p == -1:
        dump_header(cpu, -1, gfp_mask, order, None, mpol_mask)
        printk.panic(cpu, "Out of memory and no killable processes...\n")
    killed = False
    if p == ABORT:
        vmstat.count_vm_event(cpu, vmstat.NR_SCAN_ABORTS)
    else:
        oom_kill_process(cpu, p, gfp_mask, order, points, totalpages, None, nodemask, "Out of memory",
                         KILL_SYSRQ if force_kill else KILL_VICTIM)
        killed = True
    if killed and cur >= 0:
        # Give the victim a jiffy to exit and free its memory; a fatal signal ends the wait at once.
        await ksched.schedule_timeout_killable(cpu, 1)


async def pagefault_out_of_memory(cpu):
    """A user fault that failed with VM_FAULT_OOM: OOM-kill if the lock is free, else just return and re-fault.

    Follows: mm/oom_kill.c pagefault_out_of_memory(), 3.14 (KERNEL §1.6). No memcg exists.
    """
    zonelist = page_alloc.node_zonelist(cpu.m, 0, GFP_KERNEL)  # first_online_node
    if try_set_zonelist_oom(cpu, zonelist, GFP_KERNEL):
        await out_of_memory(cpu, None, 0, 0, None, False)
        clear_zonelist_oom(cpu, zonelist, GFP_KERNEL)
