"""The buddy allocator's and the per-CPU lists' internals: exactly which links and counters a list operation
writes, the smallest-block rule, the per-CPU high/batch spill and refill, the owner of free
and kernel pages, and the kmem trace events (mm_page_free, mm_page_alloc_zone_locked) with the emulator's
zone_free_pages.

Buddy rules as in test_page_alloc.py (a 2^k block at a 2^k-aligned PFN; a split returns upper halves; a free
merges with a free buddy of equal order in the same zone; zones are multiples of 4 MiB, 1,024 pages, so no
buddy of order 9 or less lies outside its block's zone or past the last page). Unit machine as
machine_helpers.BASE: DMA pages 0-4095, Normal 4096-16383, boot state only order-10 blocks; per-CPU lists
of Normal high 18, batch 3; of DMA high 0, batch 1.
"""
import numpy as np

from machine_helpers import mc
from oomemu import sync
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.mmzone import MAX_ORDER, NR_ALLOC_BATCH, NR_FREE_PAGES
from oomemu.machine import (PAGE_BUDDY, PAGE_KERNEL, PAGE_PCP, PG_buddy, Z_FREE_HEAD, Z_MANAGED, Z_NR_FREE,
                            Z_START_PFN, Z_STAT)
from oomemu.mm import page_alloc, vmstat
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES


def links(m):
    return m.page_next.copy(), m.page_prev.copy()


def changed(before, after):
    """{index: new value} of the entries that differ."""
    return {int(i): int(after[i]) for i in np.nonzero(before != after)[0]}


def take(cpu, z, order):
    """One 2^order block out of the buddy allocator as a kernel page (no per-CPU list, no counters)."""
    m = cpu.m
    with sync.spinlock(cpu, m.zone_lock(z)):
        pfn = page_alloc.__rmqueue(cpu, z, order, 0)
        m.zone[z, FREE] -= 1 << order
        page_alloc._set_kind(m, pfn, order, PAGE_KERNEL, -1)
    return pfn


