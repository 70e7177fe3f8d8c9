"""The LRU lists and reclaim's decisions (mm/vmscan.c, mm/swap.c, mm/rmap.c of 3.14), on a unit machine.

Every expectation is worked out by hand from 3.14's rules, named in each docstring; the functions are driven
directly, one CPU context (plus a second one standing in for another CPU where the test says so). The unit
machine: DMA 4096 pages, Normal 12288 pages; Normal's per-CPU list batch is zone_batchsize(12288) = 3
(12288 / 1024 = 12, / 4 = 3, + 1 = 4, rounded down to a power of two = 4, - 1), so high = 6 × 3 = 18.
"""
import textwrap

import pytest

from oomemu.boot import create_machine
from oomemu.check.conservation import check_page_conservation
from oomemu.config import load_scenario_text
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.mmzone import (NR_ACTIVE_FILE, NR_FREE_PAGES, NR_INACTIVE_FILE, NR_ISOLATED_FILE,
                                   NR_PAGES_SCANNED)
from oomemu.machine import (G_NR_SWAP_FREE, LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON,
                            LRU_INACTIVE_FILE, MM_ANONPAGES, MM_FILEPAGES, PAGE_ANON, PAGE_FILE, PAGE_KERNEL,
                            PAGEVEC_SIZE, PG_active, PG_isolated, PG_lru, PG_pvec, PG_referenced, Z_STAT)
from oomemu.mm import mm_init, mmap, page_alloc, swap, vmscan
from oomemu.percpu import CpuContext

from machine_helpers import add_process

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES
SCANNED = Z_STAT + NR_PAGES_SCANNED


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


def new_page(cpu, z):
    """One page of zone z taken from the buddy lists (a kernel page until the test gives it an owner)."""
    m = cpu.m
    with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
        pfn = page_alloc.__rmqueue(cpu, z, 0, 0)
        m.zone[z, FREE] -= 1
        page_alloc._set_kind(m, pfn, 0, PAGE_KERNEL, -1)
    return pfn


def lru_page(cpu, z, lru, mm=-1, young=0, flags=0):
    """A page on zone z's list `lru`: anonymous or page cache by the list, mapped by mm (or unmapped), with its
    PTE accessed bit `young` and extra page flags."""
    m = cpu.m
    pfn = new_page(cpu, z)
    kind = PAGE_FILE if lru in (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE) else PAGE_ANON
    m.page_kind[pfn] = kind
    m.page_owner[pfn] = mm
    if mm >= 0:
        m.mm[mm, MM_FILEPAGES if kind == PAGE_FILE else MM_ANONPAGES] += 1
    m.page_young[pfn] = young
    m.page_flags[pfn] |= flags | (PG_active if lru in (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE) else 0)
    with page_alloc.sync.spinlock(cpu, m.lru_lock(z)):
        vmscan.add_page_to_lru_list(m, z, pfn, lru)
    return pfn


def lru_list(m, z, lru):
    out, pfn = [], int(m.zone[z, vmscan.Z_LRU_HEAD + lru])
    while pfn != -1:
        out.append(pfn)
        pfn = int(m.page_next[pfn])
    return out


def an_mm(m, cpu, comm="app"):
    return int(m.task_mm[add_process(m, cpu, comm)])


# --- page_check_references (mm/vmscan.c, 3.14) ---------------------------------------------------------------

