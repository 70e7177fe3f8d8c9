"""The shared-memory Machine: one segment holding every table the CPUs share.

Segment map (all tables are column arrays, each 64-byte aligned, sized from the scenario at boot):

    glob[G_*]                 int64   run-wide scalars: stop/panic flags, pid counter, jiffies base, totals
    zone_*[nr_zones, ...]     int64   per zone (node-major, MAX_NR_ZONES slots a node): span, managed,
                                      watermarks, lowmem_reserve, vm stats, flags, buddy free areas, LRU heads
    page_*[nr_pages]          int8/32 the page frame table: links (buddy / pcp / LRU share them, as page->lru),
                                      buddy order, PG_* flags, owner kind and owner id, and page_young: the
                                      accessed bit of the page's one PTE (page_referenced() reads and clears it)
    pvec[nr_cpus, 1+14]       int32   each CPU's lru_add pagevec: count, then the pages (only that CPU touches it)
    pcp_*[nr_cpus, nr_zones]  int64   per-CPU page lists: count, high, batch, list head
    task_*[max_tasks]         mixed   task_struct rows; signal_struct fields are valid on the group leader's row
                                      (task_mems / task_mpol_nodes are node bitmasks: bit n = node n)
    mm_*[max_tasks]           int64   mm_struct rows: users, rss counters, nr_ptes, total_vm, mmap_sem state;
                                      mm_reserved: mmap()ed pages committed but not yet faulted in
    wq_*[nr_waitqueues]       int32   wait-queue heads (FIFO of task rows linked through task_wq_next)
    lock_owner_*[nr_locks]    int32   who holds each lock in `locks` (cpu, OS pid, task row)
    cpu_*[nr_cpus+nr_nodes]   int64   per-CPU/kswapd state and event counters (each row written by its owner)
    memcg[nr_memcgs, ...]     int64   memory cgroups (row 0 is the root "/"): parent, res_counter, oom_control
    page_memcg[nr_pages]      int16   the memcg each page frame is charged to (page_cgroup), -1 = none
    kill_*[MAX_KILLS]         int64   the kill log the report is built from
    ring memory               bytes   per-CPU trace rings (see oomemu/trace/ring.py)

The segment is an anonymous MAP_SHARED mapping made by the supervisor before it forks: workers inherit it
(never attach by name), and the kernel frees it when the last process that maps it exits, so no run can leak
shared memory into /dev/shm whatever way it ends. The locks themselves are inherited SemLocks (a sem_t each,
also unlinked at creation); their owners are recorded in the segment. Nothing here has behaviour beyond
layout, creation and accessors (P5: only this module knows offsets).
"""
import mmap
import multiprocessing
import os

import numpy as np

from oomemu.include.mmzone import MAX_NR_ZONES, MAX_ORDER, NR_ZONE_STATS

# --- glob[] indexes -----------------------------------------------------------------------------------------
G_STOP = 0            # 1: every worker leaves its loop
G_PANIC = 1           # 1: panic() was called
G_GO = 2              # 1: the supervisor released the workers (a common start line)
G_NEXT_PID = 3
G_BOOT_NS = 4         # CLOCK_MONOTONIC at boot: jiffies are counted from here
G_HZ = 5
G_TOTALRAM = 6        # totalram_pages
G_TOTAL_SWAP = 7      # total_swap_pages
G_NR_SWAP_FREE = 8
G_OOM_SEQ = 9         # sequence taken under zone_scan_lock: exact order of OOM critical sections
G_NR_KILLS = 10
G_OOM_KILLER_DISABLED = 11
G_NR_TASK_ROWS = 12   # high-water mark of used task rows (rows are never reused)
G_NR_MM_ROWS = 13
G_LAST_FREE_JIFFY = 14    # last jiffy a page went back to the buddy allocator (stall detection)
G_LAST_KILL_JIFFY = 15
G_PANIC_CPU = 16
G_NEXT_CPU = 17       # round robin for cpu = "any"
G_NR_USER_LIVE = 18   # user tasks not yet dead (the run ends when it reaches 0)
G_OOM_RS = 20         # 3 slots: oom_rs ratelimit state (begin jiffy + 1, printed, missed)
G_NOPAGE_RS = 23      # 3 slots: nopage_rs ratelimit state
G_PAUSE = 27          # 1: every worker parks at its next quiescent point (a snapshot is being taken)
G_OOM_REAPER_LIST = 28    # oom_reaper_list: first queued victim's task row, -1 when empty (profiles >= 4.6)
G_OOM_LOCK = 29           # the oom_lock mutex (profiles >= 4.2): holder's task row + 1, 0 when free
G_OOM_SCORES_TAKEN = 30   # 1 once the first out_of_memory recorded every task's /proc oom_score (report.json)
G_TASKLIST_RW = 31    # tasklist_lock as an rwlock_t: readers inside, or -1 while a writer holds it
G_SYSCTL_PANIC_ON_OOM = 32            # vm.panic_on_oom (kernel/sysctl.py: written at boot and by the sysctl op)
G_SYSCTL_OOM_KILL_ALLOCATING_TASK = 33
G_SYSCTL_OOM_DUMP_TASKS = 34
G_SYSCTL_MIN_FREE_KBYTES = 35
G_NR = 36

