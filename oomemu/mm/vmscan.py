"""Page reclaim: the LRU lists, shrinking them, direct reclaim's "progress", zone_reclaimable, and kswapd.

Follows mm/vmscan.c of Linux 3.14 (KERNEL §6.6, §6.8). Each zone keeps four LRU lists (inactive and active,
anonymous and file; oldest first) under its own lru_lock, which is not zone->lock. Reclaim isolates up to
SWAP_CLUSTER_MAX pages under the lru_lock, decides about them with the lock dropped (page_referenced(): a page
whose PTE was accessed, or a page-cache page referenced twice, is kept or activated) and puts the survivors
back. Only what it really frees resets pages_scanned (through the allocator), so zone_reclaimable() decides
whether the OOM killer comes (R8).

Differs: no dirty or writeback pages (an unreferenced page is always reclaimable), no slab shrinkers, no
too_many_isolated() throttle, no unevictable list, swappiness fixed at 60; kswapd stops a zone at its target
without the proportional rescan of the other lists.
"""
from oomemu import sync
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.kernel import time as ktime
from oomemu.include.gfp import __GFP_FS, GFP_KERNEL, gfp_zone
from oomemu.include.sched import (PF_KTHREAD, TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_RUNNING)
from oomemu.kernel import cpuset
from oomemu.include.mmzone import (DEF_PRIORITY, KSWAPD_ZONE_BALANCE_GAP_RATIO, MAX_NR_ZONES, NR_FREE_PAGES,
                                   NR_ISOLATED_ANON, NR_LRU_BASE, NR_PAGES_SCANNED, SWAP_CLUSTER_MAX,
                                   WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_NORMAL)
from oomemu.machine import (C_KSWAPD_CLASSZONE, C_KSWAPD_MAX_ORDER, C_KSWAPD_SLEEPING, G_HZ,
                            G_NR_SWAP_FREE, G_OOM_KILLER_DISABLED, G_STOP, G_TOTAL_SWAP, L_PFMEMALLOC, LRU_ACTIVE,
                            LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                            NR_LRU_LISTS, PAGE_ANON, PAGE_FILE, PG_active, PG_isolated, PG_lru, PG_referenced,
                            Z_IDX, Z_INACTIVE_RATIO, Z_LRU_HEAD, Z_LRU_TAIL, Z_MANAGED, Z_NCOLS, Z_NODE,
                            Z_RECENT_ROTATED, Z_RECENT_SCANNED, Z_STAT, Z_WMARK)
from oomemu.mm import rmap, swap, vmstat
from oomemu.trace import events as tp

_LRU_STAT = tuple(Z_STAT + NR_LRU_BASE + lru for lru in range(NR_LRU_LISTS))
_ISOLATED = Z_STAT + NR_ISOLATED_ANON          # + file (0 anon, 1 file)
_FREE = Z_STAT + NR_FREE_PAGES
_SCANNED = Z_STAT + NR_PAGES_SCANNED
VM_SWAPPINESS = 60        # vm_swappiness's default
# page_check_references() verdicts (mm/vmscan.c enum page_references)
PAGEREF_RECLAIM, PAGEREF_RECLAIM_CLEAN, PAGEREF_KEEP, PAGEREF_ACTIVATE = 0, 1, 2, 3
# get_scan_count() balances (enum scan_balance)
SCAN_EQUAL, SCAN_FRACT, SCAN_ANON, SCAN_FILE = 0, 1, 2, 3
# A sleeping kswapd looks up this often (ms) to park for the supervisor's quiescent snapshots: the CPUs stay
# parked until every worker has, so this bounds how long a snapshot stops the machine.
KSWAPD_PAUSE_POLL_MS = 5


# --- LRU lists (zone->lru_lock held) -------------------------------------------------------------------------

