"""Memory cgroups: charging every page a task gets, reclaim within a cgroup, and the memcg OOM path.

Follows mm/memcontrol.c of Linux 3.14 (KERNEL §1.7, §3.3, §3.4; DESIGN §10), cgroup v1 with use_hierarchy:
a page is charged to the memcg of its mm's owner (`mem_cgroup_charge_anon` for an anonymous fault,
`mem_cgroup_cache_charge` for page cache) and counts in that memcg and every ancestor (res_counter); a charge
that would pass a limit reclaims within the over-limit memcg's subtree, retries, and at last records a memcg
OOM in the task (`mem_cgroup_oom`), which the end of the page fault handles (`mem_cgroup_oom_synchronize`):
under the subtree's oom_lock (memcg_oom_lock) one task selects and kills within the subtree, the others sleep
killably on memcg_oom_waitq until an uncharge, a limit change or the kill's unlock wakes them. The memcg lock is
independent of the zonelist lock (R4's memcg form); with `oom_lock_mutex` (4.2) mem_cgroup_out_of_memory also
holds the global oom_lock. Freed pages are uncharged where they are freed (exit, munmap, the reaper, reclaim).

The table lives in the machine (`m.memcg`, row 0 the root "/", which is never charged, as 3.14 does not charge
the root res_counter), with `page_memcg` as page_cgroup->mem_cgroup and `task_memcg` as the task's cgroup.

Differs: one lock for every res_counter, no per-CPU charge stock (every page charges the counters), no
memory+swap or kmem accounting (their dump lines print 0 usage and an unlimited limit), no move of charges
when a task moves (memory.move_charge_at_immigrate = 0, v1's default), no eventfd notifications; the root is a
pure container.
"""
import numpy as np

from oomemu import sync
from oomemu.include.gfp import __GFP_NOFAIL, __GFP_NORETRY, __GFP_WAIT
from oomemu.include.mmzone import PAGE_SHIFT
from oomemu.include.oom import (CONSTRAINT_MEMCG, OOM_SCAN_ABORT, OOM_SCAN_CONTINUE, OOM_SCAN_OK,
                                OOM_SCAN_SELECT)
from oomemu.include.sched import PF_EXITING, TASK_KILLABLE, TASK_NORMAL, TASK_RUNNING, TIF_MEMDIE
from oomemu.kernel import printk
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.machine import (G_NR_TASK_ROWS, G_TOTAL_SWAP, L_MEMCG_OOM, L_MEMCG_RES, L_MEMCG_WAITQ,
                            MEMCG_DEPTH, MEMCG_FAILCNT, MEMCG_LIMIT, MEMCG_LOCAL, MEMCG_MAX_USAGE,
                            MEMCG_NR_OOM, MEMCG_OOM_GROUP, MEMCG_OOM_KILL_DISABLE, MEMCG_OOM_KILLS,
                            MEMCG_OOM_LOCK, MEMCG_PARENT, MEMCG_SWAPPINESS, MEMCG_UNDER_OOM, MEMCG_UNLIMITED,
                            MEMCG_USAGE, MM_NCOLS, MM_OWNER)
from oomemu.trace import events as tp
from oomemu.trace.events import WAIT_MEMCG_OOM, WAIT_NONE

ROOT_MEM_CGROUP = 0
MEM_CGROUP_RECLAIM_RETRIES = 5
DEFAULT_SWAPPINESS = 60          # vm_swappiness, which a new memcg inherits
ENOMEM = 12
EINTR = 4
EBUSY = 16
RESIZE_RETRIES = 5               # mem_cgroup_resize_limit's MEM_CGROUP_RECLAIM_RETRIES per child memcg


# --- the table ------------------------------------------------------------------------------------------------

def mem_cgroup_init(m, scenario):
    """Fill the memcg table from the scenario's [[cgroup]]s (parents implied by the paths, parents first).

    Follows the effect of creating each cgroup directory (mem_cgroup_css_alloc, 3.14) and writing its
    memory.limit_in_bytes, memory.oom_control and memory.swappiness. Emulator-only: runs at boot.
    """
    if not m.memcg_enabled:
        return
    from oomemu.config.load import cgroup_paths
    m.memcg_names = ["/"] + cgroup_paths(scenario.cgroups)
    index = {name: i for i, name in enumerate(m.memcg_names)}
    cfg = {cg.name: cg for cg in scenario.cgroups}
    m.memcg[:] = 0
    m.memcg[:, MEMCG_LIMIT] = MEMCG_UNLIMITED
    m.memcg[:, MEMCG_SWAPPINESS] = DEFAULT_SWAPPINESS
    m.memcg[ROOT_MEM_CGROUP, MEMCG_PARENT] = -1
    for name, row in index.items():
        if row == ROOT_MEM_CGROUP:
            continue
        parent = name.rsplit("/", 1)[0] or "/"
        m.memcg[row, MEMCG_PARENT] = index[parent]
        m.memcg[row, MEMCG_DEPTH] = m.memcg[index[parent], MEMCG_DEPTH] + 1
        m.memcg[row, MEMCG_SWAPPINESS] = m.memcg[index[parent], MEMCG_SWAPPINESS]
        cg = cfg.get(name)
        if cg is None:
            continue
        if cg.limit is not None:
            m.memcg[row, MEMCG_LIMIT] = -(-cg.limit >> PAGE_SHIFT)
        m.memcg[row, MEMCG_OOM_KILL_DISABLE] = int(cg.oom_kill_disable)
        if cg.swappiness is not None:
            m.memcg[row, MEMCG_SWAPPINESS] = cg.swappiness
        m.memcg[row, MEMCG_OOM_GROUP] = int(cg.oom_group)


