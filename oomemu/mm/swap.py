"""Per-CPU LRU pagevecs, page activation and releasing pages.

Follows mm/swap.c of Linux 3.14: a page that becomes reclaimable is first put on its CPU's lru_add pagevec
(PAGEVEC_SIZE = 14 pages, only that CPU touches it) and reaches its zone's LRU when the pagevec is full or the
CPU drains it (lru_add_drain(): reclaim and exit_mmap do so first); mark_page_accessed() promotes a page read
twice to the active list; release_pages() takes unmapped pages off the LRU and frees them.

A page on a pagevec holds a reference: if its mm dies meanwhile (an anonymous page whose owner became -1) the
drain frees it instead of adding it, as release_pages() does when that reference is the last one.

Differs: no lru_rotate, lru_deactivate or activate_page pagevecs (activation happens at once under the
lru_lock); the page flags are changed under the lru_lock instead of by atomic bit operations; the anonymous
LRU exists only when the machine has swap (pages that could never be reclaimed are not put on it).
"""
import numpy as np

from oomemu import sync
from oomemu.machine import (G_TOTAL_SWAP, LRU_ACTIVE, LRU_FILE, PAGE_ANON, PAGE_FILE, PAGEVEC_SIZE, PG_active,
                            PG_isolated, PG_lru, PG_LRU_STATE, PG_pvec, PG_referenced)
from oomemu.mm import vmstat

_NOT_LRU = ~PG_LRU_STATE


def page_lru(m, pfn):
    """Which list a page belongs on: its kind's base list, plus LRU_ACTIVE when PG_active.

    Follows: include/linux/mm_inline.h page_lru(), 3.14.
    """
    base = LRU_FILE if m.v_page_kind[pfn] == PAGE_FILE else 0
    return base + (LRU_ACTIVE if m.v_page_flags[pfn] & PG_active else 0)


def _dead(m, pfn):
    """An anonymous page no mm maps any more: whoever holds its last reference frees it."""
    return m.v_page_kind[pfn] == PAGE_ANON and m.v_page_owner[pfn] < 0


def free_unlocked(cpu, pfns):
    """Free pages whose last reference this CPU held, each through its per-CPU list (cold).

    Follows: mm/page_alloc.c free_hot_cold_page_list(list, cold = 1), 3.14, as release_pages() and
    shrink_page_list() call it once the lru_lock is dropped; a memcg-charged page is uncharged first
    (mem_cgroup_uncharge_page, then memcg_oom_recover for the memcgs under OOM).
    """
    from oomemu.mm import page_alloc
    m = cpu.m
    if not pfns:
        return
    uncharged = []
    if m.memcg_enabled:
        from oomemu.mm import memcontrol
        uncharged = memcontrol.mem_cgroup_uncharge_pages(cpu, np.array(pfns, dtype=np.int64))
    flags, young = m.v_page_flags, m.v_page_young
    for pfn in pfns:
        flags[pfn] &= _NOT_LRU
        young[pfn] = 0
        page_alloc.free_hot_cold_page(cpu, pfn, True)
    if uncharged:
        memcontrol.memcg_oom_recover(cpu, sorted(set(uncharged)))


def __pagevec_lru_add(cpu):
    """Move this CPU's lru_add pagevec onto the LRU lists, one zone's lru_lock at a time.

    Follows: mm/swap.c __pagevec_lru_add() → pagevec_lru_move_fn(__pagevec_lru_add_fn) and the
    release_pages() that drops the pagevec's references, 3.14.
    """
    from oomemu.mm import vmscan
    m = cpu.m
    pv = m.v_pvec
    base = cpu.id * (1 + PAGEVEC_SIZE)
    n = pv[base]
    if not n:
        return
    pfns = [pv[base + 1 + i] for i in range(n)]
    pv[base] = 0
    flags, zone_of = m.v_page_flags, m.v_page_zone
    dead = []
    locked = -1
    for pfn in pfns:
        z = zone_of[pfn]
        if z != locked:
            if locked != -1:
                sync.spin_unlock(cpu, m.lru_lock(locked))
            sync.spin_lock(cpu, m.lru_lock(z))
            locked = z
        flags[pfn] &= ~PG_pvec
        if _dead(m, pfn):
            dead.append(pfn)
            continue
        vmscan.add_page_to_lru_list(m, z, pfn, page_lru(m, pfn))
    if locked != -1:
        sync.spin_unlock(cpu, m.lru_lock(locked))
    if dead:
        free_unlocked(cpu, dead)


