"""Large kmalloc: unreclaimable kernel pages straight from the page allocator.

Follows mm/slub.c kmalloc_large() of Linux 3.14 (sizes above a page bypass the slabs). The pages belong to
the kernel, recorded against the task that asked, and are never reclaimed.
"""
from oomemu.machine import PAGE_KERNEL
from oomemu.mm import page_alloc


async def kmalloc_large(cpu, gfp_mask, order):
    """Allocate 2^order kernel pages for current; the PFN or None. Follows: kmalloc_large(), 3.14."""
    pfn = await page_alloc.alloc_pages(cpu, gfp_mask, order)
    if pfn is not None:
        page_alloc._set_kind(cpu.m, pfn, order, PAGE_KERNEL, cpu.current)
    return pfn


def kfree_large(cpu, pfn, order):
    """Give back a block kmalloc_large() handed out. Follows: mm/slub.c kfree() of a large allocation, 3.14."""
    page_alloc.__free_pages(cpu, pfn, order)
