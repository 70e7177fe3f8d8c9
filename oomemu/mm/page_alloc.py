"""The buddy allocator, per-CPU page lists, watermark checks and the allocation slowpath.

Follows mm/page_alloc.c of Linux 3.14 (KERNEL §1.4–1.5, §6), in that file's order: freeing (buddy merge,
per-CPU lists), allocating (__rmqueue, buffered_rmqueue), the watermark check, get_page_from_freelist, then
the slowpath pieces and __alloc_pages_nodemask. A page is its PFN; a zone is its global index; NULL is None.
"""
import numpy as np

from oomemu import sync
from oomemu.include.gfp import (__GFP_HARDWALL, __GFP_HIGH, __GFP_MEMALLOC, __GFP_NOFAIL,
                                __GFP_NOMEMALLOC, __GFP_NORETRY, __GFP_NOWARN, __GFP_NO_KSWAPD, __GFP_REPEAT,
                                __GFP_THISNODE, __GFP_WAIT, __GFP_FS, GFP_THISNODE, gfp_allowed_mask, gfp_zone,
                                gfpflags_to_migratetype)
from oomemu.include.mmzone import (MAX_ORDER, NR_ALLOC_BATCH, NR_FREE_PAGES, NR_PAGES_SCANNED,
                                   PAGE_ALLOC_COSTLY_ORDER, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_NORMAL)
from oomemu.include.sched import PF_DUMPCORE, PF_MEMALLOC, TIF_MEMDIE
from oomemu.kernel import printk
from oomemu.kernel import sched as ksched
from oomemu.kernel import time as ktime
from oomemu.lib import ratelimit
from oomemu.machine import (C_DRAIN, G_STOP, G_HZ, G_LAST_FREE_JIFFY, G_NOPAGE_RS, G_OOM_KILLER_DISABLED, PAGE_BUDDY,
                            PAGE_KERNEL, PAGE_PCP, PG_buddy, Z_FREE_HEAD, Z_IDX, Z_LOWMEM_RESERVE, Z_MANAGED, Z_NCOLS,
                            Z_NODE, Z_NR_FREE, Z_START_PFN, Z_STAT, Z_WMARK)
from oomemu.kernel import cpuset
from oomemu.mm import backing_dev, mempolicy, oom_kill, vmscan, vmstat
from oomemu.mm.internal import (ALLOC_CPUSET, ALLOC_HARDER, ALLOC_HIGH, ALLOC_NO_WATERMARKS,
                                ALLOC_WMARK_HIGH, ALLOC_WMARK_LOW, ALLOC_WMARK_MASK, ALLOC_WMARK_MIN)
from oomemu.trace import events as tp

_FREE = Z_STAT + NR_FREE_PAGES
_SCANNED = Z_STAT + NR_PAGES_SCANNED
_ALLOC_BATCH = Z_STAT + NR_ALLOC_BATCH
BLK_RW_ASYNC = 0
_BULK_FREE_MIN = 64   # above this many pages, free_hot_cold_page_list rebuilds the free lists


# --- free-list primitives (zone->lock held) ------------------------------------------------------------------

def _list_add(m, z, order, pfn):
    """Push `pfn` onto zone z's free_area[order] list."""
    vz, nxt, prv = m.v_zone, m.v_page_next, m.v_page_prev
    slot = z * Z_NCOLS + Z_FREE_HEAD + order
    head = vz[slot]
    nxt[pfn] = head
    prv[pfn] = -1
    if head != -1:
        prv[head] = pfn
    vz[slot] = pfn
    vz[z * Z_NCOLS + Z_NR_FREE + order] += 1


def _list_del(m, z, order, pfn):
    """Unlink `pfn` from zone z's free_area[order] list."""
    vz, nxt, prv = m.v_zone, m.v_page_next, m.v_page_prev
    n, p = nxt[pfn], prv[pfn]
    if p == -1:
        vz[z * Z_NCOLS + Z_FREE_HEAD + order] = n
    else:
        nxt[p] = n
    if n != -1:
        prv[n] = p
    nxt[pfn] = prv[pfn] = -1
    vz[z * Z_NCOLS + Z_NR_FREE + order] -= 1


def _set_kind(m, pfn, order, kind, owner):
    """Record who owns the 2^order frames at pfn (the page frame table's owner columns)."""
    if order == 0:
        m.v_page_kind[pfn] = kind
        m.v_page_owner[pfn] = owner
    else:
        end = pfn + (1 << order)
        m.page_kind[pfn:end] = kind
        m.page_owner[pfn:end] = owner


def page_is_buddy(m, z, buddy, order):
    """True if `buddy` heads a free block of exactly `order` in zone z. Follows: page_is_buddy(), 3.14."""
    if buddy >= m.nr_pages or m.v_page_zone[buddy] != z:
        return False
    return bool(m.v_page_flags[buddy] & PG_buddy) and m.v_page_order[buddy] == order


def __free_one_page(cpu, pfn, z, order):
    """Give a 2^order block back to the buddy allocator, merging with free buddies as far as possible.

    Follows: mm/page_alloc.c __free_one_page(), 3.14. Caller holds zone->lock.
    """
    m = cpu.m
    _set_kind(m, pfn, order, PAGE_BUDDY, -1)
    flags = m.v_page_flags
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)
        if not page_is_buddy(m, z, buddy, order):
            break
        _list_del(m, z, order, buddy)
        flags[buddy] &= ~PG_buddy
        pfn &= buddy
        order += 1
    flags[pfn] |= PG_buddy
    m.v_page_order[pfn] = order
    _list_add(m, z, order, pfn)


def _note_freed(cpu, z, nr):
    """Freeing to the buddy allocator re-arms zone_reclaimable() and counts for stall detection."""
    m = cpu.m
    m.v_zone[z * Z_NCOLS + _SCANNED] = 0
    m.v_zone[z * Z_NCOLS + _FREE] += nr
    tp.trace_zone_free_pages(cpu, z, m.v_zone[z * Z_NCOLS + _FREE])
    m.v_glob[G_LAST_FREE_JIFFY] = ktime.jiffies(m)
    vmstat.count_vm_event(cpu, vmstat.NR_PAGES_FREED, nr)


