"""Invariants over a run: its trace and its final machine state. Each returns a list of violations.

`run_all(trace, state)` is what `oomemu run` does at its end and `oomemu check RUN_DIR` does offline; every
invariant names the KERNEL section it holds the emulator to.
"""
from oomemu.check.conservation import check_page_conservation, check_no_double_free
from oomemu.check.memcg import check_memcg_usage
from oomemu.check.oom_lock import check_oom_lock_exclusion, check_oom_lock_released
from oomemu.check.signals import check_sigkill_delivery, check_thread_flags
from oomemu.check.victim import check_memdie_marking, check_never_killed, check_victim_selection
from oomemu.check.watermarks import check_watermarks

# (name, KERNEL reference, needs, function) — needs: "state", "trace" or "both"
INVARIANTS = (
    ("page-conservation", "DESIGN §3", "state", check_page_conservation),
    ("no-double-free", "DESIGN §3", "trace", check_no_double_free),
    ("oom-lock-exclusion", "KERNEL §1.2", "trace", check_oom_lock_exclusion),
    ("oom-lock-released", "KERNEL §1.3–1.4", "trace", check_oom_lock_released),
    ("victim-selection", "KERNEL §2.1, §5.1", "both", check_victim_selection),
    ("never-killed", "KERNEL §2.3, §5.1", "both", check_never_killed),
    ("memdie-marking", "KERNEL §3.2, §5.1", "both", check_memdie_marking),
    ("watermarks", "KERNEL §6.4", "both", check_watermarks),
    ("sigkill-delivery", "KERNEL §5.2", "both", check_sigkill_delivery),
    ("thread-flags", "KERNEL §5.2–5.3", "both", check_thread_flags),
    ("memcg-usage", "DESIGN §10, KERNEL §1.7", "state", check_memcg_usage),
)


SNAPSHOTS = ("page-conservation-snapshots", "DESIGN §3")
TRACE_COMPLETE = ("trace-complete", "issue: overflow is never silent")


def all_invariants():
    """(name, ref) of every invariant a run reports, in report order."""
    return [(name, ref) for name, ref, _, _ in INVARIANTS] + [SNAPSHOTS, TRACE_COMPLETE]


def result(name, ref, problems):
    return {"invariant": name, "ref": ref, "ok": not problems, "status": "ok" if not problems else "BROKEN",
            "details": problems[:20], "violations": len(problems)}


def not_checked(name, ref, reason):
    """An invariant that could not be checked, and why: listed, never dropped (ok is None)."""
    return {"invariant": name, "ref": ref, "ok": None, "status": "not-checked", "details": [reason],
            "violations": 0, "reason": reason}


def is_broken(check):
    return check["ok"] is False


def with_memcg_snapshots(results, memcg_snapshots):
    """memcg-usage also holds at every quiescent snapshot: add the snapshots' findings to its result."""
    for i, res in enumerate(results):
        if res["invariant"] != "memcg-usage" or res["ok"] is None or not memcg_snapshots:
            continue
        bad = [f"snapshot {k}: {p}" for k, probs in enumerate(memcg_snapshots) for p in probs]
        final = res["details"] if res["ok"] is False else []
        merged = result(res["invariant"], res["ref"], bad + [f"end of run: {p}" for p in final])
        merged["snapshots"] = len(memcg_snapshots)
        results[i] = merged
    return results


def snapshot_result(snapshots, skips=(), why_none=None):
    """page-conservation-snapshots from the supervisor's quiescent snapshots (and the ones it had to skip)."""
    name, ref = SNAPSHOTS
    if not snapshots:
        reason = why_none or (f"no quiescent snapshot could be taken: {skips[0]}" if skips else
                              "the run ended before its first snapshot")
        return not_checked(name, ref, reason)
    bad = [f"snapshot {i}: {p}" for i, probs in enumerate(snapshots) for p in probs]
    out = result(name, ref, bad)
    out["snapshots"] = len(snapshots)
    if skips:
        out["skipped"] = len(skips)
        out["skipped_why"] = list(skips[:5])
    return out


def run_all(trace, state, snapshots=(), *, snapshot_skips=(), no_trace_reason="the run had trace = false",
            snapshots_expected=None):
    """Every invariant's result: [{"invariant", "ref", "ok", "status", "details"}]. Those that cannot be
    checked are listed as not-checked with the reason. A trace that lost records cannot certify anything that
    needs it. `snapshots_expected` False leaves page-conservation-snapshots out (offline re-checks)."""
    results = []
    for name, ref, needs, fn in INVARIANTS:
        if needs != "state" and trace is None:
            results.append(not_checked(name, ref, no_trace_reason))
            continue
        if needs == "state":
            problems = fn(state)
        elif needs == "trace":
            problems = fn(trace)
        else:
            problems = fn(trace, state)
        results.append(result(name, ref, problems))
    if snapshots_expected is not False:
        results.append(snapshot_result(snapshots, snapshot_skips))
    results.append(trace_complete_result(trace, no_trace_reason))
    return results


def trace_complete_result(trace, no_trace_reason="the run had trace = false"):
    name, ref = TRACE_COMPLETE
    if trace is None:
        return not_checked(name, ref, no_trace_reason)
    complete = trace.complete and trace.lost == 0
    problems = []
    if trace.lost:
        problems.append(f"{trace.lost} records lost; the trace cannot certify the run")
    if not trace.complete:
        problems.append("the trace has no end marker (the run did not close it)")
    return result(name, ref, [] if complete else problems)


