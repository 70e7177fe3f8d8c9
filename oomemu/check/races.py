"""Recognise the 3.x OOM races of KERNEL §9 in a finished run and name them.

Each detector reads the trace (kills, scans, exits, frees) and the final machine state (who waits on what),
and returns findings with the tasks involved. The run's verdict is the first race found in PRIORITY order,
else its plain outcome.
"""
import numpy as np

from oomemu.check.signals import wait_chain
from oomemu.include.gfp import __GFP_WAIT
from oomemu.mm.internal import ALLOC_NO_WATERMARKS
from oomemu.machine import MM_USERS

PRIORITY = ("livelock", "abort-storm", "pinned-mm", "allocating-task-storm", "parallel-kills", "extra-kill",
            "reserve-exhaustion", "thrashing")
ABORT_STORM_MIN = 10           # scan aborts naming the same exiting task
THRASH_MIN_RECLAIMS = 5        # R8: direct reclaims that reclaimed nothing yet reported progress ...
THRASH_MIN_NS = 2_000_000_000  # ... spread over at least this long with no OOM kill among them
KIND_ALLOCATING, KIND_SYSRQ = 2, 3


class _Run:
    """What the detectors share: kills with their victims' mms and when those mms were freed."""

    def __init__(self, trace, state):
        self.trace, self.state = trace, state
        pids = state.task_pid.tolist()
        self.row_of = {p: r for r, p in enumerate(pids)}
        self.tgid = dict(zip(pids, state.task_tgid.tolist()))
        self.comm = {p: c.decode("ascii", "replace") for p, c in zip(pids, state.task_comm.tolist())}
        self.mm_of_group = {}
        for r in trace.of("exit_mm"):
            self.mm_of_group.setdefault(self.tgid.get(int(r["pid"]), int(r["pid"])), int(r["a"][0]))
        self.freed_at = {}
        for r in trace.of("mmput"):
            if r["a"][2] > 0:
                self.freed_at.setdefault(int(r["a"][0]), int(r["ts"]))
        if "oom_reap" in trace.event_id:   # the 4.6+ oom_reaper gives a victim's memory back before it exits
            for r in trace.of("oom_reap"):
                if r["a"][2] > 0:
                    mm, ts = int(r["a"][1]), int(r["ts"])
                    self.freed_at[mm] = min(ts, self.freed_at.get(mm, ts))
        self.enters = trace.of("slowpath_enter")
        self.kills = [{"ts": int(r["ts"]), "killer": int(r["pid"]), "cpu": int(r["cpu"]), "victim": int(r["a"][0]),
                       "kind": int(r["a"][2])} for r in trace.of("oom_kill")]
        for k in self.kills:
            k["mm"] = self.mm_of_group.get(self.tgid.get(k["victim"], k["victim"]))
            k["freed"] = self.freed_at.get(k["mm"]) if k["mm"] is not None else None

    def name(self, pid):
        return f"pid {pid} ({self.comm.get(pid, '?')})"

    def slowpath_began(self, kill):
        """When the killer's current slowpath began (its latest slowpath_enter before the kill), or None."""
        mine = self.enters[(self.enters["pid"] == kill["killer"]) & (self.enters["ts"] <= kill["ts"])]
        return int(mine["ts"][-1]) if len(mine) else None

    def began_before_free(self, later, earlier):
        """`later`'s killer was already in the slowpath when `earlier`'s victim gave its memory back."""
        began = self.slowpath_began(later)
        return began is not None and earlier["freed"] is not None and began < earlier["freed"] < later["ts"]

    def in_flight(self, earlier, later):
        """`later` happened before `earlier`'s victim gave its memory back."""
        return earlier["freed"] is None or earlier["freed"] > later["ts"]


def _aborts(run):
    res = run.trace.of("oom_scan_result")
    return res[res["a"][:, 2] != 0]


