"""The allocator's entry and its zone walks: __alloc_pages_nodemask's fast path and hand-off to the slowpath
(KERNEL §6.1), get_page_from_freelist's walk (§6.4's usage notes: a zone that fails its watermark is skipped;
ALLOC_NO_WATERMARKS skips the check; ALLOC_CPUSET and the nodemask), first_zones_zonelist, 4.7's
should_reclaim_retry over a nodemask, and numa_node_id.

Machines: machine_helpers.BASE (node 0: DMA zone 0, 4,096 pages, min 64; Normal zone 2, 12,288 pages, min
192; zonelist (2, 0)), and the same with a node 1 of Normal 32 MiB (zone 6, 8,192 pages): zonelists (2, 0, 6)
and (6, 2, 0).
"""
from machine_helpers import NODE1, add_process, mk, run_to_completion
from oomemu import sync
from oomemu.include.gfp import (GFP_DMA, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_HARDWALL)
from oomemu.include.mmzone import NR_FREE_PAGES
from oomemu.kernel import cpuset
from oomemu.machine import PAGE_KERNEL, Z_STAT
from oomemu.mm import page_alloc, vmstat
from oomemu.percpu import CpuContext

DMA, NORMAL, NORMAL1 = 0, 2, 6
FREE = Z_STAT + NR_FREE_PAGES
CPUSET_ONLY = """
[[task]]
comm = "idle"
mems = [0]
program = [{ op = "sleep", ms = 1 }]
"""
# KERNEL §6.3: ALLOC_WMARK_MIN 0, ALLOC_WMARK_LOW 1, ALLOC_NO_WATERMARKS 0x04, ALLOC_HARDER 0x10,
# ALLOC_HIGH 0x20, ALLOC_CPUSET 0x40
MIN_CPUSET, LOW_CPUSET, NO_WMARKS, ATOMIC_FLAGS = 0x40, 0x41, 0x04, 0x30


def empty(cpu, z):
    """Take every free page of zone z out of the buddy allocator (kernel pages)."""
    m = cpu.m
    with sync.spinlock(cpu, m.zone_lock(z)):
        for order in range(10, -1, -1):
            while (pfn := page_alloc.__rmqueue_smallest(cpu, z, order)) != -1:
                m.zone[z, FREE] -= 1 << order
                page_alloc._set_kind(m, pfn, order, PAGE_KERNEL, -1)
    assert int(m.zone[z, FREE]) == 0