def test_page_check_references_follows_3_14(mcs):
    """page_check_references(): a mapped anonymous page whose PTE was accessed is activated; a mapped page-cache
    page accessed once is kept and gets PG_referenced, accessed again with PG_referenced it is activated; an
    unmapped page-cache page with only PG_referenced is reclaimed (RECLAIM_CLEAN); nothing referenced: reclaim.
    Each check clears the PTE's accessed bit and PG_referenced (TestClearPageReferenced) first."""
    m, cpu = mcs
    mm = an_mm(m, cpu)
    cases = [
        (LRU_INACTIVE_ANON, mm, 1, 0, vmscan.PAGEREF_ACTIVATE),
        (LRU_INACTIVE_FILE, mm, 1, 0, vmscan.PAGEREF_KEEP),
        (LRU_INACTIVE_FILE, mm, 1, PG_referenced, vmscan.PAGEREF_ACTIVATE),
        (LRU_INACTIVE_FILE, -1, 0, PG_referenced, vmscan.PAGEREF_RECLAIM_CLEAN),
        (LRU_INACTIVE_FILE, mm, 0, 0, vmscan.PAGEREF_RECLAIM),
        (LRU_INACTIVE_ANON, mm, 0, PG_referenced, vmscan.PAGEREF_RECLAIM),
    ]
    for lru, owner, young, flags, want in cases:
        pfn = lru_page(cpu, NORMAL, lru, owner, young, flags)
        assert vmscan.page_check_references(cpu, m, NORMAL, pfn) == want, (lru, owner, young, flags)
        assert m.page_young[pfn] == 0
        kept_referenced = want in (vmscan.PAGEREF_KEEP, vmscan.PAGEREF_ACTIVATE) and lru == LRU_INACTIVE_FILE
        assert bool(m.page_flags[pfn] & PG_referenced) == kept_referenced


# --- shrink_inactive_list / shrink_active_list --------------------------------------------------------------

def test_shrink_inactive_list_reclaims_only_what_nobody_referenced(mc):
    """Ten inactive page-cache pages: 4 mapped by a live task that touched them, 3 mapped but untouched, 3
    unmapped. One shrink_inactive_list(32) scans all 10 (pages_scanned += 10), keeps the 4 touched ones on the
    inactive list with PG_referenced (first reference: PAGEREF_KEEP), reclaims the other 6 (the 3 mapped ones
    are unmapped: MM_FILEPAGES 7 -> 4) and frees them to this CPU's per-CPU list, where they do not count in
    NR_FREE_PAGES (6 < high 18: no spill). Nothing stays isolated. A second pass after the task touched its 4
    pages again activates them (accessed with PG_referenced: PAGEREF_ACTIVATE)."""
    m, cpu = mc
    mm = an_mm(m, cpu)
    touched = [lru_page(cpu, NORMAL, LRU_INACTIVE_FILE, mm, young=1) for _ in range(4)]
    for _ in range(3):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE, mm)
    for _ in range(3):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    free_before, pcp_before = int(m.zone[NORMAL, FREE]), int(m.pcp[0, NORMAL, 0])
    assert int(m.mm[mm, MM_FILEPAGES]) == 7
    reclaimed = vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_FILE, 12, False)
    assert reclaimed == 6
    assert int(m.zone[NORMAL, SCANNED]) == 10
    assert sorted(lru_list(m, NORMAL, LRU_INACTIVE_FILE)) == sorted(touched)
    assert all(m.page_flags[p] & PG_referenced for p in touched)
    assert int(m.mm[mm, MM_FILEPAGES]) == 4
    assert int(m.zone[NORMAL, Z_STAT + NR_ISOLATED_FILE]) == 0
    assert int(m.pcp[0, NORMAL, 0]) == pcp_before + 6
    assert int(m.zone[NORMAL, FREE]) == free_before
    assert check_page_conservation(m) == []
    m.page_young[touched] = 1
    assert vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_FILE, 12, False) == 0
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == []
    assert sorted(lru_list(m, NORMAL, LRU_ACTIVE_FILE)) == sorted(touched)
    assert int(m.zone[NORMAL, Z_STAT + NR_ACTIVE_FILE]) == 4
    assert check_page_conservation(m) == []


