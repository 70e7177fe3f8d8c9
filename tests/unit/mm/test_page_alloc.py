"""mm/page_alloc.py: the watermark check, the buddy allocator, per-CPU lists, and page conservation.

Watermark expectations are worked out by hand from KERNEL.md §6.4; buddy states from the buddy rules (a
2^k block at a 2^k-aligned PFN; a split returns upper halves; a free merges with a free buddy of equal order).
"""
import random

import numpy as np
import pytest

from machine_helpers import make_machine, mc
from oomemu import sync
from oomemu.check.conservation import check_page_conservation
from oomemu.include.gfp import GFP_ATOMIC, GFP_DMA, GFP_KERNEL, GFP_NOWAIT, __GFP_NOMEMALLOC
from oomemu.include.mmzone import MAX_ORDER, NR_FREE_PAGES
from oomemu.machine import (PAGE_BUDDY, PAGE_KERNEL, PAGE_PCP, PG_buddy, Z_FREE_HEAD, Z_LOWMEM_RESERVE,
                            Z_MANAGED, Z_NR_FREE, Z_START_PFN, Z_STAT)
from oomemu.mm import page_alloc
from oomemu.mm.internal import (ALLOC_CPUSET, ALLOC_HARDER, ALLOC_HIGH, ALLOC_WMARK_LOW, ALLOC_WMARK_MIN)
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES


def nr_free(m, z):
    return [int(m.zone[z, Z_NR_FREE + o]) for o in range(MAX_ORDER)]


def free_list(m, z, order):
    out, pfn = [], int(m.zone[z, Z_FREE_HEAD + order])
    while pfn != -1:
        out.append(pfn)
        pfn = int(m.page_next[pfn])
    return out


def free_blocks(m, z):
    """{order: sorted heads} of zone z's buddy lists."""
    return {o: sorted(free_list(m, z, o)) for o in range(MAX_ORDER)}


