"""Tearing down and shrinking address spaces.

Follows mm/mmap.c of Linux 3.14: exit_mmap() (every page of the last user's mm goes back to the allocator,
page-cache pages are only unmapped), the page-freeing half of do_munmap(), and the overcommit accounting of
mmap() (__vm_enough_memory, vm.overcommit_memory). The page frame table is searched with numpy; the pages
are then unmapped and released in batches of one page table (PTRS_PER_PTE pages) each, under the mm's
page-table lock and the zones' lru_locks, and freed through this CPU's per-CPU lists, with a scheduling point
between batches, so other CPUs can take memory while a big mm is torn down.
"""
import numpy as np

from oomemu import sync
from oomemu.include.mmzone import NR_ACTIVE_FILE, NR_FREE_PAGES, NR_INACTIVE_FILE, PAGE_SHIFT
from oomemu.machine import (G_NR_MM_ROWS, G_NR_SWAP_FREE, G_TOTAL_SWAP, G_TOTALRAM, L_SWAP, MM_ANONPAGES,
                            MM_FILEPAGES, MM_NCOLS, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, MM_USED, PAGE_ANON,
                            PAGE_FILE, Z_STAT)
from oomemu.mm import page_alloc, swap
from oomemu.trace import events as tp

PTRS_PER_PTE = 512


def _free_mm_pages(cpu, mm, pfns, batch=None):
    """Unmap mm's pages among `pfns` (reclaim may have taken some meanwhile) and free the anonymous ones whose
    last reference this was, then take them off mm's counters. With `batch`, one batch of an exit_mmap.
    Returns (anon unmapped, file unmapped).

    Follows: mm/memory.c zap_pte_range() (page_remove_rmap, the mmu_gather batch) → tlb_flush_mmu() →
    free_pages_and_swap_cache() → release_pages(), 3.14.
    """
    m = cpu.m
    anon = file = 0
    to_free = []
    zones = m.page_zone[pfns]
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        for z in np.unique(zones).tolist():
            a, f, fr = swap.release_mm_pages(cpu, z, pfns[zones == z].tolist(), mm)
            anon += a
            file += f
            to_free += fr
        base = mm * MM_NCOLS
        m.v_mm[base + MM_ANONPAGES] -= anon
        m.v_mm[base + MM_FILEPAGES] -= file
    swap.free_unlocked(cpu, to_free)
    if "double_free_victim" in cpu.debug_break and to_free:
        pfn = to_free[0]
        z = m.v_page_zone[pfn]
        with sync.spinlock(cpu, m.zone_lock(z)):   # the injected bug: one page freed twice
            tp.trace_mm_page_free(cpu, pfn, 0)
            page_alloc.__free_one_page(cpu, pfn, z, 0)
            page_alloc._note_freed(cpu, z, 1)
    if batch is not None:
        tp.trace_exit_mmap_batch(cpu, mm, batch, len(pfns), len(to_free))
    return anon, file


def exit_mmap(cpu, mm):
    """Unmap everything of a dead mm: free its anon pages and swap entries, unmap its file pages.

    Follows: mm/mmap.c exit_mmap(), 3.14: lru_add_drain() first, then unmap_vmas() one page table at a time
    (zap_pmd_range()'s cond_resched() between them), the pages going back through the mmu_gather batches and
    release_pages() to this CPU's per-CPU lists. Returns the pages given back to the allocator.
    Differs: the batches follow PFN order (no virtual addresses here), one batch per PTRS_PER_PTE pages.
    """
    m = cpu.m
    sync.sched_point(cpu, "exit_mmap", mm)
    swap.lru_add_drain(cpu)
    pfns = (m.page_owner == mm).nonzero()[0]
    kinds = m.page_kind[pfns]     # the owner column also holds CPU ids (per-CPU pages): keep mm pages only
    pfns = pfns[(kinds == PAGE_ANON) | (kinds == PAGE_FILE)]
    anon = 0
    for batch, start in enumerate(range(0, len(pfns), PTRS_PER_PTE)):
        if batch:
            sync.sched_point(cpu, "exit_mmap.range", mm)
        anon += _free_mm_pages(cpu, mm, pfns[start:start + PTRS_PER_PTE], batch)[0]
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        swapents = int(m.mm[mm, MM_SWAPENTS])
        m.mm[mm, MM_SWAPENTS] = 0
        m.mm[mm, MM_NR_PTES] = 0
        m.mm[mm, MM_TOTAL_VM] = 0
    if swapents:
        with sync.spinlock(cpu, L_SWAP):
            m.glob[G_NR_SWAP_FREE] += swapents
    return anon