def memcg_name(m, memcg):
    """The cgroup path of `memcg` ("/" for the root). Follows: cgroup_path()."""
    return m.memcg_names[memcg]


def parent_mem_cgroup(m, memcg):
    """The parent memcg, or -1 for the root. Follows: parent_mem_cgroup(), 3.14."""
    return m.v_memcg[memcg * m.memcg.shape[1] + MEMCG_PARENT]


def mem_cgroup_is_descendant(m, memcg, root):
    """True if `memcg` is `root` or below it. Follows: mem_cgroup_same_or_subtree(), 3.14."""
    while memcg >= 0:
        if memcg == root:
            return True
        memcg = parent_mem_cgroup(m, memcg)
    return False


def subtree_mask(m, root):
    """A bool per memcg row: in root's subtree. Emulator-only: for_each_mem_cgroup_tree() as a mask."""
    mask = np.zeros(m.nr_memcgs, dtype=bool)
    for row in range(m.nr_memcgs):
        mask[row] = mem_cgroup_is_descendant(m, row, root)
    return mask


def for_each_mem_cgroup_tree(m, root):
    """The memcgs of root's subtree, root first, parents before children. Follows: for_each_mem_cgroup_tree()."""
    return [row for row in range(m.nr_memcgs) if mem_cgroup_is_descendant(m, row, root)]


def mem_cgroup_from_task(m, task):
    """The memcg `task` belongs to. Follows: mem_cgroup_from_task(), 3.14."""
    return m.v_task_memcg[task]


def mem_cgroup_from_mm(m, mm):
    """The memcg an mm's pages are charged to: that of mm->owner. Follows: try_get_mem_cgroup_from_mm(), 3.14.

    Differs: mm->owner is the task that made the mm and is not handed on when it exits first.
    """
    return m.v_task_memcg[m.v_mm[mm * MM_NCOLS + MM_OWNER]]


def task_in_mem_cgroup(m, task, memcg):
    """True if task's memcg is memcg or below it. Follows: task_in_mem_cgroup(), 3.14."""
    return mem_cgroup_is_descendant(m, m.v_task_memcg[task], memcg)


def mem_cgroup_margin(m, memcg):
    """Pages that can still be charged to memcg before its limit. Follows: mem_cgroup_margin(), 3.14."""
    row = m.memcg[memcg]
    return max(0, int(row[MEMCG_LIMIT]) - int(row[MEMCG_USAGE]))


def mem_cgroup_get_limit(m, memcg):
    """The limit in pages, plus swap when swappiness lets the memcg swap. Follows: mem_cgroup_get_limit(), 3.14
    (no memsw limit exists here, so the swap is never capped)."""
    limit = int(m.memcg[memcg, MEMCG_LIMIT])
    if m.memcg[memcg, MEMCG_SWAPPINESS]:
        limit += int(m.glob[G_TOTAL_SWAP])
    return limit


# --- res_counter ------------------------------------------------------------------------------------------------

def res_counter_charge(cpu, memcg, nr):
    """Charge nr pages to memcg and every ancestor below the root, all or nothing; -1 on success, else the
    memcg whose limit refused it (its failcnt counted). Follows: kernel/res_counter.c res_counter_charge(), 3.14."""
    m = cpu.m
    mc = m.memcg
    with sync.spinlock(cpu, L_MEMCG_RES):
        row = memcg
        while row > ROOT_MEM_CGROUP:
            if mc[row, MEMCG_USAGE] + nr > mc[row, MEMCG_LIMIT]:
                mc[row, MEMCG_FAILCNT] += 1
                undo = memcg
                while undo != row:
                    mc[undo, MEMCG_USAGE] -= nr
                    undo = int(mc[undo, MEMCG_PARENT])
                return row
            mc[row, MEMCG_USAGE] += nr
            if mc[row, MEMCG_USAGE] > mc[row, MEMCG_MAX_USAGE]:
                mc[row, MEMCG_MAX_USAGE] = mc[row, MEMCG_USAGE]
            row = int(mc[row, MEMCG_PARENT])
        mc[memcg, MEMCG_LOCAL] += nr
    return -1


