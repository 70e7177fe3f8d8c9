"""Zone indexes, watermarks, zone flags and allocator constants.

Follows include/linux/mmzone.h of Linux 3.14 (KERNEL §6.4–6.5, §6.11), x86_64 without HIGHMEM.
"""
ZONE_DMA = 0
ZONE_DMA32 = 1
ZONE_NORMAL = 2
ZONE_MOVABLE = 3
MAX_NR_ZONES = 4
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable")

WMARK_MIN = 0
WMARK_LOW = 1
WMARK_HIGH = 2

# enum zone_flags: bits in zone->flags
ZONE_RECLAIM_LOCKED = 1 << 0
ZONE_OOM_LOCKED = 1 << 1
ZONE_CONGESTED = 1 << 2

MAX_ORDER = 11
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_ALLOC_COSTLY_ORDER = 3
MAX_ORDER_NR_PAGES = 1 << (MAX_ORDER - 1)

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12
KSWAPD_ZONE_BALANCE_GAP_RATIO = 100

MIGRATE_UNMOVABLE = 0
MIGRATE_MOVABLE = 1

# zone_stat_item indexes kept per zone in the segment (a subset of the kernel's)
NR_FREE_PAGES = 0
NR_LRU_BASE = 1       # NR_INACTIVE_ANON .. NR_ACTIVE_FILE: NR_LRU_BASE + enum lru_list
NR_INACTIVE_ANON = NR_LRU_BASE + 0
NR_ACTIVE_ANON = NR_LRU_BASE + 1
NR_INACTIVE_FILE = NR_LRU_BASE + 2
NR_ACTIVE_FILE = NR_LRU_BASE + 3
NR_ISOLATED_ANON = 5  # pages a reclaimer took off the LRU and holds on its private list
NR_ISOLATED_FILE = 6
NR_PAGES_SCANNED = 7  # zone->pages_scanned (a plain field under lru_lock upstream; reset under zone->lock)
NR_ALLOC_BATCH = 8    # pages left in this zone's fair-allocation round (3.14: high - low wmark at each reset)
NR_ZONE_STATS = 9

# Default sysctl_lowmem_reserve_ratio by lower-zone index (KERNEL §6.5).
DEFAULT_LOWMEM_RESERVE_RATIO = (256, 256, 32)
