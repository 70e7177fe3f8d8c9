"""Page reclaim: direct reclaim's "progress", zone_reclaimable, and the kswapd daemon.

Follows mm/vmscan.c of Linux 3.14 (KERNEL §6.6, §6.8). Reclaimable pages are page-cache pages (always) and
anonymous pages (only when swap has free slots), each zone keeping one LRU list per kind, oldest first.

Differs: one list per kind (no active/inactive split), lru_lock folded into zone->lock, no dirty or writeback
pages (every scanned page is reclaimed), no slab shrinkers.
"""
from oomemu import sync
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.kernel import time as ktime
from oomemu.include.gfp import __GFP_FS, GFP_KERNEL, gfp_zone
from oomemu.include.sched import (PF_KTHREAD, TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_NORMAL, TASK_RUNNING)
from oomemu.kernel import cpuset
from oomemu.include.mmzone import (DEF_PRIORITY, KSWAPD_ZONE_BALANCE_GAP_RATIO, MAX_NR_ZONES, NR_FREE_PAGES,
                                   NR_LRU_ANON, NR_LRU_FILE, NR_PAGES_SCANNED, SWAP_CLUSTER_MAX, WMARK_HIGH,
                                   WMARK_LOW, WMARK_MIN, ZONE_NORMAL)
from oomemu.machine import (C_KSWAPD_CLASSZONE, C_KSWAPD_MAX_ORDER, C_KSWAPD_SLEEPING, G_HZ,
                            G_NR_SWAP_FREE, G_OOM_KILLER_DISABLED, G_STOP, L_PFMEMALLOC, L_SWAP, LRU_ANON, LRU_FILE,
                            MM_ANONPAGES, MM_FILEPAGES, MM_NCOLS, MM_SWAPENTS, PG_lru,
                            Z_IDX, Z_LRU_HEAD, Z_LRU_TAIL, Z_MANAGED, Z_NCOLS, Z_NODE, Z_STAT, Z_WMARK)
from oomemu.mm import vmstat
from oomemu.trace import events as tp

_LRU_STAT = (Z_STAT + NR_LRU_FILE, Z_STAT + NR_LRU_ANON)
_FREE = Z_STAT + NR_FREE_PAGES
_SCANNED = Z_STAT + NR_PAGES_SCANNED
# A sleeping kswapd looks up this often (ms) to park for the supervisor's quiescent snapshots: the CPUs stay
# parked until every worker has, so this bounds how long a snapshot stops the machine.
KSWAPD_PAUSE_POLL_MS = 5


# --- LRU lists (zone->lock held) -----------------------------------------------------------------------------

def add_page_to_lru_list(m, z, pfn, lru):
    """Append `pfn` (newest) to zone z's LRU `lru`. Caller holds zone->lock.

    Follows: include/linux/mm_inline.h add_page_to_lru_list(), 3.14.
    """
    vz, nxt, prv = m.v_zone, m.v_page_next, m.v_page_prev
    tail_slot = z * Z_NCOLS + Z_LRU_TAIL + lru
    tail = vz[tail_slot]
    prv[pfn] = tail
    nxt[pfn] = -1
    if tail == -1:
        vz[z * Z_NCOLS + Z_LRU_HEAD + lru] = pfn
    else:
        nxt[tail] = pfn
    vz[tail_slot] = pfn
    m.v_page_flags[pfn] |= PG_lru
    vz[z * Z_NCOLS + _LRU_STAT[lru]] += 1


def del_page_from_lru_list(m, z, pfn, lru):
    """Unlink `pfn` from zone z's LRU `lru`. Caller holds zone->lock.

    Follows: include/linux/mm_inline.h del_page_from_lru_list(), 3.14.
    """
    vz, nxt, prv = m.v_zone, m.v_page_next, m.v_page_prev
    n, p = nxt[pfn], prv[pfn]
    if p == -1:
        vz[z * Z_NCOLS + Z_LRU_HEAD + lru] = n
    else:
        nxt[p] = n
    if n == -1:
        vz[z * Z_NCOLS + Z_LRU_TAIL + lru] = p
    else:
        prv[n] = p
    nxt[pfn] = prv[pfn] = -1
    m.v_page_flags[pfn] &= ~PG_lru
    vz[z * Z_NCOLS + _LRU_STAT[lru]] -= 1