def detect_livelock(run, ended_by):
    """R1: the run stalled (no page freed, no kill) while every scan aborted on a TIF_MEMDIE victim."""
    if ended_by != "stall":
        return []
    victims = {int(r["a"][0]) for r in run.trace.of("mark_victim")}
    aborts = _aborts(run)
    if not len(aborts):
        return []
    on = int(aborts[-1]["a"][2])
    if on not in victims:
        return []
    group = run.tgid.get(on, on)
    rows = [run.row_of[p] for p, g in run.tgid.items() if g == group and p in run.row_of]
    chains = [wait_chain(run.state, r) for r in rows if run.state.task_wait_kind[r]] or \
             [wait_chain(run.state, run.row_of[on])]
    return [f"every OOM scan aborts on TIF_MEMDIE victim {run.name(on)} ({len(aborts)} aborts) while allocators "
            f"loop; " + "; ".join(chains)]


def detect_abort_storm(run, ended_by):
    """R6: scans keep aborting on an exiting task that no OOM kill chose (PF_EXITING with its mm). A thread of
    a chosen process is a victim too: 4.9+ (tsk_is_oom_victim) aborts on the whole process until the reaper
    is done with its mm."""
    victims = {int(r["a"][0]) for r in run.trace.of("mark_victim")}
    victim_groups = {run.tgid.get(p, p) for p in victims}
    aborts = _aborts(run)
    out = []
    for pid, count in zip(*np.unique(aborts["a"][:, 2], return_counts=True)):
        pid = int(pid)
        if pid not in victims and run.tgid.get(pid, pid) not in victim_groups and count >= ABORT_STORM_MIN:
            row = run.row_of.get(pid)
            chain = f"; {wait_chain(run.state, row)}" if row is not None else ""
            out.append(f"{int(count)} OOM scans aborted on exiting {run.name(pid)}{chain}")
    return out


def detect_pinned_mm(run, ended_by):
    """R5: a victim's mm stayed alive after it died (a surviving sharer pins it) and the kills went on."""
    out = []
    for i, k in enumerate(run.kills):
        mm = k["mm"]
        if mm is None or i + 1 >= len(run.kills):
            continue
        later = run.kills[i + 1]
        if k["freed"] is not None and k["freed"] < later["ts"]:
            continue
        if run.state.mm[mm, MM_USERS] <= 0 and k["freed"] is not None:
            continue
        holders = [run.name(int(p)) for p, m in zip(run.state.task_pid.tolist(), run.state.task_mm.tolist())
                   if m == mm]
        out.append(f"{run.name(k['victim'])} died but its mm {mm} was never freed (held by "
                   f"{', '.join(holders) or 'another user'}); {len(run.kills) - i - 1} more kill(s) followed")
        break
    return out


def _concurrent(run, predicate, same_episode=False):
    """Kills made while an earlier one was still in flight (or, with same_episode, by a task that was already
    short of memory before the earlier victim's memory came back)."""
    out = []
    for j, later in enumerate(run.kills):
        for earlier in run.kills[:j]:
            overlap = run.in_flight(earlier, later) or (same_episode and run.began_before_free(later, earlier))
            if overlap and predicate(earlier, later):
                out.append(f"{run.name(later['victim'])} killed by {run.name(later['killer'])} at "
                           f"{later['ts'] / 1e9:.3f}s while {run.name(earlier['victim'])}'s kill was still in flight")
                break
    return out


def detect_allocating_task_storm(run, ended_by):
    """R9: with oom_kill_allocating_task, several allocators killed themselves in one OOM episode."""
    return _concurrent(run, lambda a, b: a["kind"] == KIND_ALLOCATING and b["kind"] == KIND_ALLOCATING,
                       same_episode=True)


def detect_parallel_kills(run, ended_by):
    """R4: a second kill while another was in flight, one of them from SysRq-F (which takes no OOM lock); or
    two memcg OOM kills made at once, their select-and-kill sections overlapping (3.14's memcg_oom_lock covers
    only a subtree, so unrelated hierarchies kill in parallel; 4.2's oom_lock serialises them)."""
    return _concurrent(run, lambda a, b: KIND_SYSRQ in (a["kind"], b["kind"])) or _parallel_memcg_kills(run)