def _uncharge_locked(m, memcg, nr):
    """Take nr pages off memcg and its ancestors (L_MEMCG_RES held). Follows: res_counter_uncharge(), 3.14."""
    mc = m.memcg
    mc[memcg, MEMCG_LOCAL] -= nr
    row = memcg
    while row > ROOT_MEM_CGROUP:
        mc[row, MEMCG_USAGE] -= nr
        row = int(mc[row, MEMCG_PARENT])


def commit_charge(m, memcg, pfn):
    """Record the page as charged to memcg. Follows: __mem_cgroup_commit_charge() (pc->mem_cgroup), 3.14."""
    m.v_page_memcg[pfn] = memcg


def mem_cgroup_uncharge_page(cpu, pfn):
    """Uncharge one page being freed; returns its memcg (or -1). Caller holds the page's zone->lock.

    Follows: mm/memcontrol.c mem_cgroup_uncharge_page() / __mem_cgroup_uncharge_common(), 3.14.
    """
    m = cpu.m
    memcg = m.v_page_memcg[pfn]
    if memcg < 0:
        return -1
    m.v_page_memcg[pfn] = -1
    with sync.spinlock(cpu, L_MEMCG_RES):
        _uncharge_locked(m, memcg, 1)
    return memcg


def mem_cgroup_uncharge_pages(cpu, pfns):
    """Uncharge many pages being freed (an exiting or reaped mm); returns the memcgs they were charged to.
    Caller holds their zone->lock.

    Follows: mem_cgroup_uncharge_start() … mem_cgroup_uncharge_page() … mem_cgroup_uncharge_end(), 3.14 (the
    batch). The `memcg_uncharge_leak` break forgets to take one page of each batch off the counters.
    """
    m = cpu.m
    memcgs = m.page_memcg[pfns]
    charged = memcgs >= 0
    if not charged.any():
        return []
    rows, counts = np.unique(memcgs[charged], return_counts=True)
    m.page_memcg[pfns] = -1
    leak = "memcg_uncharge_leak" in cpu.debug_break
    with sync.spinlock(cpu, L_MEMCG_RES):
        for memcg, nr in zip(rows.tolist(), counts.tolist()):
            _uncharge_locked(m, memcg, nr - 1 if leak else nr)
    return rows.tolist()


def memcg_oom_recover(cpu, memcgs):
    """Wake the OOM waiters of each memcg that is under OOM: memory came back. Follows: memcg_oom_recover(),
    3.14 (called by mem_cgroup_uncharge_end, a limit change and the OOM unlock)."""
    m = cpu.m
    for memcg in memcgs:
        if memcg >= 0 and m.memcg[memcg, MEMCG_UNDER_OOM]:
            memcg_wakeup_oom(cpu, memcg)


def charge_preset(m, mm):
    """Charge the pages a scenario's `mm` preset put into mm at boot, ignoring the limit. Emulator-only."""
    if not m.memcg_enabled:
        return
    memcg = mem_cgroup_from_mm(m, mm)
    if memcg == ROOT_MEM_CGROUP:
        return
    from oomemu.machine import PAGE_ANON, PAGE_FILE
    pfns = ((m.page_owner == mm) & ((m.page_kind == PAGE_ANON) | (m.page_kind == PAGE_FILE))).nonzero()[0]
    m.page_memcg[pfns] = memcg
    m.memcg[memcg, MEMCG_LOCAL] += len(pfns)
    row = memcg
    while row > ROOT_MEM_CGROUP:
        m.memcg[row, MEMCG_USAGE] += len(pfns)
        m.memcg[row, MEMCG_MAX_USAGE] = max(m.memcg[row, MEMCG_MAX_USAGE], m.memcg[row, MEMCG_USAGE])
        row = int(m.memcg[row, MEMCG_PARENT])


# --- charging ---------------------------------------------------------------------------------------------------

def task_in_memcg_oom(m, task):
    """A memcg OOM is recorded in task and not yet handled. Follows: task_in_memcg_oom(), 3.14."""
    return m.v_task_memcg_oom[task] >= 0


def mem_cgroup_oom(cpu, memcg, gfp_mask, order):
    """Record the OOM in current for the end of the fault (only user faults may OOM: memcg_oom.may_oom).

    Follows: mm/memcontrol.c mem_cgroup_oom(), 3.14. Differs: every fault the programs make is a user fault, so
    may_oom is always on; the gfp mask and order are not kept (the report prints the charge's GFP_KERNEL).
    """
    m = cpu.m
    m.v_task_memcg_oom[cpu.current] = memcg
    with sync.spinlock(cpu, L_MEMCG_RES):
        m.memcg[memcg, MEMCG_NR_OOM] += 1


