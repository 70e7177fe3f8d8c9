"""Boot-time memory set-up: zones, free lists, zonelists, watermarks, lowmem reserves, per-CPU lists, the
anon inactive ratios.

Follows the boot half of mm/page_alloc.c of Linux 3.14 (free_area_init_core, build_all_zonelists,
init_per_zone_wmark_min, __setup_per_zone_wmarks, setup_per_zone_lowmem_reserve, zone_batchsize;
KERNEL §6.5). Runs once in the supervisor before any worker exists, so it needs no locks.
"""
import math

import numpy as np

from oomemu.include.mmzone import (MAX_NR_ZONES, MAX_ORDER, MAX_ORDER_NR_PAGES, PAGE_SHIFT, PAGE_SIZE,
                                   WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_DMA, ZONE_DMA32, ZONE_NORMAL)
from oomemu.machine import (G_NR_SWAP_FREE, G_TOTAL_SWAP, G_TOTALRAM, PG_buddy, Z_FREE_HEAD, Z_IDX, Z_INACTIVE_RATIO,
                            Z_LOWMEM_RESERVE, Z_MANAGED, Z_NODE, Z_NR_FREE, Z_SPANNED, Z_START_PFN, Z_STAT,
                            Z_WMARK)
from oomemu.include.mmzone import NR_ALLOC_BATCH, NR_FREE_PAGES

_ZONE_KEYS = ((ZONE_DMA, "DMA"), (ZONE_DMA32, "DMA32"), (ZONE_NORMAL, "Normal"))