def assert_pristine(m, z):
    """Zone z is back to its boot state: only order-10 blocks, every page free in the buddy allocator."""
    start, managed = int(m.zone[z, Z_START_PFN]), int(m.zone[z, Z_MANAGED])
    assert nr_free(m, z) == [0] * 10 + [managed // 1024]
    assert sorted(free_list(m, z, 10)) == list(range(start, start + managed, 1024))
    assert int(m.zone[z, FREE]) == managed
    assert int(m.pcp[:, z, 0].sum()) == 0
    assert (m.page_kind[start:start + managed] == PAGE_BUDDY).all()
    assert check_page_conservation(m) == []


def kswapd_ctx(m, cpu):
    """A kswapd context: its order-0 requests and frees bypass the per-CPU lists."""
    return CpuContext(m, m.nr_cpus, cpu.scenario)


# =============================================================================================================
# __zone_watermark_ok (KERNEL §6.4)
# =============================================================================================================

H, R = ALLOC_HIGH, ALLOC_HARDER

# (id, order, mark, classzone, alloc_flags, {order: nr_free}, reserve[classzone], free_pages, expected)
WATERMARK_TABLE = [
    ("above mark passes", 0, 100, 0, 0, {}, 0, 101, True),
    ("equal to mark fails (<=)", 0, 100, 0, 0, {}, 0, 100, False),
    ("ALLOC_HIGH halves min: 51 > 50", 0, 100, 0, H, {}, 0, 51, True),
    ("ALLOC_HIGH halves min: 50 fails", 0, 100, 0, H, {}, 0, 50, False),
    ("ALLOC_HARDER takes a quarter: 76 > 75", 0, 100, 0, R, {}, 0, 76, True),
    ("ALLOC_HARDER takes a quarter: 75 fails", 0, 100, 0, R, {}, 0, 75, False),
    ("GFP_ATOMIC 3/8: 100 -> 50 -> 38; 39 passes", 0, 100, 0, H | R, {}, 0, 39, True),
    ("GFP_ATOMIC 3/8: 38 fails", 0, 100, 0, H | R, {}, 0, 38, False),
    ("rounding: 101 -> 51 -> 39; 40 passes", 0, 101, 0, H | R, {}, 0, 40, True),
    ("rounding: 101 -> 51 -> 39; 39 fails", 0, 101, 0, H | R, {}, 0, 39, False),
    ("rounding: 7 -> 4 -> 3; 3 fails", 0, 7, 0, H | R, {}, 0, 3, False),
    ("lowmem_reserve added: 149 > 100+48", 0, 100, 2, 0, {}, 48, 149, True),
    ("lowmem_reserve added: 148 fails", 0, 100, 2, 0, {}, 48, 148, False),
    ("reserve not eased by ALLOC_HIGH: 99 > 50+48", 0, 100, 2, H, {}, 48, 99, True),
    ("reserve not eased by ALLOC_HIGH: 98 fails", 0, 100, 2, H, {}, 48, 98, False),
    ("zero mark, zero free fails", 0, 0, 0, 0, {}, 0, 0, False),
    ("zero mark, one free passes", 0, 0, 0, 0, {}, 0, 1, True),
    ("negative free fails", 0, 0, 0, 0, {}, 0, -5, False),
    ("order 3 first subtracts 7: 18-7 > 10", 3, 10, 0, 0, {}, 0, 18, True),
    ("order 3 first subtracts 7: 17-7 = 10 fails", 3, 10, 0, 0, {}, 0, 17, False),
    # order 2, mark 64, 100 order-0 blocks: o=0 leaves F-3-100 against min 32
    ("order loop o=0 passes at 136", 2, 64, 0, 0, {0: 100}, 0, 136, True),
    ("order loop o=0 fails at equality 135", 2, 64, 0, 0, {0: 100}, 0, 135, False),
    # ... and 40 order-1 blocks (80 pages): o=1 leaves F-3-100-80 against min 16
    ("order loop o=1 passes at 200", 2, 64, 0, 0, {0: 100, 1: 40}, 0, 200, True),
    ("order loop o=1 fails at equality 199", 2, 64, 0, 0, {0: 100, 1: 40}, 0, 199, False),
    # order 3, mark 80, 20 order-2 blocks: min halves three times 80 -> 40 -> 20 -> 10 before the o=2 check
    ("min halves every order: 98-7-80 = 11 > 10", 3, 80, 0, 0, {2: 20}, 0, 98, True),
    ("min halves every order: 97-7-80 = 10 fails", 3, 80, 0, 0, {2: 20}, 0, 97, False),
    # ALLOC_HIGH applies before the loop: 100 -> 50, then 25 at o=0
    ("ALLOC_HIGH carried into the loop: 57-1-30 = 26 > 25", 1, 100, 0, H, {0: 30}, 0, 57, True),
    ("ALLOC_HIGH carried into the loop: 56 fails", 1, 100, 0, H, {0: 30}, 0, 56, False),
    # the reserve counts only in the first test: the loop compares with min alone (20 after one halving)
    ("reserve only in the first test: 90-1 > 40+48", 1, 40, 2, 0, {0: 50}, 48, 90, True),
    ("reserve only in the first test: 89 fails", 1, 40, 2, 0, {0: 50}, 48, 89, False),
    # blocks of the requested order and above are not subtracted
    ("orders >= request are not subtracted", 1, 10, 0, 0, {1: 1000, 5: 1000}, 0, 12, True),
    ("orders >= request: 11-1 = 10 fails", 1, 10, 0, 0, {1: 1000, 5: 1000}, 0, 11, False),
]


@pytest.mark.parametrize("order,mark,classzone,flags,blocks,res,free,expected", [c[1:] for c in WATERMARK_TABLE],
                         ids=[c[0] for c in WATERMARK_TABLE])
def test_zone_watermark_ok_table(mc, order, mark, classzone, flags, blocks, res, free, expected):
    """__zone_watermark_ok: free -= 2^order - 1; min = mark, -min/2 for ALLOC_HIGH, then -min/4 for
    ALLOC_HARDER; fail if free <= min + lowmem_reserve[classzone]; for each smaller order subtract its free
    pages, halve min and fail if free <= min (KERNEL §6.4)."""
    m, _ = mc
    z = DMA
    m.zone[z, Z_NR_FREE:Z_NR_FREE + MAX_ORDER] = 0
    for o, n in blocks.items():
        m.zone[z, Z_NR_FREE + o] = n
    m.zone[z, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 4] = 0
    m.zone[z, Z_LOWMEM_RESERVE + classzone] = res
    m.zone[z, FREE] = 10 ** 6       # must be ignored: free_pages is explicit
    assert page_alloc.__zone_watermark_ok(m, z, order, mark, classzone, flags, free) is expected


@pytest.mark.parametrize("free,expected", [(101, True), (100, False)])
def test_zone_watermark_ok_reads_nr_free_pages(mc, free, expected):
    """zone_watermark_ok checks the zone's NR_FREE_PAGES (KERNEL §6.4)."""
    m, _ = mc
    m.zone[NORMAL, FREE] = free
    assert page_alloc.zone_watermark_ok(m, NORMAL, 0, 100, NORMAL, ALLOC_WMARK_MIN) is expected


@pytest.mark.parametrize("gfp,flags", [
    (GFP_KERNEL, ALLOC_WMARK_MIN | ALLOC_CPUSET),
    (GFP_ATOMIC, ALLOC_WMARK_MIN | ALLOC_HIGH | ALLOC_HARDER),
    (GFP_NOWAIT, ALLOC_WMARK_MIN | ALLOC_HARDER),
    (GFP_ATOMIC | __GFP_NOMEMALLOC, ALLOC_WMARK_MIN | ALLOC_HIGH),
], ids=["GFP_KERNEL", "GFP_ATOMIC", "GFP_NOWAIT", "GFP_ATOMIC|NOMEMALLOC"])
def test_gfp_to_alloc_flags(mc, gfp, flags):
    """GFP_ATOMIC gets ALLOC_HIGH|ALLOC_HARDER and loses ALLOC_CPUSET; blocking requests keep ALLOC_CPUSET
    (KERNEL §6.3), which is what makes the 3/8 case of §6.4 reachable."""
    _, cpu = mc
    assert page_alloc.gfp_to_alloc_flags(cpu, gfp) == flags


def test_get_page_from_freelist_honours_lowmem_reserve(mc):
    """A Normal-classzone request skips DMA unless DMA's free pages exceed low (80) + reserve[Normal] (48):
    with Normal unusable, 128 free DMA pages fail and 129 succeed (KERNEL §6.4-6.5)."""
    m, cpu = mc
    m.zone[NORMAL, FREE] = 0                    # Normal fails its watermark
    args = (cpu, GFP_KERNEL, None, 0, m.zonelists[0], NORMAL, ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0)
    m.zone[DMA, FREE] = 128
    assert page_alloc.get_page_from_freelist(*args) is None
    m.zone[DMA, FREE] = 129
    pfn = page_alloc.get_page_from_freelist(*args)
    assert pfn is not None and 0 <= pfn < 4096


# =============================================================================================================
# The buddy allocator
# =============================================================================================================

@pytest.mark.parametrize("zone,gfp,count", [(NORMAL, GFP_KERNEL, 500), (DMA, GFP_DMA, 300)], ids=["Normal", "DMA"])
def test_order0_alloc_then_free_restores_order10_blocks(mc, zone, gfp, count):
    """Order-0 pages taken through get_page_from_freelist (per-CPU list refills split order-10 blocks) and
    given back with free_hot_cold_page + drain_local_pages leave the zone as a set of order-10 blocks again;
    conservation holds at every step. (The min-watermark pass: the low one's fair zone allocation would move
    on to DMA once Normal's batch is used up.)"""
    m, cpu = mc
    start, managed = int(m.zone[zone, Z_START_PFN]), int(m.zone[zone, Z_MANAGED])
    pages = []
    for _ in range(count):
        pfn = page_alloc.get_page_from_freelist(cpu, gfp, None, 0, m.zonelists[0], zone,
                                                ALLOC_WMARK_MIN | ALLOC_CPUSET, zone, 0)
        assert pfn is not None
        pages.append(pfn)
    assert len(set(pages)) == count
    assert all(start <= p < start + managed for p in pages)
    assert (m.page_kind[pages] == PAGE_KERNEL).all()
    assert check_page_conservation(m) == []
    random.Random(7).shuffle(pages)
    for pfn in pages:
        page_alloc.free_hot_cold_page(cpu, pfn)
    assert check_page_conservation(m) == []
    page_alloc.drain_local_pages(cpu)
    assert_pristine(m, zone)


def test_first_order0_alloc_splits_one_block(mc):
    """The first order-0 request refills the per-CPU list with batch = 3 pages: one order-10 block is split
    into 4096 (taken), 4097 (taken), 4098 (taken from its order-1 pair) and leaves 4099 at order 0 and one
    block at each order 2..9 (4100, 4104, ..., 4608)."""
    m, cpu = mc
    pfn = page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 0, GFP_KERNEL, 0)
    assert nr_free(m, NORMAL) == [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 11]
    assert free_list(m, NORMAL, 0) == [4099]
    assert [free_list(m, NORMAL, o) for o in range(2, 10)] == [[4096 + (1 << o)] for o in range(2, 10)]
    assert int(m.zone[NORMAL, FREE]) == 12288 - 3
    assert int(m.pcp[0, NORMAL, 0]) == 2
    pcp, p = [], int(m.pcp[0, NORMAL, 3])
    while p != -1:
        pcp.append(p)
        p = int(m.page_next[p])
    assert sorted(pcp + [pfn]) == [4096, 4097, 4098]
    assert (m.page_kind[pcp] == PAGE_PCP).all()
    assert check_page_conservation(m) == []