def lru_cache_add(cpu, pfn, lru):
    """Put a newly mapped page on its zone's LRU. Follows: mm/swap.c lru_cache_add(), without the pagevec."""
    m = cpu.m
    z = m.v_page_zone[pfn]
    with sync.spinlock(cpu, m.zone_lock(z)):
        add_page_to_lru_list(m, z, pfn, lru)


# --- reclaimability ------------------------------------------------------------------------------------------

def zone_reclaimable_pages(m, z):
    """File LRU pages, plus anon LRU pages while swap has room. Follows: zone_reclaimable_pages(), 3.14."""
    vz = m.v_zone
    nr = vz[z * Z_NCOLS + _LRU_STAT[LRU_FILE]]
    if m.v_glob[G_NR_SWAP_FREE] > 0:
        nr += vz[z * Z_NCOLS + _LRU_STAT[LRU_ANON]]
    return nr


def zone_reclaimable(m, z):
    """A zone stays reclaimable until 6× its reclaimable pages were scanned without a page being freed.

    Follows: mm/vmscan.c zone_reclaimable(), 3.14 (KERNEL §6.8).
    """
    return m.v_zone[z * Z_NCOLS + _SCANNED] < zone_reclaimable_pages(m, z) * 6


# --- shrinking -----------------------------------------------------------------------------------------------

def _reclaim_page(cpu, m, z, pfn, lru):
    """Unmap one isolated LRU page from its mm (to swap for anon) and free it. zone->lock held.

    Returns False (and leaves the page alone) if an anon page finds swap full.
    """
    owner = m.v_page_owner[pfn]
    if lru == LRU_ANON:
        with sync.spinlock(cpu, L_SWAP):
            if m.v_glob[G_NR_SWAP_FREE] <= 0:
                return False
            m.v_glob[G_NR_SWAP_FREE] -= 1
    del_page_from_lru_list(m, z, pfn, lru)
    if m.memcg_enabled:
        from oomemu.mm import memcontrol
        memcontrol.mem_cgroup_uncharge_page(cpu, pfn)
    if owner >= 0:
        with sync.spinlock(cpu, m.mm_lock_index(owner)):
            base = owner * MM_NCOLS
            if lru == LRU_ANON:
                m.v_mm[base + MM_ANONPAGES] -= 1
                m.v_mm[base + MM_SWAPENTS] += 1
            else:
                m.v_mm[base + MM_FILEPAGES] -= 1
    if lru == LRU_ANON:
        vmstat.count_vm_event(cpu, vmstat.NR_PAGES_SWAPPED_OUT)
    from oomemu.mm import page_alloc
    tp.trace_mm_page_free(cpu, pfn, 0)
    page_alloc.__free_one_page(cpu, pfn, z, 0)
    return True


def shrink_lruvec(cpu, z, priority, nr_to_reclaim):
    """Scan the zone's LRUs oldest first, reclaiming what can be; returns (scanned, reclaimed).

    Follows: mm/vmscan.c shrink_lruvec()/shrink_inactive_list(), 3.14, with get_scan_count()'s
    "lru size >> priority" (at least a cluster) as the scan target.
    Differs: every isolated page is reclaimed (no active/inactive lists, no referenced bit, no
    page_referenced() of mapped file pages), so zone_reclaimable() matters only once an LRU is empty and R8
    (thrashing instead of OOM) cannot appear; the pages are isolated and freed in one zone->lock hold (no
    separate lru_lock, no per-CPU pagevecs) and go straight to the buddy lists, not the reclaiming CPU's
    per-CPU list.
    """
    m = cpu.m
    vz = m.v_zone
    scanned = reclaimed = 0
    lrus = (LRU_FILE, LRU_ANON) if m.v_glob[G_NR_SWAP_FREE] > 0 else (LRU_FILE,)
    with sync.spinlock(cpu, m.zone_lock(z)):
        for lru in lrus:
            size = vz[z * Z_NCOLS + _LRU_STAT[lru]]
            target = max(size >> priority, min(size, SWAP_CLUSTER_MAX))
            while target > 0 and reclaimed < nr_to_reclaim:
                pfn = vz[z * Z_NCOLS + Z_LRU_HEAD + lru]
                if pfn == -1:
                    break
                target -= 1
                scanned += 1
                sync.sched_point(cpu, "shrink_lruvec", pfn)
                if _reclaim_page(cpu, m, z, pfn, lru):
                    reclaimed += 1
                else:
                    break
        vz[z * Z_NCOLS + _SCANNED] += scanned
        if reclaimed:
            from oomemu.mm import page_alloc
            page_alloc._note_freed(cpu, z, reclaimed)  # also re-arms zone_reclaimable(), as upstream
    if reclaimed:
        vmstat.count_vm_event(cpu, vmstat.NR_PAGES_RECLAIMED, reclaimed)
    return scanned, reclaimed