def do_munmap_anon(cpu, mm, nr_pages):
    """Free up to nr_pages of mm's anonymous pages (most recently faulted first); returns how many.

    Follows the page-freeing effect of mm/mmap.c do_munmap() → unmap_region(), 3.14. Differs: no VMAs;
    the pages freed are simply the mm's newest.
    """
    m = cpu.m
    swap.lru_add_drain(cpu)   # unmap_region() drains this CPU's pagevecs first
    pfns = ((m.page_owner == mm) & (m.page_kind == PAGE_ANON)).nonzero()[0]
    if nr_pages is not None:
        pfns = pfns[::-1][:nr_pages]
    anon, _ = _free_mm_pages(cpu, mm, pfns)
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        m.mm[mm, MM_TOTAL_VM] -= anon
        _sub_ptes(m, mm, anon)
    return anon


def unmap_anon_pages(cpu, mm):
    """Free every anonymous page of mm while its mappings stay (the OOM reaper's zap); returns how many.

    Follows the effect of mm/memory.c unmap_page_range() over an mm's private VMAs, as the 4.6 oom_reaper uses
    it. Differs: no VMAs, so total_vm and the page-table count stay as they were.
    """
    m = cpu.m
    pfns = ((m.page_owner == mm) & (m.page_kind == PAGE_ANON)).nonzero()[0]
    return _free_mm_pages(cpu, mm, pfns)[0]