async def mem_cgroup_charge(cpu, mm, pfn, gfp_mask):
    """Charge a newly allocated page of mm to its memcg; 0 (charged, or bypassed to the root) or -ENOMEM.

    Follows: mm/memcontrol.c mem_cgroup_charge_common() → __mem_cgroup_try_charge() → mem_cgroup_do_charge(),
    3.14 (KERNEL §1.7): a dying or TIF_MEMDIE task bypasses (charged to the root); a task with an OOM pending
    fails at once; an over-limit charge reclaims within the memcg that refused it and retries while that
    frees something; after MEM_CGROUP_RECLAIM_RETRIES fruitless rounds the OOM is recorded and the charge fails.
    __GFP_NOFAIL never declares OOM (it bypasses), __GFP_NORETRY fails without reclaim.
    """
    m = cpu.m
    memcg = mem_cgroup_from_mm(m, mm)
    if memcg == ROOT_MEM_CGROUP:
        return 0
    cur = cpu.current
    if (m.v_task_tif[cur] & TIF_MEMDIE or ksignal.fatal_signal_pending(m, cur)
            or m.v_task_flags[cur] & PF_EXITING):
        return 0                                   # bypass: -EINTR, charged to the root
    if task_in_memcg_oom(m, cur):
        return -ENOMEM
    nr_oom_retries = MEM_CGROUP_RECLAIM_RETRIES
    while True:
        over = res_counter_charge(cpu, memcg, 1)
        if over < 0:
            commit_charge(m, memcg, pfn)
            return 0
        if not gfp_mask & __GFP_WAIT:
            return -ENOMEM                          # CHARGE_WOULDBLOCK
        if gfp_mask & __GFP_NORETRY:
            return -ENOMEM
        sync.sched_point(cpu, "memcg.charge_reclaim", over)
        reclaimed = mem_cgroup_reclaim(cpu, over, gfp_mask)
        tp.trace_mm_memcg_charge_fail(cpu, over, int(m.memcg[over, MEMCG_USAGE]), int(m.memcg[over, MEMCG_LIMIT]),
                                      nr_oom_retries, reclaimed)
        if mem_cgroup_margin(m, over) >= 1 or reclaimed:
            continue                                # CHARGE_RETRY
        if ksignal.fatal_signal_pending(m, cur):
            return 0                                # bypass
        if gfp_mask & __GFP_NOFAIL:
            return 0                                # bypass: never OOM
        if nr_oom_retries:
            nr_oom_retries -= 1                     # CHARGE_NOMEM, not yet invoke_oom
            await ksched.cond_resched(cpu)
            continue
        mem_cgroup_oom(cpu, over, gfp_mask, 0)      # invoke_oom
        return -ENOMEM


def mem_cgroup_reclaim(cpu, memcg, gfp_mask):
    """Reclaim within memcg's subtree; pages reclaimed. Follows: mm/memcontrol.c mem_cgroup_reclaim(), 3.14,
    with anonymous pages only while the memcg's swappiness is above 0 (get_scan_count's SCAN_FILE)."""
    from oomemu.mm import vmscan
    m = cpu.m
    may_swap = bool(m.memcg[memcg, MEMCG_SWAPPINESS])
    return vmscan.try_to_free_mem_cgroup_pages(cpu, subtree_mask(m, memcg), 1, gfp_mask, may_swap)


# --- the OOM lock, the wait queue and the end of the fault -----------------------------------------------------

def mem_cgroup_oom_trylock(cpu, memcg):
    """Set oom_lock on every memcg of the subtree, all or nothing; True if taken.

    Follows: mm/memcontrol.c mem_cgroup_oom_trylock(), 3.14: under memcg_oom_lock, a subtree member already
    locked rolls back the ones set so far.
    """
    m = cpu.m
    mc = m.memcg
    with sync.spinlock(cpu, L_MEMCG_OOM):
        done = []
        failed = False
        for row in for_each_mem_cgroup_tree(m, memcg):
            if mc[row, MEMCG_OOM_LOCK]:
                failed = True
                break
            sync.sched_point(cpu, "memcg.oom_trylock", row)
            mc[row, MEMCG_OOM_LOCK] = 1
            done.append(row)
        if failed:
            for row in done:
                mc[row, MEMCG_OOM_LOCK] = 0
        tp.trace_mem_cgroup_oom_lock(cpu, memcg, int(not failed))
    return not failed


def mem_cgroup_oom_unlock(cpu, memcg):
    """Clear oom_lock on the whole subtree. Follows: mm/memcontrol.c mem_cgroup_oom_unlock(), 3.14."""
    m = cpu.m
    with sync.spinlock(cpu, L_MEMCG_OOM):
        for row in for_each_mem_cgroup_tree(m, memcg):
            m.memcg[row, MEMCG_OOM_LOCK] = 0
        tp.trace_mem_cgroup_oom_unlock(cpu, memcg)


def mem_cgroup_mark_under_oom(cpu, memcg):
    """under_oom + 1 on the subtree. Follows: mem_cgroup_mark_under_oom(), 3.14."""
    m = cpu.m
    with sync.spinlock(cpu, L_MEMCG_RES):
        for row in for_each_mem_cgroup_tree(m, memcg):
            m.memcg[row, MEMCG_UNDER_OOM] += 1


