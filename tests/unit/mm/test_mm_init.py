"""mm/mm_init.py: boot-time zones, min_free_kbytes, watermarks, lowmem reserves and per-CPU list sizes.

Expected values are worked out by hand from KERNEL.md §6.5 (watermarks, reserves) and from 3.14's
zone_batchsize(): batch = managed/1024, capped at 512 KiB worth of pages (128), divided by 4, at least 1,
then rounddown_pow_of_two(batch + batch/2) - 1; pageset_set_batch() sets high = 6*batch and
batch = max(1, batch).
"""
import pytest

from machine_helpers import make_machine
from oomemu.include.mmzone import MAX_ORDER, NR_FREE_PAGES, WMARK_HIGH, WMARK_LOW, WMARK_MIN
from oomemu.machine import (G_TOTAL_SWAP, G_TOTALRAM, PG_buddy, Z_FREE_HEAD, Z_LOWMEM_RESERVE, Z_MANAGED,
                            Z_NR_FREE, Z_SPANNED, Z_START_PFN, Z_STAT, Z_WMARK)
from oomemu.mm import mm_init

DMA, DMA32, NORMAL, MOVABLE = 0, 1, 2, 3


@pytest.fixture
def m():
    m, _ = make_machine()
    yield m
    m.close()


def wmarks(m, z):
    return tuple(int(m.zone[z, Z_WMARK + w]) for w in (WMARK_MIN, WMARK_LOW, WMARK_HIGH))


def reserve(m, z):
    return [int(x) for x in m.zone[z, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 4]]


def set_managed(m, dma, dma32, normal, movable=0):
    for z, pages in ((DMA, dma), (DMA32, dma32), (NORMAL, normal), (MOVABLE, movable)):
        m.zone[z, Z_MANAGED] = pages


# --- the booted unit machine -------------------------------------------------------------------------------

def test_boot_zone_layout_and_free_lists(m):
    """Zones are laid out in PFN order (DMA 0..4095, Normal 4096..16383) and every page starts on the order-10
    free list of its zone, in MAX_ORDER-aligned blocks; totalram = 16384, no swap (KERNEL §6.11, §10)."""
    assert [int(m.zone[z, Z_START_PFN]) for z in (DMA, NORMAL)] == [0, 4096]
    assert [int(m.zone[z, Z_SPANNED]) for z in (DMA, DMA32, NORMAL, MOVABLE)] == [4096, 0, 12288, 0]
    assert [int(m.zone[z, Z_MANAGED]) for z in (DMA, DMA32, NORMAL, MOVABLE)] == [4096, 0, 12288, 0]
    assert int(m.glob[G_TOTALRAM]) == 16384 and int(m.glob[G_TOTAL_SWAP]) == 0
    for z, start, blocks in ((DMA, 0, 4), (NORMAL, 4096, 12)):
        assert [int(m.zone[z, Z_NR_FREE + o]) for o in range(MAX_ORDER)] == [0] * 10 + [blocks]
        assert int(m.zone[z, Z_STAT + NR_FREE_PAGES]) == blocks * 1024
        heads, pfn = [], int(m.zone[z, Z_FREE_HEAD + 10])
        while pfn != -1:
            heads.append(pfn)
            pfn = int(m.page_next[pfn])
        assert heads == [start + 1024 * i for i in range(blocks)]
        assert all(m.page_flags[h] & PG_buddy and m.page_order[h] == 10 for h in heads)
    assert m.zonelists == ((NORMAL, DMA),)


def test_boot_min_free_kbytes_and_watermarks(m):
    """lowmem 16384 pages = 65536 kB: min_free_kbytes = isqrt(65536*16) = 1024, pages_min = 256;
    DMA min = 256*4096//16384 = 64, low 64+16 = 80, high 64+32 = 96; Normal min = 256*12288//16384 = 192,
    low 240, high 288 (KERNEL §6.5)."""
    assert m.min_free_kbytes == 1024
    assert wmarks(m, DMA) == (64, 80, 96)
    assert wmarks(m, NORMAL) == (192, 240, 288)
    assert wmarks(m, DMA32) == (0, 0, 0)


def test_boot_lowmem_reserve(m):
    """DMA's reserve against Normal (and Movable) requests is managed(Normal)//256 = 12288//256 = 48; against
    DMA32 it is 0 (DMA32 is empty); a zone's reserve for itself is 0 (KERNEL §6.5)."""
    assert reserve(m, DMA) == [0, 0, 48, 48]
    assert reserve(m, DMA32) == [0, 0, 48, 48]
    assert reserve(m, NORMAL) == [0, 0, 0, 0]


def test_user_min_free_kbytes_larger_is_kept():
    """A larger vm.min_free_kbytes wins: 4096 kB -> pages_min 1024; DMA 1024*4096//16384 = 256, low 320,
    high 384; Normal 768, 960, 1152 (KERNEL §6.5)."""
    m, _ = make_machine("[sysctl]\nmin_free_kbytes = 4096\n")
    try:
        assert m.min_free_kbytes == 4096
        assert wmarks(m, DMA) == (256, 320, 384)
        assert wmarks(m, NORMAL) == (768, 960, 1152)
    finally:
        m.close()


