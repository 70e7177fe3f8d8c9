"""Anonymous page faults.

Follows mm/memory.c of Linux 3.14: handle_mm_fault() → do_anonymous_page(), which allocates with
GFP_HIGHUSER_MOVABLE (or the gfp the scenario asks for), maps the page into the mm and counts it in
MM_ANONPAGES. A failed allocation is VM_FAULT_OOM.
"""
from oomemu import sync
from oomemu.machine import G_NR_SWAP_FREE, LRU_ANON, MM_ANONPAGES, PAGE_ANON
from oomemu.include.gfp import GFP_KERNEL
from oomemu.mm import memcontrol, mmap, page_alloc, vmscan

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

    Follows: mm/memory.c do_anonymous_page() (inc_mm_counter_fast, lru_cache_add_active_or_unevictable), 3.14.
    """
    mmap.map_page(cpu, mm, pfn, PAGE_ANON, MM_ANONPAGES)
    if cpu.m.v_glob[G_NR_SWAP_FREE] > 0:
        vmscan.lru_cache_add(cpu, pfn, LRU_ANON)  # only swap makes anon pages reclaimable


async def handle_mm_fault(cpu, mm, gfp_mask):
    """Resolve a fault on a not-yet-touched anonymous address. Follows: handle_mm_fault(), 3.14."""
    sync.sched_point(cpu, "handle_mm_fault", mm)
    return await do_anonymous_page(cpu, mm, gfp_mask)
