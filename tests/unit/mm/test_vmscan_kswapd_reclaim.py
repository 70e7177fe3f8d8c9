"""Direct reclaim's progress and kswapd's wake-up (KERNEL §6.6, §6.8), computed by hand on the unit machine:
DMA 16 MiB (4096 pages, min 64) + Normal 48 MiB (12288 pages, min 192, high 288); kswapd of node 0 is row 2
(after the 2 CPUs); "swap" machines have 16 MiB of swap.
"""
import textwrap

import pytest

from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.mmzone import (NR_ACTIVE_ANON, NR_ACTIVE_FILE, NR_FREE_PAGES, NR_INACTIVE_ANON,
                                   NR_INACTIVE_FILE, NR_PAGES_SCANNED)
from oomemu.machine import (C_KSWAPD_CLASSZONE, C_KSWAPD_MAX_ORDER, C_KSWAPD_SLEEPING, G_NR_SWAP_FREE,
                            LRU_INACTIVE_FILE, PAGE_FILE, PAGE_KERNEL, Z_STAT)
from oomemu.mm import page_alloc, vmscan, vmstat
from oomemu.percpu import CpuContext

DMA, DMA32, NORMAL = 0, 1, 2
FREE = Z_STAT + NR_FREE_PAGES
SCANNED = Z_STAT + NR_PAGES_SCANNED
KSWAPD = 2


def machine(swap_size="0"):
    text = f"""
    [machine]
    cpus = 2
    max_tasks = 64
    swap = "{swap_size}"
    [[machine.node]]
    zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }}
    """
    sc = load_scenario_text(textwrap.dedent(text), name="unit")
    m = create_machine(sc, ring_records=64)
    return m, CpuContext(m, 0, sc)


@pytest.fixture
def mc():
    m, cpu = machine()
    yield m, cpu
    m.close()


@pytest.fixture
def mcs():
    m, cpu = machine("16MiB")
    yield m, cpu
    m.close()


def file_pages(cpu, z, count):
    """`count` unmapped, unreferenced page-cache pages on zone z's inactive file list."""
    m = cpu.m
    for _ in range(count):
        with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
            pfn = page_alloc.__rmqueue(cpu, z, 0, 0)
            m.zone[z, FREE] -= 1
            page_alloc._set_kind(m, pfn, 0, PAGE_FILE, -1)
        with page_alloc.sync.spinlock(cpu, m.lru_lock(z)):
            vmscan.add_page_to_lru_list(m, z, pfn, LRU_INACTIVE_FILE)


# --- zone_reclaimable_pages, all_unreclaimable (§6.8) ------------------------------------------------------------

def test_zone_reclaimable_pages_counts_anon_only_while_swap_is_free(mcs):
    """File LRU pages (2 inactive + 3 active), plus anon LRU pages (4 + 5) while swap space is free: 14 with
    free swap, even a single free page of it; 5 with none."""
    m, cpu = mcs
    for stat, n in ((NR_INACTIVE_FILE, 2), (NR_ACTIVE_FILE, 3), (NR_INACTIVE_ANON, 4), (NR_ACTIVE_ANON, 5)):
        m.zone[NORMAL, Z_STAT + stat] = n
    assert int(m.glob[G_NR_SWAP_FREE]) == 4096
    assert vmscan.zone_reclaimable_pages(m, NORMAL) == 14
    m.glob[G_NR_SWAP_FREE] = 1
    assert vmscan.zone_reclaimable_pages(m, NORMAL) == 14
    m.glob[G_NR_SWAP_FREE] = 0
    assert vmscan.zone_reclaimable_pages(m, NORMAL) == 5


def test_all_unreclaimable_walks_zones_up_to_and_including_the_requests_highest(mc):
    """all_unreclaimable looks at the zones the request may use (index <= gfp_zone), Normal included: 3
    reclaimable pages in Normal keep a GFP_KERNEL request "reclaimable" until pages_scanned reaches 6 × 3 = 18."""
    m, cpu = mc
    file_pages(cpu, NORMAL, 3)
    zl = page_alloc.node_zonelist(m, 0)
    assert not vmscan.all_unreclaimable(m, zl, NORMAL)
    m.zone[NORMAL, SCANNED] = 17
    assert not vmscan.all_unreclaimable(m, zl, NORMAL)
    m.zone[NORMAL, SCANNED] = 18
    assert vmscan.all_unreclaimable(m, zl, NORMAL)


# --- do_try_to_free_pages' result (§6.8) --------------------------------------------------------------------------