def free_pcppages_bulk(cpu, z, count):
    """Move `count` pages from this CPU's list for zone z back to the buddy allocator.

    Follows: mm/page_alloc.c free_pcppages_bulk(), 3.14 (pages_scanned reset included).
    """
    m = cpu.m
    pcp = m.v_pcp
    base = (cpu.id * m.nr_zones + z) * 4
    nxt = m.v_page_next
    with sync.spinlock(cpu, m.zone_lock(z)):
        done = 0
        while done < count and pcp[base]:
            pfn = pcp[base + 3]
            pcp[base + 3] = nxt[pfn]
            pcp[base] -= 1
            nxt[pfn] = -1
            __free_one_page(cpu, pfn, z, 0)
            done += 1
        _note_freed(cpu, z, done)


def free_one_page(cpu, z, pfn, order):
    """Free one block straight to the buddy allocator. Follows: mm/page_alloc.c free_one_page(), 3.14."""
    with sync.spinlock(cpu, cpu.m.zone_lock(z)):
        __free_one_page(cpu, pfn, z, order)
        _note_freed(cpu, z, 1 << order)


def drain_local_pages(cpu):
    """Empty this CPU's per-CPU lists into the buddy allocator. Follows: drain_local_pages(), 3.14."""
    m = cpu.m
    if cpu.id >= m.nr_cpus:
        return
    for z in range(m.nr_zones):
        count = m.v_pcp[(cpu.id * m.nr_zones + z) * 4]
        if count:
            free_pcppages_bulk(cpu, z, count)


def drain_all_pages(cpu):
    """Drain every CPU's per-CPU lists and wait until each has. Follows: drain_all_pages(), 3.14
    (on_each_cpu_mask(..., drain_local_pages, 1): the caller waits for every CPU).

    Differs: the "IPI" is a doorbell, and a remote CPU drains at its next scheduler pass (the end of the user
    step or sleep it is in) rather than at once, because a CPU's lists are only ever touched by that CPU; while
    it waits, this CPU answers drain requests aimed at itself, as it would take the IPI while spinning.
    """
    m = cpu.m
    drain_local_pages(cpu)
    if cpu.id >= m.nr_cpus:
        return
    others = [other for other in range(m.nr_cpus) if other != cpu.id]
    for other in others:
        m.cpu[other, C_DRAIN] = 1
        sync.ring_doorbell(m, other)
    ncols = m.cpu.shape[1]
    vcpu, g = m.v_cpu, m.v_glob
    mine = cpu.id * ncols + C_DRAIN
    while any(vcpu[other * ncols + C_DRAIN] for other in others) and not g[G_STOP]:
        sync.cpu_relax(cpu, "drain_all_pages.wait")
        if cpu.ctl is None:
            sync.pause_point(cpu)   # no lock held: a snapshot may park this CPU (and the heartbeat goes on)
        if vcpu[mine]:
            vcpu[mine] = 0
            drain_local_pages(cpu)


def free_hot_cold_page(cpu, pfn, cold=False):
    """Free an order-0 page onto this CPU's list, spilling a batch to the buddy allocator when it is full.

    Follows: mm/page_alloc.c free_hot_cold_page(), 3.14. Differs: kswapd (not a CPU) frees straight to buddy.
    """
    m = cpu.m
    z = m.v_page_zone[pfn]
    tp.trace_mm_page_free(cpu, pfn, 0)
    if cpu.id >= m.nr_cpus:
        free_one_page(cpu, z, pfn, 0)
        return
    pcp = m.v_pcp
    base = (cpu.id * m.nr_zones + z) * 4
    m.v_page_kind[pfn] = PAGE_PCP
    m.v_page_owner[pfn] = cpu.id
    m.v_page_next[pfn] = pcp[base + 3]
    pcp[base + 3] = pfn
    pcp[base] += 1
    if pcp[base] >= pcp[base + 1]:
        free_pcppages_bulk(cpu, z, pcp[base + 2])


def free_hot_cold_page_list(cpu, z, pfns):
    """Free many order-0 pages of zone z at once (an exiting mm's pages). Caller holds zone->lock.

    Follows: mm/page_alloc.c free_hot_cold_page_list(), 3.14. Differs: the pages go straight to the buddy
    allocator instead of through the per-CPU lists; a large batch rebuilds the zone's free lists in one
    vectorised pass, which leaves the same blocks as freeing the pages one by one would (the buddy
    decomposition of a set of free pages is unique), only in PFN order within each list.
    """
    if len(pfns) <= _BULK_FREE_MIN:
        for pfn in pfns.tolist():
            tp.trace_mm_page_free(cpu, pfn, 0)
            __free_one_page(cpu, pfn, z, 0)
        return len(pfns)
    m = cpu.m
    start = m.v_zone[z * Z_NCOLS + Z_START_PFN]
    end = start + m.v_zone[z * Z_NCOLS + Z_MANAGED]
    tp.trace_many(cpu, "mm_page_free", pfns)
    m.page_kind[pfns] = PAGE_BUDDY
    m.page_owner[pfns] = -1
    _rebuild_free_area(m, z, start, m.page_kind[start:end] == PAGE_BUDDY)
    return len(pfns)


