"""What reclaim counts (mm/vmscan.c of 3.14): the zone's isolated and pages_scanned counters, reclaim_stat's
recent_scanned/recent_rotated, and the vm events pgscan, pgsteal (pages reclaimed), pgactivate, pgdeactivate
and pswpout (pages swapped out); and which lists shrink_list and shrink_zones touch.

Unit machine: DMA 16 MiB + Normal 48 MiB (12288 pages; per-CPU list high 18, so a handful of freed pages stays
on it); "swap" machines have 16 MiB of swap. Every number follows from the pages each test puts on the lists.
"""
import textwrap

import pytest

from machine_helpers import add_process
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.mmzone import NR_ISOLATED_ANON, NR_ISOLATED_FILE, NR_FREE_PAGES, NR_PAGES_SCANNED
from oomemu.machine import (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, MM_ANONPAGES,
                            MM_FILEPAGES, PAGE_ANON, PAGE_FILE, PAGE_KERNEL, PG_active, Z_STAT)
from oomemu.mm import page_alloc, vmscan, vmstat
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES
SCANNED = Z_STAT + NR_PAGES_SCANNED
ISO_ANON, ISO_FILE = Z_STAT + NR_ISOLATED_ANON, Z_STAT + NR_ISOLATED_FILE
RS, RR = vmscan.Z_RECENT_SCANNED, vmscan.Z_RECENT_ROTATED


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


def lru_page(cpu, z, lru, mm=-1, young=0):
    """A page on zone z's list `lru` (anonymous or page cache by the list), mapped by mm or unmapped."""
    m = cpu.m
    with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
        pfn = page_alloc.__rmqueue(cpu, z, 0, 0)
        m.zone[z, FREE] -= 1
        page_alloc._set_kind(m, pfn, 0, PAGE_KERNEL, -1)
    kind = PAGE_FILE if lru in (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE) else PAGE_ANON
    m.page_kind[pfn] = kind
    m.page_owner[pfn] = mm
    if mm >= 0:
        m.mm[mm, MM_FILEPAGES if kind == PAGE_FILE else MM_ANONPAGES] += 1
    m.page_young[pfn] = young
    if lru in (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE):
        m.page_flags[pfn] |= PG_active
    with page_alloc.sync.spinlock(cpu, m.lru_lock(z)):
        vmscan.add_page_to_lru_list(m, z, pfn, lru)
    return pfn


def lru_list(m, z, lru):
    out, pfn = [], int(m.zone[z, vmscan.Z_LRU_HEAD + lru])
    while pfn != -1:
        out.append(pfn)
        pfn = int(m.page_next[pfn])
    return out


def an_mm(m, cpu):
    return int(m.task_mm[add_process(m, cpu, "app")])


def events(cpu, *names):
    return [int(cpu.vm_events[getattr(vmstat, n)]) for n in names]


def zone(m, col):
    return int(m.zone[NORMAL, col])


def test_reclaiming_page_cache_counts_scans_and_steals_and_leaves_nothing_isolated(mc):
    """5 unmapped, unreferenced inactive page-cache pages: all 5 scanned (pgscan 5, pages_scanned + 5,
    recent_scanned[file] + 5) and reclaimed (pgsteal 5); nothing stays isolated; nothing is activated."""
    m, cpu = mc
    for _ in range(5):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    rs_file, rs_anon = zone(m, RS + 1), zone(m, RS)
    assert vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_FILE, 12, False) == 5
    assert events(cpu, "NR_PGSCAN", "NR_PAGES_RECLAIMED", "NR_PGACTIVATE") == [5, 5, 0]
    assert zone(m, SCANNED) == 5
    assert (zone(m, RS + 1), zone(m, RS)) == (rs_file + 5, rs_anon)
    assert (zone(m, ISO_FILE), zone(m, ISO_ANON)) == (0, 0)
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == []


def test_anonymous_pages_without_swap_are_activated_and_counted_as_anon(mc):
    """3 mapped, unreferenced inactive anonymous pages with no swap: add_to_swap() fails, so each is
    activated (activate_locked: pgactivate 3, back on the active anon list), none reclaimed; scanning counts on
    the anon side (recent_scanned[anon] + 3) and the isolated counters end at 0 on both sides."""
    m, cpu = mc
    mm = an_mm(m, cpu)
    pages = [lru_page(cpu, NORMAL, LRU_INACTIVE_ANON, mm) for _ in range(3)]
    rs_file, rs_anon = zone(m, RS + 1), zone(m, RS)
    assert vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_ANON, 12, False) == 0
    assert events(cpu, "NR_PGSCAN", "NR_PAGES_RECLAIMED", "NR_PGACTIVATE", "NR_PAGES_SWAPPED_OUT") == [3, 0, 3, 0]
    assert sorted(lru_list(m, NORMAL, LRU_ACTIVE_ANON)) == sorted(pages)
    assert (zone(m, RS + 1), zone(m, RS)) == (rs_file, rs_anon + 3)
    assert (zone(m, ISO_FILE), zone(m, ISO_ANON)) == (0, 0)