def traced(m, cpu):
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]
    return lambda: [(names[int(r["event"])], [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]


# --- list primitives ---------------------------------------------------------------------------------------

def test_list_add_and_del_write_only_their_own_links(mc):
    """_list_add on an empty list: the head and the count, no other page's link (no write through a -1 head);
    a second add links the old head back to the new one; deleting the tail and then the head unlinks them and
    writes no other page either. Pages p = 5, q = 21 of DMA, inside free order-10 blocks (their links -1)."""
    m, _ = mc
    p, q = 5, 21
    assert m.page_next[p] == m.page_prev[p] == m.page_next[q] == m.page_prev[q] == -1
    assert int(m.zone[DMA, Z_FREE_HEAD + 3]) == -1
    nb, pb = links(m)
    page_alloc._list_add(m, DMA, 3, p)
    assert changed(nb, m.page_next) == {} and changed(pb, m.page_prev) == {}
    assert (int(m.zone[DMA, Z_FREE_HEAD + 3]), int(m.zone[DMA, Z_NR_FREE + 3])) == (p, 1)
    page_alloc._list_add(m, DMA, 3, q)
    assert changed(nb, m.page_next) == {q: p} and changed(pb, m.page_prev) == {p: q}
    page_alloc._list_del(m, DMA, 3, p)            # the tail: its successor is -1, nothing to relink
    assert changed(nb, m.page_next) == {} and changed(pb, m.page_prev) == {}
    assert int(m.zone[DMA, Z_FREE_HEAD + 3]) == q
    page_alloc._list_del(m, DMA, 3, q)
    assert changed(nb, m.page_next) == {} and changed(pb, m.page_prev) == {}
    assert (int(m.zone[DMA, Z_FREE_HEAD + 3]), int(m.zone[DMA, Z_NR_FREE + 3])) == (-1, 0)


def test_list_add_relinks_a_head_at_pfn_1(mc):
    """A head at PFN 1 is a page like any other: adding in front of it sets its prev link."""
    m, _ = mc
    page_alloc._list_add(m, DMA, 0, 1)
    page_alloc._list_add(m, DMA, 0, 3)
    assert (int(m.page_next[3]), int(m.page_prev[1])) == (1, 3)
    page_alloc._list_del(m, DMA, 0, 3)
    assert (int(m.page_prev[1]), int(m.zone[DMA, Z_FREE_HEAD])) == (-1, 1)


def test_rmqueue_smallest_takes_the_smallest_block_of_at_least_the_order(mc):
    """An order-3 request with a free order-0 page on the lists takes no order-0 page: it splits an order-10
    block (the order-0 list keeps its page; orders 3-9 gain one block each)."""
    m, cpu = mc
    single = take(cpu, DMA, 0)                   # splits a block: orders 0-9 have one block each
    assert [int(m.zone[DMA, Z_NR_FREE + o]) for o in range(MAX_ORDER)] == [1] * 10 + [3]
    pfn = take(cpu, DMA, 3)
    assert pfn % 8 == 0 and pfn != single + 1
    assert [int(m.zone[DMA, Z_NR_FREE + o]) for o in range(MAX_ORDER)] == [1, 1, 1, 0] + [1] * 6 + [3]


# --- per-CPU lists -----------------------------------------------------------------------------------------

def test_free_hot_cold_page_spills_a_batch_when_the_list_reaches_high(mc):
    """Normal's list: high 18, batch 3. The 17th free leaves 17 pages on it; the 18th reaches high and
    free_pcppages_bulk moves one batch (3) to the buddy allocator: 15 left, NR_FREE_PAGES + 3, and the
    pages_scanned counter is reset (KERNEL §6.8)."""
    from oomemu.include.mmzone import NR_PAGES_SCANNED
    m, cpu = mc
    assert list(m.pcp[0, NORMAL, :3]) == [0, 18, 3]
    pages = [take(cpu, NORMAL, 0) for _ in range(18)]
    free = int(m.zone[NORMAL, FREE])
    m.zone[NORMAL, Z_STAT + NR_PAGES_SCANNED] = 9
    for pfn in pages[:17]:
        page_alloc.free_hot_cold_page(cpu, pfn)
    assert int(m.pcp[0, NORMAL, 0]) == 17 and int(m.zone[NORMAL, FREE]) == free
    assert (m.page_kind[pages[:17]] == PAGE_PCP).all() and (m.page_owner[pages[:17]] == 0).all()
    page_alloc.free_hot_cold_page(cpu, pages[17])
    assert int(m.pcp[0, NORMAL, 0]) == 15 and int(m.zone[NORMAL, FREE]) == free + 3
    assert int(m.zone[NORMAL, Z_STAT + NR_PAGES_SCANNED]) == 0


def test_free_pcppages_bulk_moves_exactly_count_pages(mc):
    """free_pcppages_bulk(count 2) of a list of 5 leaves 3; a count above the list's length empties it."""
    m, cpu = mc
    pages = [take(cpu, NORMAL, 0) for _ in range(5)]
    for pfn in pages:
        page_alloc.free_hot_cold_page(cpu, pfn)
    free = int(m.zone[NORMAL, FREE])
    page_alloc.free_pcppages_bulk(cpu, NORMAL, 2)
    assert int(m.pcp[0, NORMAL, 0]) == 3 and int(m.zone[NORMAL, FREE]) == free + 2
    page_alloc.free_pcppages_bulk(cpu, NORMAL, 10)
    assert int(m.pcp[0, NORMAL, 0]) == 0 and int(m.zone[NORMAL, FREE]) == free + 5
    assert int(m.pcp[0, NORMAL, 3]) == -1


def test_rmqueue_bulk_adds_to_the_list_and_returns_what_it_got(mc):
    """rmqueue_bulk moves up to `count` order-0 pages to this CPU's list, adding to what is there, and
    returns how many; with only 2 pages left in the zone's buddy lists it gets 2."""
    m, cpu = mc
    assert page_alloc.rmqueue_bulk(cpu, NORMAL, 0, 3, 0) == 3
    assert page_alloc.rmqueue_bulk(cpu, NORMAL, 0, 3, 0) == 3
    assert int(m.pcp[0, NORMAL, 0]) == 6
    while int(m.zone[NORMAL, FREE]) > 2:
        take(cpu, NORMAL, 0)
    assert page_alloc.rmqueue_bulk(cpu, NORMAL, 0, 3, 0) == 2
    assert int(m.pcp[0, NORMAL, 0]) == 8 and int(m.zone[NORMAL, FREE]) == 0


def test_buffered_rmqueue_order_1_marks_both_pages_and_charges_the_batch(mc):
    """An order-1 allocation comes from the buddy lists: both pages PAGE_KERNEL with owner -1 (nobody), and
    the zone's NR_ALLOC_BATCH pays 2 pages; an empty zone gives NULL."""
    m, cpu = mc
    batch = int(m.zone[NORMAL, Z_STAT + NR_ALLOC_BATCH])
    pfn = page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 1, GFP_KERNEL, 0)
    assert list(m.page_kind[pfn:pfn + 2]) == [PAGE_KERNEL] * 2 and list(m.page_owner[pfn:pfn + 2]) == [-1, -1]
    assert int(m.zone[NORMAL, Z_STAT + NR_ALLOC_BATCH]) == batch - 2
    one = page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 0, GFP_KERNEL, 0)
    assert (int(m.page_kind[one]), int(m.page_owner[one])) == (PAGE_KERNEL, -1)
    while int(m.zone[DMA, FREE]):
        take(cpu, DMA, 0)
    assert page_alloc.buffered_rmqueue(cpu, DMA, DMA, 1, GFP_KERNEL, 0) is None