# --- zone columns ---------------------------------------------------------------------------------------------
Z_NODE = 0
Z_IDX = 1             # zone_idx(): ZONE_DMA ...
Z_START_PFN = 2
Z_SPANNED = 3
Z_MANAGED = 4
Z_WMARK = 5           # 3 columns: min, low, high
Z_LOWMEM_RESERVE = 8  # MAX_NR_ZONES columns
Z_STAT = Z_LOWMEM_RESERVE + MAX_NR_ZONES      # NR_ZONE_STATS columns (vm_stat)
Z_FLAGS = Z_STAT + NR_ZONE_STATS
Z_NR_FREE = Z_FLAGS + 1                       # MAX_ORDER columns: free_area[o].nr_free
Z_FREE_HEAD = Z_NR_FREE + MAX_ORDER           # MAX_ORDER columns: free_area[o].free_list head pfn
Z_LRU_HEAD = Z_FREE_HEAD + MAX_ORDER          # NR_LRU_LISTS columns (enum lru_list order): oldest page
Z_LRU_TAIL = Z_LRU_HEAD + 4                   # NR_LRU_LISTS columns: newest page
Z_RECENT_SCANNED = Z_LRU_TAIL + 4             # 2 columns (anon, file): reclaim_stat.recent_scanned[file]
Z_RECENT_ROTATED = Z_RECENT_SCANNED + 2       # 2 columns: reclaim_stat.recent_rotated[file]
Z_INACTIVE_RATIO = Z_RECENT_ROTATED + 2       # zone->inactive_ratio (anon)
Z_NCOLS = Z_INACTIVE_RATIO + 1

# enum lru_list (include/linux/mmzone.h, 3.14): LRU_BASE + file * LRU_FILE + active
LRU_ANON = 0
LRU_ACTIVE = 1
LRU_FILE = 2
LRU_INACTIVE_ANON = LRU_ANON
LRU_ACTIVE_ANON = LRU_ANON + LRU_ACTIVE
LRU_INACTIVE_FILE = LRU_FILE
LRU_ACTIVE_FILE = LRU_FILE + LRU_ACTIVE
NR_LRU_LISTS = 4
PAGEVEC_SIZE = 14     # include/linux/pagevec.h, 3.14

# --- page frame table -----------------------------------------------------------------------------------------
# page_kind: what owns the frame; page_owner: the owner's row (mm, task, or cpu for a pcp list)
PAGE_BUDDY = 0        # free, in the buddy allocator (head or tail of a free block)
PAGE_PCP = 1          # free, on a CPU's per-cpu list
PAGE_ANON = 2         # anonymous page of mm page_owner
PAGE_FILE = 3         # page-cache page; page_owner = mm mapping it, -1 when unmapped
PAGE_KERNEL = 4       # unreclaimable kernel allocation of task page_owner

PG_buddy = 1          # head of a free buddy block; page_order holds its order
PG_lru = 2            # on a zone LRU list
PG_active = 4         # on (or bound for) an active list
PG_referenced = 8     # accessed through read()/mark_page_accessed() since reclaim last looked
PG_isolated = 16      # emulator-only: off the LRU on a reclaimer's private list (its page reference)
PG_pvec = 32          # emulator-only: on a CPU's lru_add pagevec, not yet on the LRU (its page reference)
PG_exec = 64          # emulator-only: a page-cache page mapped by an executable mapping (VM_EXEC)
PG_LRU_STATE = PG_lru | PG_active | PG_referenced | PG_isolated | PG_pvec | PG_exec   # cleared before a free