def add_page_to_lru_list(m, z, pfn, lru):
    """Append `pfn` (newest) to zone z's LRU `lru`. Caller holds the zone's lru_lock.

    Follows: include/linux/mm_inline.h add_page_to_lru_list(), 3.14 (with SetPageLRU).
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
    """Unlink `pfn` from zone z's LRU `lru`. Caller holds the zone's lru_lock.

    Follows: include/linux/mm_inline.h del_page_from_lru_list(), 3.14 (with ClearPageLRU).
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


def lru_size(m, z, lru):
    """Pages on zone z's list `lru`. Follows: mm/vmscan.c get_lru_size(), 3.14."""
    return m.v_zone[z * Z_NCOLS + _LRU_STAT[lru]]


# --- reclaimability ------------------------------------------------------------------------------------------

def zone_reclaimable_pages(m, z):
    """File LRU pages, plus anon LRU pages while swap has room (isolated pages not counted).

    Follows: mm/vmscan.c zone_reclaimable_pages(), 3.14.
    """
    nr = lru_size(m, z, LRU_INACTIVE_FILE) + lru_size(m, z, LRU_ACTIVE_FILE)
    if m.v_glob[G_NR_SWAP_FREE] > 0:
        nr += lru_size(m, z, LRU_INACTIVE_ANON) + lru_size(m, z, LRU_ACTIVE_ANON)
    return nr


def zone_reclaimable(m, z):
    """A zone stays reclaimable until 6× its reclaimable pages were scanned without a page being freed.

    Follows: mm/vmscan.c zone_reclaimable(), 3.14 (KERNEL §6.8).
    """
    return m.v_zone[z * Z_NCOLS + _SCANNED] < zone_reclaimable_pages(m, z) * 6


def inactive_anon_is_low(m, z):
    """The inactive anon list is too small for the active one: inactive × inactive_ratio < active.

    Follows: mm/vmscan.c inactive_anon_is_low() → inactive_anon_is_low_global(), 3.14 (never without swap).
    """
    if not m.v_glob[G_TOTAL_SWAP]:
        return False
    ratio = m.v_zone[z * Z_NCOLS + Z_INACTIVE_RATIO]
    return lru_size(m, z, LRU_INACTIVE_ANON) * ratio < lru_size(m, z, LRU_ACTIVE_ANON)


def inactive_file_is_low(m, z):
    """More active than inactive file pages. Follows: mm/vmscan.c inactive_file_is_low(), 3.14."""
    return lru_size(m, z, LRU_ACTIVE_FILE) > lru_size(m, z, LRU_INACTIVE_FILE)


def inactive_list_is_low(m, z, lru):
    """Follows: mm/vmscan.c inactive_list_is_low(), 3.14."""
    return inactive_file_is_low(m, z) if lru & LRU_FILE else inactive_anon_is_low(m, z)


# --- isolating and putting back ------------------------------------------------------------------------------

def isolate_lru_pages(cpu, m, z, nr_to_scan, lru, in_memcg=None):
    """Take up to nr_to_scan of the oldest pages off list `lru` onto a private list. lru_lock held.

    Follows: mm/vmscan.c isolate_lru_pages(), 3.14 (every LRU page can be isolated here). With `in_memcg`
    (memcg reclaim) only pages charged within that subtree are taken, the others stepped over. Returns
    (pages, scanned).
    """
    vz = m.v_zone
    flags = m.v_page_flags
    taken = []
    if in_memcg is None:
        head = z * Z_NCOLS + Z_LRU_HEAD + lru
        while len(taken) < nr_to_scan:
            pfn = vz[head]
            if pfn == -1:
                break
            del_page_from_lru_list(m, z, pfn, lru)
            flags[pfn] |= PG_isolated
            taken.append(pfn)
        scanned = len(taken)
    else:
        pfn = vz[z * Z_NCOLS + Z_LRU_HEAD + lru]
        scanned = 0
        while pfn != -1 and scanned < nr_to_scan:
            nxt = m.v_page_next[pfn]
            scanned += 1
            memcg = m.v_page_memcg[pfn]
            if memcg >= 0 and in_memcg[memcg]:
                del_page_from_lru_list(m, z, pfn, lru)
                flags[pfn] |= PG_isolated
                taken.append(pfn)
            pfn = nxt
    vz[z * Z_NCOLS + _ISOLATED + (1 if lru & LRU_FILE else 0)] += len(taken)
    return taken, scanned