def test_freed_pages_belong_to_nobody(mc):
    """A page freed to the buddy allocator has owner -1, whoever owned it (an mm row 1 here): one freed
    alone, and 100 freed as a batch (free_hot_cold_page_list's vectorised path, above 64 pages)."""
    m, cpu = mc
    pfn = take(cpu, DMA, 0)
    m.page_owner[pfn] = 1
    with sync.spinlock(cpu, m.zone_lock(DMA)):
        page_alloc.__free_one_page(cpu, pfn, DMA, 0)
    assert (int(m.page_kind[pfn]), int(m.page_owner[pfn])) == (PAGE_BUDDY, -1)
    batch = np.array([take(cpu, NORMAL, 0) for _ in range(100)])
    m.page_owner[batch] = 1
    with sync.spinlock(cpu, m.zone_lock(NORMAL)):
        page_alloc.free_hot_cold_page_list(cpu, NORMAL, batch)
    assert (m.page_owner[batch] == -1).all() and (m.page_kind[batch] == PAGE_BUDDY).all()


def test_a_large_batch_free_rebuilds_only_its_own_zone(mc):
    """free_hot_cold_page_list of 65 DMA pages (the vectorised path) rebuilds DMA's lists from DMA's pages
    only: back to DMA's boot state (4 order-10 blocks 0-3072), Normal's lists untouched."""
    m, cpu = mc
    normal = [int(m.zone[NORMAL, Z_FREE_HEAD + o]) for o in range(MAX_ORDER)]
    pfns = np.array([take(cpu, DMA, 0) for _ in range(65)])
    with sync.spinlock(cpu, m.zone_lock(DMA)):
        page_alloc.free_hot_cold_page_list(cpu, DMA, pfns)
    assert [int(m.zone[DMA, Z_NR_FREE + o]) for o in range(MAX_ORDER)] == [0] * 10 + [4]
    assert [int(m.zone[NORMAL, Z_FREE_HEAD + o]) for o in range(MAX_ORDER)] == normal
    assert walk(m, DMA, 10) == [0, 1024, 2048, 3072]
    assert_heads_only(m, DMA)


def walk(m, z, order):
    """The list's PFNs from its head, checking each prev link on the way (the head's is -1)."""
    out, prev, pfn = [], -1, int(m.zone[z, Z_FREE_HEAD + order])
    while pfn != -1:
        assert int(m.page_prev[pfn]) == prev
        out.append(pfn)
        prev, pfn = pfn, int(m.page_next[pfn])
    return out


def assert_heads_only(m, z):
    """PG_buddy is set exactly on the zone's list heads, each with its list's order."""
    start, managed = int(m.zone[z, Z_START_PFN]), int(m.zone[z, Z_MANAGED])
    heads = {pfn: o for o in range(MAX_ORDER) for pfn in walk(m, z, o)}
    flagged = {start + int(i) for i in np.nonzero(m.page_flags[start:start + managed] & PG_buddy)[0]}
    assert flagged == set(heads)
    assert all(int(m.page_order[pfn]) == o for pfn, o in heads.items())


ODD = """
[machine]
cpus = 2
max_tasks = 64
[[machine.node]]
zones = { DMA = "20MiB", DMA32 = "0", Normal = "44MiB" }
"""