# --- mm columns -----------------------------------------------------------------------------------------------
MM_FILEPAGES = 0
MM_ANONPAGES = 1
MM_SWAPENTS = 2
MM_NR_PTES = 3
MM_TOTAL_VM = 4
MM_USERS = 5
MM_COUNT = 6
MM_SEM_READERS = 7    # mmap_sem: number of readers holding it
MM_SEM_WRITER = 8     # mmap_sem: task row of the writer, -1 if none
MM_OWNER = 9          # task row that created it (diagnostics)
MM_USED = 10
MM_FLAGS = 11         # mm->flags: MMF_OOM_SKIP (oomemu.include.sched)
MM_NCOLS = 12

# --- memory cgroup columns (oomemu/mm/memcontrol.py) ------------------------------------------------------
MEMCG_PARENT = 0      # parent row, -1 for the root
MEMCG_USAGE = 1       # res_counter usage in pages (hierarchical: a charge counts in every ancestor)
MEMCG_LIMIT = 2       # res_counter limit in pages (memory.limit_in_bytes)
MEMCG_FAILCNT = 3     # charges that hit this memcg's limit
MEMCG_MAX_USAGE = 4
MEMCG_LOCAL = 5       # pages charged to this memcg itself (page_memcg == row)
MEMCG_UNDER_OOM = 6   # atomic under_oom count (mem_cgroup_mark_under_oom)
MEMCG_OOM_LOCK = 7    # memcg->oom_lock (guarded by memcg_oom_lock)
MEMCG_OOM_KILL_DISABLE = 8
MEMCG_OOM_KILLS = 9   # OOM kills of tasks in this memcg (memory.oom_control oom_kill, 4.13+)
MEMCG_SWAPPINESS = 10
MEMCG_OOM_GROUP = 11  # memory.oom.group (4.19)
MEMCG_NR_OOM = 12     # times a charge declared OOM against this memcg (memory.events oom)
MEMCG_DEPTH = 13
MEMCG_NCOLS = 16
MEMCG_UNLIMITED = 1 << 62

# --- per-CPU rows (cpus first, then one row per kswapd) -----------------------------------------------------
C_PID = 0             # OS pid of the worker process
C_CURRENT = 1         # task row running now, -1 when idle
C_DRAIN = 2           # drain_all_pages() request pending for this CPU
C_HEARTBEAT = 3       # CLOCK_MONOTONIC ns of the last scheduler pass
C_EXIT = 4            # 1 once the worker left its loop cleanly
C_KSWAPD_SLEEPING = 5     # kswapd rows: 1 while kswapd sleeps on kswapd_wait (waitqueue_active)
C_KSWAPD_MAX_ORDER = 6    # kswapd rows: pgdat->kswapd_max_order
C_KSWAPD_CLASSZONE = 7    # kswapd rows: pgdat->classzone_idx
C_PAUSED = 8          # 1 while the worker is parked for a snapshot
C_COUNTERS = 10       # start of the event counters (oomemu.mm.vmstat names them)
C_NCOLS = 40

# --- kill log -------------------------------------------------------------------------------------------------
MAX_KILLS = 4096
K_NS = 0
K_PID = 1
K_ROW = 2
K_POINTS = 3
K_CPU = 4
K_KILLER_PID = 5
K_KIND = 6            # oomemu.mm.oom_kill.KILL_* kinds
K_SEQ = 7
K_MEMCG = 8           # the memcg whose limit caused the kill (memcg OOM kills), else -1
K_NCOLS = 9

# --- locks ----------------------------------------------------------------------------------------------------
NR_TASK_LOCK_STRIPES = 64
NR_MM_LOCK_STRIPES = 64
L_ZONE_SCAN = 0       # zone_scan_lock (mm/oom_kill.c)
L_TASKLIST = 1        # tasklist_lock
L_KILL_LOG = 2        # emulator-only: appends to the kill log
L_PRINTK = 3          # logbuf_lock: one dmesg line at a time
L_RATELIMIT = 4       # oom_rs's spinlock (each ratelimit state has its own)
L_SWAP = 5            # swap_lock
L_BITOPS = 6          # emulator-only: serialises the atomic bit operations when they are not compiled
L_RATELIMIT_NOPAGE = 7  # nopage_rs's spinlock
L_OOM_LOCK = 8        # the wait_lock of the oom_lock mutex (profiles >= 4.2)
L_OOM_REAPER = 9      # oom_reaper_lock (profiles >= 4.6)
L_MEMCG_RES = 10      # every memcg's res_counter lock (one for all)
L_MEMCG_OOM = 11      # memcg_oom_lock: the per-memcg oom_lock bools
L_MEMCG_WAITQ = 12    # memcg_oom_waitq's lock
L_PFMEMALLOC = 13     # the lock of every node's pfmemalloc_wait queue (one for all)
L_FIXED = 14          # first per-zone lock (zone->lock), then rq locks, task stripes, mm stripes, lru_locks