def test_direct_reclaim_stops_at_the_first_pass_that_reaches_32_pages(mc):
    """47 clean page-cache pages in Normal, no swap (file lists only), priority 12 down: each pass scans
    (pages left) >> priority: nothing until priority 5 (47 >> 5 = 1), then 46 >> 4 = 2, 44 >> 3 = 5, 39 >> 2 = 9
    (17 in all), 30 >> 1 = 15: 32 reclaimed, which is the target (SWAP_CLUSTER_MAX): it stops there."""
    m, cpu = mc
    file_pages(cpu, NORMAL, 47)
    zl = page_alloc.node_zonelist(m, 0)
    assert vmscan.do_try_to_free_pages(cpu, zl, GFP_KERNEL, 32) == 32
    assert vmscan.lru_size(m, NORMAL, LRU_INACTIVE_FILE) == 15


def test_direct_reclaim_with_nothing_freed_reports_1_while_a_zone_is_reclaimable(mc):
    """Nothing reclaimable at all: 0 ("no progress"); with reclaimable pages that cannot be reclaimed in time
    (pages_scanned below 6x) it is 1, the heuristic that postpones the OOM killer (§6.8)."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    assert vmscan.do_try_to_free_pages(cpu, zl, GFP_KERNEL, 32) == 0
    m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE] = 3     # counted, not on the list: never isolated
    assert vmscan.do_try_to_free_pages(cpu, zl, GFP_KERNEL, 32) == 1


# --- wakeup_kswapd (§6.6) ------------------------------------------------------------------------------------------

def kswapd(m, col):
    return int(m.cpu[KSWAPD, col])


def test_wakeup_kswapd_records_order_and_classzone_and_wakes_only_a_sleeper_below_high(mc):
    """§6.6 wakeup_kswapd: (1) an unpopulated zone does nothing; (2) kswapd_max_order is raised to a larger
    order, classzone_idx lowered to a smaller one, even when it does not wake; (3) no wake-up unless it sleeps;
    (4) none while the zone meets its high watermark; (5) else it is woken (one kswapd wake-up counted)."""
    m, cpu = mc
    m.cpu[KSWAPD, C_KSWAPD_SLEEPING] = 1
    m.cpu[KSWAPD, C_KSWAPD_MAX_ORDER] = 0
    m.cpu[KSWAPD, C_KSWAPD_CLASSZONE] = 3
    vmscan.wakeup_kswapd(cpu, DMA32, 5, 0)                     # unpopulated: nothing
    assert (kswapd(m, C_KSWAPD_MAX_ORDER), kswapd(m, C_KSWAPD_CLASSZONE)) == (0, 3)
    vmscan.wakeup_kswapd(cpu, NORMAL, 2, 2)                     # balanced: recorded, not woken
    assert (kswapd(m, C_KSWAPD_MAX_ORDER), kswapd(m, C_KSWAPD_CLASSZONE)) == (2, 2)
    vmscan.wakeup_kswapd(cpu, NORMAL, 1, 3)                     # smaller order, larger classzone: kept
    assert (kswapd(m, C_KSWAPD_MAX_ORDER), kswapd(m, C_KSWAPD_CLASSZONE)) == (2, 2)
    assert kswapd(m, C_KSWAPD_SLEEPING) == 1
    assert int(cpu.vm_events[vmstat.NR_KSWAPD_WAKEUPS]) == 0
    m.zone[NORMAL, FREE] = 288                                  # at high: zone_balanced needs free > high
    vmscan.wakeup_kswapd(cpu, NORMAL, 0, 2)
    assert kswapd(m, C_KSWAPD_SLEEPING) == 0 and int(cpu.vm_events[vmstat.NR_KSWAPD_WAKEUPS]) == 1
    vmscan.wakeup_kswapd(cpu, NORMAL, 0, 2)                     # awake already: no second wake-up
    assert int(cpu.vm_events[vmstat.NR_KSWAPD_WAKEUPS]) == 1


def test_pfmemalloc_watermark_ok_is_free_above_half_the_min_watermarks(mc):
    """§6.6 throttling: node 0's zones up to Normal have min 64 + 192 = 256, half is 128: 128 free pages is not
    enough, 129 is. When not ok, a sleeping kswapd is woken with classzone lowered to Normal."""
    m, cpu = mc
    m.zone[DMA, FREE] = 50
    m.zone[NORMAL, FREE] = 78
    m.cpu[KSWAPD, C_KSWAPD_SLEEPING] = 1
    m.cpu[KSWAPD, C_KSWAPD_CLASSZONE] = 3
    assert not vmscan.pfmemalloc_watermark_ok(cpu, 0)
    assert kswapd(m, C_KSWAPD_SLEEPING) == 0 and kswapd(m, C_KSWAPD_CLASSZONE) == NORMAL
    m.zone[NORMAL, FREE] = 79
    m.cpu[KSWAPD, C_KSWAPD_SLEEPING] = 1
    assert vmscan.pfmemalloc_watermark_ok(cpu, 0)
    assert kswapd(m, C_KSWAPD_SLEEPING) == 1