def _rebuild_free_area(m, z, start, free):
    """Rebuild zone z's free lists from `free` (one bool per page of the zone): each maximal aligned free block
    becomes one list entry, lists in PFN order. Caller holds zone->lock. Emulator-only.

    Level k of the pyramid says which order-k blocks are wholly free (both halves free at level k-1); an
    order-k block heads a list entry when it is free and its order-(k+1) parent is not.
    """
    m.page_flags[start:start + len(free)] &= ~PG_buddy
    levels = [free]
    for _ in range(1, MAX_ORDER):
        below = levels[-1]
        levels.append(below[0::2] & below[1::2])
    heads, counts = [], []
    for order in range(MAX_ORDER):
        entries = levels[order]
        if order + 1 < MAX_ORDER:    # pairs of order-k blocks against their parent
            entries = (entries.reshape(-1, 2) & ~levels[order + 1][:, None]).ravel()
        pfns = entries.nonzero()[0]
        heads.append((pfns << order) + start)
        counts.append(len(pfns))
    # The lists are consecutive runs of `heads`, order by order; the 11 per-order numbers stay Python ints.
    firsts = [sum(counts[:order]) for order in range(MAX_ORDER)]
    zrow = m.zone[z]
    zrow[Z_NR_FREE:Z_NR_FREE + MAX_ORDER] = counts
    heads = np.concatenate(heads).astype(np.int32)
    zrow[Z_FREE_HEAD:Z_FREE_HEAD + MAX_ORDER] = [int(heads[f]) if c else -1 for f, c in zip(firsts, counts)]
    if not len(heads):
        return
    m.page_flags[heads] |= PG_buddy
    m.page_order[heads] = np.repeat(np.arange(MAX_ORDER, dtype=np.int8), counts)
    # Link each run into a list: the neighbour within the run, -1 at the run's ends.
    nxt = np.empty_like(heads)
    nxt[:-1] = heads[1:]
    prv = np.empty_like(heads)
    prv[1:] = heads[:-1]
    ends = [(f, f + c - 1) for f, c in zip(firsts, counts) if c]
    prv[[f for f, _ in ends]] = -1
    nxt[[last for _, last in ends]] = -1
    m.page_next[heads] = nxt
    m.page_prev[heads] = prv


def __free_pages(cpu, pfn, order):
    """Free a block the caller owns. Follows: mm/page_alloc.c __free_pages(), 3.14."""
    if order == 0:
        free_hot_cold_page(cpu, pfn)
    else:
        tp.trace_mm_page_free(cpu, pfn, order)
        free_one_page(cpu, cpu.m.v_page_zone[pfn], pfn, order)


# --- allocation from the buddy lists -------------------------------------------------------------------------

def expand(m, z, pfn, low, high):
    """Split a 2^high block at pfn down to 2^low, returning the upper halves to the free lists.

    Follows: mm/page_alloc.c expand(), 3.14. Caller holds zone->lock.
    """
    size = 1 << high
    while high > low:
        high -= 1
        size >>= 1
        half = pfn + size
        m.v_page_flags[half] |= PG_buddy
        m.v_page_order[half] = high
        _list_add(m, z, high, half)


def __rmqueue_smallest(cpu, z, order):
    """Take the first block of the smallest order ≥ `order` and split it. Follows: __rmqueue_smallest(), 3.14."""
    m = cpu.m
    vz = m.v_zone
    for current_order in range(order, MAX_ORDER):
        pfn = vz[z * Z_NCOLS + Z_FREE_HEAD + current_order]
        if pfn == -1:
            continue
        _list_del(m, z, current_order, pfn)
        m.v_page_flags[pfn] &= ~PG_buddy
        expand(m, z, pfn, order, current_order)
        return pfn
    return -1


def __rmqueue(cpu, z, order, migratetype):
    """Remove a block from the buddy allocator. Follows: mm/page_alloc.c __rmqueue(), 3.14.

    Differs: one free list per order (no migrate types, so no fallback stealing).
    """
    pfn = __rmqueue_smallest(cpu, z, order)
    if pfn != -1:
        tp.trace_mm_page_alloc_zone_locked(cpu, pfn, order, migratetype, z)
    return pfn


def rmqueue_bulk(cpu, z, order, count, migratetype):
    """Move up to `count` order-0 pages from the buddy allocator to this CPU's list; returns how many.

    Follows: mm/page_alloc.c rmqueue_bulk(), 3.14.
    """
    m = cpu.m
    pcp = m.v_pcp
    base = (cpu.id * m.nr_zones + z) * 4
    nxt, kind, owner = m.v_page_next, m.v_page_kind, m.v_page_owner
    got = 0
    with sync.spinlock(cpu, m.zone_lock(z)):
        while got < count:
            pfn = __rmqueue(cpu, z, order, migratetype)
            if pfn == -1:
                break
            kind[pfn] = PAGE_PCP
            owner[pfn] = cpu.id
            nxt[pfn] = pcp[base + 3]
            pcp[base + 3] = pfn
            got += 1
        pcp[base] += got
        m.v_zone[z * Z_NCOLS + _FREE] -= got
        tp.trace_zone_free_pages(cpu, z, m.v_zone[z * Z_NCOLS + _FREE])
    return got


def buffered_rmqueue(cpu, preferred_zone, z, order, gfp_flags, migratetype):
    """Allocate from zone z: order 0 from this CPU's list (refilled by batch), larger orders from buddy; the
    zone's fair-allocation batch pays for the pages unless the request is GFP_THISNODE.

    Follows: mm/page_alloc.c buffered_rmqueue(), 3.14. The page comes back owned by the kernel (PAGE_KERNEL,
    owner -1) until the caller records its real owner.
    """
    m = cpu.m
    if order == 0 and cpu.id < m.nr_cpus:
        pcp = m.v_pcp
        base = (cpu.id * m.nr_zones + z) * 4
        if not pcp[base]:
            if not rmqueue_bulk(cpu, z, 0, pcp[base + 2], migratetype):
                return None
        pfn = pcp[base + 3]
        pcp[base + 3] = m.v_page_next[pfn]
        pcp[base] -= 1
        m.v_page_next[pfn] = -1
        m.v_page_kind[pfn] = PAGE_KERNEL
        m.v_page_owner[pfn] = -1
    else:
        with sync.spinlock(cpu, m.zone_lock(z)):
            pfn = __rmqueue(cpu, z, order, migratetype)
            if pfn == -1:
                return None
            m.v_zone[z * Z_NCOLS + _FREE] -= 1 << order
            tp.trace_zone_free_pages(cpu, z, m.v_zone[z * Z_NCOLS + _FREE])
            _set_kind(m, pfn, order, PAGE_KERNEL, -1)
    if gfp_flags & GFP_THISNODE != GFP_THISNODE:     # !gfp_thisnode_allocation(), inline on the fast path
        sync.atomic_long_add(cpu, m.v_zone, z * Z_NCOLS + _ALLOC_BATCH, -(1 << order))
    return pfn