def shrink_zones(cpu, zonelist, high_zoneidx, priority, nr_to_reclaim):
    """Shrink every usable zone, skipping unreclaimable ones after the first pass. Returns pages reclaimed.

    Follows: mm/vmscan.c shrink_zones(), 3.14.
    """
    m = cpu.m
    total = 0
    for z in zonelist:
        if m.v_zone[z * Z_NCOLS + Z_IDX] > high_zoneidx:
            continue
        if priority != DEF_PRIORITY and not zone_reclaimable(m, z):
            continue
        total += shrink_lruvec(cpu, z, priority, nr_to_reclaim - total)[1]
        if total >= nr_to_reclaim:
            break
    return total


def all_unreclaimable(m, zonelist, high_zoneidx):
    """True if no usable zone is zone_reclaimable(). Follows: mm/vmscan.c all_unreclaimable(), 3.14."""
    return not any(zone_reclaimable(m, z) for z in zonelist if m.v_zone[z * Z_NCOLS + Z_IDX] <= high_zoneidx)


def do_try_to_free_pages(cpu, zonelist, gfp_mask, nr_to_reclaim):
    """Reclaim from priority 12 down to 0 until a cluster is freed; return the kernel's "progress".

    Follows: mm/vmscan.c do_try_to_free_pages(), 3.14 (KERNEL §6.8): pages reclaimed if any, else 0 when the
    OOM killer is disabled, else 1 while any usable zone is still reclaimable, else 0. With
    `bounded_reclaim_retries` (4.7, 0a0337e0d1d1) the "still reclaimable" 1 is gone.
    """
    m = cpu.m
    high_zoneidx = gfp_zone(gfp_mask)
    nr_reclaimed = 0
    for priority in range(DEF_PRIORITY, -1, -1):
        nr_reclaimed += shrink_zones(cpu, zonelist, high_zoneidx, priority, nr_to_reclaim - nr_reclaimed)
        if nr_reclaimed >= nr_to_reclaim:
            break
    if nr_reclaimed:
        return nr_reclaimed
    if m.v_glob[G_OOM_KILLER_DISABLED]:
        return 0
    if cpu.features.bounded_reclaim_retries:
        return 0    # 4.7: a reclaimable zone is should_reclaim_retry()'s business, not progress
    if not all_unreclaimable(m, zonelist, high_zoneidx):
        return 1
    return 0


async def try_to_free_pages(cpu, zonelist, order, gfp_mask, nodemask):
    """Direct reclaim of SWAP_CLUSTER_MAX pages for an allocating task, after throttling; a fatal signal that
    arrived while throttled returns 1 so that the allocator does not OOM-kill here. With cpusets or mempolicies,
    only the zones of `nodemask` that the task's cpuset allows (hardwall) are reclaimed and asked
    zone_reclaimable(), as shrink_zones() and all_unreclaimable() walk them.

    Follows: mm/vmscan.c try_to_free_pages(), 3.14 (KERNEL §6.6, §6.8).
    """
    if await throttle_direct_reclaim(cpu, gfp_mask, zonelist, nodemask):
        return 1
    tp.trace_mm_vmscan_direct_reclaim_begin(cpu, order, 1, gfp_mask)
    if cpu.m.numa_constraints:
        # shrink_zones() and all_unreclaimable() walk only the nodemask's zones the cpuset allows (hardwall)
        zonelist = [z for z in zonelist if (nodemask is None or cpu.m.v_zone[z * Z_NCOLS + Z_NODE] in nodemask)
                    and cpuset.cpuset_zone_allowed_hardwall(cpu, z, GFP_KERNEL)]
    progress = do_try_to_free_pages(cpu, zonelist, gfp_mask, SWAP_CLUSTER_MAX)
    tp.trace_mm_vmscan_direct_reclaim_end(cpu, progress if progress > 1 else 0, progress)
    return progress