def _sub_ptes(m, mm, nr):
    """Page-table pages follow the mapped size: one per PTRS_PER_PTE pages (mm lock held)."""
    m.mm[mm, MM_NR_PTES] = -(-int(m.mm[mm, MM_TOTAL_VM]) // PTRS_PER_PTE)


def map_page(cpu, mm, pfn, kind, counter):
    """Record a newly allocated page as mm's (`kind` PAGE_ANON or PAGE_FILE) and account it under the mm's
    page_table_lock. Emulator-only: the set_pte_at + inc_mm_counter step shared by anonymous and file faults."""
    m = cpu.m
    lk = m.mm_lock_index(mm)
    sync.spin_lock(cpu, lk)
    m.v_page_kind[pfn] = kind
    m.v_page_owner[pfn] = mm
    account_mapped(m, mm, counter)
    sync.spin_unlock(cpu, lk)


def account_mapped(m, mm, kind_col):
    """One more page mapped into mm: count it, its virtual size and page-table growth (mm lock held).

    Differs: page-table pages are counted (nr_ptes) but not allocated.

    Follows the accounting of do_anonymous_page()/filemap_fault() (inc_mm_counter_fast), 3.14.
    """
    base = mm * MM_NCOLS
    v = m.v_mm
    v[base + kind_col] += 1
    vm = v[base + MM_TOTAL_VM] + 1
    v[base + MM_TOTAL_VM] = vm
    v[base + MM_NR_PTES] = (vm + PTRS_PER_PTE - 1) // PTRS_PER_PTE


# --- overcommit accounting (vm.overcommit_memory) --------------------------------------------------------------

OVERCOMMIT_GUESS = 0
OVERCOMMIT_ALWAYS = 1
OVERCOMMIT_NEVER = 2
ENOMEM = 12
_ULONG = (1 << 64) - 1


def vm_memory_committed(m):
    """Committed_AS in pages: what every live mm has mapped privately (its anonymous pages, swap entries and
    mmap()ed pages not faulted in yet). Follows: vm_memory_committed() / vm_committed_as, 3.14. Differs: summed
    from the mm table when asked instead of kept in a per-CPU counter (the sum is as racy as that counter's
    approximate read); pages a `fault` op touches count as mapped and committed the moment they are faulted."""
    n = int(m.glob[G_NR_MM_ROWS])
    mm = m.mm[:n]
    live = mm[:, MM_USED] != 0
    return int((mm[live, MM_ANONPAGES] + mm[live, MM_SWAPENTS]).sum() + m.mm_reserved[:n][live].sum())


def vm_commit_limit(m, sysctl):
    """CommitLimit in pages: overcommit_kbytes (if set) or overcommit_ratio % of RAM, plus swap.
    Follows: mm/mmap.c vm_commit_limit(), 3.14 (no hugetlb pages)."""
    if sysctl.overcommit_kbytes:
        allowed = sysctl.overcommit_kbytes >> (PAGE_SHIFT - 10)
    else:
        allowed = int(m.glob[G_TOTALRAM]) * sysctl.overcommit_ratio // 100
    return allowed + int(m.glob[G_TOTAL_SWAP])


def __vm_enough_memory(cpu, mm, pages, cap_sys_admin):
    """Account `pages` more committed memory, or refuse them: 0, or -ENOMEM with nothing accounted.

    Follows: mm/mmap.c __vm_enough_memory(), 3.14: vm_acct_memory first; OVERCOMMIT_ALWAYS always succeeds;
    OVERCOMMIT_GUESS succeeds if free + page cache + free swap (+ reclaimable slab, none here), less
    totalreserve_pages and, for a non-root caller, admin_reserve_kbytes, exceeds the request; OVERCOMMIT_NEVER
    succeeds while Committed_AS stays below CommitLimit less the admin reserve (non-root) and less
    min(total_vm / 32, user_reserve_kbytes). The arithmetic is unsigned long, as in 3.14 (4.1 made it signed).
    `mm` may be -1 (no mm).
    """
    m = cpu.m
    sysctl = cpu.scenario.sysctl
    if mm >= 0:
        reserve(cpu, mm, pages)          # vm_acct_memory(pages)
    mode = sysctl.overcommit_memory
    if mode == OVERCOMMIT_ALWAYS:
        return 0
    if mode == OVERCOMMIT_GUESS:
        free = int(m.zone[:, Z_STAT + NR_FREE_PAGES].sum()) + int(m.zone[:, Z_STAT + NR_INACTIVE_FILE].sum() + m.zone[:, Z_STAT + NR_ACTIVE_FILE].sum())
        free += int(m.glob[G_NR_SWAP_FREE])
        if free > m.totalreserve_pages:
            free -= m.totalreserve_pages
            if not cap_sys_admin:
                free = (free - (m.admin_reserve_kbytes >> (PAGE_SHIFT - 10))) & _ULONG
            if free > pages:
                return 0
    else:
        allowed = vm_commit_limit(m, sysctl)
        if not cap_sys_admin:
            allowed = (allowed - (m.admin_reserve_kbytes >> (PAGE_SHIFT - 10))) & _ULONG
        if mm >= 0:
            user_reserve = m.user_reserve_kbytes >> (PAGE_SHIFT - 10)
            total_vm = int(m.mm[mm, MM_TOTAL_VM]) + int(m.mm_reserved[mm]) - pages
            allowed = (allowed - min(total_vm // 32, user_reserve)) & _ULONG
        if vm_memory_committed(m) < allowed:
            return 0
    if mm >= 0:
        unreserve(cpu, mm, pages)        # vm_unacct_memory(pages)
    return -ENOMEM


def reserve(cpu, mm, pages):
    """Count `pages` more committed to mm (its threads may mmap at once: under the mm's lock)."""
    with sync.spinlock(cpu, cpu.m.mm_lock_index(mm)):
        cpu.m.v_mm_reserved[mm] += pages


def unreserve(cpu, mm, pages):
    """Count `pages` fewer committed to mm but not mapped (refused, or faulted in since)."""
    with sync.spinlock(cpu, cpu.m.mm_lock_index(mm)):
        cpu.m.v_mm_reserved[mm] -= pages


def security_vm_enough_memory_mm(cpu, mm, pages):
    """__vm_enough_memory() with cap_sys_admin from current's credentials (uid 0 or CAP_SYS_ADMIN).
    Follows: security_vm_enough_memory_mm() → cap_vm_enough_memory(), 3.14."""
    from oomemu.mm import oom_kill
    return __vm_enough_memory(cpu, mm, pages, oom_kill.has_capability_sys_admin(cpu.m, cpu.current))


def init_reserves(m):
    """user_reserve_kbytes = min(free kB / 32, 128 MiB) and admin_reserve_kbytes = min(free kB / 32, 8 MiB),
    from the free pages at boot. Follows: mm/mmap.c init_user_reserve() and init_admin_reserve(), 3.14."""
    free_kbytes = int(m.zone[:, Z_STAT + NR_FREE_PAGES].sum()) << (PAGE_SHIFT - 10)
    m.user_reserve_kbytes = min(free_kbytes // 32, 1 << 17)
    m.admin_reserve_kbytes = min(free_kbytes // 32, 1 << 13)
