"""The event catalogue: one place that names every record, its system and its argument names.

Events carry the kernel tracepoint name where one exists (systems kmem, vmscan, oom, signal, sched; P11) and
live in the emulator's own system "oomemu" otherwise. Each event gets an emitter `trace_<name>(cpu, ...)`
that costs one attribute test when tracing is off.
"""
from oomemu.trace.ring import RECORD_SHIFT, Emitter

# (name, system, argument names) — the order fixes the event ids; append only.
CATALOGUE = (
    ("mm_page_alloc", "kmem", ("pfn", "order", "gfp_flags", "free_at_check", "alloc_flags")),
    ("mm_page_free", "kmem", ("pfn", "order")),
    ("mm_page_alloc_zone_locked", "kmem", ("pfn", "order", "migratetype", "zone")),
    ("mm_vmscan_kswapd_wake", "vmscan", ("nid", "order")),
    ("mm_vmscan_kswapd_sleep", "vmscan", ("nid",)),
    ("mm_vmscan_wakeup_kswapd", "vmscan", ("nid", "zid", "order")),
    ("mm_vmscan_direct_reclaim_begin", "vmscan", ("order", "may_writepage", "gfp_flags")),
    ("mm_vmscan_direct_reclaim_end", "vmscan", ("nr_reclaimed", "progress")),
    ("oom_score_adj_update", "oom", ("pid", "oom_score_adj")),
    ("mark_victim", "oom", ("pid", "self")),
    ("signal_generate", "signal", ("sig", "pid", "group", "result")),
    ("signal_deliver", "signal", ("sig",)),
    ("sched_process_exit", "sched", ("pid",)),
    ("sched_process_free", "sched", ("pid",)),
    ("sched_process_fork", "sched", ("parent_pid", "child_pid", "clone_flags", "tgid")),
    ("slowpath_enter", "oomemu", ("gfp_flags", "order")),
    ("slowpath_exit", "oomemu", ("pfn", "order", "restarts")),
    ("oom_lock_try", "oomemu", ("acquired", "zone_mask", "free_above_min", "free_pages")),
    ("oom_lock_release", "oomemu", ("zone_mask",)),
    ("out_of_memory", "oomemu", ("constraint", "totalpages", "gfp_flags", "order", "force_kill")),
    ("oom_scan_candidate", "oomemu", ("pid", "points", "kind", "parent_pid")),
    ("oom_scan_result", "oomemu", ("chosen_pid", "points", "abort_pid", "nr_candidates")),
    ("oom_kill", "oomemu", ("victim_pid", "points", "kind", "oom_score_adj", "kthread")),
    ("oom_kill_sharer", "oomemu", ("pid", "mm", "oom_score_adj", "kthread")),
    ("oom_sacrifice_child", "oomemu", ("parent_pid", "child_pid", "child_points")),
    ("exit_mm", "oomemu", ("mm",)),
    ("mmput", "oomemu", ("mm", "mm_users", "pages_freed")),
    ("panic", "oomemu", ("reason",)),
    ("sleep", "oomemu", ("state", "wait_kind", "wait_obj")),
    ("wakeup", "oomemu", ("pid", "old_state", "reason")),
    ("oom_stall", "oomemu", ("jiffies",)),
    ("sched_token", "oomemu", ("step", "point", "obj", "next_row", "os_pid")),
    ("zone_free_pages", "oomemu", ("zone", "nr_free")),     # NR_FREE_PAGES of a zone after each change
    ("wake_oom_reaper", "oomemu", ("pid",)),
    ("oom_reap", "oomemu", ("pid", "mm", "pages_freed", "attempts", "reaped")),
    ("exit_oom_victim", "oomemu", ("pid",)),
    ("mm_memcg_charge_fail", "oomemu", ("memcg", "usage", "limit", "retries", "reclaimed")),
    ("mem_cgroup_oom_lock", "oomemu", ("memcg", "acquired")),
    ("mem_cgroup_oom_unlock", "oomemu", ("memcg",)),
    ("mem_cgroup_out_of_memory", "oomemu", ("memcg", "totalpages", "usage", "limit")),
    ("mem_cgroup_oom_done", "oomemu", ("memcg", "killed_pid")),
    # what oom_badness read for a scan candidate (after its oom_scan_candidate): the checker recomputes it
    ("oom_badness_mm", "oomemu", ("pid", "rss", "nr_ptes", "swapents", "oom_score_adj")),
    ("mm_vmscan_lru_shrink_inactive", "vmscan", ("zone", "nr_scanned", "nr_reclaimed", "priority", "file")),
    ("exit_mmap_batch", "oomemu", ("mm", "batch", "pages", "freed")),   # one TLB-gather batch of exit_mmap
)
EVENT_ID = {name: i for i, (name, _, _) in enumerate(CATALOGUE)}
EVENT_NAME = {i: name for name, i in EVENT_ID.items()}
EVENT_ARGS = {EVENT_ID[name]: args for name, _, args in CATALOGUE}
EVENT_SYSTEM = {EVENT_ID[name]: system for name, system, _ in CATALOGUE}