def _memcg_sections(run):
    """(killer pid, start ts, end ts, memcg, killed pid) of every mem_cgroup_out_of_memory that killed."""
    if "mem_cgroup_out_of_memory" not in run.trace.event_id:
        return []
    starts, dones = run.trace.of("mem_cgroup_out_of_memory"), run.trace.of("mem_cgroup_oom_done")
    open_at, out = {}, []
    events = sorted([(int(r["ts"]), 0, int(r["pid"]), int(r["a"][0]), 0) for r in starts] +
                    [(int(r["ts"]), 1, int(r["pid"]), int(r["a"][0]), int(r["a"][1])) for r in dones])
    for ts, is_done, pid, memcg, killed in events:
        if not is_done:
            open_at[pid] = ts
        elif pid in open_at:
            start = open_at.pop(pid)
            if killed:
                out.append((pid, start, ts, memcg, killed))
    return out


def _parallel_memcg_kills(run):
    sections = _memcg_sections(run)
    for j, (pid_b, start_b, end_b, memcg_b, victim_b) in enumerate(sections):
        for pid_a, start_a, end_a, memcg_a, victim_a in sections[:j]:
            if pid_a != pid_b and start_a <= end_b and start_b <= end_a:
                return [f"{run.name(victim_a)} (memcg {memcg_a}) and {run.name(victim_b)} (memcg {memcg_b}) were "
                        f"chosen and killed at once by {run.name(pid_a)} and {run.name(pid_b)}: their memcg OOM "
                        f"sections overlapped from {max(start_a, start_b) / 1e9:.6f}s to "
                        f"{min(end_a, end_b) / 1e9:.6f}s"]
    return []


def _sections(run):
    """OOM critical sections (pid, acquired ts, released ts, free pages above min when acquired) and busy
    trylocks (pid, ts), from the trace."""
    tries, rels = run.trace.of("oom_lock_try"), run.trace.of("oom_lock_release")
    release_ts = {}      # pid -> its release timestamps, sorted (one searchsorted per section, not a scan)
    for pid in np.unique(rels["pid"]).tolist():
        release_ts[pid] = np.sort(rels["ts"][rels["pid"] == pid])
    sections = []
    for t in tries[tries["a"][:, 0] == 1]:
        pid, ts = int(t["pid"]), int(t["ts"])
        mine = release_ts.get(pid)
        i = int(np.searchsorted(mine, ts)) if mine is not None else 0
        sections.append((pid, ts, int(mine[i]) if mine is not None and i < len(mine) else None, int(t["a"][2])))
    busy = [(int(t["pid"]), int(t["ts"])) for t in tries[tries["a"][:, 0] == 0]]
    return sections, busy


def _above_min_at(sections, kill):
    """Free pages above min (over the zones it locked) when the killer took the OOM lock for this kill."""
    own = [s for s in sections if s[0] == kill["killer"] and s[1] <= kill["ts"] and (s[2] is None or s[2] >= kill["ts"])]
    return own[-1][3] if own else 0


def detect_extra_kill(run, ended_by):
    """R3: a CPU that waited on the OOM lock while one kill was under way, and was still in that same
    allocation attempt, killed a second task after that victim's memory had already been freed, and the harm is
    real: when it took the lock for the second kill, free memory was already back above the min watermark (the
    trace's free_above_min), so only its last-chance attempt at the high watermark sent it on to kill."""
    sections, busy = _sections(run)
    out = []
    for j, later in enumerate(run.kills):
        for earlier in run.kills[:j]:
            if earlier["freed"] is None or not earlier["freed"] < later["ts"] or later["killer"] == earlier["killer"]:
                continue
            held = [s for s in sections if s[0] == earlier["killer"] and s[1] <= earlier["ts"]
                    and (s[2] is None or s[2] >= earlier["ts"])]
            if not held:
                continue
            start, end = held[-1][1], held[-1][2] or earlier["ts"]
            waited = any(pid == later["killer"] and start <= ts <= end for pid, ts in busy)
            own_kill_between = any(k["killer"] == later["killer"] and earlier["ts"] < k["ts"] < later["ts"]
                                   for k in run.kills)
            above_min = _above_min_at(sections, later)
            if waited and not own_kill_between and run.began_before_free(later, earlier) and above_min > 0:
                out.append(f"{run.name(later['victim'])} killed by {run.name(later['killer'])}, which had waited "
                           f"on the OOM lock during {run.name(earlier['victim'])}'s kill, in the same allocation, "
                           f"{(later['ts'] - earlier['freed']) / 1e6:.1f} ms after that victim's memory was freed, "
                           f"with {above_min} free pages above min")
                break
    return out