def test_user_min_free_kbytes_smaller_is_ignored():
    """A user value below the computed 1024 kB leaves the computed one (KERNEL §6.5)."""
    m, _ = make_machine("[sysctl]\nmin_free_kbytes = 512\n")
    try:
        assert m.min_free_kbytes == 1024
        assert wmarks(m, NORMAL) == (192, 240, 288)
    finally:
        m.close()


def test_lowmem_reserve_ratio_sysctl():
    """vm.lowmem_reserve_ratio = [100, 7, 32]: DMA[Normal] = 12288//100 = 122, DMA32[Normal] = 12288//7 = 1755
    (KERNEL §6.5)."""
    m, _ = make_machine("[sysctl]\nlowmem_reserve_ratio = [100, 7, 32]\n")
    try:
        assert reserve(m, DMA) == [0, 0, 122, 122]
        assert reserve(m, DMA32) == [0, 0, 1755, 1755]
    finally:
        m.close()


# --- init_per_zone_wmark_min over crafted zone sizes ----------------------------------------------------------

# (id, managed DMA/DMA32/Normal, min_free_kbytes, {zone: (min, low, high)})
WMARK_TABLE = [
    # 12288 pages = 49152 kB; 49152*16 = 786432; isqrt = 886 (886^2 = 784996, 887^2 = 786769);
    # pages_min = 886 >> 2 = 221; DMA 221*4096//12288 = 73, low 73+18 = 91, high 73+36 = 109;
    # Normal 221*8192//12288 = 147, low 147+36 = 183, high 147+73 = 220
    ("isqrt rounds down", (4096, 0, 8192), 886, {DMA: (73, 91, 109), NORMAL: (147, 183, 220)}),
    # 1 GiB = 1048576 kB -> isqrt(16777216) = 4096 (the "1 GB -> 4096k" example); pages_min 1024;
    # DMA 1024*4096//262144 = 16, low 20, high 24; Normal 1024*258048//262144 = 1008, low 1260, high 1512
    ("1 GiB of lowmem", (4096, 0, 258048), 4096, {DMA: (16, 20, 24), NORMAL: (1008, 1260, 1512)}),
    # 16 MiB = 16384 kB -> isqrt(262144) = 512 (the "16 MB -> 512k" example); pages_min 128, all in DMA:
    # 128, low 160, high 192
    ("16 MiB, DMA only", (4096, 0, 0), 512, {DMA: (128, 160, 192), NORMAL: (0, 0, 0)}),
    # 64 pages = 256 kB -> isqrt(4096) = 64 -> clamped to 128; pages_min 32; DMA 32, low 40, high 48
    ("clamped up to 128", (64, 0, 0), 128, {DMA: (32, 40, 48)}),
    # 512 GiB = 134217728 pages; isqrt(536870912*16) = 92681 -> clamped to 65536; pages_min 16384;
    # DMA 16384*4096//134217728 = 0; Normal 16384*134213632//134217728 = 16383, low 16383+4095, high 16383+8191
    ("clamped down to 65536", (4096, 0, 134213632), 65536, {DMA: (0, 0, 0), NORMAL: (16383, 20478, 24574)}),
    # DMA32 shares too: 4 GiB lowmem = 4194304 kB -> isqrt(67108864) = 8192; pages_min 2048;
    # DMA 2048*4096//1048576 = 8, low 10, high 12; DMA32 2048*520192//1048576 = 1016, low 1270, high 1524;
    # Normal 2048*524288//1048576 = 1024, low 1280, high 1536
    ("three zones", (4096, 520192, 524288), 8192,
     {DMA: (8, 10, 12), DMA32: (1016, 1270, 1524), NORMAL: (1024, 1280, 1536)}),
]


@pytest.mark.parametrize("managed,min_free_kbytes,expected", [c[1:] for c in WMARK_TABLE],
                         ids=[c[0] for c in WMARK_TABLE])
def test_init_per_zone_wmark_min(m, managed, min_free_kbytes, expected):
    """min_free_kbytes = clamp(isqrt(lowmem_kbytes*16), 128, 65536); per zone min = pages_min*managed//total,
    low = min + min//4, high = min + min//2 (KERNEL §6.5)."""
    set_managed(m, *managed)
    assert mm_init.init_per_zone_wmark_min(m) == min_free_kbytes
    for z, marks in expected.items():
        assert wmarks(m, z) == marks, z


def test_init_per_zone_wmark_min_user_value(m):
    """init_per_zone_wmark_min keeps a larger user value and ignores a smaller one (KERNEL §6.5)."""
    set_managed(m, 4096, 0, 8192)
    assert mm_init.init_per_zone_wmark_min(m, 2000) == 2000     # pages_min 500: Normal 500*8192//12288 = 333
    assert wmarks(m, NORMAL) == (333, 416, 499)
    assert mm_init.init_per_zone_wmark_min(m, 800) == 886


