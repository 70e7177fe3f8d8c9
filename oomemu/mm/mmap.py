"""Tearing down and shrinking address spaces.

Follows mm/mmap.c of Linux 3.14: exit_mmap() (every page of the last user's mm goes back to the allocator,
page-cache pages are only unmapped) and the page-freeing half of do_munmap(). The page frame table is
searched with numpy; each zone's pages are freed under one hold of its zone->lock.
"""

from oomemu import sync
from oomemu.machine import (G_NR_SWAP_FREE, L_SWAP, LRU_ANON, MM_ANONPAGES, MM_FILEPAGES, MM_NCOLS,
                            MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, PAGE_ANON, PAGE_FILE, PG_lru)
from oomemu.mm import memcontrol, page_alloc, vmscan
from oomemu.trace import events as tp

PTRS_PER_PTE = 512


def _free_mm_pages(cpu, mm, pfns):
    """Free anon pages and unmap file pages of mm among `pfns`, each checked under its zone->lock (reclaim
    may have taken some meanwhile). Returns (anon freed, file unmapped)."""
    m = cpu.m
    anon = file = 0
    zones = m.page_zone[pfns]
    uncharged = []
    for z in range(m.nr_zones):
        sel = pfns[zones == z]
        if not len(sel):
            continue
        with sync.spinlock(cpu, m.zone_lock(z)):
            sel = sel[m.page_owner[sel] == mm]
            kinds = m.page_kind[sel]
            files = sel[kinds == PAGE_FILE]
            m.page_owner[files] = -1  # they stay in the page cache, still on the LRU
            file += len(files)
            anons = sel[kinds == PAGE_ANON]
            if m.memcg_enabled:
                uncharged += memcontrol.mem_cgroup_uncharge_pages(cpu, anons)
            for pfn in anons[(m.page_flags[anons] & PG_lru) != 0].tolist():
                vmscan.del_page_from_lru_list(m, z, pfn, LRU_ANON)
            freed = page_alloc.free_hot_cold_page_list(cpu, z, anons)
            if "double_free_victim" in cpu.debug_break and freed:
                tp.trace_mm_page_free(cpu, int(anons[0]), 0)  # the injected bug: one page freed twice
                page_alloc.__free_one_page(cpu, int(anons[0]), z, 0)
            if freed:
                page_alloc._note_freed(cpu, z, freed)
        anon += freed
    if uncharged:
        memcontrol.memcg_oom_recover(cpu, sorted(set(uncharged)))
    return anon, file


def exit_mmap(cpu, mm):
    """Unmap everything of a dead mm: free its anon pages and swap entries, unmap its file pages.

    Follows: mm/mmap.c exit_mmap(), 3.14. Returns the pages given back to the allocator.
    Differs: the pages are freed per zone in one zone->lock hold, not in TLB-gather batches through the
    per-CPU lists with cond_resched() between ranges, so no other CPU takes part of the memory mid-exit.
    """
    m = cpu.m
    sync.sched_point(cpu, "exit_mmap", mm)
    pfns = (m.page_owner == mm).nonzero()[0]
    kinds = m.page_kind[pfns]     # the owner column also holds CPU ids (per-CPU pages): keep mm pages only
    pfns = pfns[(kinds == PAGE_ANON) | (kinds == PAGE_FILE)]
    anon, file = _free_mm_pages(cpu, mm, pfns)
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        swapents = int(m.mm[mm, MM_SWAPENTS])
        m.mm[mm, MM_ANONPAGES] -= anon
        m.mm[mm, MM_FILEPAGES] -= file
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
    pfns = ((m.page_owner == mm) & (m.page_kind == PAGE_ANON)).nonzero()[0]
    if nr_pages is not None:
        pfns = pfns[::-1][:nr_pages]
    anon, _ = _free_mm_pages(cpu, mm, pfns)
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        m.mm[mm, MM_ANONPAGES] -= anon
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
    anon, _ = _free_mm_pages(cpu, mm, pfns)
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        m.mm[mm, MM_ANONPAGES] -= anon
    return anon


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