RESERVE_MIN_DYING = 2          # dying tasks that marked themselves TIF_MEMDIE and used the reserve


def detect_reserve_exhaustion(run, ended_by):
    """R7: several dying tasks marked themselves TIF_MEMDIE in out_of_memory (fatal signal pending, KERNEL §3.2
    step 2) and allocated with ALLOC_NO_WATERMARKS, and after the first of those allocations a request that
    could not wait (no __GFP_WAIT: GFP_ATOMIC, GFP_NOWAIT) failed: the reserve it is entitled to was gone."""
    self_marked = {int(r["a"][0]) for r in run.trace.of("mark_victim") if int(r["a"][1])}
    allocs = run.trace.of("mm_page_alloc")
    below = allocs[(allocs["a"][:, 4] & ALLOC_NO_WATERMARKS) != 0]
    users = {}
    for r in below:
        pid = int(r["pid"])
        if pid in self_marked:
            users.setdefault(pid, [int(r["ts"]), 0])[1] += 1 << int(r["a"][1])
    if len(users) < RESERVE_MIN_DYING:
        return []
    first = min(ts for ts, _ in users.values())
    enters = run.enters
    failures = []
    for r in run.trace.of("slowpath_exit"):
        pid, ts = int(r["pid"]), int(r["ts"])
        if int(r["a"][0]) != -1 or ts <= first:
            continue
        mine = enters[(enters["pid"] == pid) & (enters["ts"] <= ts)]   # the slowpath that failed began last
        if len(mine) and not int(mine["a"][-1][0]) & __GFP_WAIT:
            failures.append((pid, ts))
    if not failures:
        return []
    pages = sum(n for _, n in users.values())
    pid, ts = failures[0]
    return [f"{len(users)} dying tasks marked themselves TIF_MEMDIE and took {pages} pages with "
            f"ALLOC_NO_WATERMARKS; then {len(failures)} atomic allocations failed, the first by {run.name(pid)} "
            f"{(ts - first) / 1e6:.1f} ms after the first of those pages"]


def _hollow_progress(run):
    """(ts, pid) of every direct reclaim that reported progress 1 while its own shrinking reclaimed nothing:
    the zone_reclaimable() "progress" of do_try_to_free_pages() (KERNEL §6.8)."""
    t = run.trace
    if "mm_vmscan_lru_shrink_inactive" not in t.event_id:
        return []
    begins, ends = t.of("mm_vmscan_direct_reclaim_begin"), t.of("mm_vmscan_direct_reclaim_end")
    shrinks = t.of("mm_vmscan_lru_shrink_inactive")
    out = []
    for pid in np.unique(ends["pid"]).tolist():
        e = ends[(ends["pid"] == pid) & (ends["a"][:, 1] == 1)]
        if not len(e):
            continue
        b = np.sort(begins["ts"][begins["pid"] == pid])
        s = shrinks[shrinks["pid"] == pid]
        s_ts = s["ts"]
        csum = np.concatenate(([0], np.cumsum(s["a"][:, 2])))
        start = b[np.maximum(np.searchsorted(b, e["ts"], side="right") - 1, 0)] if len(b) else e["ts"]
        reclaimed = csum[np.searchsorted(s_ts, e["ts"], side="right")] - csum[np.searchsorted(s_ts, start)]
        out += [(int(ts), pid) for ts in e["ts"][reclaimed == 0].tolist()]
    return sorted(out)