def try_to_free_mem_cgroup_pages(cpu, in_memcg, nr_pages, gfp_mask, may_swap):
    """Reclaim at least a cluster of pages charged within a memcg subtree (`in_memcg`: a bool per memcg row);
    returns pages reclaimed. Follows: mm/vmscan.c try_to_free_mem_cgroup_pages(), 3.14 (priority 12 down to 0
    until max(nr_pages, SWAP_CLUSTER_MAX) are freed; anonymous pages only if may_swap and swap has room).

    Differs: no per-memcg lruvecs: each zone's LRU lists are walked oldest first, `size >> priority` pages a
    pass, and only pages charged within the subtree are taken (the others are stepped over, not rotated).
    """
    m = cpu.m
    vz = m.v_zone
    target = max(nr_pages, SWAP_CLUSTER_MAX)
    reclaimed = 0
    for priority in range(DEF_PRIORITY, -1, -1):
        for z in range(m.nr_zones):
            lrus = (LRU_FILE, LRU_ANON) if may_swap and m.v_glob[G_NR_SWAP_FREE] > 0 else (LRU_FILE,)
            freed = 0
            with sync.spinlock(cpu, m.zone_lock(z)):
                for lru in lrus:
                    scan = max(vz[z * Z_NCOLS + _LRU_STAT[lru]] >> priority, SWAP_CLUSTER_MAX)
                    pfn = vz[z * Z_NCOLS + Z_LRU_HEAD + lru]
                    while pfn != -1 and scan > 0 and reclaimed + freed < target:
                        nxt = m.v_page_next[pfn]
                        scan -= 1
                        memcg = m.v_page_memcg[pfn]
                        if memcg >= 0 and in_memcg[memcg]:
                            sync.sched_point(cpu, "shrink_lruvec", pfn)
                            if not _reclaim_page(cpu, m, z, pfn, lru):
                                break
                            freed += 1
                        pfn = nxt
                if freed:
                    from oomemu.mm import page_alloc
                    page_alloc._note_freed(cpu, z, freed)
            reclaimed += freed
            if reclaimed >= target:
                break
        if reclaimed >= target:
            break
    if reclaimed:
        vmstat.count_vm_event(cpu, vmstat.NR_PAGES_RECLAIMED, reclaimed)
    return reclaimed


# --- direct-reclaim throttling (pfmemalloc_wait) --------------------------------------------------------------

def pfmemalloc_watermark_ok(cpu, nid):
    """True while node nid's zones up to Normal keep more free pages than half their min watermarks; when not,
    a sleeping kswapd is woken (for zones up to Normal). Follows: mm/vmscan.c pfmemalloc_watermark_ok(), 3.14."""
    m = cpu.m
    vz = m.v_zone
    reserve = free = 0
    for i in range(ZONE_NORMAL + 1):
        zb = (nid * MAX_NR_ZONES + i) * Z_NCOLS
        reserve += vz[zb + Z_WMARK + WMARK_MIN]
        free += vz[zb + _FREE]
    wmark_ok = free > reserve // 2
    if not wmark_ok:
        row = (m.nr_cpus + nid) * m.cpu.shape[1]
        if m.v_cpu[row + C_KSWAPD_SLEEPING]:       # waitqueue_active(&pgdat->kswapd_wait)
            if m.v_cpu[row + C_KSWAPD_CLASSZONE] > ZONE_NORMAL:
                m.v_cpu[row + C_KSWAPD_CLASSZONE] = ZONE_NORMAL
            m.v_cpu[row + C_KSWAPD_SLEEPING] = 0
            sync.ring_doorbell(m, m.nr_cpus + nid)
    return wmark_ok


