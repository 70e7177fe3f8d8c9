"""Memory cgroup accounting: every memcg's usage is the pages charged within its subtree (DESIGN §10).

Judged from the machine at a quiescent moment (every snapshot, and the end of the run): the page frame table
says which memcg each frame is charged to (page_memcg), and each memcg's counters must agree with it, a
memcg's own charges (local) and its res_counter usage, which counts the whole subtree (use_hierarchy). A free
frame is never charged; every frame charged is owned: an anonymous page of an mm, or a page-cache page
(mapped, or left in the cache by a task that exited, as the kernel keeps it charged).
"""
import numpy as np

from oomemu.machine import (MEMCG_LOCAL, MEMCG_PARENT, MEMCG_USAGE, PAGE_ANON, PAGE_BUDDY, PAGE_FILE, PAGE_PCP)


def check_memcg_usage(state):
    """Violations of "usage == the pages charged within the subtree" (empty when every counter agrees)."""
    memcg = getattr(state, "memcg", None)
    page_memcg = getattr(state, "page_memcg", None)
    if memcg is None or page_memcg is None or len(page_memcg) != len(state.page_kind):
        return []                                   # no memory cgroups in this run
    nr = memcg.shape[0]
    charged = page_memcg >= 0
    problems = []
    kinds = state.page_kind[charged]
    free = (kinds == PAGE_BUDDY) | (kinds == PAGE_PCP)
    if free.any():
        pfns = charged.nonzero()[0][free]
        problems.append(f"{len(pfns)} free page frames are still charged (first pfn {int(pfns[0])} to memcg "
                        f"{int(page_memcg[pfns[0]])})")
    other = ~free & (kinds != PAGE_ANON) & (kinds != PAGE_FILE)
    if other.any():
        problems.append(f"{int(other.sum())} kernel page frames are charged (only user pages are)")
    local = np.bincount(page_memcg[charged].astype(np.int64), minlength=nr)[:nr]
    parents = memcg[:, MEMCG_PARENT]
    subtree = local.copy()
    for row in range(nr - 1, 0, -1):               # parents come before children: fold children upwards
        if parents[row] > 0:
            subtree[parents[row]] += subtree[row]
    for row in range(1, nr):
        if memcg[row, MEMCG_LOCAL] != local[row]:
            problems.append(f"memcg {row}: {int(memcg[row, MEMCG_LOCAL])} pages charged to it by its counter, "
                            f"{int(local[row])} in the page frame table")
        if memcg[row, MEMCG_USAGE] != subtree[row]:
            problems.append(f"memcg {row}: usage {int(memcg[row, MEMCG_USAGE])} pages, but its subtree holds "
                            f"{int(subtree[row])} charged pages")
    return problems