# wait kinds recorded with `sleep` (and in task_wait_kind)
WAIT_NONE = 0
WAIT_TIMER = 1
WAIT_MMAP_SEM_READ = 2
WAIT_MMAP_SEM_WRITE = 3
WAIT_CHILD = 4
WAIT_PFMEMALLOC = 5
WAIT_MEMCG_OOM = 6     # memcg_oom_waitq (3.14 mem_cgroup_oom_synchronize); wait_obj is the memcg
WAIT_NAMES = ("none", "timer", "mmap_sem (read)", "mmap_sem (write)", "child exit", "pfmemalloc_wait",
              "memcg_oom_waitq")

# `wakeup` reasons
WAKE_TIMER = 0
WAKE_SIGNAL = 1
WAKE_LOCK = 2      # a lock or wait queue was handed over
WAKE_EARLY = 3     # a sleep ended before its timeout (woken by someone)

# oom_scan_candidate kinds
CAND_SCAN = 0      # a thread select_bad_process scored
CAND_CHILD = 1     # a child oom_kill_process scored for sacrifice


def _make_emitter(event):
    name = "trace_" + EVENT_NAME[event]
    doc = f"Emit `{EVENT_NAME[event]}` ({EVENT_SYSTEM[event]}): {', '.join(EVENT_ARGS[event])}."
    if Emitter is not None:
        return Emitter(event, name, doc)
    return _python_emitter(event, name, doc)


def _python_emitter(event, name, doc):
    # The one place Python writes a single record (inlined here so an event costs one Python call); the
    # compiled Emitter writes the same bytes.
    def emit(cpu, a0=0, a1=0, a2=0, a3=0, a4=0, *, pid=None, seq=0):
        t = cpu.trace
        if t is None:
            return
        if pid is None:
            task = cpu.current
            pid = t.pid_of[task] if task >= 0 else 0
        w = t.written
        if w >= t.limit and not t.room():
            t.lose(1)
            return
        t.pack(t.buf, t.base + ((w & t.mask) << RECORD_SHIFT), t.clock() - t.boot, seq, event, pid, a0, a1, a2, a3, a4)
        t.written = w + 1
        t.head[t.hw] = w + 1
    emit.__name__, emit.__doc__ = name, doc
    return emit


for _name, _id in EVENT_ID.items():
    globals()["trace_" + _name] = _make_emitter(_id)
del _name, _id


def trace_many(cpu, name, a0, a1=0, a2=0, a3=0, a4=0):
    """Emit event `name` once per element of array `a0` (other arguments broadcast) in one vectorised write:
    for bulk work such as freeing an exiting mm's pages or scoring every scan candidate."""
    t = cpu.trace
    if t is None or not len(a0):
        return
    task = cpu.current
    t.emit_many(EVENT_ID[name], t.pid_of[task] if task >= 0 else 0, a0, a1, a2, a3, a4)