def lru_cache_add(cpu, pfn):
    """Queue a new page for its LRU on this CPU's pagevec, draining the pagevec first when it is full.

    Follows: mm/swap.c __lru_cache_add()/lru_cache_add(), 3.14. A row that is not a CPU (a kthread process
    with no pagevec) adds the page under the lru_lock at once.
    """
    m = cpu.m
    if cpu.id >= m.nr_cpus:
        from oomemu.mm import vmscan
        z = m.v_page_zone[pfn]
        with sync.spinlock(cpu, m.lru_lock(z)):
            vmscan.add_page_to_lru_list(m, z, pfn, page_lru(m, pfn))
        return
    pv = m.v_pvec
    base = cpu.id * (1 + PAGEVEC_SIZE)
    if pv[base] >= PAGEVEC_SIZE:
        __pagevec_lru_add(cpu)
    m.v_page_flags[pfn] |= PG_pvec
    n = pv[base]
    pv[base + 1 + n] = pfn
    pv[base] = n + 1


def lru_cache_add_active_or_unevictable(cpu, pfn):
    """A new anonymous page starts on the active list. Follows: mm/swap.c
    lru_cache_add_active_or_unevictable(), 3.14 (called from page_add_new_anon_rmap()); no mlocked VMAs here.
    """
    m = cpu.m
    if not m.v_glob[G_TOTAL_SWAP]:
        return   # Differs: without swap the anonymous LRU is never scanned, so the page is not put on it
    m.v_page_flags[pfn] |= PG_active
    lru_cache_add(cpu, pfn)


def lru_add_drain(cpu):
    """Drain this CPU's pagevec onto the LRU. Follows: mm/swap.c lru_add_drain() → lru_add_drain_cpu(), 3.14."""
    if cpu.id < cpu.m.nr_cpus:
        sync.sched_point(cpu, "lru_add_drain")
        __pagevec_lru_add(cpu)


def activate_page(cpu, m, z, pfn):
    """Move an inactive LRU page to its active list (lru_lock held). Follows: mm/swap.c __activate_page(), 3.14."""
    from oomemu.mm import vmscan
    lru = page_lru(m, pfn)
    vmscan.del_page_from_lru_list(m, z, pfn, lru)
    m.v_page_flags[pfn] |= PG_active
    vmscan.add_page_to_lru_list(m, z, pfn, lru + LRU_ACTIVE)
    vmstat.count_vm_event(cpu, vmstat.NR_PGACTIVATE)


def mark_page_accessed(cpu, pfn):
    """A page-cache access: the first sets PG_referenced, the second (still referenced, inactive) activates.

    Follows: mm/swap.c mark_page_accessed(), 3.14. A page still on a pagevec is only marked active (it goes to
    the active list when drained: __lru_cache_activate_page()); an isolated one only loses PG_referenced.
    """
    m = cpu.m
    z = m.v_page_zone[pfn]
    flags = m.v_page_flags
    with sync.spinlock(cpu, m.lru_lock(z)):
        f = flags[pfn]
        if m.v_page_kind[pfn] not in (PAGE_ANON, PAGE_FILE):
            return   # freed meanwhile
        if not f & PG_active and f & PG_referenced:
            if f & PG_lru:
                activate_page(cpu, m, z, pfn)
            elif f & PG_pvec and not f & PG_isolated:
                flags[pfn] |= PG_active
            flags[pfn] &= ~PG_referenced
        elif not f & PG_referenced:
            flags[pfn] |= PG_referenced


def release_mm_pages(cpu, z, pfns, mm):
    """Unmap zone z's pages `pfns` from mm (page_table_lock held by the caller) and release those that were
    its last reference: anonymous pages off the LRU and freed; page-cache pages stay cached on the LRU.

    Follows the zap_pte_range() → page_remove_rmap() + tlb batch → release_pages() path of 3.14 for one batch:
    a page a reclaimer has isolated, or one still on a CPU's pagevec, is only unmapped (that holder frees it).
    Returns (anonymous pages unmapped, file pages unmapped, pages to free once the lru_lock is dropped).
    """
    from oomemu.mm import vmscan
    m = cpu.m
    owner, kind, flags = m.v_page_owner, m.v_page_kind, m.v_page_flags
    anon = file = 0
    to_free = []
    with sync.spinlock(cpu, m.lru_lock(z)):
        for pfn in pfns:
            k = kind[pfn]
            if owner[pfn] != mm or (k != PAGE_ANON and k != PAGE_FILE):
                continue   # reclaim unmapped it meanwhile (and it may be a per-CPU page of CPU `mm` now)
            owner[pfn] = -1
            if k == PAGE_FILE:
                file += 1
                continue
            anon += 1
            f = flags[pfn]
            if f & PG_lru:
                vmscan.del_page_from_lru_list(m, z, pfn, page_lru(m, pfn))
                to_free.append(pfn)
            elif not f & (PG_isolated | PG_pvec):
                to_free.append(pfn)
    return anon, file, to_free