class PagesFreed:
    """Pages freed to the buddy allocator (mm_page_free, 1 << order each) summed per BUCKET_NS of trace time, fed
    with time-ordered chunks. The end-of-run check keeps no page events in memory (they are nine in ten records
    of a busy run), so this is how the R8 detector learns how much was freed in a stretch: memory grows with
    the run's length (8 bytes a millisecond), not with its traffic."""

    BUCKET_NS = 1_000_000

    def __init__(self, free_id):
        self.free_id = free_id
        self.counts = np.zeros(0, dtype=np.int64)

    def feed(self, recs):
        f = recs[recs["event"] == self.free_id]
        if not len(f):
            return
        bucket = np.maximum(f["ts"], 0) // self.BUCKET_NS
        pages = np.left_shift(1, np.clip(f["a"][:, 1], 0, 20)).astype(np.int64)
        n = int(bucket.max()) + 1
        if n > len(self.counts):
            self.counts = np.concatenate((self.counts, np.zeros(n - len(self.counts), dtype=np.int64)))
        np.add.at(self.counts, bucket, pages)

    def between(self, first, last):
        """Pages freed from `first` to `last` (ns, both included), to a bucket's width at either end."""
        lo, hi = max(first, 0) // self.BUCKET_NS, max(last, 0) // self.BUCKET_NS + 1
        return int(self.counts[lo:hi].sum())


def pages_freed(trace, first, last):
    """Pages freed to the allocator from `first` to `last`: from the check's PagesFreed summary when the trace
    carries one (the end-of-run check keeps no mm_page_free records), else from the mm_page_free records."""
    summary = getattr(trace, "pages_freed", None)
    if summary is not None:
        return summary.between(first, last)
    f = trace.of("mm_page_free")
    f = f[(f["ts"] >= first) & (f["ts"] <= last)]
    return int(np.left_shift(1, np.clip(f["a"][:, 1], 0, 20)).sum())


def detect_thrashing(run, ended_by):
    """R8: allocators kept being told "progress" by direct reclaim that freed nothing (frees elsewhere reset
    pages_scanned, so zone_reclaimable() stayed true) for a long stretch with no OOM kill: thrashing instead of
    OOM. The frees that kept the zone "reclaimable" must be the others' (pages freed to the allocator in that
    stretch, less what reclaim itself freed, outnumber what reclaim freed): a stretch kept alive by reclaim that
    still finds pages is slow reclaim, not the heuristic."""
    hollow = _hollow_progress(run)
    if len(hollow) < THRASH_MIN_RECLAIMS:
        return []
    t = run.trace
    kill_ts = sorted(k["ts"] for k in run.kills)
    shrinks = t.of("mm_vmscan_lru_shrink_inactive")
    segments = {}
    for ts, pid in hollow:
        segments.setdefault(int(np.searchsorted(kill_ts, ts)), []).append((ts, pid))
    out = []
    for seg in segments.values():
        first, last = seg[0][0], seg[-1][0]
        if len(seg) < THRASH_MIN_RECLAIMS or last - first < THRASH_MIN_NS:
            continue
        freed = pages_freed(t, first, last)
        w = shrinks[(shrinks["ts"] >= first) & (shrinks["ts"] <= last)]
        reclaimed = int(w["a"][:, 2].sum())
        if freed - reclaimed <= reclaimed:
            continue
        pids = sorted({p for _, p in seg})
        out.append(f"{len(seg)} direct reclaims by {', '.join(run.name(p) for p in pids)} reclaimed nothing "
                   f"but reported progress over {(last - first) / 1e9:.2f}s ({first / 1e9:.3f}s to "
                   f"{last / 1e9:.3f}s) with no OOM kill: {freed - reclaimed} pages freed elsewhere (reclaim "
                   f"freed {reclaimed}) kept resetting pages_scanned, so zone_reclaimable() stayed true")
    return out


DETECTORS = {"livelock": detect_livelock, "abort-storm": detect_abort_storm, "pinned-mm": detect_pinned_mm,
             "allocating-task-storm": detect_allocating_task_storm, "parallel-kills": detect_parallel_kills,
             "extra-kill": detect_extra_kill, "reserve-exhaustion": detect_reserve_exhaustion,
             "thrashing": detect_thrashing}


def detect_races(trace, state, ended_by):
    """[{"race", "details"}] for every race found, in PRIORITY order."""
    run = _Run(trace, state)
    found = []
    for name in PRIORITY:
        details = DETECTORS[name](run, ended_by)
        if details:
            found.append({"race": name, "details": details[:5]})
    return found
