"""Reverse mapping: from a page to the one PTE that maps it.

Follows mm/rmap.c of Linux 3.14 for the two questions reclaim asks: was the page accessed through its
mapping since last asked (page_referenced(), which clears the PTE's accessed bit), and take it out of the
mapping (try_to_unmap(), which for an anonymous page leaves a swap entry behind). Both run under the mapping
mm's page-table lock, so a concurrent exit_mmap() of the same mm sees either the mapped or the unmapped page.

Differs: a page has at most one mapping (page_owner; no shared anonymous pages, no file page mapped twice),
so page_referenced() counts 0 or 1; VM_EXEC is a flag of the page (PG_exec: it was read by an executable
mapping) rather than of a vma; no VM_LOCKED vmas.
"""
from oomemu import sync
from oomemu.machine import (G_NR_SWAP_FREE, L_SWAP, MM_ANONPAGES, MM_FILEPAGES, MM_NCOLS, MM_SWAPENTS,
                            PAGE_ANON, PG_exec)

VM_EXEC = 0x4

SWAP_SUCCESS = 0
SWAP_FAIL = 2
SWAP_UNMAPPED = 4     # emulator-only: the mapping went away meanwhile (its mm exited); the page is ours


def page_referenced(cpu, pfn):
    """(1 if the page's PTE was accessed since the last call, else 0; the mapping's vm_flags), clearing the bit.

    Follows: mm/rmap.c page_referenced() → page_referenced_one() (ptep_clear_flush_young_notify; vm_flags
    gathers the flags of the vmas that referenced the page), 3.14.
    """
    m = cpu.m
    mm = m.v_page_owner[pfn]
    if mm < 0:
        return 0, 0
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        if m.v_page_owner[pfn] != mm or not m.v_page_young[pfn]:
            return 0, 0
        m.v_page_young[pfn] = 0
        return 1, (VM_EXEC if m.v_page_flags[pfn] & PG_exec else 0)


def try_to_unmap(cpu, pfn):
    """Unmap an isolated page from its mm: an anonymous page gets a swap slot (SWAP_FAIL when swap is full).

    Follows: mm/vmscan.c shrink_page_list()'s add_to_swap() + mm/rmap.c try_to_unmap() → try_to_unmap_one()
    (dec_mm_counter, the swap entry counted in MM_SWAPENTS), 3.14. Returns SWAP_SUCCESS, SWAP_FAIL, or
    SWAP_UNMAPPED when nothing mapped the page any more.
    """
    m = cpu.m
    mm = m.v_page_owner[pfn]
    anon = m.v_page_kind[pfn] == PAGE_ANON
    if mm < 0:
        return SWAP_UNMAPPED
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        if m.v_page_owner[pfn] != mm:
            return SWAP_UNMAPPED
        base = mm * MM_NCOLS
        if anon:
            with sync.spinlock(cpu, L_SWAP):
                if m.v_glob[G_NR_SWAP_FREE] <= 0:
                    return SWAP_FAIL
                m.v_glob[G_NR_SWAP_FREE] -= 1
            m.v_mm[base + MM_ANONPAGES] -= 1
            m.v_mm[base + MM_SWAPENTS] += 1
        else:
            m.v_mm[base + MM_FILEPAGES] -= 1
        m.v_page_owner[pfn] = -1
        m.v_page_young[pfn] = 0
    return SWAP_SUCCESS