# --- watermarks ----------------------------------------------------------------------------------------------

def __zone_watermark_ok(m, z, order, mark, classzone_idx, alloc_flags, free_pages):
    """True if zone z keeps more than `mark` (eased by HIGH/HARDER) plus its lowmem reserve after the request.

    Follows: mm/page_alloc.c __zone_watermark_ok(), 3.14 (KERNEL §6.4). No CMA pages exist here.
    """
    vz = m.v_zone
    zb = z * Z_NCOLS
    free_pages -= (1 << order) - 1
    min_ = mark
    if alloc_flags & ALLOC_HIGH:
        min_ -= min_ // 2
    if alloc_flags & ALLOC_HARDER:
        min_ -= min_ // 4
    if free_pages <= min_ + vz[zb + Z_LOWMEM_RESERVE + classzone_idx]:
        return False
    for o in range(order):
        free_pages -= vz[zb + Z_NR_FREE + o] << o
        min_ >>= 1
        if free_pages <= min_:
            return False
    return True


def zone_watermark_ok(m, z, order, mark, classzone_idx, alloc_flags):
    """The watermark check against NR_FREE_PAGES. Follows: zone_watermark_ok(), 3.14."""
    return __zone_watermark_ok(m, z, order, mark, classzone_idx, alloc_flags, m.v_zone[z * Z_NCOLS + _FREE])


def zone_idx(m, z):
    """The index of zone z within its node. Follows: zone_idx()."""
    return m.v_zone[z * Z_NCOLS + Z_IDX]


def get_page_from_freelist(cpu, gfp_mask, nodemask, order, zonelist, high_zoneidx, alloc_flags,
                           preferred_zone, migratetype):
    """Walk the zonelist for a zone that passes its watermark and allocate from it.

    Follows: mm/page_alloc.c get_page_from_freelist(), 3.14, with its fair zone allocation: the low-watermark
    pass (the fast path) skips a zone whose NR_ALLOC_BATCH is used up and any zone off the preferred zone's
    node, unless the request is GFP_THISNODE; prepare_slowpath() starts a new round. ALLOC_CPUSET asks
    kernel/cpuset.py. Differs: no zonelist cache, no zone_reclaim_mode (a failing zone is simply skipped, as
    with zone_reclaim_mode = 0).
    """
    m = cpu.m
    vz = m.v_zone
    classzone_idx = vz[preferred_zone * Z_NCOLS + Z_IDX]
    check = not alloc_flags & ALLOC_NO_WATERMARKS
    if check:
        wmark_col = Z_WMARK + (alloc_flags & ALLOC_WMARK_MASK)
    fair = alloc_flags & ALLOC_WMARK_LOW and gfp_mask & GFP_THISNODE != GFP_THISNODE   # !gfp_thisnode_allocation
    local_node = vz[preferred_zone * Z_NCOLS + Z_NODE]
    if m.numa_constraints and alloc_flags & ALLOC_CPUSET:
        # ALLOC_CPUSET: cpuset_zone_allowed_softwall() for every zone, asked once and folded into the nodemask
        allowed = cpuset.cpuset_allowed_nodes(cpu, gfp_mask)
        if allowed is not None:
            nodemask = allowed if nodemask is None else allowed.intersection(nodemask)
    for z in zonelist:
        zb = z * Z_NCOLS
        if vz[zb + Z_IDX] > high_zoneidx:
            continue
        if nodemask is not None and vz[zb + Z_NODE] not in nodemask:
            continue
        if fair:
            # Fair zone allocation: pages spread over the local zones in proportion to their size.
            if vz[zb + _ALLOC_BATCH] <= 0:
                continue
            if vz[zb + Z_NODE] != local_node:   # !zone_local(preferred_zone, zone)
                continue
        free_at_check = vz[zb + _FREE]
        if check and not __zone_watermark_ok(m, z, order, vz[zb + wmark_col], classzone_idx, alloc_flags,
                                             free_at_check):
            continue
        pfn = buffered_rmqueue(cpu, preferred_zone, z, order, gfp_mask, migratetype)
        if pfn is not None:
            tp.trace_mm_page_alloc(cpu, pfn, order, gfp_mask, free_at_check, alloc_flags)
            if not check:
                vmstat.count_vm_event(cpu, vmstat.NR_NO_WATERMARK_ALLOCS)
            return pfn
    return None


# --- the slowpath ---------------------------------------------------------------------------------------------

def warn_alloc_failed(cpu, gfp_mask, order):
    """Print the rate-limited "page allocation failure" line. Follows: warn_alloc_failed(), 3.14 (KERNEL §3.6).

    Differs: no stack dump and no show_mem() after the line.
    """
    if gfp_mask & __GFP_NOWARN:
        return
    if not ratelimit.__ratelimit(cpu, G_NOPAGE_RS, "warn_alloc_failed"):
        return
    comm = printk.task_comm(cpu.m, cpu.current)
    printk.printk(cpu, printk.KERN_WARNING, f"{comm}: page allocation failure: order:{order}, mode:0x{gfp_mask:x}")


def should_alloc_retry(gfp_mask, order, did_some_progress, pages_reclaimed):
    """Whether the slowpath goes round again after reclaim. Follows: should_alloc_retry(), 3.14 (KERNEL §6.9)."""
    if gfp_mask & __GFP_NORETRY:
        return False
    if gfp_mask & __GFP_NOFAIL:
        return True
    # pm_suspended_storage() is never true: the emulated machine does not suspend.
    if order <= PAGE_ALLOC_COSTLY_ORDER:
        return True  # "too small to fail"
    if gfp_mask & __GFP_REPEAT and pages_reclaimed < (1 << order):
        return True
    return False


