"""The race library (configs/races): each race emerges from the emulated kernel's own logic often enough, and
its near-twin control never shows it.

Bounds: RACE_TRIALS runs each (default 6 to stay within CI's time; `oomemu run SCENARIO --repeat 20` gives
the figures README shows). A race measured at 100% must show in at least 5 of 6 runs (for a true rate of 95%
this fails about once in 30 CI runs); R3, the rarer one (measured 5/20 = 25%, 95% CI 11-47%, since its verdict
requires real harm: memory back above min when the extra kill happened), runs up to three times as many times,
stopping at the first sighting, and must show at least once (a true rate of 25% fails 0.75**18, one run in
180). R7 (measured 17/20 = 85%, 95% CI 64-95%: the atomic allocator must try while the reserve is drained)
must show in 3 of 6 (a true rate of 85% fails about one run in 170), and so must R9 (33/40 = 83%, 95% CI
68-91%, since its hogs no longer have a thread asleep for 2.5 s to hold their memory). R8 (measured 19/20 = 95%, 95% CI 76-99%,
on 2026-12-02 at load average 1.5-6) is load-sensitive (the touching task must keep its page cache
referenced faster than reclaim rotates the lists; an earlier 10/20 was at load ~8) and, like R3, runs up to
twice as many times, stopping at the first sighting, and must show once (a true rate of 30% fails 0.7**12,
about one run in 70; of 50%, one in 4000; of 95%, never in practice). A control must show its race in none of
its runs.
"""
import os

import pytest

from oomemu.api import run
from oomemu.config import load_scenario

from conftest import ROOT

TRIALS = int(os.environ.get("RACE_TRIALS", "6"))
# the rarer races: up to this many times TRIALS runs, stopping at the first sighting, one is enough
RARE = {"r3-extra-kill": 3, "r8-thrashing": 2}
RACES = {  # scenario → (verdict, least number of runs out of TRIALS)
    "r1-livelock": ("livelock", 0.8),
    "r3-extra-kill": ("extra-kill", 1 / 18),
    "r4-parallel-kills": ("parallel-kills", 0.8),
    "r4-memcg-parallel": ("parallel-kills", 0.8),
    "r5-pinned-mm": ("pinned-mm", 0.8),
    "r6-exiting-thread": ("abort-storm", 0.8),
    "r7-reserve-exhaustion": ("reserve-exhaustion", 0.5),
    "r8-thrashing": ("thrashing", None),
    "r9-allocating-task-storm": ("allocating-task-storm", 0.5),
}


# A race whose emergence runs only when asked for (its environment variable set to 1): none at present. R8
# was here while the end-of-run check's detector counted no frees (the check keeps no page events); the
# PagesFreed summary gives it them.
UNSTABLE = {}


@pytest.mark.parametrize("name", sorted(RACES))
def test_race_emerges(tmp_path, name):
    if name in UNSTABLE and not os.environ.get(UNSTABLE[name]):
        pytest.skip(f"{name}: does not emerge reliably yet; set {UNSTABLE[name]}=1 to run it")
    verdict, least = RACES[name]
    scenario = load_scenario(ROOT / "configs" / "races" / f"{name}.toml")
    trials = TRIALS * RARE.get(name, 1)
    seen = []
    for i in range(trials):
        report = run(scenario, out=tmp_path / f"run{i}")
        assert report["exit_code"] in (0, 1), report["error"]
        assert all(c["ok"] is not False for c in report["checks"]), [c for c in report["checks"] if c["ok"] is False]
        seen.append(report["verdict"])
        if name in RARE and verdict in seen:
            break  # one is all a rare race must show
    needed = 1 if name in RARE else least * trials
    assert seen.count(verdict) >= needed, f"{name}: {verdict} in {seen.count(verdict)}/{len(seen)}: {seen}"


@pytest.mark.parametrize("name", sorted(RACES))
def test_control_never_shows_the_race(tmp_path, name):
    verdict, _ = RACES[name]
    scenario = load_scenario(ROOT / "configs" / "races" / "controls" / f"{name}.toml")
    for i in range(TRIALS):
        report = run(scenario, out=tmp_path / f"run{i}")
        assert verdict not in [r["race"] for r in report["races"]], report["races"]
        assert all(c["ok"] is not False for c in report["checks"]), [c for c in report["checks"] if c["ok"] is False]


def test_livelock_run_ends_within_its_stall_budget(tmp_path):
    """A livelocked run is ended by the stall watch (1 s budget here), not by its 10 s deadline."""
    report = run(load_scenario(ROOT / "configs" / "races" / "r1-livelock.toml"), out=tmp_path / "run")
    assert report["ended_by"] == "stall" and report["elapsed_s"] < 5
    assert "held for write by" in report["races"][0]["details"][0]