def putback_inactive_pages(cpu, m, z, pages, file):
    """Put the pages reclaim kept back on their lists (active ones counted as rotated); return the pages whose
    last reference reclaim held (their mm exited meanwhile), to be freed with the lock dropped. lru_lock held.

    Follows: mm/vmscan.c putback_inactive_pages(), 3.14.
    """
    flags = m.v_page_flags
    free = []
    rotated = 0
    for pfn in pages:
        flags[pfn] &= ~PG_isolated
        if swap._dead(m, pfn):
            free.append(pfn)
            continue
        lru = swap.page_lru(m, pfn)
        add_page_to_lru_list(m, z, pfn, lru)
        if lru & LRU_ACTIVE:
            rotated += 1
    m.v_zone[z * Z_NCOLS + Z_RECENT_ROTATED + file] += rotated
    return free


# --- the inactive list ---------------------------------------------------------------------------------------

def page_check_references(cpu, m, z, pfn):
    """Decide about one isolated inactive page from its PTE's accessed bit and PG_referenced.

    Follows: mm/vmscan.c page_check_references(), 3.14: a mapped anonymous page that was accessed is
    activated; a mapped page-cache page accessed with PG_referenced, or accessed through an executable mapping,
    is activated, accessed once it is kept and marked referenced; an unmapped referenced page-cache page is
    reclaimed (clean).
    """
    referenced_ptes, vm_flags = rmap.page_referenced(cpu, pfn)
    flags = m.v_page_flags
    with sync.spinlock(cpu, m.lru_lock(z)):   # TestClearPageReferenced / SetPageReferenced
        referenced_page = flags[pfn] & PG_referenced
        flags[pfn] &= ~PG_referenced
        if referenced_ptes:
            if m.v_page_kind[pfn] == PAGE_ANON:
                return PAGEREF_ACTIVATE
            flags[pfn] |= PG_referenced
            if referenced_page or vm_flags & rmap.VM_EXEC:
                return PAGEREF_ACTIVATE
            return PAGEREF_KEEP
    if referenced_page and m.v_page_kind[pfn] == PAGE_FILE:
        return PAGEREF_RECLAIM_CLEAN
    return PAGEREF_RECLAIM


def _set_active(cpu, m, z, pfn):
    with sync.spinlock(cpu, m.lru_lock(z)):
        m.v_page_flags[pfn] |= PG_active


def shrink_page_list(cpu, m, z, pages):
    """Reclaim what can be of an isolated list, lru_lock not held; returns (kept pages, freed pages).

    Follows: mm/vmscan.c shrink_page_list(), 3.14: activate_locked for referenced pages and for anonymous pages
    that find swap full (add_to_swap() fails), keep_locked for pages kept on the inactive list, otherwise
    try_to_unmap() and free. A page whose mm exited while it was isolated is simply freed (reclaim held its last
    reference).
    """
    kept, freed = [], []
    activated = swapped = 0
    for pfn in pages:
        sync.sched_point(cpu, "shrink_page_list", pfn)
        if swap._dead(m, pfn):
            freed.append(pfn)
            continue
        references = page_check_references(cpu, m, z, pfn)
        if references == PAGEREF_ACTIVATE:
            _set_active(cpu, m, z, pfn)
            activated += 1
            kept.append(pfn)
            continue
        if references == PAGEREF_KEEP:
            kept.append(pfn)
            continue
        anon = m.v_page_kind[pfn] == PAGE_ANON
        ret = rmap.try_to_unmap(cpu, pfn)
        if ret == rmap.SWAP_FAIL:
            _set_active(cpu, m, z, pfn)
            activated += 1
            kept.append(pfn)
            continue
        if ret == rmap.SWAP_SUCCESS and anon:
            swapped += 1
        freed.append(pfn)
    if activated:
        vmstat.count_vm_event(cpu, vmstat.NR_PGACTIVATE, activated)
    if swapped:
        vmstat.count_vm_event(cpu, vmstat.NR_PAGES_SWAPPED_OUT, swapped)
    return kept, freed