def test_shrink_active_list_deactivates_referenced_pages_too(mc):
    """shrink_active_list(): every isolated active page goes to the inactive list, referenced or not (only
    VM_EXEC page-cache pages stay active, and there are none); page_referenced() clears the accessed bits; the
    referenced ones count as rotated (reclaim_stat.recent_rotated[file] += 2); pages_scanned += 5."""
    m, cpu = mc
    mm = an_mm(m, cpu)
    pages = [lru_page(cpu, NORMAL, LRU_ACTIVE_FILE, mm, young=int(i < 2)) for i in range(5)]
    rotated_before = int(m.zone[NORMAL, vmscan.Z_RECENT_ROTATED + 1])
    vmscan.shrink_active_list(cpu, NORMAL, 32, LRU_ACTIVE_FILE, 12)
    assert lru_list(m, NORMAL, LRU_ACTIVE_FILE) == []
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == pages
    assert not any(m.page_flags[p] & PG_active for p in pages)
    assert not m.page_young[pages].any()
    assert int(m.zone[NORMAL, vmscan.Z_RECENT_ROTATED + 1]) == rotated_before + 2
    assert int(m.zone[NORMAL, SCANNED]) == 5
    assert int(m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE]) == 5


# --- balancing: inactive_ratio, get_scan_count ---------------------------------------------------------------

def test_inactive_ratio_is_the_square_root_of_ten_per_gigabyte():
    """calculate_zone_inactive_ratio(): int_sqrt(10 × GiB), 1 below a GiB (3.14's table: 1 GB 3, 10 GB 10,
    100 GB 31, 1 TB 101)."""
    gib = 1 << 18   # pages
    assert [mm_init.calculate_zone_inactive_ratio(n) for n in (4096, gib - 1, gib, 10 * gib, 100 * gib,
                                                               1024 * gib)] == [1, 1, 3, 10, 31, 101]


def test_inactive_anon_is_low_only_with_swap(mc, mcs):
    """inactive_anon_is_low(): inactive × inactive_ratio < active (ratio 1 below 1 GiB); always false without
    swap (total_swap_pages == 0)."""
    for (m, cpu), has_swap in ((mc, False), (mcs, True)):
        for _ in range(5):
            lru_page(cpu, NORMAL, LRU_INACTIVE_ANON)
        for _ in range(5):
            lru_page(cpu, NORMAL, LRU_ACTIVE_ANON)
        assert not vmscan.inactive_anon_is_low(m, NORMAL)        # 5 × 1 < 5: no
        lru_page(cpu, NORMAL, LRU_ACTIVE_ANON)
        assert vmscan.inactive_anon_is_low(m, NORMAL) == has_swap   # 5 × 1 < 6


def test_get_scan_count_scans_size_shifted_by_priority(mc):
    """get_scan_count(): scan = list size >> priority, no swap: file lists only (SCAN_FILE). 1000 inactive file
    pages: 0 at priority 12 (1000 >> 12) for direct reclaim, and for kswapd too while the zone is reclaimable;
    kswapd on a zone that is not zone_reclaimable() scans min(size, SWAP_CLUSTER_MAX) = 32; 1000 >> 4 = 62."""
    m, cpu = mc
    for _ in range(1000):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    kswapd = CpuContext(m, m.nr_cpus, cpu.scenario)
    assert vmscan.get_scan_count(cpu, NORMAL, 12, False)[LRU_INACTIVE_FILE] == 0
    assert vmscan.get_scan_count(kswapd, NORMAL, 12, True)[LRU_INACTIVE_FILE] == 0
    assert vmscan.get_scan_count(cpu, NORMAL, 4, False)[LRU_INACTIVE_FILE] == 62
    m.zone[NORMAL, SCANNED] = 6 * 1000
    assert vmscan.get_scan_count(kswapd, NORMAL, 12, True)[LRU_INACTIVE_FILE] == 32
    assert vmscan.get_scan_count(cpu, NORMAL, 12, False)[LRU_INACTIVE_FILE] == 0


# --- zone_reclaimable and the progress it reports ------------------------------------------------------------

