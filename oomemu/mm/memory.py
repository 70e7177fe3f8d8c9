"""Anonymous page faults.

Follows mm/memory.c of Linux 3.14: handle_mm_fault() → do_anonymous_page(), which allocates with
GFP_HIGHUSER_MOVABLE (or the gfp the scenario asks for), maps the page into the mm and counts it in
MM_ANONPAGES. A failed allocation is VM_FAULT_OOM.
"""
from oomemu import sync
from oomemu.machine import G_NR_SWAP_FREE, LRU_ANON, MM_ANONPAGES, PAGE_ANON
from oomemu.mm import mmap, page_alloc, vmscan

VM_FAULT_OOM = 0x0001


async def do_anonymous_page(cpu, mm, gfp_mask):
    """Allocate, map and account one anonymous page; 0 or VM_FAULT_OOM. Follows: do_anonymous_page(), 3.14."""
    m = cpu.m
    pfn = await page_alloc.alloc_pages(cpu, gfp_mask, 0)
    if pfn is None:
        return VM_FAULT_OOM
    lk = m.mm_lock_index(mm)
    sync.spin_lock(cpu, lk)  # mm->page_table_lock
    m.v_page_kind[pfn] = PAGE_ANON
    m.v_page_owner[pfn] = mm
    mmap.account_mapped(m, mm, MM_ANONPAGES)
    sync.spin_unlock(cpu, lk)
    if m.v_glob[G_NR_SWAP_FREE] > 0:
        vmscan.lru_cache_add(cpu, pfn, LRU_ANON)  # only swap makes anon pages reclaimable
    return 0


async def handle_mm_fault(cpu, mm, gfp_mask):
    """Resolve a fault on a not-yet-touched anonymous address. Follows: handle_mm_fault(), 3.14."""
    return await do_anonymous_page(cpu, mm, gfp_mask)