def mem_cgroup_unmark_under_oom(cpu, memcg):
    """under_oom - 1 (not below 0) on the subtree. Follows: mem_cgroup_unmark_under_oom(), 3.14."""
    m = cpu.m
    with sync.spinlock(cpu, L_MEMCG_RES):
        for row in for_each_mem_cgroup_tree(m, memcg):
            if m.memcg[row, MEMCG_UNDER_OOM] > 0:
                m.memcg[row, MEMCG_UNDER_OOM] -= 1


def memcg_wakeup_oom(cpu, memcg):
    """Wake every memcg_oom_waitq sleeper whose OOM memcg is memcg's ancestor or descendant.

    Follows: mm/memcontrol.c memcg_wakeup_oom() with memcg_oom_wake_function() (autoremove), 3.14.
    """
    m = cpu.m
    wq = m.wq_memcg_oom()
    woken = []
    with sync.spinlock(cpu, L_MEMCG_WAITQ):
        t = sync.wq_peek(m, wq)
        while t != -1:
            nxt = m.v_task_wq_next[t]
            waiting_on = m.v_task_wait_obj[t]
            if mem_cgroup_is_descendant(m, waiting_on, memcg) or mem_cgroup_is_descendant(m, memcg, waiting_on):
                sync.wq_remove(cpu, wq, t)
                m.v_task_wait_kind[t] = WAIT_NONE
                woken.append(t)
            t = nxt
    for t in woken:
        old_state = sync.try_to_wake_up(cpu, t, TASK_NORMAL)
        if old_state:
            tp.trace_wakeup(cpu, m.v_task_pid[t], old_state, tp.WAKE_EARLY)


def _prepare_to_wait(cpu, memcg):
    m = cpu.m
    cur = cpu.current
    with sync.spinlock(cpu, L_MEMCG_WAITQ):
        m.v_task_wait_kind[cur] = WAIT_MEMCG_OOM
        m.v_task_wait_obj[cur] = memcg
        sync.wq_add_tail(cpu, m.wq_memcg_oom(), cur)
        ksched.set_current_state(cpu, TASK_KILLABLE)


def _finish_wait(cpu):
    m = cpu.m
    cur = cpu.current
    ksched.__set_current_state(cpu, TASK_RUNNING)
    with sync.spinlock(cpu, L_MEMCG_WAITQ):
        if m.v_task_wait_kind[cur] == WAIT_MEMCG_OOM:
            sync.wq_remove(cpu, m.wq_memcg_oom(), cur)
        m.v_task_wait_kind[cur] = WAIT_NONE
        m.v_task_wait_obj[cur] = -1


async def mem_cgroup_oom_synchronize(cpu, handle):
    """Handle the memcg OOM the fault recorded; False if there was none.

    Follows: mm/memcontrol.c mem_cgroup_oom_synchronize(), 3.14 (KERNEL §1.7): on memcg_oom_waitq in
    TASK_KILLABLE, mark the hierarchy under_oom, try the subtree's oom_lock; the locker kills (unless
    oom_kill_disable), everyone else sleeps until woken; the locker then unlocks and wakes the sleepers.
    """
    m = cpu.m
    cur = cpu.current
    memcg = m.v_task_memcg_oom[cur]
    if memcg < 0:
        return False
    if handle:
        _prepare_to_wait(cpu, memcg)
        mem_cgroup_mark_under_oom(cpu, memcg)
        locked = mem_cgroup_oom_trylock(cpu, memcg)
        if locked and not m.memcg[memcg, MEMCG_OOM_KILL_DISABLE]:
            mem_cgroup_unmark_under_oom(cpu, memcg)
            _finish_wait(cpu)
            await mem_cgroup_out_of_memory(cpu, memcg, _CHARGE_GFP, 0)
        else:
            tp.trace_sleep(cpu, TASK_KILLABLE, WAIT_MEMCG_OOM, memcg)
            sync.sched_point(cpu, "memcg.oom_wait", memcg)
            await ksched.schedule(cpu)
            mem_cgroup_unmark_under_oom(cpu, memcg)
            _finish_wait(cpu)
        if locked:
            mem_cgroup_oom_unlock(cpu, memcg)
            memcg_oom_recover(cpu, [memcg])
    m.v_task_memcg_oom[cur] = -1
    return True


from oomemu.include.gfp import GFP_KERNEL as _CHARGE_GFP   # noqa: E402  (3.14 charges faults with GFP_KERNEL)


# --- mem_cgroup_out_of_memory ------------------------------------------------------------------------------------

def _subtree_tasks(m, memcg):
    """Task rows of every memcg of the subtree in for_each_mem_cgroup_tree + css_task_iter order (memcg by
    memcg, each in creation order). Emulator-only."""
    from oomemu.mm import oom_kill
    order = oom_kill.scan_order(m)
    mine = m.task_memcg[order]
    out = []
    for row in for_each_mem_cgroup_tree(m, memcg):
        out.extend(order[mine == row].tolist())
    return out