def test_pages_isolated_by_another_cpu_make_the_zone_unreclaimable(mc):
    """R8's other face (premature OOM): zone_reclaimable_pages() counts LRU pages only, so while another CPU
    holds a zone's page cache isolated, a direct reclaimer finds nothing to scan, the zone is not reclaimable
    (0 scanned is not < 6 × 0) and do_try_to_free_pages() returns 0: the OOM killer may run although those
    pages are about to be freed. Back on the LRU they count again: the zone stays reclaimable until 6 × 64
    pages were scanned, and any page freed to the buddy lists resets pages_scanned (KERNEL §6.8)."""
    m, cpu = mc
    other = CpuContext(m, 1, cpu.scenario)
    pages = [lru_page(cpu, NORMAL, LRU_INACTIVE_FILE) for _ in range(64)]
    for z in (DMA, NORMAL):
        page_alloc_take_all(cpu, z)
    zonelist = page_alloc.node_zonelist(m, 0, GFP_KERNEL)
    with page_alloc.sync.spinlock(other, m.lru_lock(NORMAL)):
        isolated, scanned = vmscan.isolate_lru_pages(other, m, NORMAL, 64, LRU_INACTIVE_FILE)
    assert scanned == 64 and vmscan.zone_reclaimable_pages(m, NORMAL) == 0
    assert vmscan.do_try_to_free_pages(cpu, zonelist, GFP_KERNEL, 32) == 0
    with page_alloc.sync.spinlock(other, m.lru_lock(NORMAL)):
        assert vmscan.putback_inactive_pages(other, m, NORMAL, isolated, 1) == []
        m.zone[NORMAL, Z_STAT + NR_ISOLATED_FILE] -= 64
    m.page_young[pages] = 0
    m.zone[NORMAL, SCANNED] = 0
    assert vmscan.zone_reclaimable(m, NORMAL)
    m.zone[NORMAL, SCANNED] = 6 * 64 - 1
    assert vmscan.zone_reclaimable(m, NORMAL)
    m.zone[NORMAL, SCANNED] = 6 * 64
    assert not vmscan.zone_reclaimable(m, NORMAL)
    pfn = pages[0]
    with page_alloc.sync.spinlock(cpu, m.lru_lock(NORMAL)):
        vmscan.del_page_from_lru_list(m, NORMAL, pfn, LRU_INACTIVE_FILE)
    m.page_flags[pfn] = 0
    page_alloc.free_one_page(cpu, NORMAL, pfn, 0)   # any page freed to the buddy lists re-arms the zone
    assert int(m.zone[NORMAL, SCANNED]) == 0 and vmscan.zone_reclaimable(m, NORMAL)


def page_alloc_take_all(cpu, z):
    m = cpu.m
    for order in range(10, -1, -1):
        while True:
            with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
                pfn = page_alloc.__rmqueue(cpu, z, order, 0)
                if pfn == -1:
                    break
                m.zone[z, FREE] -= 1 << order
                page_alloc._set_kind(m, pfn, order, PAGE_KERNEL, -1)


# --- pagevecs (mm/swap.c) ------------------------------------------------------------------------------------

def test_lru_add_pagevec_holds_fourteen_pages_off_the_lru(mc):
    """__lru_cache_add(): a page waits on this CPU's lru_add pagevec (PAGEVEC_SIZE 14) and reaches the LRU
    when the pagevec is full at the next add (__pagevec_lru_add() first, then the add) or when the CPU drains
    it (lru_add_drain()). Pages on a pagevec are neither on the LRU nor lost (conservation holds)."""
    m, cpu = mc
    pages = []
    for i in range(PAGEVEC_SIZE + 1):
        pfn = new_page(cpu, NORMAL)
        m.page_kind[pfn] = PAGE_FILE
        swap.lru_cache_add(cpu, pfn)
        pages.append(pfn)
        if i < PAGEVEC_SIZE:
            assert int(m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE]) == 0
    assert PAGEVEC_SIZE == 14
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == pages[:14]
    assert int(m.pvec[0, 0]) == 1 and int(m.pvec[0, 1]) == pages[14]
    assert m.page_flags[pages[14]] & PG_pvec and not m.page_flags[pages[14]] & PG_lru
    assert check_page_conservation(m) == []
    swap.lru_add_drain(cpu)
    assert lru_list(m, NORMAL, LRU_INACTIVE_FILE) == pages and int(m.pvec[0, 0]) == 0
    assert check_page_conservation(m) == []