async def _wait_pfmemalloc(cpu, nid, state, timeout):
    """wait_event_killable / wait_event_interruptible_timeout on node nid's pfmemalloc_wait until
    pfmemalloc_watermark_ok(); ends early on a signal the sleep's state lets in, or (timeout) after that many
    jiffies."""
    m = cpu.m
    cur = cpu.current
    wq = m.wq_pfmemalloc(nid)
    left = timeout
    while True:
        with sync.spinlock(cpu, L_PFMEMALLOC):
            sync.wq_add_tail(cpu, wq, cur)
            ksched.set_current_state(cpu, state)
        if pfmemalloc_watermark_ok(cpu, nid) or ksched.signal_pending_state(m, state, cur):
            break
        m.v_task_wait_kind[cur] = tp.WAIT_PFMEMALLOC
        m.v_task_wait_obj[cur] = nid
        if timeout is None:
            tp.trace_sleep(cpu, state, tp.WAIT_PFMEMALLOC, nid)
            await ksched.schedule(cpu)
        else:
            left = await ksched.schedule_timeout(cpu, left)
        m.v_task_wait_kind[cur] = tp.WAIT_NONE
        with sync.spinlock(cpu, L_PFMEMALLOC):
            sync.wq_remove(cpu, wq, cur)
        if timeout is not None and not left:
            break
    with sync.spinlock(cpu, L_PFMEMALLOC):
        sync.wq_remove(cpu, wq, cur)
    ksched.__set_current_state(cpu, TASK_RUNNING)
    m.v_task_wait_kind[cur] = tp.WAIT_NONE


def wake_up_pfmemalloc(cpu, nid):
    """Wake every task throttled on node nid's pfmemalloc_wait. Follows: wake_up(&pgdat->pfmemalloc_wait)."""
    m = cpu.m
    wq = m.wq_pfmemalloc(nid)
    with sync.spinlock(cpu, L_PFMEMALLOC):
        while True:
            t = sync.wq_pop_head(cpu, wq)
            if t == -1:
                break
            old_state = sync.try_to_wake_up(cpu, t, TASK_NORMAL)
            if old_state:
                tp.trace_wakeup(cpu, m.v_task_pid[t], old_state, tp.WAKE_LOCK)


def pfmemalloc_waiters(m, nid):
    """waitqueue_active(&pgdat->pfmemalloc_wait)."""
    return m.v_wq[m.wq_pfmemalloc(nid) * 2] != -1


async def throttle_direct_reclaim(cpu, gfp_mask, zonelist, nodemask):
    """Make a direct reclaimer wait while its first usable node's reserve is at or below half its min
    watermarks: killably until kswapd restores it for __GFP_FS callers, at most HZ (interruptibly) for the
    others. Returns True if a fatal signal is pending at the end (the caller then reports progress).

    Follows: mm/vmscan.c throttle_direct_reclaim(), 3.14 (KERNEL §6.6): kernel threads and tasks with a fatal
    signal pending are never throttled; no zone usable by the request (up to Normal) means no throttling.
    """
    m = cpu.m
    cur = cpu.current
    if m.v_task_flags[cur] & PF_KTHREAD or ksignal.fatal_signal_pending(m, cur):
        return False
    high_zoneidx = gfp_zone(gfp_mask)
    nid = None
    for z in zonelist:
        zb = z * Z_NCOLS
        idx = m.v_zone[zb + Z_IDX]
        if idx > high_zoneidx or nodemask is not None and m.v_zone[zb + Z_NODE] not in nodemask:
            continue
        if idx > ZONE_NORMAL:
            continue
        nid = m.v_zone[zb + Z_NODE]   # throttle on the first usable node
        if pfmemalloc_watermark_ok(cpu, nid):
            return False
        break
    if nid is None:
        return False
    vmstat.count_vm_event(cpu, vmstat.NR_DIRECT_THROTTLES)
    sync.sched_point(cpu, "throttle_direct_reclaim.wait")
    if not gfp_mask & __GFP_FS:
        # may hold an FS lock kswapd needs: wait at most a second
        await _wait_pfmemalloc(cpu, nid, TASK_INTERRUPTIBLE, m.v_glob[G_HZ])
    else:
        await _wait_pfmemalloc(cpu, nid, TASK_KILLABLE, None)
    return ksignal.fatal_signal_pending(m, cur)


# --- kswapd ---------------------------------------------------------------------------------------------------

def zone_balanced(m, z, order, balance_gap, classzone_idx):
    """True if zone z is above its high watermark plus `balance_gap`. Follows: zone_balanced(), 3.14."""
    from oomemu.mm import page_alloc
    mark = m.v_zone[z * Z_NCOLS + Z_WMARK + WMARK_HIGH] + balance_gap
    return page_alloc.zone_watermark_ok(m, z, order, mark, classzone_idx, 0)


