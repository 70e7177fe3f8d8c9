"""Anonymous page faults.

Follows mm/memory.c of Linux 3.14: handle_mm_fault() → do_anonymous_page(), which allocates with
GFP_HIGHUSER_MOVABLE (or the gfp the scenario asks for), maps the page into the mm and counts it in
MM_ANONPAGES. A failed allocation is VM_FAULT_OOM.
"""
from oomemu import sync
from oomemu.machine import G_NR_SWAP_FREE, L_SWAP, MM_ANONPAGES, MM_NCOLS, MM_SWAPENTS, PAGE_ANON
from oomemu.include.gfp import GFP_KERNEL
from oomemu.mm import memcontrol, mmap, page_alloc, swap

VM_FAULT_OOM = 0x0001


async def do_anonymous_page(cpu, mm, gfp_mask):
    """Allocate, charge, map and account one anonymous page; 0 or VM_FAULT_OOM. Follows: do_anonymous_page(),
    3.14 (a failed mem_cgroup_charge_anon releases the page: VM_FAULT_OOM)."""
    pfn = await page_alloc.alloc_pages(cpu, gfp_mask, 0)
    if pfn is None:
        return VM_FAULT_OOM
    if cpu.m.memcg_enabled and await memcontrol.mem_cgroup_charge(cpu, mm, pfn, GFP_KERNEL):
        page_alloc.free_hot_cold_page(cpu, pfn)
        return VM_FAULT_OOM
    map_anon_page(cpu, mm, pfn)
    return 0


def map_anon_page(cpu, mm, pfn):
    """Map a freshly allocated anonymous page into mm: the part of do_anonymous_page() after the allocation.

    Follows: mm/memory.c do_anonymous_page() (page_add_new_anon_rmap → lru_cache_add_active_or_unevictable,
    then set_pte_at with the accessed bit the faulting access sets, inc_mm_counter_fast), 3.14.
    """
    swap.lru_cache_add_active_or_unevictable(cpu, pfn)
    cpu.m.v_page_young[pfn] = 1
    mmap.map_page(cpu, mm, pfn, PAGE_ANON, MM_ANONPAGES)


async def handle_mm_fault(cpu, mm, gfp_mask):
    """Resolve a fault on a not-yet-touched anonymous address. Follows: handle_mm_fault(), 3.14."""
    sync.sched_point(cpu, "handle_mm_fault", mm)
    return await do_anonymous_page(cpu, mm, gfp_mask)


async def do_swap_page(cpu, mm, gfp_mask):
    """Fault one of mm's swapped-out anonymous pages back in; 0 (also when nothing was swapped out) or
    VM_FAULT_OOM.

    Follows: mm/memory.c do_swap_page(), 3.14: a new page (the swap-in allocation), onto the inactive anon list
    (lru_cache_add_anon), mapped with its PTE accessed, the swap entry given back. Differs: no swap cache and
    no I/O: the slot is freed at once and the read takes no time.
    """
    m = cpu.m
    pfn = await page_alloc.alloc_pages(cpu, gfp_mask, 0)
    if pfn is None:
        return VM_FAULT_OOM
    base = mm * MM_NCOLS
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        had = m.v_mm[base + MM_SWAPENTS] > 0
        if had:
            m.v_mm[base + MM_SWAPENTS] -= 1
    if not had:
        page_alloc.__free_pages(cpu, pfn, 0)
        return 0
    with sync.spinlock(cpu, L_SWAP):
        m.v_glob[G_NR_SWAP_FREE] += 1
    swap.lru_cache_add(cpu, pfn)
    m.v_page_young[pfn] = 1
    mmap.map_page(cpu, mm, pfn, PAGE_ANON, MM_ANONPAGES)
    return 0