# --- setup_per_zone_lowmem_reserve ----------------------------------------------------------------------------

# (id, managed DMA/DMA32/Normal, ratios, {zone: reserve[0..3]})
RESERVE_TABLE = [
    # DMA[DMA32] = 520192//256 = 2032; DMA[Normal] = (524288+520192)//256 = 4080;
    # DMA32[Normal] = 524288//256 = 2048; Movable empty so [3] repeats [2]; Normal[3] = 0//32
    ("three zones, default ratios", (4096, 520192, 524288), (256, 256, 32),
     {DMA: [0, 2032, 4080, 4080], DMA32: [0, 0, 2048, 2048], NORMAL: [0, 0, 0, 0]}),
    # integer division: 8192//100 = 81, 8192//3 = 2730
    ("rounding", (4096, 0, 8192), (100, 3, 32), {DMA: [0, 0, 81, 81], DMA32: [0, 0, 2730, 2730]}),
    # a ratio below 1 is forced to 1: DMA[Normal] = 8192//1
    ("ratio 0 forced to 1", (4096, 0, 8192), (0, 256, 32), {DMA: [0, 0, 8192, 8192], DMA32: [0, 0, 32, 32]}),
]


@pytest.mark.parametrize("managed,ratios,expected", [c[1:] for c in RESERVE_TABLE], ids=[c[0] for c in RESERVE_TABLE])
def test_setup_per_zone_lowmem_reserve(m, managed, ratios, expected):
    """lower->lowmem_reserve[j] = (sum of managed pages of zones idx+1..j) // ratio[idx] (KERNEL §6.5)."""
    set_managed(m, *managed)
    mm_init.setup_per_zone_lowmem_reserve(m, ratios)
    for z, res in expected.items():
        assert reserve(m, z) == res, z


# --- zone_batchsize and the per-CPU list sizes -----------------------------------------------------------------

# (managed pages, batch): managed//1024 (capped at 128) // 4, at least 1, then rounddown_pow_of_two(b + b//2) - 1
BATCH_TABLE = [
    (8192, 1),         # 8 -> 2 -> rdp2(3) = 2 -> 1
    (11263, 1),        # 10 -> 2 -> 1
    (12288, 3),        # 12 -> 3 -> rdp2(4) = 4 -> 3
    (16384, 3),        # 16 -> 4 -> rdp2(6) = 4 -> 3
    (32768, 7),        # 32 -> 8 -> rdp2(12) = 8 -> 7   (128 MiB)
    (65536, 15),       # 64 -> 16 -> rdp2(24) = 16 -> 15
    (81920, 15),       # 80 -> 20 -> rdp2(30) = 16 -> 15
    (90112, 31),       # 88 -> 22 -> rdp2(33) = 32 -> 31
    (131072, 31),      # 128 -> 32 -> rdp2(48) = 32 -> 31 (128 pages = 512 KiB exactly: not capped)
    (262144, 31),      # 256 -> capped 128 -> 32 -> 31   (1 GiB)
    (1 << 30, 31),     # capped
]


@pytest.mark.parametrize("managed,batch", BATCH_TABLE, ids=[str(c[0]) for c in BATCH_TABLE])
def test_zone_batchsize(managed, batch):
    """zone_batchsize follows 3.14's formula, giving 2^n - 1 values capped at 31."""
    assert mm_init.zone_batchsize(managed) == batch


SMALL_BATCH_TABLE = [
    (0, 0),            # 0 -> 0 -> clamped 1 -> rdp2(1) = 1 -> 0
    (4096, 0),         # 4 -> 1 -> rdp2(1) = 1 -> 0  (the unit machine's DMA zone)
    (8191, 0),         # 7 -> 1 -> 0
]


@pytest.mark.parametrize("managed,batch", SMALL_BATCH_TABLE, ids=[str(c[0]) for c in SMALL_BATCH_TABLE])
def test_zone_batchsize_small_zone_is_zero(managed, batch):
    """For zones under 8192 pages 3.14's zone_batchsize is rounddown_pow_of_two(1) - 1 = 0."""
    assert mm_init.zone_batchsize(managed) == batch


def test_setup_pageset_normal_zone(m):
    """Normal (12288 pages): batch 3, high = 6*3 = 18 on every CPU (3.14 pageset_set_batch)."""
    assert [int(x) for x in m.pcp[:, NORMAL, 2]] == [3, 3]
    assert [int(x) for x in m.pcp[:, NORMAL, 1]] == [18, 18]
    assert [int(x) for x in m.pcp[:, NORMAL, 0]] == [0, 0]


def test_setup_pageset_small_dma_zone(m):
    """DMA (4096 pages): 3.14 pageset_set_batch(0) gives high 0 and batch max(1, 0) = 1, so every free
    goes straight back to the buddy allocator."""
    assert [int(x) for x in m.pcp[:, DMA, 2]] == [1, 1]
    assert [int(x) for x in m.pcp[:, DMA, 1]] == [0, 0]