def shrink_inactive_list(cpu, z, nr_to_scan, lru, priority, kswapd, in_memcg=None):
    """Isolate up to nr_to_scan pages of an inactive list, reclaim them unlocked, put back the rest.

    Follows: mm/vmscan.c shrink_inactive_list(), 3.14: lru_add_drain() first; pages_scanned grows by the pages
    scanned (under the lru_lock) in global reclaim (not for a memcg: `in_memcg`); the freed pages go to this
    CPU's per-CPU list once the lock is dropped. Returns pages reclaimed.
    """
    m = cpu.m
    vz = m.v_zone
    file = 1 if lru & LRU_FILE else 0
    swap.lru_add_drain(cpu)
    with sync.spinlock(cpu, m.lru_lock(z)):
        pages, nr_scanned = isolate_lru_pages(cpu, m, z, nr_to_scan, lru, in_memcg)
        if in_memcg is None:
            vz[z * Z_NCOLS + _SCANNED] += nr_scanned
    if not pages:
        return 0
    vmstat.count_vm_event(cpu, vmstat.NR_PGSCAN, nr_scanned)
    sync.sched_point(cpu, "shrink_inactive_list", z)
    kept, freed = shrink_page_list(cpu, m, z, pages)
    with sync.spinlock(cpu, m.lru_lock(z)):
        vz[z * Z_NCOLS + Z_RECENT_SCANNED + file] += len(pages)
        freed += putback_inactive_pages(cpu, m, z, kept, file)
        vz[z * Z_NCOLS + _ISOLATED + file] -= len(pages)
    swap.free_unlocked(cpu, freed)
    nr_reclaimed = len(freed)
    if nr_reclaimed:
        vmstat.count_vm_event(cpu, vmstat.NR_PAGES_RECLAIMED, nr_reclaimed)
    tp.trace_mm_vmscan_lru_shrink_inactive(cpu, z, nr_scanned, nr_reclaimed, priority, file)
    return nr_reclaimed


# --- the active list -----------------------------------------------------------------------------------------

def move_active_pages_to_lru(cpu, m, z, pages, lru):
    """Put deactivated (or kept-active) pages on list `lru`; return those whose mm exited meanwhile.
    lru_lock held. Follows: mm/vmscan.c move_active_pages_to_lru(), 3.14."""
    flags = m.v_page_flags
    free = []
    for pfn in pages:
        flags[pfn] &= ~PG_isolated
        if swap._dead(m, pfn):
            free.append(pfn)
            continue
        add_page_to_lru_list(m, z, pfn, lru)
    return free