@pytest.mark.parametrize("zone,gfp", [(NORMAL, GFP_KERNEL), (DMA, GFP_DMA)], ids=["Normal", "DMA"])
def test_order2_request_splits_an_order10_block(mc, zone, gfp):
    """An order-2 request splits the first order-10 block: it gets the block's first 4 pages and exactly one
    free block remains at each order 2..9, the upper halves start+2^k; freeing it merges back (buddy rules)."""
    m, cpu = mc
    start, managed = int(m.zone[zone, Z_START_PFN]), int(m.zone[zone, Z_MANAGED])
    pfn = page_alloc.get_page_from_freelist(cpu, gfp, None, 2, m.zonelists[0], zone,
                                            ALLOC_WMARK_LOW | ALLOC_CPUSET, zone, 0)
    assert pfn == start
    assert nr_free(m, zone) == [0, 0] + [1] * 8 + [managed // 1024 - 1]
    assert [free_list(m, zone, o) for o in range(2, 10)] == [[start + (1 << o)] for o in range(2, 10)]
    assert int(m.zone[zone, FREE]) == managed - 4
    assert (m.page_kind[start:start + 4] == PAGE_KERNEL).all()
    assert check_page_conservation(m) == []
    page_alloc.__free_pages(cpu, pfn, 2)
    assert_pristine(m, zone)


def test_free_one_hole_in_a_block_leaves_one_block_per_order(mc):
    """With page 4101 still allocated out of the first block [4096, 5120), the rest of it decomposes into
    [4608,5120)@9 ... [4104,4112)@3, [4096,4100)@2, [4102,4104)@1, [4100]@0: one block at every order 0..9
    (buddy rules)."""
    m, cpu = mc
    k = kswapd_ctx(m, cpu)
    pages = [page_alloc.buffered_rmqueue(k, NORMAL, NORMAL, 0, GFP_KERNEL, 0) for _ in range(1024)]
    assert pages == list(range(4096, 5120))
    assert nr_free(m, NORMAL) == [0] * 10 + [11]
    for pfn in pages:
        if pfn != 4101:
            page_alloc.free_one_page(k, NORMAL, pfn, 0)
    assert nr_free(m, NORMAL) == [1] * 10 + [11]
    assert [free_list(m, NORMAL, o) for o in range(10)] == [
        [4100], [4102], [4096], [4104], [4112], [4128], [4160], [4224], [4352], [4608]]
    assert int(m.zone[NORMAL, FREE]) == 12287
    assert check_page_conservation(m) == []
    page_alloc.free_one_page(k, NORMAL, 4101, 0)
    assert_pristine(m, NORMAL)


def _two_machines_with_allocated(n):
    """Two identical machines with pages 4096 .. 4096+n-1 of Normal allocated (kswapd path, no pcp)."""
    out = []
    for _ in range(2):
        m, cpu = make_machine()
        k = kswapd_ctx(m, cpu)
        pages = [page_alloc.buffered_rmqueue(k, NORMAL, NORMAL, 0, GFP_KERNEL, 0) for _ in range(n)]
        assert pages == list(range(4096, 4096 + n))
        out.append((m, cpu))
    return out


@pytest.mark.parametrize("nfree", [40, 64, 65, 700, 3000], ids=lambda n: f"{n}pages")
def test_free_hot_cold_page_list_equals_page_by_page(nfree):
    """Freeing a set of pages with free_hot_cold_page_list (one call under zone->lock, then the NR_FREE_PAGES
    update its caller makes) leaves the same free blocks per order as freeing them one by one, for batches
    below and above the bulk-rebuild threshold; conservation holds on both machines."""
    (ma, ca), (mb, cb) = _two_machines_with_allocated(3000)
    try:
        rng = random.Random(nfree)
        chosen = rng.sample(range(4096, 4096 + 3000), nfree)
        for pfn in chosen:
            page_alloc.free_one_page(ca, NORMAL, pfn, 0)
        with sync.spinlock(cb, mb.zone_lock(NORMAL)):
            freed = page_alloc.free_hot_cold_page_list(cb, NORMAL, np.array(chosen, dtype=np.int64))
            page_alloc._note_freed(cb, NORMAL, freed)
        assert freed == nfree
        assert nr_free(mb, NORMAL) == nr_free(ma, NORMAL)
        assert free_blocks(mb, NORMAL) == free_blocks(ma, NORMAL)
        assert int(mb.zone[NORMAL, FREE]) == int(ma.zone[NORMAL, FREE]) == 12288 - 3000 + nfree
        zone = slice(4096, 16384)
        assert ((mb.page_flags[zone] & PG_buddy) == (ma.page_flags[zone] & PG_buddy)).all()
        assert (mb.page_kind[zone] == ma.page_kind[zone]).all()
        assert check_page_conservation(ma) == []
        assert check_page_conservation(mb) == []
    finally:
        ma.close()
        mb.close()


def test_free_hot_cold_page_list_whole_range_restores_zone():
    """Freeing all 3000 allocated pages with free_hot_cold_page_list restores the pristine zone, and so does
    freeing them one by one through the per-CPU lists and a drain."""
    (ma, ca), (mb, cb) = _two_machines_with_allocated(3000)
    try:
        pages = list(range(4096, 7096))
        for pfn in pages:
            page_alloc.free_hot_cold_page(ca, pfn)
        page_alloc.drain_local_pages(ca)
        with sync.spinlock(cb, mb.zone_lock(NORMAL)):
            freed = page_alloc.free_hot_cold_page_list(cb, NORMAL, np.array(pages))
            page_alloc._note_freed(cb, NORMAL, freed)
        assert_pristine(ma, NORMAL)
        assert_pristine(mb, NORMAL)
    finally:
        ma.close()
        mb.close()


# =============================================================================================================
# check_page_conservation
# =============================================================================================================

def test_conservation_holds_on_a_fresh_machine(mc):
    """A booted machine satisfies page conservation."""
    m, _ = mc
    assert check_page_conservation(m) == []


def _bump_nr_free(m, cpu):
    m.zone[NORMAL, FREE] += 1


def _free_twice(m, cpu):
    # 4097 is already free inside the order-10 block at 4096; its order-0 buddy 4096 heads an order-10 block,
    # so nothing merges and 4097 ends up on the order-0 list as well
    page_alloc.free_one_page(cpu, NORMAL, 4097, 0)


def _list_same_head_twice(m, cpu):
    page_alloc._list_add(m, NORMAL, 10, 5120)


def _pcp_count_off(m, cpu):
    m.pcp[1, NORMAL, 0] += 1


def _owned_page_left_on_free_list(m, cpu):
    m.page_kind[4096 + 1024 + 7] = PAGE_KERNEL


def _nr_free_order_off(m, cpu):
    m.zone[DMA, Z_NR_FREE + 3] += 1


def _after_alloc_lose_a_pcp_page(m, cpu):
    page_alloc.buffered_rmqueue(cpu, NORMAL, NORMAL, 0, GFP_KERNEL, 0)
    m.pcp[0, NORMAL, 3] = m.page_next[int(m.pcp[0, NORMAL, 3])]   # unlink the head without counting it


@pytest.mark.parametrize("corrupt", [_bump_nr_free, _free_twice, _list_same_head_twice, _pcp_count_off,
                                     _owned_page_left_on_free_list, _nr_free_order_off,
                                     _after_alloc_lose_a_pcp_page])
def test_conservation_detects_corruption(mc, corrupt):
    """check_page_conservation reports a violation for each kind of corrupted allocator state."""
    m, cpu = mc
    corrupt(m, cpu)
    assert check_page_conservation(m) != []


def test_conservation_detects_a_pfn_listed_in_two_free_blocks(mc):
    """A pfn on a free list inside another free block is reported even when every counter balances: here
    4101 is listed at order 0 inside the order-2 block at 4100, and the page count it adds is hidden by
    losing allocated page 4096 (its frame-table kind back to free, NR_FREE_PAGES + 1)."""
    m, cpu = mc
    k = kswapd_ctx(m, cpu)
    assert page_alloc.buffered_rmqueue(k, NORMAL, NORMAL, 0, GFP_KERNEL, 0) == 4096
    assert free_list(m, NORMAL, 2) == [4100]
    assert check_page_conservation(m) == []
    m.page_flags[4101] |= PG_buddy
    m.page_order[4101] = 0
    page_alloc._list_add(m, NORMAL, 0, 4101)
    m.zone[NORMAL, FREE] += 1
    m.page_kind[4096] = PAGE_BUDDY
    problems = check_page_conservation(m)
    assert len(problems) == 1 and "twice" in problems[0]


def _remote_cpu(m, sc, ready, stop):
    """CPU 1 as a process: fill its per-CPU list, then answer drain requests the way its scheduler does."""
    from oomemu.kernel.sched import Scheduler  # noqa: F401  (the same module the CPU loop uses)
    from oomemu.machine import C_DRAIN
    import time
    cpu1 = CpuContext(m, 1, sc)
    page_alloc.rmqueue_bulk(cpu1, NORMAL, 0, 31, 0)
    ready.set()
    while not stop.is_set():
        if m.cpu[1, C_DRAIN]:
            time.sleep(0.05)                      # a CPU busy with its user step for a while
            page_alloc.drain_local_pages(cpu1)
            m.cpu[1, C_DRAIN] = 0
        time.sleep(0.001)


def test_drain_all_pages_waits_until_every_cpu_has_drained(mc):
    """drain_all_pages returns only after CPU 1 (another process, busy 50 ms before it drains) has emptied
    its per-CPU list: on_each_cpu_mask(..., wait = 1) (KERNEL §6.2 step 12)."""
    import multiprocessing as mp
    m, cpu = mc
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_remote_cpu, args=(m, cpu.scenario, ready, stop))
    p.start()
    try:
        assert ready.wait(30)
        assert int(m.pcp[1, NORMAL, 0]) == 31
        page_alloc.drain_all_pages(cpu)
        assert int(m.pcp[1, NORMAL, 0]) == 0
        assert check_page_conservation(m) == []
    finally:
        stop.set()
        p.join(30)
