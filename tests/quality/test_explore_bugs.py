"""Exploration finds every injected bug, and its first hit replays exactly; clean scenarios explored break nothing.

CI runs one random-strategy campaign per break with a small budget (each of these bugs is hit within a few
schedules by random, see README's exploration table). The acceptance run is
`OOMEMU_CAMPAIGNS=20 OOMEMU_SCHEDULES=500 OOMEMU_STRATEGY=pct pytest -n auto tests/quality/test_explore_bugs.py`:
each break must then be found within 500 schedules in at least 19 of 20 campaigns with different base seeds.
"""
import dataclasses
import os

import pytest

from oomemu.config import load_scenario
from oomemu.explore import confirm, explore

from conftest import ROOT
from test_injected_bugs import CASES

CAMPAIGNS = int(os.environ.get("OOMEMU_CAMPAIGNS", "1"))
SCHEDULES = int(os.environ.get("OOMEMU_SCHEDULES", "20"))
STRATEGY = os.environ.get("OOMEMU_STRATEGY", "random")
CLEAN_SCHEDULES = int(os.environ.get("OOMEMU_CLEAN_SCHEDULES", "3"))
NARROW = ROOT / "configs" / "races" / "narrow-oom-lock.toml"

EXPLORED = {brk: (path, invariant) for brk, (path, invariant, _) in CASES.items()}
EXPLORED["skip_zone_scan_lock"] = (NARROW, "oom-lock-exclusion")


def _with_break(path, brk):
    sc = load_scenario(path)
    return dataclasses.replace(sc, debug_break=(brk,), run=dataclasses.replace(sc.run, seconds=min(sc.run.seconds, 1)))


@pytest.mark.parametrize("brk", sorted(EXPLORED))
def test_exploration_finds_the_injected_bug(tmp_path, brk):
    path, invariant = EXPLORED[brk]
    found = 0
    first = None
    for campaign in range(CAMPAIGNS):
        summary = explore(_with_break(path, brk), STRATEGY, SCHEDULES, until=invariant, jobs=1,
                          base_seed=1 + campaign, out=tmp_path / f"c{campaign}")
        assert not summary["errors"], summary["errors"]
        if summary["first_hit"] is not None:
            found += 1
            first = first or summary["first_hit"]
    assert found >= CAMPAIGNS - CAMPAIGNS // 20, f"{brk}: found in {found}/{CAMPAIGNS} campaigns"
    reproduced, problems = confirm(first, 1, tmp_path / "confirm")
    assert reproduced == 1, problems


CLEAN = [ROOT / "configs" / "parallel-oom.toml", ROOT / "tests" / "quality" / "scenarios" / "hogs.toml"]


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.stem)
def test_clean_scenarios_explored_break_no_invariant(tmp_path, path):
    sc = load_scenario(path)
    sc = dataclasses.replace(sc, run=dataclasses.replace(sc.run, seconds=min(sc.run.seconds, 1)))
    summary = explore(sc, STRATEGY, CLEAN_SCHEDULES, until=None, jobs=1, out=tmp_path / "c", stop_at_first=False,
                      targets_invariants_only=True)
    assert summary["runs"] == CLEAN_SCHEDULES
    assert not summary["errors"], summary["errors"]
    assert not summary["targets"], summary["targets"]