def _align(n, a=64):
    return (n + a - 1) // a * a


class Machine:
    """The emulated machine's shared state and the views every process uses on it.

    Built once by the supervisor (`Machine.create`) and inherited across fork; refuses to be pickled.
    """

    def __init__(self, *, nr_cpus, nr_nodes, nr_pages, max_tasks, ring_records, hz, controlled=False,
                 replay_pairs=0, oom_reaper=False, nr_memcgs=0):
        from oomemu import control
        self.controlled = controlled  # a controlled schedule mode (oomemu/control.py); fixed for the run
        self.nr_cpus = nr_cpus
        self.nr_nodes = nr_nodes
        self.nr_zones = nr_nodes * MAX_NR_ZONES
        self.nr_pages = nr_pages
        self.max_tasks = max_tasks
        # Worker rows: the CPUs, one kswapd per node, then the oom_reaper kthread when the profile has one.
        self.oom_reaper_row = nr_cpus + nr_nodes if oom_reaper else -1
        self.nr_rows_cpu = nr_cpus + nr_nodes + (1 if oom_reaper else 0)
        self.ring_records = ring_records
        # each task's mm (mmap_sem), its wait_chldexit, memcg_oom_waitq, each node's pfmemalloc_wait
        self.nr_waitqueues = 2 * max_tasks + 1 + nr_nodes
        # Memory cgroups: row 0 is the root; with none configured nothing is charged (memcg_enabled False).
        self.nr_memcgs = nr_memcgs + 1 if nr_memcgs else 0
        self.memcg_enabled = bool(nr_memcgs)
        self.memcg_names = ["/"]
        self._plan = []
        self._size = 0
        T, Z, P = max_tasks, self.nr_zones, nr_pages
        self._add("glob", np.int64, G_NR)
        self._add("zone", np.int64, (Z, Z_NCOLS))
        self._add("page_next", np.int32, P)
        self._add("page_prev", np.int32, P)
        self._add("page_owner", np.int32, P)
        self._add("page_kind", np.int8, P)
        self._add("page_flags", np.int8, P)
        self._add("page_order", np.int8, P)
        self._add("page_zone", np.int8, P)
        self._add("page_memcg", np.int16, P if nr_memcgs else 1)
        self._add("page_young", np.int8, P)
        self._add("pvec", np.int32, (nr_cpus, 1 + PAGEVEC_SIZE))
        self._add("pcp", np.int64, (nr_cpus, Z, 4))        # count, high, batch, head
        for name, dt in (("task_pid", np.int32), ("task_tgid", np.int32), ("task_leader", np.int32),
                         ("task_parent", np.int32), ("task_mm", np.int32), ("task_cpu", np.int32),
                         ("task_exit_state", np.int32), ("task_prog", np.int32), ("task_uid", np.int32),
                         ("task_caps", np.int32), ("task_wq_next", np.int32), ("task_wait_kind", np.int32),
                         ("task_wait_obj", np.int32), ("task_seq", np.int32), ("task_exit_code", np.int32),
                         ("sig_oom_score_adj", np.int32), ("sig_oom_score_adj_min", np.int32),
                         ("sig_oom_flags", np.int32), ("sig_nr_live", np.int32), ("sig_oom_mm", np.int32),
                         ("task_oom_reaper_list", np.int32), ("task_first_oom_adj", np.int32),
                         ("task_memcg", np.int32), ("task_memcg_oom", np.int32),
                         ("task_flags", np.int64), ("task_tif", np.int64), ("task_state", np.int64),
                         ("task_pending", np.int64), ("sig_flags", np.int64), ("task_first_oom_score", np.int64), ("task_wait_since", np.int64),
                         # cpusets and mempolicies (kernel/cpuset.py, mm/mempolicy.py): node bitmasks
                         ("task_mems", np.int64), ("task_cpuset", np.int32), ("task_mpol_mode", np.int32),
                         ("task_mpol_nodes", np.int64), ("task_il_next", np.int32),
                         # how a process ended, for report.json (on the group leader's row)
                         ("sig_group_exit_code", np.int32), ("sig_kill_kind", np.int32), ("sig_enomem", np.int32)):
            self._add(name, dt, T)
        self._add("task_comm", "S16", T)
        self._add("mm", np.int64, (T, MM_NCOLS))
        self._add("mm_reserved", np.int64, T)   # pages mmap()ed (VM_ACCOUNT) but not faulted in yet
        self._add("wq", np.int32, (self.nr_waitqueues, 2))   # head, tail task rows
        self.nr_locks = L_FIXED + 2 * self.nr_zones + nr_cpus + NR_TASK_LOCK_STRIPES + NR_MM_LOCK_STRIPES
        self._add("lock_owner", np.int32, (self.nr_locks, 3))  # cpu, OS pid, task row
        self._add("cpu", np.int64, (self.nr_rows_cpu, C_NCOLS))
        self._add("memcg", np.int64, (max(1, self.nr_memcgs), MEMCG_NCOLS))
        self._add("kill", np.int64, (MAX_KILLS, K_NCOLS))
        self._add("kill_comm", "S16", MAX_KILLS)
        self._add("ctl", np.int64, control.ctl_words(self.nr_rows_cpu))
        self._add("ctl_log", np.int64, 2 * control.LOG_PAIRS if controlled else 2)
        self._add("ctl_replay", np.int64, max(2, 2 * replay_pairs))
        self._add("ctl_note", np.uint8, 256)
        self._add("ring_head", np.int64, (self.nr_rows_cpu, 8))  # written, drained, lost
        self._add("ring", np.uint8, self.nr_rows_cpu * ring_records * 64)
        self.size = self._size
        self.buf = mmap.mmap(-1, self.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self._bind()
        ctx = multiprocessing.get_context("fork")
        self.locks = [ctx.Lock() for _ in range(self.nr_locks)]
        self.doorbells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(self.nr_rows_cpu)]
        # the token of the controlled modes: each row blocks on its own (a semaphore eventfd)
        self.tokens = ([os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_CLOEXEC) for _ in range(self.nr_rows_cpu)]
                       if controlled else [])
        self.glob[G_HZ] = hz
        self.lock_owner[:] = -1
        self.page_owner[:] = -1
        self.page_memcg[:] = -1
        self.task_memcg_oom[:] = -1
        self.memcg[:, MEMCG_PARENT] = -1
        self.memcg[:, MEMCG_LIMIT] = MEMCG_UNLIMITED
        self.page_next[:] = -1
        self.page_prev[:] = -1
        self.zone[:, Z_FREE_HEAD:Z_FREE_HEAD + MAX_ORDER] = -1
        self.zone[:, Z_LRU_HEAD:Z_LRU_TAIL + NR_LRU_LISTS] = -1
        self.pcp[:, :, 3] = -1
        self.task_leader[:] = -1
        self.task_parent[:] = -1
        self.task_mm[:] = -1
        self.task_wq_next[:] = -1
        self.sig_oom_mm[:] = -1
        self.task_oom_reaper_list[:] = -1
        self.task_first_oom_score[:] = -1
        self.glob[G_OOM_REAPER_LIST] = -1
        self.wq[:] = -1
        self.mm[:, MM_SEM_WRITER] = -1
        self.cpu[:, C_CURRENT] = -1
        # Set at boot from the scenario (before fork, so every process agrees): whether any task may have a
        # cpuset or mempolicy narrower than every node (the allocator and the OOM scan skip those tests if
        # not), and the cpuset paths task_cpuset indexes (0 is the top cpuset "/").
        self.numa_constraints = False
        self.cpuset_names = ["/"]
        # Overcommit constants computed at boot (mm/mmap.c, mm/page_alloc.c): pages and kB
        self.totalreserve_pages = 0
        self.admin_reserve_kbytes = 0
        self.user_reserve_kbytes = 0

    def _add(self, name, dtype, shape):
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        self._plan.append((name, dt, shape, self._size, count))
        self._size = _align(self._size + dt.itemsize * count)

    def _bind(self):
        """Make the numpy and memoryview views over the segment (column arrays and flat scalar views)."""
        mv = memoryview(self.buf)
        for name, dt, shape, off, count in self._plan:
            arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=off).reshape(shape)
            setattr(self, name, arr)
            if dt.kind in "iu" and dt.itemsize in (4, 8):
                fmt = {4: "i", 8: "q"}[dt.itemsize] if dt.kind == "i" else {4: "I", 8: "Q"}[dt.itemsize]
                setattr(self, "v_" + name, mv[off:off + dt.itemsize * count].cast(fmt))
            elif dt.kind == "i" and dt.itemsize == 1:
                setattr(self, "v_" + name, mv[off:off + count].cast("b"))
            elif dt.kind == "i" and dt.itemsize == 2:
                setattr(self, "v_" + name, mv[off:off + 2 * count].cast("h"))
        self.ring_offset = next(off for name, _, _, off, _ in self._plan if name == "ring")

    def __reduce__(self):
        raise RuntimeError("a Machine is shared with workers by inheritance (fork), never pickled")

    # --- lock index helpers (P5: offsets known only here) ------------------------------------------------------
    def zone_lock(self, zone):
        return L_FIXED + zone

    def lru_lock(self, zone):
        """zone->lru_lock: the LRU lists, their counters and pages_scanned (not the buddy lists)."""
        return L_FIXED + self.nr_zones + self.nr_cpus + NR_TASK_LOCK_STRIPES + NR_MM_LOCK_STRIPES + zone

    def rq_lock(self, cpu):
        return L_FIXED + self.nr_zones + cpu

    def task_lock_index(self, task):
        return L_FIXED + self.nr_zones + self.nr_cpus + task % NR_TASK_LOCK_STRIPES

    def mm_lock_index(self, mm):
        return L_FIXED + self.nr_zones + self.nr_cpus + NR_TASK_LOCK_STRIPES + mm % NR_MM_LOCK_STRIPES

    def lock_name(self, index):
        """A kernel-style name for lock `index`, for diagnostics."""
        fixed = {L_ZONE_SCAN: "zone_scan_lock", L_TASKLIST: "tasklist_lock", L_KILL_LOG: "oom kill log lock",
                 L_PRINTK: "logbuf_lock", L_RATELIMIT: "oom_rs.lock", L_SWAP: "swap_lock",
                 L_BITOPS: "atomic bitops lock", L_RATELIMIT_NOPAGE: "nopage_rs.lock",
                 L_OOM_LOCK: "oom_lock (wait_lock)", L_OOM_REAPER: "oom_reaper_lock",
                 L_MEMCG_RES: "memcg res_counter lock", L_MEMCG_OOM: "memcg_oom_lock",
                 L_MEMCG_WAITQ: "memcg_oom_waitq.lock", L_PFMEMALLOC: "pfmemalloc_wait.lock"}
        if index in fixed:
            return fixed[index]
        i = index - L_FIXED
        if 0 <= i < self.nr_zones:
            from oomemu.include.mmzone import ZONE_NAMES
            return f"zone->lock (node {i // MAX_NR_ZONES} {ZONE_NAMES[i % MAX_NR_ZONES]})"
        i -= self.nr_zones
        if 0 <= i < self.nr_cpus:
            return f"rq->lock (cpu {i})"
        i -= self.nr_cpus
        if 0 <= i < NR_TASK_LOCK_STRIPES:
            return f"task_lock (stripe {i})"
        i -= NR_TASK_LOCK_STRIPES
        if i < NR_MM_LOCK_STRIPES:
            return f"mm->page_table_lock/mmap_sem wait_lock (stripe {i})"
        i -= NR_MM_LOCK_STRIPES
        from oomemu.include.mmzone import ZONE_NAMES
        return f"zone->lru_lock (node {i // MAX_NR_ZONES} {ZONE_NAMES[i % MAX_NR_ZONES]})"

    def row_name(self, row):
        """The worker name of per-CPU row `row`: cpuN, kswapdN or oom_reaper."""
        if row < self.nr_cpus:
            return f"cpu{row}"
        if row == self.oom_reaper_row:
            return "oom_reaper"
        return f"kswapd{row - self.nr_cpus}"

    # --- waitqueue ids -----------------------------------------------------------------------------------------
    def wq_mmap_sem(self, mm):
        return mm

    def wq_chldexit(self, task):
        return self.max_tasks + task

    def wq_memcg_oom(self):
        """memcg_oom_waitq: the one queue every memcg OOM waiter sleeps on (mm/memcontrol.c, 3.14)."""
        return 2 * self.max_tasks

    def wq_pfmemalloc(self, nid):
        """pgdat->pfmemalloc_wait of node `nid`: direct reclaimers throttled until kswapd restores the reserve."""
        return 2 * self.max_tasks + 1 + nid

    def close(self):
        """Release this process's views; the mapping itself dies with the last process holding it."""
        for fd in self.doorbells + self.tokens:
            try:
                os.close(fd)
            except OSError:
                pass  # already closed by an earlier teardown path
