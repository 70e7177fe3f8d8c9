"""Reclaim before OOM (KERNEL §6.6, §6.8): page cache and (with swap) anonymous memory are reclaimed by kswapd
and direct reclaim, so pressure that reclaim can absorb never reaches the OOM killer; pressure it cannot does."""
from oomemu.api import run
from oomemu.config import load_scenario_text

MACHINE = """
[machine]
cpus = 2
swap = "%s"
[[machine.node]]
zones = { DMA = "16MiB", Normal = "48MiB" }
"""


# two anonymous-memory hogs that together want more than RAM
HOGS = '[[task]]\ncomm = "hog"\ncount = 2\nprogram = [{ op = "fault", pages = "40MiB" }, { op = "sleep", ms = 50 }]\n'


def _run(tmp_path, swap, tasks, seconds=None):
    extra = f"[run]\nseconds = {seconds}\n" if seconds else ""
    return run(load_scenario_text(MACHINE % swap + tasks + extra, name="reclaim"), out=tmp_path / "run")


def test_page_cache_pressure_is_reclaimed_without_oom(tmp_path):
    """Reading 3× RAM through the page cache: kswapd wakes and reclaims, nobody is killed. The readers get up
    to 60 s (a loaded 2-core host has taken over 10 s for the 49,152 page reads plus their reclaim); they
    normally finish in 2-3 s and the run ends when they do."""
    r = _run(tmp_path, "0", '[[task]]\ncomm = "reader"\ncount = 2\nprogram = [{ op = "read", pages = "96MiB" }]\n',
             seconds=60)
    assert r["outcome"] == "no-oom-kill" and r["ended_by"] == "all-exited"
    assert r["counters"]["kswapd_wakeups"] > 0
    assert r["per_cpu"]["kswapd0"]["pages_reclaimed"] > 0
    assert r["counters"]["oom_invocations"] == 0
    assert all(c["ok"] for c in r["checks"]), r["checks"]


def test_swap_absorbs_anonymous_pressure(tmp_path):
    """Anonymous memory beyond RAM fits once swap can take the overflow: pages are swapped, nobody is killed."""
    r = _run(tmp_path, "64MiB", HOGS)
    assert r["outcome"] == "no-oom-kill"
    assert r["counters"]["pages_swapped_out"] > 0
    assert all(c["ok"] for c in r["checks"]), r["checks"]


def test_anonymous_pressure_without_swap_ends_in_oom_kill(tmp_path):
    """The same hogs without swap: reclaim finds nothing (zone_reclaimable is false), the OOM killer runs.
    Each hog keeps its 40 MiB for 3 s after faulting it in, so the two always overlap however a loaded host
    schedules them (with the 50 ms of HOGS, one hog could finish and exit before the other got far: no OOM);
    the run has 30 s and ends when the survivor exits."""
    holding = HOGS.replace('{ op = "sleep", ms = 50 }', '{ op = "sleep", ms = 3000 }')
    r = _run(tmp_path, "0", holding, seconds=30)
    assert r["outcome"] == "oom-kill"
    assert r["counters"]["direct_reclaim_progress0"] > 0
    assert all(k["comm"] == "hog" for k in r["kills"])
    assert all(c["ok"] for c in r["checks"]), r["checks"]