def test_a_dead_page_on_a_pagevec_is_freed_by_the_drain(mcs):
    """A new anonymous page is on the pagevec when its mm goes away: the unmap leaves it (the pagevec holds a
    reference) and the drain frees it instead of putting it on the LRU (release_pages() dropping the last
    reference). It starts active: lru_cache_add_active_or_unevictable()."""
    m, cpu = mcs
    mm = an_mm(m, cpu)
    pfn = new_page(cpu, NORMAL)
    swap.lru_cache_add_active_or_unevictable(cpu, pfn)
    assert m.page_flags[pfn] & PG_active
    mmap.map_page(cpu, mm, pfn, PAGE_ANON, MM_ANONPAGES)
    assert mmap.unmap_anon_pages(cpu, mm) == 1
    assert int(m.mm[mm, MM_ANONPAGES]) == 0 and m.page_kind[pfn] == PAGE_ANON and m.page_owner[pfn] == -1
    assert check_page_conservation(m) == []
    pcp = int(m.pcp[0, NORMAL, 0])
    swap.lru_add_drain(cpu)
    assert lru_list(m, NORMAL, LRU_ACTIVE_ANON) == [] and int(m.pcp[0, NORMAL, 0]) == pcp + 1
    assert check_page_conservation(m) == []


def test_mark_page_accessed_activates_on_the_second_access(mc):
    """mark_page_accessed(): the first access sets PG_referenced; a second, on an inactive referenced LRU page,
    moves it to the active list and clears PG_referenced; a third sets PG_referenced again."""
    m, cpu = mc
    pfn = lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    swap.mark_page_accessed(cpu, pfn)
    assert m.page_flags[pfn] & PG_referenced and lru_list(m, NORMAL, LRU_INACTIVE_FILE) == [pfn]
    swap.mark_page_accessed(cpu, pfn)
    assert lru_list(m, NORMAL, LRU_ACTIVE_FILE) == [pfn] and not m.page_flags[pfn] & PG_referenced
    swap.mark_page_accessed(cpu, pfn)
    assert m.page_flags[pfn] & PG_referenced and m.page_flags[pfn] & PG_active


# --- exit against reclaim ------------------------------------------------------------------------------------

def test_a_page_isolated_when_its_mm_exits_is_freed_once_by_reclaim(mcs):
    """Another CPU has isolated two of a task's anonymous pages when the task's mm is torn down: exit_mmap()
    unmaps them (MM_ANONPAGES back to 0) but leaves them to the isolating CPU, which frees them itself (its
    reference was the last one), and frees the page still on the LRU directly. Each page is freed once; no swap
    slot is used for the dead pages."""
    m, cpu = mcs
    other = CpuContext(m, 1, cpu.scenario)
    mm = an_mm(m, cpu)
    pages = [lru_page(cpu, NORMAL, LRU_INACTIVE_ANON, mm) for _ in range(3)]
    with page_alloc.sync.spinlock(other, m.lru_lock(NORMAL)):
        isolated, _ = vmscan.isolate_lru_pages(other, m, NORMAL, 2, LRU_INACTIVE_ANON)
    assert isolated == pages[:2] and all(m.page_flags[p] & PG_isolated for p in isolated)
    swap_free = int(m.glob[G_NR_SWAP_FREE])
    assert mmap.exit_mmap(cpu, mm) == 3
    assert int(m.mm[mm, MM_ANONPAGES]) == 0
    assert m.page_kind[pages[2]] not in (PAGE_ANON, PAGE_FILE)          # freed by exit_mmap
    assert all(m.page_kind[p] == PAGE_ANON and m.page_owner[p] == -1 for p in isolated)
    kept, freed = vmscan.shrink_page_list(other, m, NORMAL, isolated)
    assert kept == [] and freed == isolated
    with page_alloc.sync.spinlock(other, m.lru_lock(NORMAL)):
        m.zone[NORMAL, Z_STAT + vmscan.NR_ISOLATED_ANON] -= 2
    swap.free_unlocked(other, freed)
    assert int(m.glob[G_NR_SWAP_FREE]) == swap_free
    assert check_page_conservation(m) == []


