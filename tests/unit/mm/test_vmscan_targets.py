"""Direct reclaim's per-zone target (mm/vmscan.c): in 3.14 each zone's shrink_lruvec counts only what it
reclaimed itself against the whole sc->nr_to_reclaim (SWAP_CLUSTER_MAX = 32, KERNEL §6.8), at every priority,
whatever the zones before it reclaimed; do_try_to_free_pages stops between priorities once the sum reaches 32.
A 3.14 shrink_lruvec starts with scan_adjusted false, so direct reclaim stops after the batch round that
brings the zone to 32; 3.16 (1a501907bbea, `full_scan_at_def_priority`) sets it for global direct reclaim at
DEF_PRIORITY, which then scans the whole get_scan_count() target (read in the 3.14.1 and 3.16.0 trees).
"""
import pytest

from machine_helpers import mk
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.mmzone import NR_INACTIVE_FILE
from oomemu.machine import LRU_INACTIVE_FILE, Z_STAT
from oomemu.mm import page_alloc, vmscan

from test_vmscan_counts import DMA, NORMAL, lru_page


@pytest.fixture(params=["3.14", "3.16"])
def kernel_mc(request, mk):
    return (request.param, *mk(request.param))


def test_direct_reclaim_at_def_priority_stops_at_the_target_on_3_14_and_scans_it_whole_from_3_16(kernel_mc):
    """100 clean unmapped page-cache pages on Normal's inactive list, the list's count raised to 262,244 so
    that DEF_PRIORITY's target is 262,244 >> 12 = 64 pages (no swap: SCAN_FILE). Every page scanned is
    reclaimed, 32 a batch: 3.14 stops after the first batch (32 >= 32), 3.16 scans both batches (64)."""
    kernel, m, cpu = kernel_mc
    for _ in range(100):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE] += 262_244 - 100
    assert vmscan.get_scan_count(cpu, NORMAL, vmscan.DEF_PRIORITY, False)[LRU_INACTIVE_FILE] == 64
    expected = {"3.14": 32, "3.16": 64}[kernel]
    assert vmscan.shrink_lruvec(cpu, NORMAL, vmscan.DEF_PRIORITY, 32) == expected
    # below DEF_PRIORITY both stop after the batch that reaches the target
    assert vmscan.shrink_lruvec(cpu, NORMAL, vmscan.DEF_PRIORITY - 1, 32) == 32


def test_every_zone_is_asked_for_the_whole_cluster_at_every_priority(kernel_mc, monkeypatch):
    """Each zone reclaims 5 pages a pass: priorities 12, 11, 10 and 9 each ask Normal, then DMA, for 32 and
    sum 10 a priority; the loop stops after priority 9 at 40 >= 32 (a zone is not asked for 32 - 10 = 22 at
    priority 11)."""
    _, m, cpu = kernel_mc
    for z in (NORMAL, DMA):
        lru_page(cpu, z, LRU_INACTIVE_FILE)     # reclaimable (pages_scanned 0 < 6 x 1) below DEF_PRIORITY
    asked = []

    def five(cpu, z, priority, nr_to_reclaim, kswapd=False):
        asked.append((z, priority, nr_to_reclaim))
        return 5

    monkeypatch.setattr(vmscan, "shrink_lruvec", five)
    zonelist = page_alloc.node_zonelist(m, 0)
    assert [z for z in zonelist if z in (NORMAL, DMA)] == [NORMAL, DMA]
    assert vmscan.do_try_to_free_pages(cpu, zonelist, GFP_KERNEL, 32) == 40
    usable = [z for z in zonelist if z in (NORMAL, DMA)]
    assert asked == [(z, p, 32) for p in (12, 11, 10, 9) for z in usable]