MAX_RECLAIM_RETRIES = 16


def should_reclaim_retry(cpu, order, zonelist, high_zoneidx, nodemask, preferred_zone, alloc_flags,
                         no_progress_loops):
    """Whether reclaim may still lead somewhere: 4.7's replacement of should_alloc_retry/zone_reclaimable.

    Follows: mm/page_alloc.c should_reclaim_retry(), 4.7 (KERNEL §6.8, 0a0337e0d1d1 "mm, oom: rework oom
    detection"): no more than MAX_RECLAIM_RETRIES reclaim rounds in a row without progress; otherwise retry while
    some usable zone would pass its min watermark if its reclaimable pages were freed, the reclaimable part
    shrinking by 1/MAX_RECLAIM_RETRIES for each round without progress. Differs: no dirty or writeback pages
    exist, so its congestion_wait for them never happens; its cond_resched is a scheduling point.
    """
    if no_progress_loops > MAX_RECLAIM_RETRIES:
        return False
    m = cpu.m
    classzone_idx = zone_idx(m, preferred_zone)
    for z in zonelist:
        if zone_idx(m, z) > high_zoneidx:
            continue
        if nodemask is not None and m.v_zone[z * Z_NCOLS + Z_NODE] not in nodemask:
            continue    # for_each_zone_zonelist_nodemask
        reclaimable = vmscan.zone_reclaimable_pages(m, z)
        available = reclaimable - _div_round_up(no_progress_loops * reclaimable, MAX_RECLAIM_RETRIES)
        available += int(m.v_zone[z * Z_NCOLS + _FREE])
        mark = int(m.v_zone[z * Z_NCOLS + Z_WMARK + WMARK_MIN])
        if __zone_watermark_ok(m, z, order, mark, classzone_idx, alloc_flags, available):
            sync.sched_point(cpu, "should_reclaim_retry")
            return True
    return False