def test_anonymous_pages_with_swap_are_swapped_out_and_counted(mcs):
    """With swap, the same 3 anonymous pages are unmapped to swap: pswpout 3, pgsteal 3, MM_ANONPAGES 3 -> 0;
    a referenced (PTE-accessed) one beside them is activated instead (pgactivate 1)."""
    m, cpu = mcs
    mm = an_mm(m, cpu)
    for _ in range(3):
        lru_page(cpu, NORMAL, LRU_INACTIVE_ANON, mm)
    hot = lru_page(cpu, NORMAL, LRU_INACTIVE_ANON, mm, young=1)
    assert vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_ANON, 12, False) == 3
    assert events(cpu, "NR_PAGES_SWAPPED_OUT", "NR_PAGES_RECLAIMED", "NR_PGACTIVATE") == [3, 3, 1]
    assert int(m.mm[mm, MM_ANONPAGES]) == 1
    assert lru_list(m, NORMAL, LRU_ACTIVE_ANON) == [hot]


def test_aging_the_active_list_counts_scans_rotations_and_deactivations(mc):
    """shrink_active_list over 4 active page-cache pages, 1 referenced: pgscan 4, pages_scanned + 4,
    recent_scanned[file] + 4, recent_rotated[file] + 1, pgdeactivate 4 (all move to the inactive list);
    nothing stays isolated."""
    m, cpu = mc
    mm = an_mm(m, cpu)
    pages = [lru_page(cpu, NORMAL, LRU_ACTIVE_FILE, mm, young=int(i == 0)) for i in range(4)]
    rs, rr = zone(m, RS + 1), zone(m, RR + 1)
    vmscan.shrink_active_list(cpu, NORMAL, 32, LRU_ACTIVE_FILE, 12)
    assert events(cpu, "NR_PGSCAN", "NR_PGDEACTIVATE") == [4, 4]
    assert zone(m, SCANNED) == 4
    assert (zone(m, RS + 1), zone(m, RR + 1)) == (rs + 4, rr + 1)
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == pages
    assert (zone(m, ISO_FILE), zone(m, ISO_ANON)) == (0, 0)


def test_shrink_list_ages_an_active_list_only_when_its_inactive_list_is_low(mc):
    """shrink_list: an active list is aged (its pages deactivated) only if inactive_list_is_low (file: inactive
    < active, 3.14's inactive_file_is_low); it never reclaims (returns 0). 4 inactive vs 3 active: not low, left
    alone; 2 more active (4 < 5): low, all 5 aged onto the inactive list."""
    m, cpu = mc
    inactive = [lru_page(cpu, NORMAL, LRU_INACTIVE_FILE) for _ in range(4)]
    active = [lru_page(cpu, NORMAL, LRU_ACTIVE_FILE) for _ in range(3)]
    assert vmscan.shrink_list(cpu, NORMAL, LRU_ACTIVE_FILE, 32, 12, False) == 0
    assert lru_list(m, NORMAL, LRU_ACTIVE_FILE) == active
    active += [lru_page(cpu, NORMAL, LRU_ACTIVE_FILE) for _ in range(2)]
    assert vmscan.shrink_list(cpu, NORMAL, LRU_ACTIVE_FILE, 32, 12, False) == 0
    assert lru_list(m, NORMAL, LRU_ACTIVE_FILE) == []
    assert sorted(lru_list(m, NORMAL, LRU_INACTIVE_FILE)) == sorted(inactive + active)