def test_exit_mmap_frees_in_page_table_batches_through_the_per_cpu_list(mc, monkeypatch):
    """exit_mmap(): one batch per PTRS_PER_PTE (512) pages, freed through this CPU's per-CPU list (high 18,
    batch 3 for Normal): 1300 anonymous pages give batches of 512, 512 and 276, all freed, and the per-CPU list
    ends below its high mark; a scheduling point separates the batches."""
    m, cpu = mc
    mm = an_mm(m, cpu)
    for _ in range(1300):
        mmap.map_page(cpu, mm, new_page(cpu, NORMAL), PAGE_ANON, MM_ANONPAGES)
    batches, points = [], []
    monkeypatch.setattr(mmap.tp, "trace_exit_mmap_batch", lambda c, mm_, b, n, f: batches.append((b, n, f)))
    monkeypatch.setattr(mmap.sync, "sched_point", lambda c, name, obj=-1: points.append(name))
    assert mmap.exit_mmap(cpu, mm) == 1300
    assert batches == [(0, 512, 512), (1, 512, 512), (2, 276, 276)]
    assert points.count("exit_mmap.range") == 2
    assert int(m.pcp[0, NORMAL, 0]) < 18
    assert check_page_conservation(m) == []


def test_reclaim_decides_about_isolated_pages_with_the_locks_dropped(mc, monkeypatch):
    """shrink_inactive_list(): at most nr_to_scan (SWAP_CLUSTER_MAX) pages are isolated under the lru_lock,
    which is dropped (and zone->lock not taken) while page_referenced() and the unmapping decide about them, so
    another CPU can take either lock then: 40 inactive pages, one call with nr_to_scan 32 isolates 32 (8 stay
    on the list) and another context gets both locks during every decision."""
    m, cpu = mc
    other = CpuContext(m, 1, cpu.scenario)
    for _ in range(40):
        lru_page(cpu, NORMAL, LRU_INACTIVE_FILE)
    seen = []
    real = vmscan.rmap.page_referenced

    def probe(c, pfn):
        got = [page_alloc.sync.spin_trylock(other, lock) for lock in (m.lru_lock(NORMAL), m.zone_lock(NORMAL))]
        for lock, ok in zip((m.lru_lock(NORMAL), m.zone_lock(NORMAL)), got):
            if ok:
                page_alloc.sync.spin_unlock(other, lock)
        seen.append((all(got), int(m.zone[NORMAL, Z_STAT + NR_ISOLATED_FILE]),
                     int(m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE])))
        return real(c, pfn)

    monkeypatch.setattr(vmscan.rmap, "page_referenced", probe)
    assert vmscan.shrink_inactive_list(cpu, NORMAL, 32, LRU_INACTIVE_FILE, 12, False) == 32
    assert len(seen) == 32 and all(seen_ok for seen_ok, _, _ in seen)
    assert {(iso, left) for _, iso, left in seen} == {(32, 8)}
    assert int(m.zone[NORMAL, Z_STAT + NR_INACTIVE_FILE]) == 8