async def mem_cgroup_out_of_memory(cpu, memcg, gfp_mask, order):
    """Kill the worst task of memcg's subtree, with totalpages = the memcg's limit.

    Follows: mm/memcontrol.c mem_cgroup_out_of_memory(), 3.14 (KERNEL §1.7): a dying current takes TIF_MEMDIE
    and returns; check_panic_on_oom(CONSTRAINT_MEMCG); each subtree task through oom_scan_process_thread() and
    oom_badness(); an ABORT ends it; no candidate ends it quietly (no panic); oom_kill_process with "Memory
    cgroup out of memory". Switches: `oom_lock_mutex` (4.2, C-dc56401: the whole body under mutex_lock(&oom_lock),
    so memcg OOMs and global ones no longer run in parallel), `memcg_oom_group` (4.19: the victim's oom_group
    cgroup is killed whole).
    """
    from oomemu.mm import oom_kill
    if cpu.features.oom_lock_mutex:
        await oom_kill.mutex_lock_oom_lock(cpu)
        try:
            return _mem_cgroup_out_of_memory(cpu, memcg, gfp_mask, order)
        finally:
            oom_kill.mutex_unlock_oom_lock(cpu)
    return _mem_cgroup_out_of_memory(cpu, memcg, gfp_mask, order)


def _mem_cgroup_out_of_memory(cpu, memcg, gfp_mask, order):
    """The body of mem_cgroup_out_of_memory() (mm/memcontrol.c, 3.14), run with 4.2's oom_lock held or not;
    the kill's score is select_bad_process()'s (oom_kill.chosen_score)."""
    from oomemu.mm import oom_kill
    m = cpu.m
    f = cpu.features
    cur = cpu.current
    totalpages = mem_cgroup_get_limit(m, memcg) or 1
    from oomemu.mm import vmstat
    vmstat.count_vm_event(cpu, vmstat.NR_OOM_INVOCATIONS)
    tp.trace_mem_cgroup_out_of_memory(cpu, memcg, totalpages, int(m.memcg[memcg, MEMCG_USAGE]),
                                      int(m.memcg[memcg, MEMCG_LIMIT]))
    killed = 0
    try:
        if ksignal.fatal_signal_pending(m, cur) or m.v_task_flags[cur] & PF_EXITING:
            oom_kill.mark_oom_victim(cpu, cur, self_marked=True)
            return True
        oom_kill.check_panic_on_oom(cpu, CONSTRAINT_MEMCG, gfp_mask, order, None)
        tp.trace_out_of_memory(cpu, CONSTRAINT_MEMCG, totalpages, gfp_mask, order, 0)
        sync.sched_point(cpu, "memcg.oom_select", memcg)
        chosen, chosen_points = -1, 0
        rows = _subtree_tasks(m, memcg)
        for task in rows:
            verdict = oom_kill.oom_scan_process_thread(m, task, totalpages, None, False, f)
            if verdict == OOM_SCAN_SELECT:
                chosen, chosen_points = task, oom_kill.ULONG_MAX
                continue
            if verdict == OOM_SCAN_CONTINUE:
                continue
            if verdict == OOM_SCAN_ABORT:
                tp.trace_oom_scan_result(cpu, 0, 0, m.v_task_pid[task], len(rows))
                return False
            points = oom_kill.oom_badness(cpu, task, memcg, None, totalpages)
            tp.trace_oom_scan_candidate(cpu, m.v_task_pid[task], points, tp.CAND_SCAN, 0)
            if points == oom_kill.not_eligible(f) or (chosen != -1 and points < chosen_points):
                continue
            if chosen != -1 and points == chosen_points and m.v_task_leader[chosen] == chosen:
                continue
            chosen, chosen_points = task, points
        if chosen == -1:
            tp.trace_oom_scan_result(cpu, 0, 0, 0, len(rows))
            return False
        tp.trace_oom_scan_result(cpu, m.v_task_pid[chosen], chosen_points, 0, len(rows))
        points = oom_kill.chosen_score(f, chosen_points, totalpages)
        sync.sched_point(cpu, "memcg.oom_kill", chosen)
        group = mem_cgroup_get_oom_group(m, chosen, memcg) if f.memcg_oom_group else -1
        killed = m.v_task_pid[chosen]
        oom_kill.oom_kill_process(cpu, chosen, gfp_mask, order, points, totalpages, memcg, None,
                                  "Memory cgroup out of memory", oom_kill.KILL_MEMCG)
        if group >= 0:
            mem_cgroup_kill_group(cpu, group, chosen)
        return True
    finally:
        tp.trace_mem_cgroup_oom_done(cpu, memcg, killed)


