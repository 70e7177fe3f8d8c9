"""Fair zone allocation, 3.14 (issue 14 point 4): the fast path's low-watermark pass spreads pages over the
local zones in proportion to their size through each zone's NR_ALLOC_BATCH, skips zones of other nodes, and
prepare_slowpath() starts a new round. Every expectation below is worked out by hand from KERNEL §6.2/§6.5 and
3.14's get_page_from_freelist / buffered_rmqueue / prepare_slowpath rules, not read back from the code.

The unit machine has one node: DMA 16 MiB (4096 pages) and Normal 48 MiB (12288 pages).
  lowmem = 16384 pages = 65536 kB, min_free_kbytes = int_sqrt(65536 * 16) = 1024, pages_min = 256;
  DMA:    tmp = 256 * 4096 / 16384 = 64,   min 64,  low 80,  high 96,  batch = high - low = 16;
  Normal: tmp = 256 * 12288 / 16384 = 192, min 192, low 240, high 288, batch = 48.
  DMA's lowmem_reserve for a Normal request = 12288 / 256 = 48, so DMA passes its low mark while free > 128.
GFP_KERNEL's zonelist is Normal, DMA. The fast path takes Normal until its 48 are used, then DMA's 16; the
65th request finds both batches used up, enters the slowpath, whose prepare_slowpath resets both batches and
whose min-watermark pass (no fairness) takes Normal; the fast path then takes Normal's other 47, DMA's 16, ...
"""
import textwrap


from machine_helpers import run_to_completion, mc
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.gfp import GFP_KERNEL, GFP_THISNODE
from oomemu.include.mmzone import NR_ALLOC_BATCH, NR_FREE_PAGES
from oomemu.machine import Z_STAT, Z_WMARK
from oomemu.mm import page_alloc, vmstat
from oomemu.mm.internal import ALLOC_CPUSET, ALLOC_WMARK_LOW
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
BATCH = Z_STAT + NR_ALLOC_BATCH
FREE = Z_STAT + NR_FREE_PAGES


def slowpath_entries(m):
    return vmstat.counters_total(m)["slowpath_entries"]


def alloc_zones(m, cpu, n, gfp=GFP_KERNEL):
    """Allocate n order-0 pages through __alloc_pages_nodemask; the zone of each, in order."""
    zones = []
    for _ in range(n):
        pfn = run_to_completion(page_alloc.__alloc_pages_nodemask(cpu, gfp, 0, m.zonelists[0]))
        assert pfn is not None
        zones.append(int(m.page_zone[pfn]))
    return zones


def test_boot_batches_are_high_minus_low(mc):
    m, _ = mc
    assert [int(m.zone[z, Z_WMARK + i]) for z in (DMA, NORMAL) for i in range(3)] == [64, 80, 96, 192, 240, 288]
    assert int(m.zone[DMA, BATCH]) == 16
    assert int(m.zone[NORMAL, BATCH]) == 48


def test_zones_fill_in_proportion_to_their_size(mc):
    """48 Normal, 16 DMA, (slowpath: reset, Normal at min) 1 Normal + 47 Normal, 16 DMA, then the slowpath again."""
    m, cpu = mc
    before = slowpath_entries(m)
    zones = alloc_zones(m, cpu, 128)
    assert zones == [NORMAL] * 48 + [DMA] * 16 + [NORMAL] * 48 + [DMA] * 16
    assert slowpath_entries(m) - before == 1
    assert int(m.zone[NORMAL, BATCH]) == 0 and int(m.zone[DMA, BATCH]) == 0
    assert alloc_zones(m, cpu, 1) == [NORMAL]    # the next round starts in the slowpath again
    assert slowpath_entries(m) - before == 2
    assert int(m.zone[NORMAL, BATCH]) == 47 and int(m.zone[DMA, BATCH]) == 16


def test_low_pass_skips_a_used_up_batch_and_min_pass_does_not(mc):
    m, cpu = mc
    m.zone[NORMAL, BATCH] = 0
    args = (cpu, GFP_KERNEL, None, 0, m.zonelists[0], NORMAL)
    pfn = page_alloc.get_page_from_freelist(*args, ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0)
    assert int(m.page_zone[pfn]) == DMA
    assert int(m.zone[DMA, BATCH]) == 15
    m.zone[DMA, BATCH] = 0
    assert page_alloc.get_page_from_freelist(*args, ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0) is None
    pfn = page_alloc.get_page_from_freelist(*args, ALLOC_CPUSET, NORMAL, 0)    # ALLOC_WMARK_MIN
    assert int(m.page_zone[pfn]) == NORMAL
    assert int(m.zone[NORMAL, BATCH]) == -1     # the slowpath's pages are paid for too


def test_gfp_thisnode_takes_no_part(mc):
    """A GFP_THISNODE request ignores a used-up batch and does not pay into one."""
    m, cpu = mc
    m.zone[NORMAL, BATCH] = 0
    pfn = page_alloc.get_page_from_freelist(cpu, GFP_KERNEL | GFP_THISNODE, None, 0, m.zonelists[0], NORMAL,
                                            ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0)
    assert int(m.page_zone[pfn]) == NORMAL
    assert int(m.zone[NORMAL, BATCH]) == 0 and int(m.zone[DMA, BATCH]) == 16


def test_prepare_slowpath_resets_local_batches_keeping_concurrent_decrements(mc):
    m, cpu = mc
    m.zone[NORMAL, BATCH] = -5
    m.zone[DMA, BATCH] = 3
    page_alloc.prepare_slowpath(cpu, GFP_KERNEL, 0, m.zonelists[0], NORMAL, NORMAL)
    assert int(m.zone[NORMAL, BATCH]) == 48 and int(m.zone[DMA, BATCH]) == 16


TWO_NODES = """
[machine]
cpus = 2
max_tasks = 64
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "16MiB" }
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "16MiB" }
"""


def test_remote_node_is_used_only_once_the_local_zone_is_at_min():
    """Two nodes of one 16 MiB Normal zone each (4096 pages): lowmem 8192 pages = 32768 kB, min_free_kbytes =
    int_sqrt(32768 * 16) = 724, pages_min = 181, tmp = 90 per zone: min 90, low 112, high 135, batch 23.
    The fast path never takes node 1 (not local), and each round's slowpath pass at min stays on node 0 while
    its free pages are above 90: node 1's first page comes only once node 0's NR_FREE_PAGES is <= 90 (without
    the fairness rules it would come as soon as node 0 fell to its low mark, 112)."""
    sc = load_scenario_text(textwrap.dedent(TWO_NODES), name="unit")
    m = create_machine(sc, ring_records=64)
    try:
        cpu = CpuContext(m, 0, sc)
        n0, n1 = m.zonelists[0][0], m.zonelists[0][1]
        assert [int(m.zone[n0, Z_WMARK + i]) for i in range(3)] == [90, 112, 135]
        assert int(m.zone[n0, BATCH]) == 23
        free_at_first_remote = None
        for _ in range(4096):
            free0 = int(m.zone[n0, FREE])
            pfn = run_to_completion(page_alloc.__alloc_pages_nodemask(cpu, GFP_KERNEL, 0, m.zonelists[0]))
            if int(m.page_zone[pfn]) == n1:
                free_at_first_remote = free0
                break
        assert free_at_first_remote is not None
        assert free_at_first_remote <= 90
    finally:
        m.close()