def shrink_active_list(cpu, z, nr_to_scan, lru, priority, in_memcg=None):
    """Age an active list: isolate up to nr_to_scan pages, clear their accessed bits and move them to the
    inactive list.

    Follows: mm/vmscan.c shrink_active_list(), 3.14: a referenced page still goes to the inactive list (only
    referenced executable page-cache pages stay active) but counts as rotated; pages_scanned grows by the
    pages scanned.
    """
    m = cpu.m
    vz = m.v_zone
    file = 1 if lru & LRU_FILE else 0
    swap.lru_add_drain(cpu)
    with sync.spinlock(cpu, m.lru_lock(z)):
        pages, nr_scanned = isolate_lru_pages(cpu, m, z, nr_to_scan, lru, in_memcg)
        if in_memcg is None:
            vz[z * Z_NCOLS + _SCANNED] += nr_scanned
        vz[z * Z_NCOLS + Z_RECENT_SCANNED + file] += len(pages)
    if not pages:
        return
    vmstat.count_vm_event(cpu, vmstat.NR_PGSCAN, nr_scanned)
    nr_rotated = 0
    l_active, l_inactive = [], []
    for pfn in pages:
        sync.sched_point(cpu, "shrink_active_list", pfn)
        referenced, vm_flags = rmap.page_referenced(cpu, pfn)
        if referenced:
            nr_rotated += 1
            if vm_flags & rmap.VM_EXEC and file:
                l_active.append(pfn)   # executable page cache: another trip around the active list
                continue
        l_inactive.append(pfn)
    flags = m.v_page_flags
    with sync.spinlock(cpu, m.lru_lock(z)):
        for pfn in l_inactive:
            flags[pfn] &= ~PG_active
        vz[z * Z_NCOLS + Z_RECENT_ROTATED + file] += nr_rotated
        freed = move_active_pages_to_lru(cpu, m, z, l_active, lru)
        deactivated = move_active_pages_to_lru(cpu, m, z, l_inactive, lru - LRU_ACTIVE)
        vz[z * Z_NCOLS + _ISOLATED + file] -= len(pages)
    vmstat.count_vm_event(cpu, vmstat.NR_PGDEACTIVATE, len(l_inactive) - len(deactivated))
    swap.free_unlocked(cpu, freed + deactivated)


# --- shrinking a zone ----------------------------------------------------------------------------------------

def get_scan_count(cpu, z, priority, kswapd):
    """How many pages of each list to scan at this priority: list size >> priority, balanced between anon and
    file by swap space, free memory, the inactive file list and the recent rotation ratios.

    Follows: mm/vmscan.c get_scan_count(), 3.14, for global reclaim with swappiness 60: SCAN_FILE without
    free swap; SCAN_EQUAL at priority 0; SCAN_ANON when file + free pages are at or below the high watermark;
    SCAN_FILE while the inactive file list is not low; else SCAN_FRACT. Only kswapd scans a minimum of
    SWAP_CLUSTER_MAX, and only on a zone that is not zone_reclaimable().
    """
    m = cpu.m
    vz = m.v_zone
    zb = z * Z_NCOLS
    force_scan = kswapd and not zone_reclaimable(m, z)
    fraction = (1, 1)
    denominator = 1
    anon = lru_size(m, z, LRU_INACTIVE_ANON) + lru_size(m, z, LRU_ACTIVE_ANON)
    file = lru_size(m, z, LRU_INACTIVE_FILE) + lru_size(m, z, LRU_ACTIVE_FILE)
    if m.v_glob[G_NR_SWAP_FREE] <= 0:
        balance = SCAN_FILE
    elif not priority:
        balance = SCAN_EQUAL
    elif file + vz[zb + _FREE] <= vz[zb + Z_WMARK + WMARK_HIGH]:
        balance = SCAN_ANON
    elif not inactive_file_is_low(m, z):
        balance = SCAN_FILE
    else:
        balance = SCAN_FRACT
        anon_prio, file_prio = VM_SWAPPINESS, 200 - VM_SWAPPINESS
        with sync.spinlock(cpu, m.lru_lock(z)):
            rs, rr = zb + Z_RECENT_SCANNED, zb + Z_RECENT_ROTATED
            for kind, size in ((0, anon), (1, file)):
                if vz[rs + kind] > size // 4:
                    vz[rs + kind] //= 2
                    vz[rr + kind] //= 2
            ap = anon_prio * (vz[rs] + 1) // (vz[rr] + 1)
            fp = file_prio * (vz[rs + 1] + 1) // (vz[rr + 1] + 1)
        fraction = (ap, fp)
        denominator = ap + fp + 1
    nr = [0] * NR_LRU_LISTS
    for lru in range(NR_LRU_LISTS):
        is_file = 1 if lru & LRU_FILE else 0
        size = lru_size(m, z, lru)
        scan = size >> priority
        if not scan and force_scan:
            scan = min(size, SWAP_CLUSTER_MAX)
        if balance == SCAN_FRACT:
            scan = scan * fraction[is_file] // denominator
        elif balance in (SCAN_FILE, SCAN_ANON) and (balance == SCAN_FILE) != bool(is_file):
            scan = 0
        nr[lru] = scan
    return nr