def _div_round_up(n, d):
    return -(-n // d)


async def __alloc_pages_may_oom(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                                migratetype):
    """Serialise on the zonelist OOM lock, try the high watermark once more, then call the OOM killer.

    Follows: mm/page_alloc.c __alloc_pages_may_oom(), 3.14 (KERNEL §1.4).
    """
    sync.sched_point(cpu, "may_oom.trylock")
    if not oom_kill.try_set_zonelist_oom(cpu, zonelist, gfp_mask):
        await ksched.schedule_timeout_uninterruptible(cpu, 1)  # a parallel OOM kill is running: back off
        return None
    sync.sched_point(cpu, "may_oom.last_chance")
    # The last chance: a parallel OOM kill may just have freed memory. The high watermark keeps this from
    # succeeding on the crumbs that are left while a real shortage goes on.
    page = get_page_from_freelist(cpu, gfp_mask | __GFP_HARDWALL, nodemask, order, zonelist, high_zoneidx,
                                  ALLOC_WMARK_HIGH | ALLOC_CPUSET, preferred_zone, migratetype)
    if page is None:
        exempt = not gfp_mask & __GFP_NOFAIL and (order > PAGE_ALLOC_COSTLY_ORDER or high_zoneidx < ZONE_NORMAL
                                                  or gfp_mask & __GFP_THISNODE)
        if not exempt:
            sync.sched_point(cpu, "may_oom.out_of_memory")
            await oom_kill.out_of_memory(cpu, zonelist, gfp_mask, order, nodemask, False)
    sync.sched_point(cpu, "may_oom.clear")
    oom_kill.clear_zonelist_oom(cpu, zonelist, gfp_mask)
    return page


async def __alloc_pages_may_oom_oom_lock(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                                        migratetype):
    """The same step with 4.2's global oom_lock; returns (page, did_some_progress).

    Follows: mm/page_alloc.c __alloc_pages_may_oom(), 4.2 (seen in 4.2.8; KERNEL §8, C-dc56401): a busy
    mutex_trylock counts as progress after a one-jiffy uninterruptible sleep; the PF_DUMPCORE, costly-order,
    lowmem and __GFP_THISNODE exits moved in here, and a !__GFP_FS request reports progress without killing
    ("keep looping as per tradition"); out_of_memory's result is the progress. Used when the profile has
    `oom_lock_mutex`.
    """
    m = cpu.m
    if not oom_kill.mutex_trylock_oom_lock(cpu):
        await ksched.schedule_timeout_uninterruptible(cpu, 1)  # somebody else is making progress for us
        return None, 1
    did_some_progress = 0
    try:
        page = get_page_from_freelist(cpu, gfp_mask | __GFP_HARDWALL, nodemask, order, zonelist, high_zoneidx,
                                      ALLOC_WMARK_HIGH | ALLOC_CPUSET, preferred_zone, migratetype)
        if page is not None:
            return page, 0
        if not gfp_mask & __GFP_NOFAIL:
            if m.v_task_flags[cpu.current] & PF_DUMPCORE:
                return None, 0
            if order > PAGE_ALLOC_COSTLY_ORDER or high_zoneidx < ZONE_NORMAL:
                return None, 0
            if not gfp_mask & __GFP_FS:
                return None, 1
            if gfp_mask & __GFP_THISNODE:
                return None, 0
        if await oom_kill.out_of_memory(cpu, zonelist, gfp_mask, order, nodemask, False) or gfp_mask & __GFP_NOFAIL:
            did_some_progress = 1
        return None, did_some_progress
    finally:
        oom_kill.mutex_unlock_oom_lock(cpu)


def __alloc_pages_direct_compact(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, alloc_flags,
                                 preferred_zone, migratetype, sync_migration):
    """Direct compaction: returns (page, deferred, contended). Follows: __alloc_pages_direct_compact(), 3.14.

    Differs: order-0 requests return at once as upstream; for order > 0 no page migration is modelled yet,
    so compaction is always COMPACT_SKIPPED.
    """
    return None, False, False


async def __perform_reclaim(cpu, gfp_mask, order, zonelist, nodemask):
    """Run direct reclaim with PF_MEMALLOC set. Follows: mm/page_alloc.c __perform_reclaim(), 3.14."""
    m = cpu.m
    cur = cpu.current
    vmstat.count_vm_event(cpu, vmstat.NR_DIRECT_RECLAIMS)
    m.v_task_flags[cur] |= PF_MEMALLOC
    progress = await vmscan.try_to_free_pages(cpu, zonelist, order, gfp_mask, nodemask)
    m.v_task_flags[cur] &= ~PF_MEMALLOC
    await ksched.cond_resched(cpu)
    return progress


async def __alloc_pages_direct_reclaim(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, alloc_flags,
                                       preferred_zone, migratetype):
    """Reclaim, then retry at the slowpath's watermark (draining per-CPU lists once). Returns (page, progress).

    Follows: mm/page_alloc.c __alloc_pages_direct_reclaim(), 3.14.
    """
    did_some_progress = await __perform_reclaim(cpu, gfp_mask, order, zonelist, nodemask)
    if not did_some_progress:
        vmstat.count_vm_event(cpu, vmstat.NR_DIRECT_RECLAIM_PROGRESS0)
        return None, 0
    drained = False
    while True:
        page = get_page_from_freelist(cpu, gfp_mask, nodemask, order, zonelist, high_zoneidx,
                                      alloc_flags & ~ALLOC_NO_WATERMARKS, preferred_zone, migratetype)
        if page is not None or drained:
            return page, did_some_progress
        drain_all_pages(cpu)
        drained = True


async def __alloc_pages_high_priority(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                                      migratetype):
    """Allocate ignoring watermarks, looping only for __GFP_NOFAIL. Follows: __alloc_pages_high_priority(), 3.14."""
    while True:
        page = get_page_from_freelist(cpu, gfp_mask, nodemask, order, zonelist, high_zoneidx,
                                      ALLOC_NO_WATERMARKS, preferred_zone, migratetype)
        if page is not None or not gfp_mask & __GFP_NOFAIL:
            return page
        await backing_dev.wait_iff_congested(cpu, preferred_zone, BLK_RW_ASYNC, cpu.m.v_glob[G_HZ] // 50)


def gfp_thisnode_allocation(gfp_mask):
    """GFP_THISNODE requests (all three bits) neither reclaim nor take part in fair zone allocation.

    Follows: mm/page_alloc.c gfp_thisnode_allocation(), 3.14 (CONFIG_NUMA).
    """
    return gfp_mask & GFP_THISNODE == GFP_THISNODE


def zone_local(m, local_zone, z):
    """True if zone z is on local_zone's node. Follows: mm/page_alloc.c zone_local(), 3.14."""
    return m.v_zone[local_zone * Z_NCOLS + Z_NODE] == m.v_zone[z * Z_NCOLS + Z_NODE]


def prepare_slowpath(cpu, gfp_mask, order, zonelist, high_zoneidx, preferred_zone):
    """Wake the kswapd of every zone the request may use (unless __GFP_NO_KSWAPD) and start a new fair
    allocation round in the local zones: each one's NR_ALLOC_BATCH goes back to high - low.

    Follows: mm/page_alloc.c prepare_slowpath(), 3.14 (KERNEL §6.2 step 3).
    """
    m = cpu.m
    vz = m.v_zone
    classzone_idx = zone_idx(m, preferred_zone)
    for z in zonelist:
        if zone_idx(m, z) > high_zoneidx:
            continue
        if not gfp_mask & __GFP_NO_KSWAPD:
            vmscan.wakeup_kswapd(cpu, z, order, classzone_idx)
        if not zone_local(m, preferred_zone, z):
            continue
        zb = z * Z_NCOLS
        # mod_zone_page_state by the difference: a concurrent allocation's decrement is kept, as in the kernel.
        sync.atomic_long_add(cpu, vz, zb + _ALLOC_BATCH,
                             vz[zb + Z_WMARK + WMARK_HIGH] - vz[zb + Z_WMARK + WMARK_LOW] - vz[zb + _ALLOC_BATCH])


def gfp_to_alloc_flags(cpu, gfp_mask):
    """The ALLOC_* flags the slowpath uses for this request and task. Follows: gfp_to_alloc_flags(), 3.14 (§6.3).

    Differs: no realtime tasks and no interrupt context exist, so ALLOC_HARDER comes only from atomic requests.
    """
    alloc_flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    alloc_flags |= gfp_mask & __GFP_HIGH  # ALLOC_HIGH == __GFP_HIGH by design
    if not gfp_mask & __GFP_WAIT:
        if not gfp_mask & __GFP_NOMEMALLOC:
            alloc_flags |= ALLOC_HARDER
        alloc_flags &= ~ALLOC_CPUSET
    if not gfp_mask & __GFP_NOMEMALLOC:
        cur = cpu.current
        if gfp_mask & __GFP_MEMALLOC:
            alloc_flags |= ALLOC_NO_WATERMARKS
        elif cur >= 0 and (cpu.m.v_task_flags[cur] & PF_MEMALLOC or cpu.m.v_task_tif[cur] & TIF_MEMDIE):
            alloc_flags |= ALLOC_NO_WATERMARKS
    return alloc_flags


def oom_gfp_allowed(gfp_mask):
    """Only __GFP_FS requests that may retry can invoke the OOM killer. Follows: include/linux/oom.h, 3.14."""
    return bool(gfp_mask & __GFP_FS) and not gfp_mask & __GFP_NORETRY


async def __alloc_pages_slowpath(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                                 migratetype):
    """Wake kswapd, retry at min, use reserves, compact, reclaim, OOM-kill, and retry: in the seed's order.

    Follows: mm/page_alloc.c __alloc_pages_slowpath(), 3.14 (KERNEL §6.2). The gotos become loops; each
    label is a comment at its spot.
    """
    m = cpu.m
    vmstat.count_vm_event(cpu, vmstat.NR_SLOWPATH_ENTRIES)
    tp.trace_slowpath_enter(cpu, gfp_mask, order)
    body = _slowpath_body_4_7 if cpu.features.bounded_reclaim_retries else _slowpath_body
    page, restarts = await body(cpu, m, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                                migratetype)
    if page is None:
        # nopage:
        warn_alloc_failed(cpu, gfp_mask, order)
    tp.trace_slowpath_exit(cpu, -1 if page is None else page, order, restarts)
    return page


async def _slowpath_body(cpu, m, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                         migratetype):
    """__alloc_pages_slowpath() from its sanity checks to got_pg/nopage; returns (page, restarts)."""
    wait = gfp_mask & __GFP_WAIT
    cur = cpu.current
    pages_reclaimed = 0
    sync_migration = False
    restarts = 0
    if order >= MAX_ORDER:
        return None, 0
    if gfp_thisnode_allocation(gfp_mask):
        return None, 0  # GFP_THISNODE callers fall back to other nodes themselves: no reclaim here
    while True:
        # restart:
        prepare_slowpath(cpu, gfp_mask, order, zonelist, high_zoneidx, preferred_zone)
        alloc_flags = gfp_to_alloc_flags(cpu, gfp_mask)
        restart = False
        while not restart:
            # rebalance:
            page = get_page_from_freelist(cpu, gfp_mask, nodemask, order, zonelist, high_zoneidx,
                                          alloc_flags & ~ALLOC_NO_WATERMARKS, preferred_zone, migratetype)
            if page is not None:
                return page, restarts
            if alloc_flags & ALLOC_NO_WATERMARKS:
                page = await __alloc_pages_high_priority(cpu, gfp_mask, order, zonelist, high_zoneidx,
                                                         nodemask, preferred_zone, migratetype)
                if page is not None:
                    return page, restarts
            if not wait:
                return None, restarts  # atomic allocations cannot reclaim
            if m.v_task_flags[cur] & PF_MEMALLOC:
                return None, restarts  # already inside reclaim: do not recurse
            if m.v_task_tif[cur] & TIF_MEMDIE and not gfp_mask & __GFP_NOFAIL:
                return None, restarts  # an OOM victim fails rather than loops
            page, deferred, contended = __alloc_pages_direct_compact(
                cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, alloc_flags, preferred_zone,
                migratetype, sync_migration)
            if page is not None:
                return page, restarts
            sync_migration = True
            if (deferred or contended) and gfp_mask & __GFP_NO_KSWAPD:
                return None, restarts
            page, did_some_progress = await __alloc_pages_direct_reclaim(
                cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, alloc_flags, preferred_zone,
                migratetype)
            if page is not None:
                return page, restarts
            if not did_some_progress and cpu.features.oom_lock_mutex:
                # 4.2 (seen in 4.2.8): NORETRY gives up here; the OOM gating moved into __alloc_pages_may_oom;
                # its "progress" retries, anything else is the last compaction and nopage.
                if gfp_mask & __GFP_NORETRY or m.v_glob[G_OOM_KILLER_DISABLED]:
                    return None, restarts
                page, oom_progress = await __alloc_pages_may_oom_oom_lock(
                    cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone, migratetype)
                if page is not None:
                    return page, restarts
                if oom_progress:
                    restarts += 1
                    restart = True
                    continue
                page, _, _ = __alloc_pages_direct_compact(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask,
                                                          alloc_flags, preferred_zone, migratetype, sync_migration)
                return page, restarts
            if not did_some_progress:
                if oom_gfp_allowed(gfp_mask):
                    if m.v_glob[G_OOM_KILLER_DISABLED]:
                        return None, restarts
                    if m.v_task_flags[cur] & PF_DUMPCORE and not gfp_mask & __GFP_NOFAIL:
                        return None, restarts
                    page = await __alloc_pages_may_oom(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask,
                                                       preferred_zone, migratetype)
                    if page is not None:
                        return page, restarts
                    if not gfp_mask & __GFP_NOFAIL:
                        if order > PAGE_ALLOC_COSTLY_ORDER or high_zoneidx < ZONE_NORMAL:
                            return None, restarts
                    restarts += 1
                    restart = True
                    continue
            pages_reclaimed += did_some_progress
            if should_alloc_retry(gfp_mask, order, did_some_progress, pages_reclaimed):
                await backing_dev.wait_iff_congested(cpu, preferred_zone, BLK_RW_ASYNC, m.v_glob[G_HZ] // 50)
                continue  # goto rebalance
            page, _, _ = __alloc_pages_direct_compact(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask,
                                                      alloc_flags, preferred_zone, migratetype, sync_migration)
            return page, restarts


async def _slowpath_body_4_7(cpu, m, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone,
                             migratetype):
    """__alloc_pages_slowpath() as 4.7 reworked its OOM detection; returns (page, restarts).

    Follows: mm/page_alloc.c __alloc_pages_slowpath(), 4.7 (0a0337e0d1d1; the oom_lock step of 4.2): reclaim
    is retried while should_reclaim_retry() says it can still lead somewhere and no more than
    MAX_RECLAIM_RETRIES rounds in a row made no progress; only then the OOM killer runs, and its progress
    (a kill, or a busy oom_lock) restarts the count. Used when the profile has `bounded_reclaim_retries`.
    Differs: as the 3.14 body (no compaction or cpuset retry: compaction is always skipped here).
    """
    wait = gfp_mask & __GFP_WAIT
    cur = cpu.current
    restarts = 0
    no_progress_loops = 0
    if order >= MAX_ORDER:
        return None, 0
    if gfp_thisnode_allocation(gfp_mask):
        return None, 0
    while True:
        # retry: (4.7 still has the fair-zone batches and wakes kswapd the 3.14 way)
        prepare_slowpath(cpu, gfp_mask, order, zonelist, high_zoneidx, preferred_zone)
        alloc_flags = gfp_to_alloc_flags(cpu, gfp_mask)
        page = get_page_from_freelist(cpu, gfp_mask, nodemask, order, zonelist, high_zoneidx,
                                      alloc_flags & ~ALLOC_NO_WATERMARKS, preferred_zone, migratetype)
        if page is not None:
            return page, restarts
        if alloc_flags & ALLOC_NO_WATERMARKS:
            page = await __alloc_pages_high_priority(cpu, gfp_mask, order, zonelist, high_zoneidx,
                                                     nodemask, preferred_zone, migratetype)
            if page is not None:
                return page, restarts
        if not wait:
            return None, restarts
        if m.v_task_flags[cur] & PF_MEMALLOC:
            return None, restarts
        if m.v_task_tif[cur] & TIF_MEMDIE and not gfp_mask & __GFP_NOFAIL:
            return None, restarts
        page, did_some_progress = await __alloc_pages_direct_reclaim(
            cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, alloc_flags, preferred_zone, migratetype)
        if page is not None:
            return page, restarts
        if gfp_mask & __GFP_NORETRY:
            return None, restarts                                   # noretry: compaction would come here
        if order > PAGE_ALLOC_COSTLY_ORDER and not gfp_mask & __GFP_REPEAT:
            return None, restarts
        # A costly order may reclaim and still not find its block: only small orders reset the count.
        if did_some_progress and order <= PAGE_ALLOC_COSTLY_ORDER:
            no_progress_loops = 0
        else:
            no_progress_loops += 1
        if should_reclaim_retry(cpu, order, zonelist, high_zoneidx, nodemask, preferred_zone, alloc_flags,
                                no_progress_loops):
            continue
        # Reclaim has failed us: start killing things.
        if m.v_glob[G_OOM_KILLER_DISABLED]:
            return None, restarts
        page, oom_progress = await __alloc_pages_may_oom_oom_lock(
            cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask, preferred_zone, migratetype)
        if page is not None:
            return page, restarts
        if oom_progress:
            no_progress_loops = 0
            restarts += 1
            continue
        return None, restarts


def first_zones_zonelist(m, zonelist, high_zoneidx, nodemask):
    """The first zone of the zonelist usable by the request, or None. Follows: first_zones_zonelist()."""
    vz = m.v_zone
    for z in zonelist:
        if vz[z * Z_NCOLS + Z_IDX] <= high_zoneidx and (nodemask is None or vz[z * Z_NCOLS + Z_NODE] in nodemask):
            return z
    return None


async def __alloc_pages_nodemask(cpu, gfp_mask, order, zonelist, nodemask=None):
    """Allocate 2^order pages: the low-watermark fast path, then the slowpath. Returns a PFN or None.

    Follows: mm/page_alloc.c __alloc_pages_nodemask(), 3.14 (KERNEL §6.1). Differs: no cpuset cookie retry.
    """
    m = cpu.m
    gfp_mask &= gfp_allowed_mask
    key = (gfp_mask, id(zonelist))
    cached = cpu.alloc_cache.get(key) if nodemask is None else None   # never filled with cpusets (below)
    if cached is None:
        # Zones never change after boot, so this per-CPU cache only skips recomputing the same answer.
        high_zoneidx = gfp_zone(gfp_mask)
        # The preferred zone is the first within `nodemask ?: cpuset_current_mems_allowed`.
        within = nodemask
        if within is None and m.numa_constraints:
            within = frozenset(cpuset.nodes_of_mask(cpuset.cpuset_current_mems_allowed(cpu)))
        cached = (high_zoneidx, gfpflags_to_migratetype(gfp_mask),
                  first_zones_zonelist(m, zonelist, high_zoneidx, within))
        if nodemask is None and not m.numa_constraints:
            cpu.alloc_cache[key] = cached
    high_zoneidx, migratetype, preferred_zone = cached
    if preferred_zone is None:
        return None
    page = get_page_from_freelist(cpu, gfp_mask | __GFP_HARDWALL, nodemask, order, zonelist, high_zoneidx,
                                  ALLOC_WMARK_LOW | ALLOC_CPUSET, preferred_zone, migratetype)
    if page is not None:
        vmstat.count_vm_event(cpu, vmstat.NR_FAST_PATH_ALLOCS)
    else:
        page = await __alloc_pages_slowpath(cpu, gfp_mask, order, zonelist, high_zoneidx, nodemask,
                                            preferred_zone, migratetype)
    vmstat.count_vm_event(cpu, vmstat.NR_ALLOCS if page is not None else vmstat.NR_ALLOC_FAILURES)
    return page


def node_zonelist(m, nid, gfp_mask=0):
    """The fallback zonelist of node `nid`. Follows: node_zonelist()."""
    return m.zonelists[nid]


async def alloc_pages(cpu, gfp_mask, order):
    """Allocate from the local node's zonelist, or as the task's mempolicy says when the scenario has any.
    Follows: alloc_pages() → alloc_pages_current() (mm/mempolicy.py), 3.14 NUMA."""
    if cpu.m.numa_constraints:
        return await mempolicy.alloc_pages_current(cpu, gfp_mask, order)
    return await __alloc_pages_nodemask(cpu, gfp_mask, order, cpu.m.zonelists[numa_node_id(cpu)], None)


def numa_node_id(cpu):
    """The node of this CPU: CPUs are spread over nodes in order. Follows: numa_node_id()."""
    m = cpu.m
    return (cpu.id * m.nr_nodes) // m.nr_cpus if cpu.id < m.nr_cpus else cpu.nid


def calculate_totalreserve_pages(m):
    """Pages no user allocation should count on: per zone its largest lowmem reserve plus its high watermark,
    capped at its managed pages. Follows: mm/page_alloc.c calculate_totalreserve_pages(), 3.14."""
    from oomemu.include.mmzone import MAX_NR_ZONES, WMARK_HIGH
    reserve_pages = 0
    for z in range(m.nr_zones):
        i = z % MAX_NR_ZONES
        row = m.zone[z]
        most = max(int(row[Z_LOWMEM_RESERVE + j]) for j in range(i, MAX_NR_ZONES))
        most += int(row[Z_WMARK + WMARK_HIGH])
        reserve_pages += min(most, int(row[Z_MANAGED]))
    return reserve_pages