def wakeup_kswapd(cpu, z, order, classzone_idx):
    """Wake the kswapd of zone z's node if it sleeps and the zone is below its high watermark.

    Follows: mm/vmscan.c wakeup_kswapd(), 3.14 (KERNEL §6.6).
    """
    m = cpu.m
    zb = z * Z_NCOLS
    if not m.v_zone[zb + Z_MANAGED]:
        return
    if m.numa_constraints and not cpuset.cpuset_zone_allowed_hardwall(cpu, z, GFP_KERNEL):
        return
    nid = m.v_zone[zb + Z_NODE]
    row = m.nr_cpus + nid
    ncols = m.cpu.shape[1]
    vcpu = m.v_cpu
    if vcpu[row * ncols + C_KSWAPD_MAX_ORDER] < order:
        vcpu[row * ncols + C_KSWAPD_MAX_ORDER] = order
    if vcpu[row * ncols + C_KSWAPD_CLASSZONE] > classzone_idx:
        vcpu[row * ncols + C_KSWAPD_CLASSZONE] = classzone_idx
    if not vcpu[row * ncols + C_KSWAPD_SLEEPING]:
        return
    if zone_balanced(m, z, order, 0, 0):
        return
    tp.trace_mm_vmscan_wakeup_kswapd(cpu, nid, m.v_zone[zb + Z_IDX], order)
    vmstat.count_vm_event(cpu, vmstat.NR_KSWAPD_WAKEUPS)
    vcpu[row * ncols + C_KSWAPD_SLEEPING] = 0
    sync.ring_doorbell(m, row)


def _node_zones(m, nid, classzone_idx):
    base = nid * MAX_NR_ZONES
    return [base + i for i in range(classzone_idx + 1) if m.v_zone[(base + i) * Z_NCOLS + Z_MANAGED]]


def pgdat_balanced(m, nid, order, classzone_idx):
    """All zones up to classzone are balanced (unreclaimable ones count as balanced). Order-0 form.

    Follows: mm/vmscan.c pgdat_balanced(), 3.14. Differs: the order > 0 "25% of the node" rule is not used.
    """
    return all(zone_balanced(m, z, order, 0, classzone_idx) or not zone_reclaimable(m, z)
               for z in _node_zones(m, nid, classzone_idx))


