"""The victim-selection check recomputes each candidate's badness from the mm counters the scan read (rss,
page tables, swap entries, oom_score_adj, the root bonus; per profile), so a wrong badness formula in the
kernel code is caught at run time even though the scan's choice agrees with the points it traced.

"swapper" holds 1000 anonymous pages and 6000 swap entries, "big" 4000 anonymous pages (KERNEL §4.1: rss +
swap entries + page tables is about 7000 for swapper, whatever part of it reclaim has swapped out, against
about 4000 for big), so the right victim is swapper. The broken formula
below leaves out the swap entries and kills big; its scan is consistent with its own points, so only the
recomputation can tell. Both sleep 15 s, so the OOM comes however slowly a loaded host runs the hog, and
the run ends once both have been killed.
"""
import textwrap

from oomemu.api import run
from oomemu.config import load_scenario_text
from oomemu.machine import MM_SWAPENTS
from oomemu.mm import oom_kill

SCENARIO = """
[machine]
cpus = 2
swap = "32MiB"
[[machine.node]]
zones = { DMA = "16MiB", Normal = "48MiB" }

[[task]]
comm = "swapper"
mm = { anon = 1000, swapents = 6000 }
program = [{ op = "sleep", ms = 15000 }]

[[task]]
comm = "big"
mm = { anon = 4000 }
program = [{ op = "sleep", ms = 15000 }]

[[task]]
comm = "hog"
cpu = 1
kthread = true
program = [{ op = "sleep", ms = 100 }, { op = "kmalloc", pages = "64MiB" }]

[run]
seconds = 20
"""


def _victim_check(report):
    return next(c for c in report["checks"] if c["invariant"] == "victim-selection")


def _first_victim(report):
    return report["kills"][0]["comm"] if report["kills"] else None


def test_right_formula_passes(tmp_path):
    report = run(load_scenario_text(textwrap.dedent(SCENARIO), name="badness"), out=tmp_path / "run")
    assert _first_victim(report) == "swapper"
    assert _victim_check(report)["ok"] is True


def test_badness_without_swap_entries_is_caught(tmp_path, monkeypatch):
    right = oom_kill.badness_vector

    def without_swap(m, rows, totalpages, *args, **kwargs):
        points = right(m, rows, totalpages, *args, **kwargs)
        snap = kwargs.get("snap")
        mm_table, task_mm = (m.mm, m.task_mm) if snap is None else (snap["mm"], snap["task_mm"])
        swap = mm_table[task_mm[rows], MM_SWAPENTS]
        return points - swap * (points > 0)

    monkeypatch.setattr(oom_kill, "badness_vector", without_swap)   # the CPU processes are forked from here
    report = run(load_scenario_text(textwrap.dedent(SCENARIO), name="badness"), out=tmp_path / "run")
    assert _first_victim(report) == "big"
    check = _victim_check(report)
    assert check["ok"] is False
    assert any("but its mm gives" in p for p in check["details"]), check["details"]
