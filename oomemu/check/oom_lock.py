"""OOM-lock exclusion: no two OOM critical sections over overlapping zones at once (KERNEL §1.2).

A critical section runs from an `oom_lock_try` that acquired the zones to the `oom_lock_release` of the same
task. Both records carry a sequence number taken under zone_scan_lock, so replaying them in sequence order is
exact, whatever the CPUs' clocks say.
"""


def check_oom_lock_exclusion(trace):
    """Return a list of violations (empty when exclusion held)."""
    tries = trace.of("oom_lock_try")
    releases = trace.of("oom_lock_release")
    events = [(int(r["seq"]), 1, int(r["pid"]), int(r["a"][1]), int(r["a"][0]), int(r["cpu"])) for r in tries]
    events += [(int(r["seq"]), 0, int(r["pid"]), int(r["a"][0]), 0, int(r["cpu"])) for r in releases]
    events.sort()
    held = {}        # pid -> zone mask of its open critical section
    problems = []
    for seq, is_try, pid, mask, acquired, cpu in events:
        if is_try:
            if not acquired:
                continue
            clash = [other for other, m in held.items() if m & mask]
            if clash:
                problems.append(f"seq {seq}: cpu {cpu} pid {pid} entered the OOM critical section for zones "
                                f"{mask:#x} while pid {clash[0]} was inside it for zones {held[clash[0]]:#x}")
            held[pid] = mask
        elif pid in held:
            del held[pid]
    return problems


def oom_lock_busy_count(trace):
    """How many trylocks found the zones busy."""
    tries = trace.of("oom_lock_try")
    return int((tries["a"][:, 0] == 0).sum())


_LEAVES = ("oom_lock_release", "oom_lock_try", "slowpath_enter", "slowpath_exit", "signal_deliver",
           "sched_process_exit")


def check_oom_lock_released(trace):
    """Whoever takes the zonelist OOM lock clears it before leaving the OOM path (KERNEL §1.4 step 5)."""
    ids = {trace.event_id[n]: n for n in _LEAVES}
    recs = trace.records[[e in ids for e in trace.records["event"].tolist()]]
    open_by = {}
    problems = []
    for ev, pid, ts, a0 in zip(recs["event"].tolist(), recs["pid"].tolist(), recs["ts"].tolist(),
                               recs["a"][:, 0].tolist()):
        name = ids[ev]
        if pid in open_by:
            if name != "oom_lock_release":
                problems.append(f"pid {pid} took the OOM lock at {open_by[pid] / 1e9:.6f}s and left the OOM path "
                                f"({name} at {ts / 1e9:.6f}s) without clearing it")
            del open_by[pid]
        if name == "oom_lock_try" and a0 == 1:
            open_by[pid] = ts
    return problems