def note_oom_kill(cpu, victim, memcg):
    """Count an OOM kill in the victim's memcg and its ancestors up to the OOM domain (memory.oom_control's
    oom_kill). Follows: mm/memcontrol.c count_memcg_event_mm(mm, OOM_KILL), 4.13."""
    m = cpu.m
    row = m.v_task_memcg[victim]
    with sync.spinlock(cpu, L_MEMCG_RES):
        while row > ROOT_MEM_CGROUP:
            m.memcg[row, MEMCG_OOM_KILLS] += 1
            if row == memcg:
                break
            row = int(m.memcg[row, MEMCG_PARENT])


def mem_cgroup_get_oom_group(m, victim, oom_domain):
    """The highest memcg from the victim's up to the OOM domain with memory.oom.group set, or -1.

    Follows: mm/memcontrol.c mem_cgroup_get_oom_group(), 4.19 (KERNEL §8).
    """
    found = -1
    row = m.v_task_memcg[victim]
    while row >= 0:
        if m.memcg[row, MEMCG_OOM_GROUP]:
            found = row
        if row == oom_domain:
            break
        row = parent_mem_cgroup(m, row)
    return found


def mem_cgroup_kill_group(cpu, group, victim):
    """Kill every other process of the group's subtree, OOM_SCORE_ADJ_MIN ones excepted.

    Follows: mm/oom_kill.c oom_kill_memcg_member() via mem_cgroup_scan_tasks(), 4.19, after the line "Tasks in
    %s are going to be killed due to memory.oom.group set" (mem_cgroup_print_oom_group).
    """
    from oomemu.include.oom import OOM_SCORE_ADJ_MIN
    from oomemu.include.sched import SIGKILL
    from oomemu.mm import oom_kill
    m = cpu.m
    printk.printk(cpu, printk.KERN_INFO,
                  f"Tasks in {memcg_name(m, group)} are going to be killed due to memory.oom.group set")
    leader = m.v_task_leader[victim]
    for p in oom_kill._processes(m):
        if p == leader or not task_in_mem_cgroup(m, p, group) or oom_kill.oom_unkillable_task(m, p, None, None):
            continue
        if m.v_sig_oom_score_adj[p] == OOM_SCORE_ADJ_MIN or m.v_task_mm[p] == -1:
            continue
        t = oom_kill.find_lock_task_mm(cpu, p)
        if t == -1:
            continue
        oom_kill.mark_oom_victim(cpu, t)        # __oom_kill_process(): mark, report, SIGKILL
        printk.printk(cpu, printk.KERN_ERR, oom_kill.killed_process_line(cpu, t, m.v_task_mm[t],
                                                                         "Memory cgroup out of memory"))
        oom_kill.task_unlock(cpu, t)
        tp.trace_oom_kill(cpu, m.v_task_pid[t], 0, oom_kill.KILL_MEMCG, m.v_sig_oom_score_adj[p], 0)
        oom_kill._record_kill(cpu, t, 0, oom_kill.KILL_MEMCG, group)
        note_oom_kill(cpu, t, group)
        ksignal.do_send_sig_info(cpu, SIGKILL, t, True)


# --- the dump -----------------------------------------------------------------------------------------------

def K(pages):
    return pages << (PAGE_SHIFT - 10)


UNLIMITED_KB = ((1 << 64) - 1) >> 10     # RES_COUNTER_MAX (ULLONG_MAX bytes) printed in kB, as 3.x shows it


def _limit_kb(pages):
    return UNLIMITED_KB if pages >= MEMCG_UNLIMITED else K(pages)


def mem_cgroup_print_oom_info(cpu, memcg, p):
    """The memcg part of the OOM report: whose limit, usage/limit/failcnt, and the subtree's stats.

    Follows: mm/memcontrol.c mem_cgroup_print_oom_info(), 3.14 (KERNEL §3.4 step 4). Switches:
    `oom_kill_summary` (the "Task in … killed as a result of limit of …" line moved into the oom-kill: summary
    as oom_memcg=/task_memcg=; 4.19 in the kernel, with that line's switch here). Differs: the stats line
    has cache and rss only (kB), and memory+swap and kmem print usage 0 with an unlimited limit.
    """
    m = cpu.m
    lines = []
    if not cpu.features.oom_kill_summary:
        task_cg = memcg_name(m, m.v_task_memcg[p]) if p >= 0 else memcg_name(m, memcg)
        lines.append(f"Task in {task_cg} killed as a result of limit of {memcg_name(m, memcg)}")
    row = m.memcg[memcg]
    lines.append(f"memory: usage {K(int(row[MEMCG_USAGE]))}kB, limit {_limit_kb(int(row[MEMCG_LIMIT]))}kB, "
                 f"failcnt {int(row[MEMCG_FAILCNT])}")
    lines.append(f"memory+swap: usage {K(int(row[MEMCG_USAGE]))}kB, limit {UNLIMITED_KB}kB, failcnt 0")
    lines.append(f"kmem: usage 0kB, limit {UNLIMITED_KB}kB, failcnt 0")
    for it in for_each_mem_cgroup_tree(m, memcg):
        cache, rss = mem_cgroup_local_pages(m, it)
        lines.append(f"Memory cgroup stats for {memcg_name(m, it)}: cache:{K(cache)}KB rss:{K(rss)}KB "
                     f"rss_huge:0KB mapped_file:0KB writeback:0KB swap:0KB")
    printk.printk(cpu, printk.KERN_INFO, "\n".join(lines))