def shrink_list(cpu, z, lru, nr_to_scan, priority, kswapd):
    """An active list is only aged (when its inactive list is low); an inactive list is reclaimed from.

    Follows: mm/vmscan.c shrink_list(), 3.14.
    """
    if lru & LRU_ACTIVE:
        if inactive_list_is_low(cpu.m, z, lru):
            shrink_active_list(cpu, z, nr_to_scan, lru, priority)
        return 0
    return shrink_inactive_list(cpu, z, nr_to_scan, lru, priority, kswapd)


def shrink_lruvec(cpu, z, priority, nr_to_reclaim, kswapd=False):
    """Scan the zone's lists in SWAP_CLUSTER_MAX steps until get_scan_count()'s targets are met; returns pages
    reclaimed.

    Follows: mm/vmscan.c shrink_lruvec(), 3.14: direct reclaim stops once this zone has reclaimed
    nr_to_reclaim pages of its own, then the active anon list is aged if the inactive one is low. With
    `full_scan_at_def_priority` (3.16, 1a501907bbea) direct reclaim at DEF_PRIORITY scans its whole target.
    Differs: kswapd stops there too, without rescanning the other lists proportionally.
    """
    m = cpu.m
    nr = get_scan_count(cpu, z, priority, kswapd)
    nr_reclaimed = 0
    scan_adjusted = False
    if cpu.features.full_scan_at_def_priority:
        scan_adjusted = not kswapd and priority == DEF_PRIORITY
    while nr[LRU_INACTIVE_ANON] or nr[LRU_ACTIVE_FILE] or nr[LRU_INACTIVE_FILE]:
        for lru in range(NR_LRU_LISTS):
            if nr[lru]:
                nr_to_scan = min(nr[lru], SWAP_CLUSTER_MAX)
                nr[lru] -= nr_to_scan
                nr_reclaimed += shrink_list(cpu, z, lru, nr_to_scan, priority, kswapd)
        sync.sched_point(cpu, "shrink_lruvec", z)
        if nr_reclaimed < nr_to_reclaim or scan_adjusted:
            continue
        break
    if inactive_anon_is_low(m, z):
        shrink_active_list(cpu, z, SWAP_CLUSTER_MAX, LRU_ACTIVE_ANON, priority)
    return nr_reclaimed


