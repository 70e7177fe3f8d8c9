"""GFP bits, composites and gfp_zone().

Follows include/linux/gfp.h of Linux 3.14 (KERNEL §6.12). Plain ints, as the hot path wants them.
"""
from oomemu.include.mmzone import (MIGRATE_MOVABLE, MIGRATE_UNMOVABLE, ZONE_DMA, ZONE_DMA32, ZONE_MOVABLE,
                                   ZONE_NORMAL)

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_WAIT = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_COLD = 0x100
__GFP_NOWARN = 0x200
__GFP_REPEAT = 0x400
__GFP_NOFAIL = 0x800
__GFP_NORETRY = 0x1000
__GFP_MEMALLOC = 0x2000
__GFP_COMP = 0x4000
__GFP_ZERO = 0x8000
__GFP_NOMEMALLOC = 0x10000
__GFP_HARDWALL = 0x20000
__GFP_THISNODE = 0x40000
__GFP_RECLAIMABLE = 0x80000
__GFP_KMEMCG = 0x100000
__GFP_NOTRACK = 0x200000
__GFP_NO_KSWAPD = 0x400000
__GFP_OTHER_NODE = 0x800000
__GFP_WRITE = 0x1000000
__GFP_BITS_SHIFT = 25
__GFP_BITS_MASK = (1 << __GFP_BITS_SHIFT) - 1
GFP_ZONEMASK = __GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32 | __GFP_MOVABLE

GFP_ATOMIC = __GFP_HIGH
GFP_NOWAIT = 0
GFP_NOIO = __GFP_WAIT
GFP_NOFS = __GFP_WAIT | __GFP_IO
GFP_KERNEL = __GFP_WAIT | __GFP_IO | __GFP_FS
GFP_TEMPORARY = GFP_KERNEL | __GFP_RECLAIMABLE
GFP_USER = GFP_KERNEL | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE = (GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NORETRY
                 | __GFP_NOWARN | __GFP_NO_KSWAPD)
# NUMA value; the emulated machine is always CONFIG_NUMA.
GFP_THISNODE = __GFP_THISNODE | __GFP_NOWARN | __GFP_NORETRY
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32

# Every name a scenario may use in a `gfp` string.
GFP_NAMES = {name: value for name, value in dict(globals()).items()
             if name.startswith(("__GFP_", "GFP_")) and isinstance(value, int)
             and name not in ("__GFP_BITS_SHIFT", "__GFP_BITS_MASK", "GFP_ZONEMASK")}

gfp_allowed_mask = __GFP_BITS_MASK


def gfp_zone(flags):
    """The highest zone index an allocation with these flags may use.

    Follows: include/linux/gfp.h gfp_zone(), 3.14 (KERNEL §6.12), for x86_64 without HIGHMEM.
    """
    bits = flags & GFP_ZONEMASK
    if bits & __GFP_DMA:
        return ZONE_DMA
    if bits & __GFP_DMA32:
        return ZONE_DMA32
    if (bits & (__GFP_HIGHMEM | __GFP_MOVABLE)) == (__GFP_HIGHMEM | __GFP_MOVABLE):
        return ZONE_MOVABLE
    return ZONE_NORMAL


def gfpflags_to_migratetype(gfp_flags):
    """MIGRATE_MOVABLE for movable requests, MIGRATE_UNMOVABLE otherwise.

    Follows: include/linux/gfp.h allocflags_to_migratetype(), 3.14 (reclaimable folded into unmovable).
    """
    return MIGRATE_MOVABLE if gfp_flags & __GFP_MOVABLE else MIGRATE_UNMOVABLE