# The page events: nine in ten records of a busy run. They are checked as they stream past (no-double-free,
# watermarks); every other event is kept, in order, for the invariants and race detectors that read whole
# histories of the OOM path (a few thousand records a second at most).
DENSE_EVENTS = ("mm_page_alloc", "mm_page_free", "mm_page_alloc_zone_locked")
SPARSE_CAP = 1 << 21          # OOM-path records kept in memory (144 MiB); beyond, those checks are not-checked
ORDER_SENSITIVE = ("no-double-free", "oom-lock-released", "memdie-marking")


class CheckRun:
    """What `check_run` found: the invariants' results, the races, and how the check went."""

    def __init__(self, results, races, stats, sparse=None):
        self.results, self.races, self.stats, self.sparse = results, races, stats, sparse


def check_run(run_dir, state, snapshots=(), *, snapshot_skips=(), ended_by=None, stop=None, on_progress=None,
              snapshots_expected=None, detect=True):
    """Check RUN_DIR/trace.msgpack against `state` in one streaming pass whose memory is bounded by the machine
    (and SPARSE_CAP), not by the run's length. `stop()` is polled between chunks: when it returns a reason the
    check ends there and every invariant is listed not-checked with it. `on_progress(bytes_read, total_bytes,
    records, elapsed_s)` is called after each chunk. Raises TraceError / OSError for an unreadable trace."""
    import time

    import numpy as np

    from oomemu.check.conservation import NoDoubleFree
    from oomemu.check.races import PagesFreed
    from oomemu.mm.internal import ALLOC_NO_WATERMARKS
    from oomemu.check.watermarks import WatermarkCheck
    from oomemu.trace.reader import Trace, TraceStream

    t0 = time.monotonic()
    stopped = None
    with TraceStream(run_dir) as stream:
        ids = stream.event_id
        dense_ids = np.array([ids[n] for n in DENSE_EVENTS if n in ids], dtype=np.int64)
        streamers = {"no-double-free": NoDoubleFree(state.nr_pages, ids["mm_page_alloc"], ids["mm_page_free"]),
                     "watermarks": WatermarkCheck(state, ids["mm_page_alloc"])}
        freed = PagesFreed(ids["mm_page_free"])   # the R8 detector's frees, summed as they stream past
        sparse, nsparse, overflow = [], 0, False
        alloc_id = ids["mm_page_alloc"]
        for chunk in stream:
            if stop is not None:
                stopped = stop()
                if stopped:
                    break
            is_dense = np.isin(chunk["event"], dense_ids)
            dense = chunk[is_dense]
            for s in streamers.values():
                s.feed(dense)
            freed.feed(dense)
            # reserve allocations (ALLOC_NO_WATERMARKS) are rare and the R7 detector reads them: kept too
            reserve = (chunk["event"] == alloc_id) & (chunk["a"][:, 4] & ALLOC_NO_WATERMARKS != 0)
            rest = chunk[~is_dense | reserve]
            if not overflow and len(rest):
                if nsparse + len(rest) > SPARSE_CAP:
                    overflow, sparse = True, []
                else:
                    sparse.append(rest)
                    nsparse += len(rest)
            if on_progress is not None:
                on_progress(stream.bytes_read, stream.total_bytes, stream.records, time.monotonic() - t0)
        if stopped is None and stop is not None:
            stopped = stop()
    stats = {"records": stream.records, "bytes": stream.total_bytes, "late": stream.late,
             "kept_records": nsparse, "seconds": round(time.monotonic() - t0, 3)}
    if stopped:
        return CheckRun([not_checked(n, r, stopped) for n, r in all_invariants()], [], stats)
    records = np.concatenate(sparse) if sparse and not overflow else np.empty(0, dtype=stream_dtype())
    trace = Trace(stream.header, records, stream.lost, stream.complete and not stream.truncated, stream.late)
    trace.pages_freed = freed
    why_over = (f"more than {SPARSE_CAP:,} OOM-path records (the checker's in-memory cap, decided by "
                f"oomemu.check.SPARSE_CAP)")
    results = []
    for name, ref, needs, fn in INVARIANTS:
        if name in streamers:
            res = result(name, ref, streamers[name].finish())
        elif needs == "state":
            res = result(name, ref, fn(state))
        elif overflow:
            res = not_checked(name, ref, why_over)
        else:
            res = result(name, ref, fn(trace) if needs == "trace" else fn(trace, state))
        if stream.late and name in ORDER_SENSITIVE:
            res["note"] = (f"{stream.late} records reached the checker out of time order (a worker stopped for "
                           "longer than the merge window)")
        results.append(res)
    if snapshots_expected is not False:
        results.append(snapshot_result(snapshots, snapshot_skips))
    results.append(trace_complete_result(trace))
    races = []
    if detect and not overflow:
        from oomemu.check.races import detect_races
        races = detect_races(trace, state, ended_by)
    return CheckRun(results, races, stats, trace)


def stream_dtype():
    from oomemu.trace.reader import TRACE_DTYPE
    return TRACE_DTYPE
