"""Page-cache pages brought in by reads.

Follows mm/filemap.c of Linux 3.14 (page_cache_alloc → add_to_page_cache_lru on a read miss). A page read by
a task is mapped into its mm (MM_FILEPAGES) and sits on the file LRU, where reclaim may take it; after the
task exits it stays cached, unmapped.
"""
from oomemu.machine import MM_FILEPAGES, PAGE_FILE, PG_exec
from oomemu.include.gfp import GFP_KERNEL
from oomemu.mm import memcontrol, mmap, page_alloc, swap


async def page_cache_read(cpu, mm, gfp_mask, exec_=False):
    """Read one new page into the page cache and map it into mm; True on success.

    Follows: mm/filemap.c page_cache_read() (add_to_page_cache_lru: the inactive file list, through the
    pagevec) + filemap_fault() mapping the page with its PTE accessed, 3.14; add_to_page_cache_locked()
    charges it to the memcg first (mem_cgroup_cache_charge). `exec_`: the mapping is executable (VM_EXEC,
    program text), which page_referenced() reports.
    """
    pfn = await page_alloc.alloc_pages(cpu, gfp_mask, 0)
    if pfn is None:
        return False
    if cpu.m.memcg_enabled and await memcontrol.mem_cgroup_charge(cpu, mm, pfn, GFP_KERNEL):
        page_alloc.free_hot_cold_page(cpu, pfn)   # mem_cgroup_cache_charge failed: -ENOMEM
        return False
    m = cpu.m
    m.v_page_kind[pfn] = PAGE_FILE   # page_lru() reads the kind
    if exec_:
        m.v_page_flags[pfn] |= PG_exec
    swap.lru_cache_add(cpu, pfn)
    m.v_page_young[pfn] = 1
    mmap.map_page(cpu, mm, pfn, PAGE_FILE, MM_FILEPAGES)
    return True