def balance_pgdat(cpu, nid, order, classzone_idx):
    """Reclaim until every zone of the node up to classzone is above its high watermark.

    Follows: mm/vmscan.c balance_pgdat()/kswapd_shrink_zone(), 3.14 (KERNEL §6.6): end_zone is the highest
    unbalanced zone, not counting zones found unreclaimable after the first pass; once 2 << order pages are
    reclaimed for an order > 0 wake-up, the watermarks are checked at order 0.
    """
    m = cpu.m
    vmstat.count_vm_event(cpu, vmstat.NR_KSWAPD_RUNS)
    nr_reclaimed = 0
    for priority in range(DEF_PRIORITY, 0, -1):
        sync.pause_point(cpu)
        zones = _node_zones(m, nid, MAX_NR_ZONES - 1)
        unbalanced = [z for z in zones if (priority == DEF_PRIORITY or zone_reclaimable(m, z))
                      and not zone_balanced(m, z, order, 0, 0)]
        if not unbalanced or m.v_glob[G_STOP]:
            return
        end_zone = max(m.v_zone[z * Z_NCOLS + Z_IDX] for z in unbalanced)
        progress = 0
        for z in zones:
            zb = z * Z_NCOLS
            if m.v_zone[zb + Z_IDX] > end_zone:
                continue
            if priority != DEF_PRIORITY and not zone_reclaimable(m, z):
                continue
            managed = m.v_zone[zb + Z_MANAGED]
            gap = min(m.v_zone[zb + Z_WMARK + WMARK_LOW],
                      -(-managed // KSWAPD_ZONE_BALANCE_GAP_RATIO))
            if zone_balanced(m, z, order, gap, end_zone):
                continue
            target = max(SWAP_CLUSTER_MAX, m.v_zone[zb + Z_WMARK + WMARK_HIGH])
            progress += shrink_lruvec(cpu, z, priority, target)[1]
        nr_reclaimed += progress
        if pfmemalloc_waiters(m, nid) and pfmemalloc_watermark_ok(cpu, nid):
            wake_up_pfmemalloc(cpu, nid)   # throttled reclaimers may go on: the reserve is back
        if order and nr_reclaimed >= 2 << order:
            order = 0   # fragmentation: rebalance at order 0 rather than reclaim without end
        if pgdat_balanced(m, nid, order, classzone_idx):
            return


def _kswapd_wait(cpu, timeout_ms):
    """Sleep on kswapd_wait (the doorbell) for up to timeout_ms (None: until woken); True if woken."""
    m = cpu.m
    doorbell = sync.DoorbellWaiter(m, cpu.id)
    deadline = None if timeout_ms is None else ktime.now_ns(m) + int(timeout_ms * 1_000_000)
    while not m.v_glob[G_STOP]:
        sync.pause_point(cpu)
        poll = ktime.now_ns(m) + KSWAPD_PAUSE_POLL_MS * 1_000_000
        if doorbell.wait_until(cpu, poll if deadline is None else min(poll, deadline), "kswapd_wait") \
                and sync.drain_doorbell(m, cpu.id):
            return True
        if deadline is not None and ktime.now_ns(m) >= deadline:
            return False
    return False


def prepare_kswapd_sleep(cpu, nid, order, classzone_idx):
    """kswapd may sleep: nobody is throttled on pfmemalloc_wait (if someone is, wake them and stay up) and the
    node is balanced. Follows: mm/vmscan.c prepare_kswapd_sleep(), 3.14 (the nap's remaining is the caller's)."""
    if pfmemalloc_waiters(cpu.m, nid):
        wake_up_pfmemalloc(cpu, nid)
        return False
    return pgdat_balanced(cpu.m, nid, order, classzone_idx)


def kswapd_try_to_sleep(cpu, nid, order, classzone_idx):
    """Nap HZ/10; if still balanced, sleep until woken. Follows: mm/vmscan.c kswapd_try_to_sleep(), 3.14."""
    m = cpu.m
    row_base = cpu.id * m.cpu.shape[1]
    hz = m.v_glob[G_HZ]
    m.v_cpu[row_base + C_KSWAPD_SLEEPING] = 1
    if not prepare_kswapd_sleep(cpu, nid, order, classzone_idx):
        m.v_cpu[row_base + C_KSWAPD_SLEEPING] = 0
        return
    if _kswapd_wait(cpu, 1000 * (hz // 10) / hz):
        return  # woken during the nap: the low watermark was hit quickly
    m.v_cpu[row_base + C_KSWAPD_SLEEPING] = 1
    if prepare_kswapd_sleep(cpu, nid, order, classzone_idx):
        tp.trace_mm_vmscan_kswapd_sleep(cpu, nid)
        _kswapd_wait(cpu, None)
    m.v_cpu[row_base + C_KSWAPD_SLEEPING] = 0


def kswapd(cpu):
    """The body of node cpu.nid's kswapd: balance, try to sleep, repeat until the machine stops.

    Follows: mm/vmscan.c kswapd(), 3.14. Runs as its own OS process with PF_MEMALLOC|PF_KSWAPD.
    """
    m = cpu.m
    nid = cpu.nid
    row_base = cpu.id * m.cpu.shape[1]
    vcpu = m.v_cpu
    vcpu[row_base + C_KSWAPD_CLASSZONE] = MAX_NR_ZONES - 1
    order, classzone_idx = 0, MAX_NR_ZONES - 1
    while not m.v_glob[G_STOP]:
        kswapd_try_to_sleep(cpu, nid, order, classzone_idx)
        if m.v_glob[G_STOP]:
            break
        order = vcpu[row_base + C_KSWAPD_MAX_ORDER]
        classzone_idx = vcpu[row_base + C_KSWAPD_CLASSZONE]
        vcpu[row_base + C_KSWAPD_MAX_ORDER] = 0
        vcpu[row_base + C_KSWAPD_CLASSZONE] = MAX_NR_ZONES - 1
        tp.trace_mm_vmscan_kswapd_wake(cpu, nid, order)
        balance_pgdat(cpu, nid, order, classzone_idx)