def traced(m, cpu):
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]
    return lambda: [(names[int(r["event"])], [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]


# --- get_page_from_freelist ----------------------------------------------------------------------------------

def test_a_zone_below_its_watermark_is_skipped_for_the_next(mk):
    """Normal emptied: the min pass of GFP_KERNEL skips it and takes a DMA page (DMA's 4,096 free pages are
    above min 64 + lowmem_reserve[Normal] 12288 / 256 = 48)."""
    m, cpu = mk()
    empty(cpu, NORMAL)
    pfn = page_alloc.get_page_from_freelist(cpu, GFP_KERNEL, None, 0, m.zonelists[0], 2, MIN_CPUSET, NORMAL, 0)
    assert pfn is not None and int(m.page_zone[pfn]) == DMA


def test_the_allocation_event_and_the_no_watermark_count(mk):
    """mm_page_alloc(pfn, order, gfp, free pages at the check, alloc_flags) for each page handed out, the block
    taken with the request's migratetype (mm_page_alloc_zone_locked); NR_NO_WATERMARK_ALLOCS counts only
    ALLOC_NO_WATERMARKS allocations."""
    m, cpu = mk()
    records = traced(m, cpu)
    free = int(m.zone[NORMAL, FREE])
    zl = m.zonelists[0]
    pfn = page_alloc.get_page_from_freelist(cpu, GFP_KERNEL, None, 1, zl, 2, MIN_CPUSET, NORMAL, 1)
    got = records()
    assert [a[:5] for n, a in got if n == "mm_page_alloc"] == [[pfn, 1, GFP_KERNEL, free, MIN_CPUSET]]
    assert [a[:4] for n, a in got if n == "mm_page_alloc_zone_locked"] == [[pfn, 1, 1, NORMAL]]
    assert int(cpu.vm_events[vmstat.NR_NO_WATERMARK_ALLOCS]) == 0
    page_alloc.get_page_from_freelist(cpu, GFP_KERNEL, None, 1, zl, 2, NO_WMARKS, NORMAL, 1)
    assert int(cpu.vm_events[vmstat.NR_NO_WATERMARK_ALLOCS]) == 1


def test_alloc_cpuset_meets_the_nodemask_and_only_with_alloc_cpuset(mk):
    """A task whose cpuset has node 1 only: with ALLOC_CPUSET a __GFP_HARDWALL request may use node 1 ∩ the
    nodemask: nodemask {0} leaves nothing (NULL), {0, 1} leaves node 1; without ALLOC_CPUSET (an atomic
    request's flags, §6.3 rule 3) the cpuset is not asked and the zonelist's first zone, on node 0, serves."""
    m, cpu = mk(extra=NODE1, tasks=CPUSET_ONLY)
    assert m.numa_constraints and m.zonelists[0] == (2, 0, 6)
    cur = add_process(m, cpu, "caged")
    m.task_mems[cur] = cpuset.node_mask_of([1])
    cpu.current = cur
    gfp = GFP_HIGHUSER_MOVABLE
    gpf = lambda nodes, flags: page_alloc.get_page_from_freelist(  # noqa: E731
        cpu, gfp, nodes, 0, m.zonelists[0], 3, flags, NORMAL, 1)
    assert gpf(frozenset({0}), MIN_CPUSET) is None
    assert int(m.page_zone[gpf(frozenset({0, 1}), MIN_CPUSET)]) == NORMAL1
    assert int(m.page_zone[gpf(None, ATOMIC_FLAGS)]) == NORMAL


# --- __alloc_pages_nodemask ----------------------------------------------------------------------------------

class Entry:
    """Spies on __alloc_pages_nodemask's two callees: get_page_from_freelist answers from `fast`, the
    slowpath from `slow`."""

    def __init__(self, monkeypatch, fast=(), slow=()):
        self.calls, fast, slow = [], list(fast), list(slow)

        def gpf(*args):
            self.calls.append(("fast",) + args)
            return fast.pop(0) if fast else None

        async def slowpath(*args):
            self.calls.append(("slow",) + args)
            return slow.pop(0) if slow else None
        monkeypatch.setattr(page_alloc, "get_page_from_freelist", gpf)
        monkeypatch.setattr(page_alloc, "__alloc_pages_slowpath", slowpath)


def nodemask_alloc(cpu, gfp, zonelist, nodemask=None, order=0):
    return run_to_completion(page_alloc.__alloc_pages_nodemask(cpu, gfp, order, zonelist, nodemask))


def test_the_fast_path_then_the_slowpath_with_the_requests_zone_and_migratetype(mk, monkeypatch):
    """§6.1: GFP_HIGHUSER_MOVABLE (0x200da) reaches ZONE_MOVABLE (3) with MIGRATE_MOVABLE (1); the preferred
    zone is the zonelist's first within it, Normal. Step 5: get_page_from_freelist(gfp|__GFP_HARDWALL,
    nodemask, order, zonelist, 3, ALLOC_WMARK_LOW|ALLOC_CPUSET = 0x41, Normal, 1); failing, step 7: the
    slowpath with the request's own gfp. The outcome is counted: NR_ALLOCS for a page, NR_ALLOC_FAILURES for
    NULL; a fast-path page counts NR_FAST_PATH_ALLOCS too."""
    m, cpu = mk()
    zl = m.zonelists[0]
    e = Entry(monkeypatch, fast=[None, 77], slow=[55])
    g = GFP_HIGHUSER_MOVABLE
    assert nodemask_alloc(cpu, g, zl, order=2) == 55
    assert e.calls == [("fast", cpu, g | __GFP_HARDWALL, None, 2, zl, 3, LOW_CPUSET, NORMAL, 1),
                       ("slow", cpu, g, 2, zl, 3, None, NORMAL, 1)]
    assert nodemask_alloc(cpu, g, zl) == 77
    assert nodemask_alloc(cpu, g, zl) is None
    ev = cpu.vm_events
    assert (int(ev[vmstat.NR_ALLOCS]), int(ev[vmstat.NR_ALLOC_FAILURES]), int(ev[vmstat.NR_FAST_PATH_ALLOCS])) == (
        2, 1, 1)


def test_each_request_kind_and_zonelist_gets_its_own_zone(mk, monkeypatch):
    """The request's zone and preferred zone depend on its gfp and zonelist, whatever came before on this CPU:
    GFP_KERNEL: high_zoneidx 2, preferred Normal; GFP_DMA: 0 and DMA; with node 1's zonelist (6, 2, 0): Normal
    of node 1."""
    m, cpu = mk(extra=NODE1)
    e = Entry(monkeypatch, fast=[1, 2, 3, 4])
    for gfp, zl in ((GFP_KERNEL, m.zonelists[0]), (GFP_DMA, m.zonelists[0]), (GFP_KERNEL, m.zonelists[1]),
                    (GFP_KERNEL, m.zonelists[0])):
        nodemask_alloc(cpu, gfp, zl)
    assert [(c[6], c[8]) for c in e.calls] == [(2, NORMAL), (0, DMA), (2, NORMAL1), (2, NORMAL)]


def test_a_nodemask_chooses_the_preferred_zone(mk, monkeypatch):
    """§6.1 step 4: the preferred zone is the first zone of the zonelist within the nodemask: zonelist (2, 0, 6)
    with nodemask {1} prefers node 1's Normal, also right after a request without a nodemask preferred node
    0's; and the nodemask goes to get_page_from_freelist."""
    m, cpu = mk(extra=NODE1)
    e = Entry(monkeypatch, fast=[1, 2, 3])
    nodemask_alloc(cpu, GFP_KERNEL, m.zonelists[0])
    nodemask_alloc(cpu, GFP_KERNEL, m.zonelists[0], frozenset({1}))
    nodemask_alloc(cpu, GFP_KERNEL, m.zonelists[0])
    assert [(c[3], c[8]) for c in e.calls] == [(None, NORMAL), (frozenset({1}), NORMAL1), (None, NORMAL)]
    e.calls.clear()
    nodemask_alloc(cpu, GFP_KERNEL, m.zonelists[0], frozenset({1}))      # the fast path fails: the slowpath
    assert e.calls[1] == ("slow", cpu, GFP_KERNEL, 0, m.zonelists[0], 2, frozenset({1}), NORMAL1, 0)


# --- first_zones_zonelist, should_reclaim_retry, numa_node_id ------------------------------------------------

def test_first_zones_zonelist(mk):
    """The first zone of the zonelist at or below high_zoneidx and within the nodemask, or None."""
    m, cpu = mk(extra=NODE1)
    first = page_alloc.first_zones_zonelist
    assert first(m, m.zonelists[0], 0, None) == DMA
    assert first(m, m.zonelists[0], 2, None) == NORMAL
    assert first(m, m.zonelists[0], 2, frozenset({1})) == NORMAL1
    assert first(m, m.zonelists[1], 2, frozenset({0})) == NORMAL
    assert first(m, m.zonelists[1], 0, frozenset({1})) is None


def test_should_reclaim_retry_asks_only_the_nodemasks_zones(mk):
    """4.7's should_reclaim_retry (KERNEL §8) walks the zonelist within the nodemask: node 1's Normal emptied
    with nothing to reclaim cannot pass its min watermark; node 0's untouched zones can. Zonelist (6, 2, 0):
    nodemask {1}: no retry; {0}: zone 6 is passed over and Normal retries; no nodemask: retry."""
    m, cpu = mk(extra=NODE1)
    empty(cpu, NORMAL1)
    srr = lambda nodes: page_alloc.should_reclaim_retry(cpu, 0, m.zonelists[1], 2, nodes, NORMAL1,  # noqa: E731
                                                         MIN_CPUSET, 0)
    assert srr(frozenset({1})) is False
    assert srr(frozenset({0})) is True
    assert srr(None) is True
    # a DMA request (high_zoneidx 0) on zonelist (2, 0, 6) passes over Normal to DMA, which can retry
    assert page_alloc.should_reclaim_retry(cpu, 0, m.zonelists[0], 0, None, DMA, MIN_CPUSET, 0) is True


def test_numa_node_id_spreads_cpus_over_nodes_and_kswapd_is_its_nodes(mk):
    """CPUs are spread over the nodes in order (2 CPUs, 2 nodes: CPU 0 on node 0, CPU 1 on node 1); a
    kswapd context (row nr_cpus + nid) is on its own node, also on a one-node machine."""
    m, cpu = mk(extra=NODE1)
    nid = lambda row: page_alloc.numa_node_id(CpuContext(m, row, cpu.scenario))  # noqa: E731
    assert [nid(0), nid(1), nid(m.nr_cpus), nid(m.nr_cpus + 1)] == [0, 1, 0, 1]
    m1, cpu1 = mk()
    assert page_alloc.numa_node_id(CpuContext(m1, m1.nr_cpus, cpu1.scenario)) == 0
