"""Event counters kept per CPU (and per kswapd) in the segment, summed for the report.

Follows the spirit of include/linux/vm_event_item.h (per-CPU event counters, summed on read); the names
are the emulator's own, one per figure report.json shows.
"""
from oomemu.machine import C_COUNTERS

COUNTERS = (
    "fast_path_allocs",     # pages handed out by get_page_from_freelist's first (low-watermark) pass
    "allocs",               # every successful __alloc_pages_nodemask
    "alloc_failures",       # __alloc_pages_nodemask returned NULL
    "slowpath_entries",
    "kswapd_wakeups",       # wakeup_kswapd actually woke a sleeping kswapd
    "direct_reclaims",      # __perform_reclaim calls
    "direct_reclaim_progress0",  # direct reclaims that reported no progress
    "pages_reclaimed",      # pages freed by reclaim (direct and kswapd)
    "pages_swapped_out",
    "oom_invocations",      # out_of_memory calls
    "oom_lock_busy",        # try_set_zonelist_oom returned 0
    "scan_aborts",          # select_bad_process returned ABORT
    "kills",                # oom_kill_process sent SIGKILL to a victim
    "sharer_kills",
    "self_memdie",          # out_of_memory marked a dying current TIF_MEMDIE
    "panics",
    "pages_freed",          # pages returned to the buddy allocator
    "user_steps",           # user-space steps run by tasks on this CPU
    "signals_delivered",
    "task_exits",
    "kswapd_runs",          # balance_pgdat passes
    "no_watermark_allocs",  # pages allocated with ALLOC_NO_WATERMARKS
    "direct_throttles",     # throttle_direct_reclaim made a reclaimer wait (PGSCAN_DIRECT_THROTTLE)
    "pgactivate",           # pages moved to an active list (referenced on the inactive list, or read twice)
    "pgdeactivate",         # pages moved from an active to an inactive list
    "pgscan",               # LRU pages scanned by reclaim (direct and kswapd, both lists)
)
_INDEX = {name: C_COUNTERS + i for i, name in enumerate(COUNTERS)}

# Column of each counter in a CPU row, named as vm_event_item would name it.
NR_FAST_PATH_ALLOCS = C_COUNTERS + 0
NR_ALLOCS = C_COUNTERS + 1
NR_ALLOC_FAILURES = C_COUNTERS + 2
NR_SLOWPATH_ENTRIES = C_COUNTERS + 3
NR_KSWAPD_WAKEUPS = C_COUNTERS + 4
NR_DIRECT_RECLAIMS = C_COUNTERS + 5
NR_DIRECT_RECLAIM_PROGRESS0 = C_COUNTERS + 6
NR_PAGES_RECLAIMED = C_COUNTERS + 7
NR_PAGES_SWAPPED_OUT = C_COUNTERS + 8
NR_OOM_INVOCATIONS = C_COUNTERS + 9
NR_OOM_LOCK_BUSY = C_COUNTERS + 10
NR_SCAN_ABORTS = C_COUNTERS + 11
NR_KILLS = C_COUNTERS + 12
NR_SHARER_KILLS = C_COUNTERS + 13
NR_SELF_MEMDIE = C_COUNTERS + 14
NR_PANICS = C_COUNTERS + 15
NR_PAGES_FREED = C_COUNTERS + 16
NR_USER_STEPS = C_COUNTERS + 17
NR_SIGNALS_DELIVERED = C_COUNTERS + 18
NR_TASK_EXITS = C_COUNTERS + 19
NR_KSWAPD_RUNS = C_COUNTERS + 20
NR_NO_WATERMARK_ALLOCS = C_COUNTERS + 21
NR_DIRECT_THROTTLES = C_COUNTERS + 22
NR_PGACTIVATE = C_COUNTERS + 23
NR_PGDEACTIVATE = C_COUNTERS + 24
NR_PGSCAN = C_COUNTERS + 25


def count_vm_event(cpu, item, delta=1):
    """Add `delta` to counter column `item` of this CPU's row. Follows: count_vm_events()."""
    cpu.vm_events[item] += delta


def counters_of(m, row):
    """Counter name → value for one CPU/kswapd row."""
    return {name: int(m.cpu[row, col]) for name, col in _INDEX.items()}


def counters_total(m):
    """Counter name → value summed over all rows."""
    return {name: int(m.cpu[:, col].sum()) for name, col in _INDEX.items()}