def nr_pages_of(scenario):
    """Total page frames the scenario's nodes span.

    Emulator-only.
    """
    return sum(size // PAGE_SIZE for node in scenario.machine.nodes for size in node.zones.values())


def free_area_init_core(m, scenario):
    """Lay the zones of every node out in PFN order and put all their pages on the buddy free lists.

    Follows: mm/page_alloc.c free_area_init_core() + free_all_bootmem(), 3.14. Differs: no holes, no
    memblock reservations; every spanned page is managed.
    """
    pfn = 0
    for nid, node in enumerate(scenario.machine.nodes):
        for zidx, key in _ZONE_KEYS:
            z = nid * MAX_NR_ZONES + zidx
            pages = node.zones[key] // PAGE_SIZE
            m.zone[z, Z_NODE] = nid
            m.zone[z, Z_IDX] = zidx
            m.zone[z, Z_START_PFN] = pfn
            m.zone[z, Z_SPANNED] = pages
            m.zone[z, Z_MANAGED] = pages
            if pages:
                m.page_zone[pfn:pfn + pages] = z
                _free_all_blocks(m, z, pfn, pages)
            pfn += pages
        for zidx in range(ZONE_NORMAL + 1, MAX_NR_ZONES):
            z = nid * MAX_NR_ZONES + zidx
            m.zone[z, Z_NODE] = nid
            m.zone[z, Z_IDX] = zidx
            m.zone[z, Z_START_PFN] = pfn
    m.glob[G_TOTALRAM] = int(m.zone[:, Z_MANAGED].sum())
    swap = scenario.machine.swap // PAGE_SIZE
    m.glob[G_TOTAL_SWAP] = swap
    m.glob[G_NR_SWAP_FREE] = swap


def _free_all_blocks(m, z, start, pages):
    """Put [start, start+pages) on zone z's order MAX_ORDER-1 free list (sizes are MAX_ORDER aligned)."""
    top = MAX_ORDER - 1
    heads = np.arange(start, start + pages, MAX_ORDER_NR_PAGES, dtype=np.int32)
    m.page_flags[heads] = PG_buddy
    m.page_order[heads] = top
    m.page_next[heads[:-1]] = heads[1:]
    m.page_prev[heads[1:]] = heads[:-1]
    m.zone[z, Z_FREE_HEAD + top] = heads[0]
    m.zone[z, Z_NR_FREE + top] = len(heads)
    m.zone[z, Z_STAT + NR_FREE_PAGES] = pages


def build_all_zonelists(m):
    """One fallback zonelist per node: its own zones from highest to lowest, then the other nodes' (node order).

    Follows: mm/page_alloc.c build_zonelists() in node order, 3.14. Only populated zones are listed.
    Returns a tuple per node of global zone indexes.
    """
    lists = []
    for nid in range(m.nr_nodes):
        order = [nid] + [n for n in range(m.nr_nodes) if n != nid]
        zl = [n * MAX_NR_ZONES + zi for n in order for zi in range(MAX_NR_ZONES - 1, -1, -1)
              if m.zone[n * MAX_NR_ZONES + zi, Z_MANAGED] > 0]
        lists.append(tuple(zl))
    return tuple(lists)


def int_sqrt(x):
    """Integer square root. Follows: lib/int_sqrt.c int_sqrt()."""
    return math.isqrt(int(x))


def init_per_zone_wmark_min(m, user_min_free_kbytes=0):
    """Compute min_free_kbytes from low memory and set the watermarks and reserves from it.

    Follows: mm/page_alloc.c init_per_zone_wmark_min(), 3.14 (KERNEL §6.5). Returns min_free_kbytes.
    """
    lowmem_pages = int(sum(m.zone[z, Z_MANAGED] for z in range(m.nr_zones)
                           if m.zone[z, Z_IDX] <= ZONE_NORMAL))
    lowmem_kbytes = lowmem_pages * (PAGE_SIZE // 1024)
    computed = min(max(int_sqrt(lowmem_kbytes * 16), 128), 65536)
    min_free_kbytes = max(computed, user_min_free_kbytes)
    __setup_per_zone_wmarks(m, min_free_kbytes)
    return min_free_kbytes


def __setup_per_zone_wmarks(m, min_free_kbytes, zones=None):
    """Give every zone its proportional share of min_free_kbytes as WMARK_MIN; LOW/HIGH add 1/4 and 1/2 of it,
    and start its fair-allocation batch at high - low.

    Follows: mm/page_alloc.c __setup_per_zone_wmarks(), 3.14 (KERNEL §6.5). No HIGHMEM zones exist here.
    `zones`: only these (a run-time write of min_free_kbytes updates one zone per zone->lock hold).
    """
    pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)
    lowmem_pages = int(m.zone[:, Z_MANAGED].sum())
    for z in range(m.nr_zones) if zones is None else zones:
        managed = int(m.zone[z, Z_MANAGED])
        tmp = pages_min * managed // lowmem_pages if lowmem_pages else 0
        m.zone[z, Z_WMARK + WMARK_MIN] = tmp
        m.zone[z, Z_WMARK + WMARK_LOW] = tmp + (tmp >> 2)
        m.zone[z, Z_WMARK + WMARK_HIGH] = tmp + (tmp >> 1)
        m.zone[z, Z_STAT + NR_ALLOC_BATCH] = (tmp >> 1) - (tmp >> 2)


def setup_per_zone_lowmem_reserve(m, ratios):
    """lower->lowmem_reserve[j] = managed pages of the zones above it up to j, divided by the lower zone's ratio.

    Follows: mm/page_alloc.c setup_per_zone_lowmem_reserve(), 3.14 (KERNEL §6.5).
    """
    for nid in range(m.nr_nodes):
        base = nid * MAX_NR_ZONES
        for j in range(MAX_NR_ZONES):
            managed = int(m.zone[base + j, Z_MANAGED])
            m.zone[base + j, Z_LOWMEM_RESERVE + j] = 0
            idx = j
            while idx:
                idx -= 1
                ratio = max(1, ratios[idx] if idx < len(ratios) else 32)
                m.zone[base + idx, Z_LOWMEM_RESERVE + j] = managed // ratio
                managed += int(m.zone[base + idx, Z_MANAGED])


def zone_batchsize(managed_pages):
    """The per-CPU list batch for a zone of this size. Follows: mm/page_alloc.c zone_batchsize(), 3.14."""
    batch = managed_pages // 1024
    if batch * PAGE_SIZE > 512 * 1024:
        batch = (512 * 1024) // PAGE_SIZE
    batch //= 4
    if batch < 1:
        batch = 1
    x = batch + batch // 2
    return (1 << (x.bit_length() - 1)) - 1  # rounddown_pow_of_two() - 1: 0 for the smallest zones


def setup_pageset(m):
    """Per-CPU list limits for every zone: batch from zone_batchsize, high = 6 × batch.

    Follows: mm/page_alloc.c setup_pageset()/pageset_set_batch(), 3.14.
    """
    for z in range(m.nr_zones):
        batch = zone_batchsize(int(m.zone[z, Z_MANAGED]))
        m.pcp[:, z, 1] = 6 * batch  # high 0: every free goes straight back to the buddy allocator
        m.pcp[:, z, 2] = max(1, batch)


def calculate_zone_inactive_ratio(managed_pages):
    """The anon inactive_ratio of a zone: int_sqrt(10 × size in GiB), 1 below a GiB.

    Follows: mm/page_alloc.c calculate_zone_inactive_ratio(), 3.14.
    """
    gb = managed_pages >> (30 - PAGE_SHIFT)
    return int_sqrt(10 * gb) if gb else 1


def setup_per_zone_inactive_ratio(m):
    """Follows: mm/page_alloc.c setup_per_zone_inactive_ratio(), 3.14."""
    for z in range(m.nr_zones):
        m.zone[z, Z_INACTIVE_RATIO] = calculate_zone_inactive_ratio(int(m.zone[z, Z_MANAGED]))


def boot_memory(m, scenario):
    """Everything above, in boot order. Returns the zonelists and min_free_kbytes.

    Emulator-only: the order start_kernel() calls the functions above in.
    """
    free_area_init_core(m, scenario)
    zonelists = build_all_zonelists(m)
    min_free_kbytes = init_per_zone_wmark_min(m, scenario.sysctl.min_free_kbytes)
    setup_per_zone_lowmem_reserve(m, scenario.sysctl.lowmem_reserve_ratio)
    setup_pageset(m)
    setup_per_zone_inactive_ratio(m)
    return zonelists, min_free_kbytes