def shrink_zones(cpu, zonelist, high_zoneidx, priority, nr_to_reclaim):
    """Shrink every usable zone, skipping unreclaimable ones after the first pass. Returns pages reclaimed.

    Follows: mm/vmscan.c shrink_zones() → shrink_zone(), 3.14: each zone is asked for the whole target
    (sc->nr_to_reclaim), whatever the zones before it reclaimed.
    """
    m = cpu.m
    total = 0
    for z in zonelist:
        if m.v_zone[z * Z_NCOLS + Z_IDX] > high_zoneidx:
            continue
        if priority != DEF_PRIORITY and not zone_reclaimable(m, z):
            continue
        total += shrink_lruvec(cpu, z, priority, nr_to_reclaim)
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
        nr_reclaimed += shrink_zones(cpu, zonelist, high_zoneidx, priority, nr_to_reclaim)
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
    until max(nr_pages, SWAP_CLUSTER_MAX) are freed; anonymous pages only if may_swap and swap has room; the
    same isolate / shrink_page_list / putback steps as global reclaim, without touching pages_scanned).

    Differs: no per-memcg lruvecs: each zone's lists are walked oldest first, max(size >> priority,
    SWAP_CLUSTER_MAX) pages a pass, and only pages charged within the subtree are isolated (the others are
    stepped over, not rotated); an active list is aged whenever the zone's inactive list is low.
    """
    m = cpu.m
    target = max(nr_pages, SWAP_CLUSTER_MAX)
    reclaimed = 0
    for priority in range(DEF_PRIORITY, -1, -1):
        for z in range(m.nr_zones):
            lrus = (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)
            if may_swap and m.v_glob[G_NR_SWAP_FREE] > 0:
                lrus = (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON) + lrus
            for lru in lrus:
                scan = max(lru_size(m, z, lru) >> priority, SWAP_CLUSTER_MAX)
                while scan > 0 and reclaimed < target:
                    nr_to_scan = min(scan, SWAP_CLUSTER_MAX)
                    scan -= nr_to_scan
                    if lru & LRU_ACTIVE:
                        if inactive_list_is_low(m, z, lru):
                            shrink_active_list(cpu, z, nr_to_scan, lru, priority, in_memcg)
                        break
                    reclaimed += shrink_inactive_list(cpu, z, nr_to_scan, lru, priority, False, in_memcg)
            if reclaimed >= target:
                break
        if reclaimed >= target:
            break
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
        ksched.__wake_up_common(cpu, wq)


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

    Follows: mm/vmscan.c balance_pgdat()/kswapd_shrink_zone(), 3.14 (KERNEL §6.6): the anon lists are aged
    first (age_active_anon), end_zone is the highest
    unbalanced zone, not counting zones found unreclaimable after the first pass; once 2 << order pages are
    reclaimed for an order > 0 wake-up, the watermarks are checked at order 0. Returns (order, end_zone), what
    kswapd() goes to sleep against (balanced_order, balanced_classzone_idx).
    """
    m = cpu.m
    vmstat.count_vm_event(cpu, vmstat.NR_KSWAPD_RUNS)
    nr_reclaimed = 0
    end_zone = 0
    for priority in range(DEF_PRIORITY, 0, -1):
        sync.pause_point(cpu)
        sync.sched_point(cpu, "balance_pgdat", priority)   # kswapd is preemptible between passes
        zones = _node_zones(m, nid, MAX_NR_ZONES - 1)
        unbalanced = [z for z in zones if (priority == DEF_PRIORITY or zone_reclaimable(m, z))
                      and not zone_balanced(m, z, order, 0, 0)]
        if not unbalanced or m.v_glob[G_STOP]:
            return order, end_zone
        end_zone = max(m.v_zone[z * Z_NCOLS + Z_IDX] for z in unbalanced)
        for z in zones:
            age_active_anon(cpu, z, priority)
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
            progress += shrink_lruvec(cpu, z, priority, target, kswapd=True)
        nr_reclaimed += progress
        if pfmemalloc_waiters(m, nid) and pfmemalloc_watermark_ok(cpu, nid):
            wake_up_pfmemalloc(cpu, nid)   # throttled reclaimers may go on: the reserve is back
        if order and nr_reclaimed >= 2 << order:
            order = 0   # fragmentation: rebalance at order 0 rather than reclaim without end
        if pgdat_balanced(m, nid, order, classzone_idx):
            return order, end_zone
    return order, end_zone


def age_active_anon(cpu, z, priority):
    """Background aging of the anon lists, so pages get a chance to be referenced before they are reclaimed.

    Follows: mm/vmscan.c age_active_anon(), 3.14 (called by balance_pgdat() for every zone, no swap: nothing).
    """
    if inactive_anon_is_low(cpu.m, z):
        shrink_active_list(cpu, z, SWAP_CLUSTER_MAX, LRU_ACTIVE_ANON, priority)


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
        order, classzone_idx = balance_pgdat(cpu, nid, order, classzone_idx)