def test_a_batch_free_rebuilds_merged_blocks_in_zones_of_an_odd_number_of_order_10_blocks():
    """DMA of 20 MiB: five order-10 blocks (an odd number). 300 pages taken one by one (from the first block)
    and freed as one batch merge back: five order-10 blocks 0, 1024, ..., 4096, linked both ways, PG_buddy on
    those five heads only."""
    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    sc = load_scenario_text(ODD, name="unit")
    m = create_machine(sc, ring_records=64)
    cpu = CpuContext(m, 0, sc)
    try:
        pfns = np.array([take(cpu, DMA, 0) for _ in range(300)])
        with sync.spinlock(cpu, m.zone_lock(DMA)):
            page_alloc.free_hot_cold_page_list(cpu, DMA, pfns)
        assert [int(m.zone[DMA, Z_NR_FREE + o]) for o in range(MAX_ORDER)] == [0] * 10 + [5]
        assert walk(m, DMA, 10) == [0, 1024, 2048, 3072, 4096]
        assert_heads_only(m, DMA)
        # the same in Normal (44 MiB: eleven blocks from PFN 5120), a zone that does not start at PFN 0
        pfns = np.array([take(cpu, NORMAL, 0) for _ in range(300)])
        with sync.spinlock(cpu, m.zone_lock(NORMAL)):
            page_alloc.free_hot_cold_page_list(cpu, NORMAL, pfns)
        assert walk(m, NORMAL, 10) == list(range(5120, 16384, 1024))
        assert_heads_only(m, NORMAL)
        # and with the split block at the zone's top: every block taken, the last one given back and split
        blocks = sorted(take(cpu, NORMAL, 10) for _ in range(11))
        assert blocks == list(range(5120, 16384, 1024))
        page_alloc.free_one_page(cpu, NORMAL, 15360, 10)
        pfns = np.array([take(cpu, NORMAL, 0) for _ in range(300)])
        with sync.spinlock(cpu, m.zone_lock(NORMAL)):
            page_alloc.free_hot_cold_page_list(cpu, NORMAL, pfns)
        assert walk(m, NORMAL, 10) == [15360]
        assert_heads_only(m, NORMAL)
    finally:
        m.close()


def test_drain_local_pages_of_kswapd_does_nothing(mc):
    """kswapd's context (id nr_cpus) has no per-CPU lists: draining it changes no list."""
    m, cpu = mc
    page_alloc.rmqueue_bulk(cpu, NORMAL, 0, 3, 0)
    before = m.pcp.copy()
    page_alloc.drain_local_pages(CpuContext(m, m.nr_cpus, cpu.scenario))
    assert (m.pcp == before).all()


# --- trace events and counters -------------------------------------------------------------------------------

def test_the_kmem_events_of_alloc_and_free(mc, monkeypatch):
    """mm_page_alloc_zone_locked(pfn, order, migratetype, zone) for each block taken from the buddy lists,
    none for a failed attempt; mm_page_free(pfn, order) for each free (per page below 65 pages, for every page
    of a larger batch); zone_free_pages(zone, NR_FREE_PAGES) after each change of the free count."""
    m, cpu = mc
    records = traced(m, cpu)
    free = int(m.zone[NORMAL, FREE])
    assert page_alloc.rmqueue_bulk(cpu, NORMAL, 0, 3, 1) == 3
    got = records()
    allocs = [a[:4] for n, a in got if n == "mm_page_alloc_zone_locked"]
    assert [a[1:] for a in allocs] == [[0, 1, NORMAL]] * 3
    assert [a[:2] for n, a in got if n == "zone_free_pages"] == [[NORMAL, free - 3]]
    pfn = page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 2, GFP_KERNEL, 1)
    got = records()
    assert [a[:4] for n, a in got if n == "mm_page_alloc_zone_locked"] == [[pfn, 2, 1, NORMAL]]
    assert [a[:2] for n, a in got if n == "zone_free_pages"] == [[NORMAL, free - 7]]
    m.pcp[0, NORMAL, 0] = 0                               # forget the list (its pages stay taken): a refill
    m.pcp[0, NORMAL, 3] = -1
    one_more = page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 0, GFP_KERNEL, 1)
    refill = [a[:4] for n, a in records() if n == "mm_page_alloc_zone_locked"]
    assert [a[1:] for a in refill] == [[0, 1, NORMAL]] * 3 and one_more in [a[0] for a in refill]
    free -= 3
    page_alloc.__free_pages(cpu, pfn, 2)
    got = records()
    assert [a[:2] for n, a in got if n == "mm_page_free"] == [[pfn, 2]]
    assert [a[:2] for n, a in got if n == "zone_free_pages"] == [[NORMAL, free - 3]]
    one = allocs[0][0]
    page_alloc.__free_pages(cpu, one, 0)               # onto this CPU's list
    assert [(n, a[:2]) for n, a in records() if n == "mm_page_free"] == [("mm_page_free", [one, 0])]
    small = np.array([take(cpu, DMA, 0) for _ in range(3)])
    big = np.array([take(cpu, DMA, 0) for _ in range(70)])
    records()
    with sync.spinlock(cpu, m.zone_lock(DMA)):
        page_alloc.free_hot_cold_page_list(cpu, DMA, small)
    assert [a[:2] for n, a in records() if n == "mm_page_free"] == [[int(p), 0] for p in small]
    many = []                                   # the ring holds 64 records: watch the batch's one write
    monkeypatch.setattr(page_alloc.tp, "trace_many", lambda c, name, pfns, *a: many.append((c, name, pfns, a)))
    with sync.spinlock(cpu, m.zone_lock(DMA)):
        page_alloc.free_hot_cold_page_list(cpu, DMA, big)
    assert [(c is cpu, name, list(pfns), a) for c, name, pfns, a in many] == [(True, "mm_page_free", list(big), ())]
    records()
    with sync.spinlock(cpu, m.zone_lock(DMA)):
        while page_alloc.__rmqueue_smallest(cpu, DMA, 0) != -1:     # empty DMA's buddy lists, untraced
            pass
        assert page_alloc.__rmqueue(cpu, DMA, 0, 0) == -1
    assert [n for n, _ in records() if n == "mm_page_alloc_zone_locked"] == []


