"""Invariants over a run: its trace and its final machine state. Each returns a list of violations.

`run_all(trace, state)` is what `oomemu run` does at its end and `oomemu check RUN_DIR` does offline; every
invariant names the KERNEL section it holds the emulator to.
"""
from oomemu.check.conservation import check_page_conservation, check_no_double_free
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
)


def run_all(trace, state, snapshots=()):
    """Every invariant's result: [{"invariant", "ref", "ok", "details"}]. A trace that lost records cannot
    certify anything that needs it."""
    results = []
    for name, ref, needs, fn in INVARIANTS:
        if needs != "state" and trace is None:
            continue
        if needs == "state":
            problems = fn(state)
        elif needs == "trace":
            problems = fn(trace)
        else:
            problems = fn(trace, state)
        results.append({"invariant": name, "ref": ref, "ok": not problems, "details": problems[:20],
                        "violations": len(problems)})
    if snapshots:
        bad = [f"snapshot {i}: {p}" for i, probs in enumerate(snapshots) for p in probs]
        results.append({"invariant": "page-conservation-snapshots", "ref": "DESIGN §3", "ok": not bad,
                        "details": bad[:20], "violations": len(bad), "snapshots": len(snapshots)})
    if trace is not None:
        complete = trace.complete and trace.lost == 0
        results.append({"invariant": "trace-complete", "ref": "issue: overflow is never silent", "ok": complete,
                        "details": [] if complete else [f"{trace.lost} records lost; the trace cannot certify "
                                                        "the run"], "violations": 0 if complete else 1})
    return results