def mem_cgroup_local_pages(m, memcg):
    """(page cache, anonymous) pages charged to memcg itself, from the page frame table. Emulator-only."""
    from oomemu.machine import PAGE_FILE
    mine = m.page_memcg == memcg
    cache = int((mine & (m.page_kind == PAGE_FILE)).sum())
    return cache, int(mine.sum()) - cache


# --- writes to the cgroup files ---------------------------------------------------------------------------------

async def mem_cgroup_resize_limit(cpu, memcg, limit_pages):
    """Write memory.limit_in_bytes: shrink by reclaim down to the new limit, or fail with -EBUSY; then wake
    OOM waiters. Follows: mm/memcontrol.c mem_cgroup_resize_limit(), 3.14 (retries per the subtree's size)."""
    m = cpu.m
    retries = RESIZE_RETRIES * len(for_each_mem_cgroup_tree(m, memcg))
    while True:
        with sync.spinlock(cpu, L_MEMCG_RES):
            if m.memcg[memcg, MEMCG_USAGE] <= limit_pages:
                m.memcg[memcg, MEMCG_LIMIT] = limit_pages
                ret = 0
                break
        if ksignal.fatal_signal_pending(m, cpu.current) or not retries:
            ret = -EBUSY
            break
        from oomemu.mm import vmscan
        may_swap = bool(m.memcg[memcg, MEMCG_SWAPPINESS])
        if not vmscan.try_to_free_mem_cgroup_pages(cpu, subtree_mask(m, memcg), 32, _CHARGE_GFP, may_swap):
            retries -= 1
        await ksched.cond_resched(cpu)
    if ret == 0:
        memcg_oom_recover(cpu, [memcg])
    return ret


def mem_cgroup_oom_control_write(cpu, memcg, disable):
    """Write memory.oom_control: oom_kill_disable; clearing it wakes the waiters. Follows:
    mem_cgroup_oom_control_write(), 3.14."""
    m = cpu.m
    m.memcg[memcg, MEMCG_OOM_KILL_DISABLE] = int(disable)
    if not disable:
        memcg_oom_recover(cpu, [memcg])


def mem_cgroup_attach(cpu, task, memcg):
    """Move task's thread group into memcg (a write to cgroup.procs); its charges stay where they are.

    Follows: kernel/cgroup.c cgroup_attach_task() with mem_cgroup_move_task(), 3.14, and
    memory.move_charge_at_immigrate = 0 (nothing is moved).
    """
    m = cpu.m
    leader = m.v_task_leader[task]
    n = int(m.glob[G_NR_TASK_ROWS])
    for t in (m.task_leader[:n] == leader).nonzero()[0].tolist():
        m.v_task_memcg[t] = memcg


# --- memory.oom_control and the counters, for report.json ----------------------------------------------------------

def _live_tasks_in(m, memcg):
    """Tasks of memcg not yet dead (its `tasks` file)."""
    n = int(m.glob[G_NR_TASK_ROWS])
    return int(((m.task_memcg[:n] == memcg) & (m.task_exit_state[:n] == 0) & (m.task_pid[:n] > 0)).sum())


def memcg_report(m):
    """Each memcg's state as its cgroup files show it: usage, limit, failcnt, max usage, and memory.oom_control
    (oom_kill_disable, under_oom, oom_kill). Emulator-only."""
    out = []
    for row in range(m.nr_memcgs):
        r = m.memcg[row]
        cache, rss = mem_cgroup_local_pages(m, row)
        limit = int(r[MEMCG_LIMIT])
        out.append({"name": memcg_name(m, row), "usage_pages": int(r[MEMCG_USAGE]) if row else None,
                    "limit_pages": None if limit >= MEMCG_UNLIMITED else limit,
                    "failcnt": int(r[MEMCG_FAILCNT]), "max_usage_pages": int(r[MEMCG_MAX_USAGE]),
                    "local_pages": int(r[MEMCG_LOCAL]), "cache_pages": cache, "rss_pages": rss,
                    "oom_control": {"oom_kill_disable": int(r[MEMCG_OOM_KILL_DISABLE]),
                                    "under_oom": int(r[MEMCG_UNDER_OOM] > 0), "oom_kill": int(r[MEMCG_OOM_KILLS])},
                    "oom_events": int(r[MEMCG_NR_OOM]), "oom_group": bool(r[MEMCG_OOM_GROUP]),
                    "tasks": _live_tasks_in(m, row)})
    return out