def test_shrink_zones_skips_zones_above_the_request_and_unreclaimable_ones_after_the_first_pass(mc):
    """shrink_zones: a zone whose index is above high_zoneidx is not shrunk; at DEF_PRIORITY every usable zone is,
    later only zone_reclaimable ones (pages_scanned < 6 × reclaimable pages)."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    for _ in range(3):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
        lru_page(cpu, DMA, LRU_INACTIVE_FILE)
    # a DMA-only request (high_zoneidx 0) leaves Normal alone; at DEF_PRIORITY (12) the 3 pages >> 12 = 0 scan
    # targets reclaim nothing: use priority 0 to scan whole lists
    assert vmscan.shrink_zones(cpu, zl, 0, 0, 32) == 3
    assert len(lru_list(m, NORMAL, LRU_INACTIVE_FILE)) == 3
    # Normal made unreclaimable: pages_scanned at 6 × its 3 reclaimable pages; below DEF_PRIORITY it is skipped
    m.zone[NORMAL, SCANNED] = 18
    assert not vmscan.zone_reclaimable(m, NORMAL)
    assert vmscan.shrink_zones(cpu, zl, NORMAL, 0, 32) == 0
    assert len(lru_list(m, NORMAL, LRU_INACTIVE_FILE)) == 3


# --- get_scan_count's balance: 3.14 mm/vmscan.c get_scan_count() for global reclaim at swappiness 60, the rules
# its docstring lists (KERNEL.md has no section on it) -----------------------------------------------------------

def set_lists(m, ia, aa, inf, af, rs=(0, 0), rr=(0, 0)):
    from oomemu.include.mmzone import NR_LRU_BASE
    for lru, n in ((LRU_INACTIVE_ANON, ia), (LRU_ACTIVE_ANON, aa), (LRU_INACTIVE_FILE, inf), (LRU_ACTIVE_FILE, af)):
        m.zone[NORMAL, Z_STAT + NR_LRU_BASE + lru] = n
    m.zone[NORMAL, RS], m.zone[NORMAL, RS + 1] = rs
    m.zone[NORMAL, RR], m.zone[NORMAL, RR + 1] = rr


def scan(cpu, priority):
    nr = vmscan.get_scan_count(cpu, NORMAL, priority, False)
    return [nr[LRU_INACTIVE_ANON], nr[LRU_ACTIVE_ANON], nr[LRU_INACTIVE_FILE], nr[LRU_ACTIVE_FILE]]


def test_get_scan_count_fractions_by_recent_rotation(mcs):
    """SCAN_FRACT (swap free, priority > 0, file + free above high, inactive file low: 8 active > 4 inactive):
    anon_prio 60, file_prio 200 - 60 = 140; ap = 60 × (10 + 1) // (4 + 1) = 132, fp = 140 × (3 + 1) // (0 + 1) =
    560, denominator 132 + 560 + 1 = 693 (no halving: 10 <= 128 // 4, 3 <= 12 // 4). At priority 1 each list
    scans (size >> 1) × fraction // 693: anon 32 × 132 // 693 = 6 each; inactive file 2 × 560 // 693 = 1,
    active file 4 × 560 // 693 = 3."""
    m, cpu = mcs
    set_lists(m, 64, 64, 4, 8, rs=(10, 3), rr=(4, 0))
    assert scan(cpu, 1) == [6, 6, 1, 3]


def test_get_scan_count_halves_stale_recent_counts(mcs):
    """recent_scanned above a quarter of its lists' size halves both recent counts of that side: anon 41 > 32 ->
    20 and 9 -> 4; file 7 > 3 -> 3 and 5 -> 2. Then ap = 60 × 21 // 5 = 252, fp = 140 × 4 // 3 = 186,
    denominator 439: anon 32 × 252 // 439 = 18 each, inactive file 2 × 186 // 439 = 0, active file
    4 × 186 // 439 = 1."""
    m, cpu = mcs
    set_lists(m, 64, 64, 4, 8, rs=(41, 7), rr=(9, 5))
    assert scan(cpu, 1) == [18, 18, 0, 1]
    assert (zone(m, RS), zone(m, RS + 1), zone(m, RR), zone(m, RR + 1)) == (20, 3, 4, 2)


def test_get_scan_count_other_balances(mcs):
    """SCAN_EQUAL at priority 0 (every list in full); SCAN_FILE while the inactive file list is not low (8
    inactive >= 4 active: anon lists 0); SCAN_ANON once file + free pages are at or below the high watermark
    (12 + 100 <= 288: file lists 0)."""
    m, cpu = mcs
    set_lists(m, 64, 64, 4, 8)
    assert scan(cpu, 0) == [64, 64, 4, 8]
    set_lists(m, 64, 64, 8, 4)
    assert scan(cpu, 1) == [0, 0, 4, 2]
    set_lists(m, 64, 64, 4, 8)
    m.zone[NORMAL, FREE] = 100
    assert scan(cpu, 1) == [32, 32, 0, 0]
    m.zone[NORMAL, FREE] = 276                    # 12 + 276 = 288: still at the mark
    assert scan(cpu, 1) == [32, 32, 0, 0]
    m.zone[NORMAL, FREE] = 277
    assert scan(cpu, 1)[0] < 32


def test_get_scan_count_fraction_rounds_down_each_step(mcs):
    """Integer steps as in C: ap = 60 × (0 + 1) // (6 + 1) = 8, fp = 140 × (0 + 1) // (2 + 1) = 46,
    denominator 8 + 46 + 1 = 55; at priority 1: anon 1024 × 8 // 55 = 148 each, inactive file 500 × 46 // 55 =
    418, active file 1500 × 46 // 55 = 1254."""
    m, cpu = mcs
    set_lists(m, 2048, 2048, 1000, 3000, rs=(0, 0), rr=(6, 2))
    assert scan(cpu, 1) == [148, 148, 418, 1254]


def test_get_scan_count_scans_file_only_without_free_swap(mcs, mc):
    """No free swap slot (none left, or no swap at all): SCAN_FILE, the anon lists are not scanned; one free slot
    is enough for the anon lists to count again."""
    from oomemu.machine import G_NR_SWAP_FREE
    m, cpu = mcs
    set_lists(m, 64, 64, 4, 8)
    m.glob[G_NR_SWAP_FREE] = 0
    assert scan(cpu, 1) == [0, 0, 2, 4]
    m.glob[G_NR_SWAP_FREE] = 1
    assert scan(cpu, 1)[:2] != [0, 0]
    m2, cpu2 = mc
    set_lists(m2, 64, 64, 4, 8)
    assert scan(cpu2, 1) == [0, 0, 2, 4]