def test_freeing_counts_every_page_freed(mc):
    """NR_PAGES_FREED counts pages, not calls: an order-2 free counts 4."""
    m, cpu = mc
    pfn = take(cpu, NORMAL, 2)
    before = int(cpu.vm_events[vmstat.NR_PAGES_FREED])
    page_alloc.free_one_page(cpu, NORMAL, pfn, 2)
    assert int(cpu.vm_events[vmstat.NR_PAGES_FREED]) == before + 4


def test_two_cpus_draining_each_other_at_once_both_finish(mc):
    """drain_all_pages waits for every other CPU's drain (on_each_cpu_mask with wait, KERNEL §6.2 step 12) and,
    while it waits, answers the drain requests aimed at its own CPU, as a CPU spinning there would take the
    IPI: CPUs 0 and 1 (two threads) draining at the same moment both return, both lists empty. (Neither could
    return if neither answered while waiting: each waits for the other's answer.)"""
    import threading
    from oomemu.machine import C_DRAIN, G_STOP
    m, cpu0 = mc
    cpu1 = CpuContext(m, 1, cpu0.scenario)
    for c in (cpu0, cpu1):
        assert page_alloc.rmqueue_bulk(c, NORMAL, 0, 5, 0) == 5
    start, errors, done = threading.Barrier(2), [], []

    def drain(c):
        try:
            start.wait(10)
            page_alloc.drain_all_pages(c)
            done.append(c.id)
            # back in its scheduler, a CPU still answers drain requests (kernel/sched.py), until both are done
            while len(done) < 2 and not m.glob[G_STOP]:
                if m.cpu[c.id, C_DRAIN]:
                    page_alloc.drain_local_pages(c)
                    m.cpu[c.id, C_DRAIN] = 0
        except Exception as e:          # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=drain, args=(c,)) for c in (cpu0, cpu1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    hung = any(t.is_alive() for t in threads)
    m.glob[G_STOP] = 1                  # releases a hung waiter
    for t in threads:
        t.join(10)
    assert not hung and errors == []
    assert int(m.pcp[0, NORMAL, 0]) == int(m.pcp[1, NORMAL, 0]) == 0


def test_kswapd_drain_all_pages_neither_asks_the_cpus_nor_waits(mc):
    """kswapd (row nr_cpus) has no per-CPU lists and is no CPU: its drain_all_pages returns at once without
    asking any CPU to drain (no CPU is running here to answer)."""
    import threading
    from oomemu.machine import C_DRAIN, G_STOP
    m, cpu = mc
    kswapd = CpuContext(m, m.nr_cpus, cpu.scenario)
    t = threading.Thread(target=page_alloc.drain_all_pages, args=(kswapd,))
    t.start()
    t.join(5)
    hung = t.is_alive()
    flags = [int(m.cpu[c, C_DRAIN]) for c in range(m.nr_cpus)]
    m.glob[G_STOP] = 1
    t.join(10)
    assert not hung and flags == [0] * m.nr_cpus
